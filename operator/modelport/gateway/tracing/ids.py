"""W3C trace context (``traceparent``): parsing, formatting and new ids. Pure.

``traceparent: 00-<trace id: 32 hex>-<parent span id: 16 hex>-<flags: 2 hex>``; the
lowest flag bit is *sampled*. An all-zero id, a version ``ff`` or a malformed header is
ignored (a new trace starts), as the W3C recommendation says.
"""

from __future__ import annotations

import random

_HEX = frozenset("0123456789abcdef")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16

_random = random.Random()  # noqa: S311 - ids must be unique, not secret (as the SDK's)


def new_trace_id() -> str:
    """32 random hex digits (never all zero)."""
    return f"{_random.getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    """16 random hex digits (never all zero)."""
    return f"{_random.getrandbits(64) or 1:016x}"


def parse_traceparent(value: str) -> tuple[str, str, bool] | None:
    """``(trace id, parent span id, sampled)`` of a valid header, else None."""
    parts = value.strip().lower().split("-")
    if len(parts) < 4:
        return None
    version, trace_id, span_id, flags = parts[:4]
    if len(version) != 2 or version == "ff" or not _hex(version):
        return None
    if version == "00" and len(parts) != 4:
        return None
    if len(trace_id) != 32 or not _hex(trace_id) or trace_id == _ZERO_TRACE:
        return None
    if len(span_id) != 16 or not _hex(span_id) or span_id == _ZERO_SPAN:
        return None
    if len(flags) != 2 or not _hex(flags):
        return None
    return trace_id, span_id, bool(int(flags, 16) & 1)


def traceparent(trace_id: str, span_id: str, sampled: bool) -> str:
    """The header naming ``span_id`` of ``trace_id`` as the parent."""
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def sampled_by_ratio(trace_id: str, ratio: float) -> bool:
    """Whether a new trace is kept at ``ratio``: by its id's low 64 bits, as the SDK's
    ``TraceIdRatioBased`` sampler decides, so every replica decides alike."""
    if ratio >= 1.0:
        return True
    if ratio <= 0.0:
        return False
    return int(trace_id[16:], 16) < int(ratio * (1 << 64))


def _hex(text: str) -> bool:
    return all(c in _HEX for c in text)
