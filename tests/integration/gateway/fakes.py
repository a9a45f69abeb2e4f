"""Real HTTP servers on loopback that stand in for providers, and a gateway runner.

`FakeProvider` is a threaded stdlib HTTP/1.1 server. Each test registers a handler per
(method, path); the handler gets the parsed request, checks what the provider's docs
require (path, auth headers, body fields) and answers with the provider's documented
shapes: a JSON body, an SSE stream or AWS event-stream frames, written chunk by chunk
with chunked transfer encoding so the gateway sees them arrive one at a time.

`RunningGateway` runs the real app under uvicorn on a loopback port in a thread.
"""

from __future__ import annotations

import binascii
import json
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import uvicorn

from modelport.gateway.app import GatewayApp
from modelport.gateway.server import build_app


@dataclass
class Seen:
    """A request as the fake provider received it."""

    method: str
    path: str
    raw_path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


@dataclass
class Reply:
    """What a handler answers: a status, headers and a body or a list of stream chunks.

    Broken answers, for the tests of what the gateway makes of them: ``declared_length``
    announces more body than is sent, then the connection closes; ``abort`` closes a
    chunked stream without its last (empty) chunk; ``close_delimited`` sends the chunks
    with neither length nor chunked encoding, the body ending when the connection closes
    (HTTP/1.1 allows it), so a cut there looks like a clean end.
    """

    status: int = 200
    body: bytes | None = None
    chunks: Iterable[bytes] | None = None
    content_type: str = "application/json"
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    declared_length: int | None = None
    abort: bool = False
    close_delimited: bool = False


def json_reply(data: Any, status: int = 200, **headers: str) -> Reply:
    return Reply(status=status, body=json.dumps(data).encode(), headers=dict(headers))


def chat_reply(text: str) -> Reply:
    """A chat completion answering ``text``, with usage."""
    return json_reply(
        {
            "id": "x",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": text},
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    )


def sse(events: Iterable[tuple[str | None, Any]], *, delay: float = 0.0) -> Reply:
    """An SSE reply; each event is (event name or None, JSON-able data or a raw string)."""
    chunks = []
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data)
        head = f"event: {name}\n" if name else ""
        chunks.append(f"{head}data: {text}\n\n".encode())
    return Reply(chunks=chunks, content_type="text/event-stream", delay=delay)


