"""A fast fake OpenAI chat upstream: a raw asyncio protocol on loopback, no framework.

``python -m benchmarks.gateway.upstream --port N`` answers ``POST .../chat/completions``
in one of three modes, chosen per request so that one process serves every benchmark:

- ``stream: true`` in the body: SSE of 64 content chunks 20 ms apart (the first at once),
  then a usage chunk and ``data: [DONE]``, sent with chunked transfer encoding so the
  connection stays reusable;
- the model ``delay50``: the completion after a fixed 50 ms;
- any other model: the completion at once.

Responses are prebuilt bytes, and the request is only scanned, not decoded, so the
upstream costs a few microseconds a request and is never what a benchmark measures.
``POST /v1/traces`` is a collector that accepts OTLP/HTTP spans and keeps nothing (the
``modelport-traced`` targets export there). Anything else (a bad method or path) gets a
404, so a misrouted target shows as errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from collections import deque
from typing import cast

import httptools
import orjson

STREAM_CHUNKS = 64
STREAM_INTERVAL_SECONDS = 0.020
DELAY_SECONDS = 0.050
DELAY_MODEL = b'"delay50"'


def _completion(model: str) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1763769600,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello! How can I help today?"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 8, "total_tokens": 17},
        }
    )


def _response(body: bytes) -> bytes:
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    return head + body


def _sse_frame(payload: dict[str, object]) -> bytes:
    event = b"data: " + orjson.dumps(payload) + b"\n\n"
    return f"{len(event):x}\r\n".encode() + event + b"\r\n"


def _chunk(i: int) -> dict[str, object]:
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1763769600,
        "model": "fast",
        "choices": [{"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}],
    }


FAST = _response(_completion("fast"))
DELAYED = _response(_completion("delay50"))
TRACES_ACCEPTED = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
)
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
)
SSE_CHUNKS = [_sse_frame(_chunk(i)) for i in range(STREAM_CHUNKS)]
SSE_TAIL = (
    _sse_frame(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1763769600,
            "model": "fast",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 64, "total_tokens": 73},
        }
    )
    + b"e\r\ndata: [DONE]\n\n\r\n"
    + b"0\r\n\r\n"
)


class UpstreamProtocol(asyncio.Protocol):
    """One client connection; requests are answered strictly in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.pending: deque[tuple[bytes, bytes]] = deque()
        self.busy = False
        self.timers: list[asyncio.TimerHandle] = []

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()
        self.transport = None

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        self.pending.append((method + b" " + self.url, b"".join(self.body)))
        self.url, self.body = b"", []
        if not self.busy:
            self._next()

    # answering
    def _next(self) -> None:
        while self.pending and self.transport is not None:
            request, body = self.pending.popleft()
            if request == b"POST /v1/traces":
                # An OTLP/HTTP collector that keeps nothing (the modelport-traced targets).
                self.transport.write(TRACES_ACCEPTED)
                continue
            if not (request.startswith(b"POST ") and request.endswith(b"/chat/completions")):
                self.transport.write(NOT_FOUND)
                continue
            if b'"stream":true' in body or b'"stream": true' in body:
                self.busy = True
                self.transport.write(SSE_HEAD + SSE_CHUNKS[0])
                self._later(STREAM_INTERVAL_SECONDS, self._stream, 1)
                return
            if DELAY_MODEL in body:
                self.busy = True
                self._later(DELAY_SECONDS, self._delayed)
                return
            self.transport.write(FAST)
        self.busy = False

    def _later(self, delay: float, callback: object, *args: object) -> None:
        loop = asyncio.get_running_loop()
        self.timers = [loop.call_later(delay, callback, *args)]  # type: ignore[arg-type]

    def _delayed(self) -> None:
        if self.transport is not None:
            self.transport.write(DELAYED)
            self._next()

    def _stream(self, i: int) -> None:
        if self.transport is None:
            return
        if i < STREAM_CHUNKS:
            self.transport.write(SSE_CHUNKS[i])
            self._later(STREAM_INTERVAL_SECONDS, self._stream, i + 1)
            return
        self.transport.write(SSE_TAIL)
        self._next()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def serve(host: str, port: int, lifetime: float) -> None:
    """Serve until SIGTERM/SIGINT or ``lifetime`` seconds, whichever is first."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpstreamProtocol, host, port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), lifetime - (time.monotonic() - started))
    server.close()


def main() -> None:
    """Command line: --host (loopback only), --port, --lifetime (a bound on the run)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "::1"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--lifetime", type=float, default=3600.0, help="exit after this long")
    args = parser.parse_args()
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a gateway dependency
        runner = asyncio.run
    runner(serve(args.host, args.port, args.lifetime))


if __name__ == "__main__":
    main()
