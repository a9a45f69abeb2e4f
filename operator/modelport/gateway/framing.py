"""Decoders of streamed upstream bodies into ``(event, data)`` pairs.

Two framings exist among the providers: Server-Sent Events (everyone but Bedrock) and the
AWS event-stream binary framing (Bedrock's ConverseStream). Both decoders are incremental:
``feed`` takes whatever bytes arrived and returns the events that are now complete, so
chunks are relayed as they arrive.

A body that ends in the middle of an event (an upstream that delimits its body by
closing the connection, and closed it early) never yields that half event: SSE discards
it, as the SSE specification says, and an event-stream frame cut short is an error. The
translators then see a stream without its final event and report it as cut.
"""

from __future__ import annotations

from typing import Protocol

from botocore.eventstream import EventStreamBuffer

from modelport.gateway.errors import INTERNAL_ERROR, TEMPORARILY_UNAVAILABLE, GatewayError

Event = tuple[str, bytes]
"""An event name ('' when the framing has none) and its payload."""

EXCEPTION_PREFIX = "!"
"""Marks an event-stream exception: ``'!' + exception type``."""


class Decoder(Protocol):
    """What the I/O layer feeds a streamed body through."""

    def feed(self, chunk: bytes) -> list[Event]:
        """Decode more bytes; return the events now complete."""
        ...

    def close(self) -> list[Event]:
        """The body ended; return any event still pending."""
        ...


class SSEDecoder:
    """Server-Sent Events: ``event:`` and ``data:`` lines, a blank line ends an event."""

    __slots__ = ("_buffer", "_data", "_event")

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[Event]:
        """Decode more bytes."""
        lines = (self._buffer + chunk).split(b"\n")
        self._buffer = lines.pop()
        out: list[Event] = []
        for raw in lines:
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if not line:
                if self._data:
                    out.append((self._event, b"\n".join(self._data)))
                self._event, self._data = "", []
                continue
            name, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if name == b"data":
                self._data.append(value)
            elif name == b"event":
                self._event = value.decode("utf-8", "replace")
            # Comments (':'), 'id:' and 'retry:' carry nothing a translator needs.
        return out

    def close(self) -> list[Event]:
        """The body ended: an event not yet ended by its blank line is incomplete and
        discarded (the SSE specification's rule), never dispatched half-read."""
        self._buffer, self._event, self._data = b"", "", []
        return []


class EventStreamDecoder:
    """AWS event-stream messages: ``:event-type`` header plus a JSON payload."""

    __slots__ = ("_buffer", "_pending")

    def __init__(self) -> None:
        self._buffer = EventStreamBuffer()
        self._pending = 0
        """Bytes fed that no complete frame has consumed yet."""

    def feed(self, chunk: bytes) -> list[Event]:
        """Decode more bytes; a corrupt frame (bad CRC, bad length) is a 502."""
        self._buffer.add_data(chunk)
        self._pending += len(chunk)
        out: list[Event] = []
        try:
            for message in self._buffer:
                self._pending -= message.prelude.total_length
                headers = message.headers
                kind = headers.get(":message-type", "event")
                if kind == "event":
                    out.append((str(headers.get(":event-type", "")), bytes(message.payload)))
                elif kind == "exception":
                    name = str(headers.get(":exception-type", "exception"))
                    out.append((EXCEPTION_PREFIX + name, bytes(message.payload)))
                else:
                    name = str(headers.get(":error-code", "error"))
                    text = str(headers.get(":error-message", "")).encode()
                    out.append((EXCEPTION_PREFIX + name, text))
        except Exception as exc:  # botocore raises several parser errors; all mean the same
            raise GatewayError(
                502, INTERNAL_ERROR, f"upstream sent a malformed event stream: {type(exc).__name__}"
            ) from None
        return out

    def close(self) -> list[Event]:
        """The body ended; a frame begun and not finished means the body was cut."""
        if self._pending:
            raise GatewayError(
                502,
                TEMPORARILY_UNAVAILABLE,
                f"upstream ended the event stream in the middle of a frame ({self._pending} "
                "bytes of it arrived); the answer is incomplete: retry the request",
            )
        return []