def eventstream_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude, prelude CRC, string headers, payload, CRC."""
    encoded = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        encoded += struct.pack("!B", len(n)) + n + b"\x07" + struct.pack("!H", len(v)) + v
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack("!II", total, len(encoded))
    prelude += struct.pack("!I", binascii.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + encoded + payload
    return message + struct.pack("!I", binascii.crc32(message) & 0xFFFFFFFF)


def bedrock_event(event_type: str, payload: dict[str, Any]) -> bytes:
    return eventstream_frame(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
        json.dumps(payload).encode(),
    )


Handler = Callable[[Seen], Reply]


class FakeProvider:
    """A loopback HTTP server with per-route handlers and a log of what it received."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        """`host`: the address to listen on (loopback; pods need the host's address)."""
        self.routes: dict[tuple[str, str], Handler] = {}
        self.seen: list[Seen] = []
        self.disconnects: list[float] = []
        """Monotonic times at which a client closed a stream mid-way."""
        self.stream_started = threading.Event()
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as separate writes

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                seen = Seen(
                    self.command,
                    parts.path,
                    self.path.split("?", 1)[0],
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                fake.seen.append(seen)
                handler = fake.routes.get((self.command, parts.path))
                if handler is None:
                    reply = json_reply(
                        {"error": f"fake: no route {self.command} {parts.path}"}, 404
                    )
                else:
                    try:
                        reply = handler(seen)
                    except AssertionError as exc:  # a failed check answers 400 with the reason
                        reply = json_reply({"error": {"message": f"fake check failed: {exc}"}}, 400)
                try:
                    self._write(reply)
                except OSError:  # the gateway went away first (timeout and disconnect tests)
                    self.close_connection = True

            def _write(self, reply: Reply) -> None:
                self.send_response(reply.status)
                self.send_header("content-type", reply.content_type)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                if reply.chunks is None:
                    body = reply.body or b""
                    length = reply.declared_length or len(body)
                    self.send_header("content-length", str(length))
                    self.end_headers()
                    try:
                        self.wfile.write(body)
                    except OSError:  # the gateway gave up first (timeout tests)
                        self.close_connection = True
                    if length != len(body):
                        self.close_connection = True
                    return
                if reply.close_delimited:
                    self.send_header("connection", "close")
                    self.end_headers()
                    for chunk in reply.chunks:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                    self.close_connection = True
                    return
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                fake.stream_started.set()
                for chunk in reply.chunks:
                    if reply.delay and self._peer_closed(reply.delay):
                        fake.disconnects.append(time.monotonic())
                        self.close_connection = True
                        return
                    try:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                    except OSError:
                        fake.disconnects.append(time.monotonic())
                        self.close_connection = True
                        return
                if reply.abort:
                    self.close_connection = True
                    return
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def _peer_closed(self, wait: float) -> bool:
                # Wait for the next chunk's time while watching the socket: a readable
                # socket that yields b"" is a peer that closed its end.
                deadline = time.monotonic() + wait
                while (left := deadline - time.monotonic()) > 0:
                    readable, _, _ = select.select([self.connection], [], [], min(left, 0.02))
                    if readable:
                        try:
                            if self.connection.recv(1, socket.MSG_PEEK) == b"":
                                return True
                        except OSError:
                            return True
                return False

        self._server = _CountingServer((host, 0), _Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def open_connections(self) -> int:
        """Client connections open right now (each holds a handler thread)."""
        return self._server.open_connections

    @property
    def peak_connections(self) -> int:
        """The most client connections that were open at once."""
        return self._server.peak_connections

    def route(self, method: str, path: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.routes[(method, path)] = handler
            return handler

        return register

    def start(self) -> FakeProvider:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def last(self, path: str | None = None) -> Seen:
        matching = [s for s in self.seen if path is None or s.path == path]
        assert matching, f"the fake provider saw no request to {path}"
        return matching[-1]


class _CountingServer(ThreadingHTTPServer):
    """A threaded server that counts its open client connections (one thread each)."""

    daemon_threads = True
    request_queue_size = 512  # bursts of concurrent connections must not hit the backlog

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._count_lock = threading.Lock()
        self.open_connections = 0
        self.peak_connections = 0

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._count_lock:
            self.open_connections += 1
            self.peak_connections = max(self.peak_connections, self.open_connections)
        try:
            # Serves keep-alive requests until the client closes, then closes its end.
            super().process_request_thread(request, client_address)
        finally:
            with self._count_lock:
                self.open_connections -= 1


class RunningGateway:
    """The gateway app served by uvicorn on a loopback port, in a background thread."""

    def __init__(self, app: GatewayApp, secrets_dir: Path) -> None:
        self.app = app
        self.secrets_dir = secrets_dir
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def start(self) -> RunningGateway:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the gateway did not start within 10 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def write_secret(self, relative: str, value: str) -> None:
        """Replace a credential file the way the kubelet does: write aside, then rename."""
        path = self.secrets_dir / relative
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(value)
        tmp.replace(path)


def write_config(root: Path, config: dict[str, Any], secrets: dict[str, str]) -> tuple[Path, Path]:
    """Lay out a --config and a --secrets directory as the pod would see them."""
    config_dir = root / "config"
    secrets_dir = root / "secrets"
    config_dir.mkdir(parents=True, exist_ok=True)
    for relative, value in secrets.items():
        path = secrets_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value)
    secrets_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "gateway.json").write_text(json.dumps(config))
    return config_dir, secrets_dir


def start_gateway(root: Path, config: dict[str, Any], secrets: dict[str, str]) -> RunningGateway:
    config_dir, secrets_dir = write_config(root, config, secrets)
    return RunningGateway(build_app(config_dir, secrets_dir), secrets_dir).start()


def vllm(name: str, base: str, model: str | None = None) -> dict[str, Any]:
    """A self-hosted entity (an OpenAI-compatible server such as vLLM) at ``base``."""
    return {
        "name": name,
        "task": "llm/v1/chat",
        "provider": "self-hosted",
        "modelName": model or name,
        "baseUrl": base,
    }


def endpoint(
    *entities: dict[str, Any],
    routes: list[dict[str, Any]] | None = None,
    name: str = "ep",
    **extra: Any,
) -> dict[str, Any]:
    """A gateway.json document. Caller authentication is off unless ``aiGateway`` sets
    ``auth``: these tests are about providers and behaviour (test_auth.py is about auth)."""
    doc: dict[str, Any] = {"version": 1, "endpointName": name, "entities": list(entities)}
    if routes is not None:
        doc["routes"] = routes
    ai = dict(extra.pop("aiGateway", {}))
    ai.setdefault("auth", {"enabled": False})
    doc["aiGateway"] = ai
    doc.update(extra)
    return doc


def sse_lines(iterator: Iterator[bytes]) -> list[bytes]:
    return [line for line in iterator if line]
