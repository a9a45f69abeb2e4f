"""Decoders of streamed upstream bodies into ``(event, data)`` pairs.

Two framings exist among the providers: Server-Sent Events (everyone but Bedrock) and the
AWS event-stream binary framing (Bedrock's ConverseStream). Both decoders are incremental:
``feed`` takes whatever bytes arrived and returns the events that are now complete, so
chunks are relayed as they arrive.
"""

from __future__ import annotations

from typing import Protocol

from botocore.eventstream import EventStreamBuffer

from modelport.gateway.errors import INTERNAL_ERROR, GatewayError

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
        """Flush an event the upstream did not terminate with a blank line."""
        return self.feed(b"\n\n") if self._buffer or self._data else []


class EventStreamDecoder:
    """AWS event-stream messages: ``:event-type`` header plus a JSON payload."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = EventStreamBuffer()

    def feed(self, chunk: bytes) -> list[Event]:
        """Decode more bytes; a corrupt frame (bad CRC, bad length) is a 502."""
        self._buffer.add_data(chunk)
        out: list[Event] = []
        try:
            for message in self._buffer:
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
        """Event-stream frames are self-delimiting: nothing can be pending."""
        return []
