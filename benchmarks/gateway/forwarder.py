"""The minimal asyncio forwarder: the ceiling of a CPython proxy on this machine.

``python -m benchmarks.gateway.forwarder --port N --upstream-port M`` does the least
that any OpenAI proxy must: parse the client's HTTP request (httptools, the parser
uvicorn uses), parse its JSON body and re-encode it with the upstream's model name
(orjson), send it on a pooled keep-alive upstream connection (one connection per
request in flight, reused across requests: no connect per request), parse the answer,
parse and re-encode its JSON, and answer. A streamed answer is relayed as it arrives,
chunk by chunk, without parsing the events. No routing, validation, metrics, error
translation or cancellation: whatever the gateway costs beyond this is its own design.
It uses uvloop like the gateway, and one process: compare it with one gateway worker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import cast

import httptools
import orjson

BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n"
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class UpstreamConnection(asyncio.Protocol):
    """A keep-alive connection to the upstream carrying one exchange at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.client: ClientConnection | None = None
        self.body: list[bytes] = []
        self.streaming = False
        self.content_length: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.pool.discard(self)
        if self.client is not None:
            self.client.upstream_failed()
            self.client = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def send(self, client: ClientConnection, request: bytes) -> None:
        """Start one exchange on behalf of ``client``."""
        self.client = client
        self.body = []
        self.streaming = False
        assert self.transport is not None
        self.transport.write(request)

    # httptools callbacks
    def on_headers_complete(self) -> None:
        # A chunked (SSE) answer is relayed as it comes; a sized one is parsed whole.
        self.streaming = self.parser.get_status_code() == 200 and self.content_length is None
        if self.streaming and self.client is not None:
            self.client.start_stream()

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-length":
            self.content_length = int(value)

    def on_body(self, body: bytes) -> None:
        if self.streaming and self.client is not None:
            self.client.relay(body)
        else:
            self.body.append(body)

    def on_message_complete(self) -> None:
        client, self.client = self.client, None
        status = self.parser.get_status_code()
        keep_alive = self.parser.should_keep_alive()
        streaming, self.streaming = self.streaming, False
        self.content_length = None
        body, self.body = b"".join(self.body), []
        if keep_alive:
            self.pool.release(self)
        elif self.transport is not None:
            self.transport.close()
        if client is None:
            return
        if streaming:
            client.end_stream()
        else:
            client.answer(status, body)


class Pool:
    """Idle keep-alive upstream connections; a new one is opened only when none is idle."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[UpstreamConnection] = []

    async def acquire(self) -> UpstreamConnection:
        """An idle connection, or a new one."""
        while self.idle:
            conn = self.idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                return conn
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            lambda: UpstreamConnection(self), self.host, self.port
        )
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Put a connection back after a complete exchange."""
        self.idle.append(conn)

    def discard(self, conn: UpstreamConnection) -> None:
        """Forget a closed connection."""
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)


class ClientConnection(asyncio.Protocol):
    """One client connection; requests on it are handled one after another."""

    def __init__(self, pool: Pool, upstream_host: bytes) -> None:
        self.pool = pool
        self.upstream_host = upstream_host
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.queue: list[tuple[bytes, bytes]] = []
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._write(BAD_REQUEST)
            if self.transport is not None:
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.queue.append((self.url, b"".join(self.body)))
        self.url, self.body = b"", []
        if not self.busy:
            self._next()

    def _next(self) -> None:
        if not self.queue or self.transport is None:
            self.busy = False
            return
        self.busy = True
        url, body = self.queue.pop(0)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            self._write(BAD_REQUEST)
            return
        payload["model"] = payload.get("model") or "fast"
        content = orjson.dumps(payload)
        request = (
            b"POST " + url + b" HTTP/1.1\r\nhost: " + self.upstream_host + b"\r\n"
            b"content-type: application/json\r\ncontent-length: "
            + str(len(content)).encode()
            + b"\r\n\r\n"
            + content
        )
        asyncio.get_running_loop().create_task(self._send(request))

    async def _send(self, request: bytes) -> None:
        try:
            conn = await self.pool.acquire()
        except OSError:
            self.upstream_failed()
            return
        conn.send(self, request)

    # called by the upstream connection
    def answer(self, status: int, body: bytes) -> None:
        """A sized answer: parse and re-encode its JSON, then send it."""
        if status == 200:
            body = orjson.dumps(orjson.loads(body))
        head = (
            f"HTTP/1.1 {status} OK\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode()
        self._write(head + body)
        self._next()

    def start_stream(self) -> None:
        """Headers of a streamed answer."""
        self._write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
        )

    def relay(self, data: bytes) -> None:
        """One piece of a streamed answer, re-framed as one chunk."""
        self._write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def end_stream(self) -> None:
        """The streamed answer ended."""
        self._write(b"0\r\n\r\n")
        self._next()

    def upstream_failed(self) -> None:
        """The upstream connection broke mid-exchange."""
        self._write(BAD_GATEWAY)
        if self.transport is not None:
            self.transport.close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)


async def serve(port: int, upstream_port: int, lifetime: float) -> None:
    """Serve on loopback until SIGTERM/SIGINT or ``lifetime`` seconds."""
    loop = asyncio.get_running_loop()
    pool = Pool("127.0.0.1", upstream_port)
    host = f"127.0.0.1:{upstream_port}".encode()
    server = await loop.create_server(
        lambda: ClientConnection(pool, host), "127.0.0.1", port, backlog=4096
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), lifetime)
    server.close()


def main() -> None:
    """Command line: --port, --upstream-port (both on 127.0.0.1), --lifetime."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--lifetime", type=float, default=3600.0, help="exit after this long")
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.port, args.upstream_port, args.lifetime))


if __name__ == "__main__":
    main()
