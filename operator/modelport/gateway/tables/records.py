"""A finished request as a usage row and as an inference-table row. Pure.

Rows are plain tuples in the column order of :mod:`.schema`, built when the request
finishes: compact (the request's objects are not kept alive while rows wait for the
database), and cheap (no JSON is re-encoded for a whole body; a stream's aggregate is
encoded once). Times are epoch seconds and milliseconds; the database makes the
timestamps.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import orjson

from modelport.gateway.context import RequestContext
from modelport.gateway.metrics import TableCounters
from modelport.gateway.usage import body_characters, prompt_characters
from modelport.gatewayconfig import InferenceTable, Task

Row = tuple[Any, ...]

REQUEST_TOO_LARGE = "MAX_REQUEST_SIZE_EXCEEDED"
RESPONSE_TOO_LARGE = "MAX_RESPONSE_SIZE_EXCEEDED"
"""``logging_error_codes`` of a payload over the limit (the reference service's names)."""


class UsageRows:
    """Makes the usage rows of one endpoint (``namespace``: the endpoint's)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def row(self, ctx: RequestContext) -> Row:
        """The usage row of a finished request (columns of ``schema.USAGE_COLUMNS``)."""
        return usage_row(ctx, self.namespace)


def usage_row(ctx: RequestContext, namespace: str) -> Row:
    """The usage row of a finished request in ``namespace``."""
    usage = ctx.usage
    return (
        *_common(ctx, namespace),
        ctx.task.value if ctx.task else None,
        usage.prompt_tokens if usage else 0,
        usage.completion_tokens if usage else 0,
        usage.estimated if usage else False,
        prompt_characters(ctx.request) if ctx.request is not None else 0,
        output_characters(ctx),
        ctx.stream,
        _json(ctx.usage_context),
        _ms(ctx.time_to_first_byte),
        _ms(ctx.duration) or 0.0,
        max(0, len(ctx.attempts) - 1),
        ctx.trace.trace_id if ctx.trace is not None else None,
    )


def output_characters(ctx: RequestContext) -> int:
    """Characters of the text the client got (0 for embeddings and errors)."""
    relayed = ctx.relayed
    if relayed is None or ctx.task is Task.EMBEDDINGS:
        return 0
    if relayed.body is not None:
        return body_characters(relayed.body)
    return relayed.output_characters


class InferenceRows:
    """Makes the inference-table rows of one endpoint: sampled, payloads within the limit.

    ``random`` is injectable so that tests can decide the sampling.
    """

    def __init__(
        self,
        config: InferenceTable,
        namespace: str,
        *,
        counters: TableCounters | None = None,
        random: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.namespace = namespace
        self._counters = counters or TableCounters.detached()
        self.max_bytes = config.max_payload_bytes
        self._random = random
        self.not_stored = 0
        """Payloads (requests and responses) over the limit: marked, not stored."""

    def sampled(self) -> bool:
        """Whether a request's payloads go to the table (drawn once per request)."""
        fraction = self.config.sampling_fraction
        return fraction >= 1.0 or (fraction > 0.0 and self._random() < fraction)

    def row(self, ctx: RequestContext) -> Row | None:
        """The row of ``ctx``, or None when it was not sampled."""
        relayed = ctx.relayed
        if relayed is None:
            # No tap opened (refused, or failed before an answer): drawn now.
            if not self.sampled():
                return None
        elif not relayed.sampled:
            return None
        codes = []
        request = ctx.request_body
        request_bytes = len(request) if request is not None else 0
        if request_bytes > self.max_bytes:
            request = None
            codes.append(REQUEST_TOO_LARGE)
        response, response_bytes = self._response(ctx)
        if response_bytes > self.max_bytes or (relayed is not None and relayed.too_large):
            response = None
            codes.append(RESPONSE_TOO_LARGE)
        if codes:
            self.not_stored += len(codes)
            self._counters.not_stored.value += len(codes)
        usage = ctx.usage
        return (
            *_common(ctx, self.namespace),
            request,
            response,
            request_bytes,
            response_bytes,
            ",".join(codes) if codes else None,
            self.config.sampling_fraction,
            ctx.stream,
            _json(ctx.usage_context),
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
            usage.estimated if usage else False,
            _ms(ctx.time_to_first_byte),
            _ms(ctx.duration) or 0.0,
            ctx.trace.trace_id if ctx.trace is not None else None,
        )

    def _response(self, ctx: RequestContext) -> tuple[bytes | None, int]:
        relayed = ctx.relayed
        if relayed is None:
            return None, 0
        if relayed.body is not None:
            return relayed.body, len(relayed.body)
        if relayed.stream is not None:
            encoded = orjson.dumps(relayed.stream.result())
            return encoded, len(encoded)
        return None, relayed.response_bytes


def _common(ctx: RequestContext, namespace: str) -> Row:
    """The values of ``schema.COMMON_COLUMNS``."""
    principal = ctx.principal
    return (
        ctx.request_id,
        ctx.client_request_id,
        ctx.started_at,
        namespace,
        ctx.endpoint,
        ctx.entity,
        principal.name if principal else None,
        principal.kind if principal else None,
        ctx.status or 499,
        ctx.error_code,
    )


def row_bytes(row: Row) -> int:
    """What an inference row's payloads weigh (for the buffer's byte bound)."""
    request, response = row[10], row[11]
    return (len(request) if request else 0) + (len(response) if response else 0)


def _json(value: dict[str, str] | None) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)
