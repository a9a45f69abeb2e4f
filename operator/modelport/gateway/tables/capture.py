"""The recording tap: what the client got, for usage rows and inference tables.

It is the last tap, so it sees the bytes as they go to the client (after any tap that
changes them). Per response it costs:

- a whole body: nothing but keeping a reference to it (characters are counted and the
  payload is stored later, when the row is made);
- a stream: one ``orjson`` parse per chunk, to count generated characters and, when the
  request's payloads are captured, to fold the chunk into the response it amounts to
  (:class:`~.aggregate.StreamAggregate`) until the payload limit; past the limit only
  the bytes are counted, and the response is marked too large.

A gateway without usage rows and inference tables has no recording tap at all.
"""

from __future__ import annotations

import orjson

from modelport.gateway.context import Relayed, RequestContext
from modelport.gateway.pipeline import Tap
from modelport.gateway.providers.base import Call
from modelport.gateway.tables.aggregate import StreamAggregate
from modelport.gateway.tables.records import InferenceRows
from modelport.gateway.usage import chunk_characters


class Recorder:
    """A :class:`~modelport.gateway.pipeline.TapFactory` filling ``ctx.relayed``.

    ``characters``: usage rows are written (count a stream's characters);
    ``payloads``: the inference table's rows, which decide the sampling and the limit.
    """

    def __init__(self, *, characters: bool, payloads: InferenceRows | None) -> None:
        self._characters = characters
        self._payloads = payloads

    def open(self, ctx: RequestContext, call: Call) -> Tap | None:
        """A recording of this response (None when nothing about it is recorded)."""
        payloads = self._payloads
        sampled = payloads is not None and payloads.sampled()
        relayed = ctx.relayed = Relayed(sampled=sampled)
        if not (sampled or self._characters):
            return None
        if sampled and call.stream:
            relayed.stream = StreamAggregate()
        limit = payloads.max_bytes if payloads is not None else 0
        return _Recording(relayed, limit)


class _Recording:
    """One response's :class:`~modelport.gateway.pipeline.Tap`."""

    __slots__ = ("_limit", "_relayed")

    def __init__(self, relayed: Relayed, limit: int) -> None:
        self._relayed = relayed
        self._limit = limit

    def body(self, body: bytes) -> bytes:
        """Keep the body (a reference); it is measured when the row is made."""
        self._relayed.body = body
        return body

    def chunk(self, payload: bytes) -> bytes:
        """Count the chunk's characters; fold it into the aggregate while captured."""
        relayed = self._relayed
        try:
            parsed = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return payload  # not a JSON chunk: nothing to count or keep
        relayed.output_characters += chunk_characters(parsed)
        aggregate = relayed.stream
        if aggregate is not None:
            relayed.response_bytes += len(payload)
            if relayed.response_bytes > self._limit:
                relayed.stream = None  # the pieces go now, not when the row is made
                relayed.too_large = True
            else:
                aggregate.add(parsed)
        elif relayed.too_large:
            relayed.response_bytes += len(payload)
        return payload
