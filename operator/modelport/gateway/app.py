"""The gateway's raw ASGI app: one endpoint, its routes, and how a request is proxied.

A proxied request goes: route → content type → body (bounded) → JSON → task check →
validation → router (traffic split) → policy → provider translation + upstream I/O →
response. Each step fails with a :class:`GatewayError`, which becomes an OpenAI-shaped
JSON error; nothing else reaches the client, so a bug shows up as a 500 with a request
id in the log, never as a traceback.

While a proxied request is in flight a watcher task awaits the client's
``http.disconnect`` and cancels the request's task, which closes the upstream response at
once (see :meth:`GatewayApp._guarded`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from modelport.gateway.errors import (
    BAD_REQUEST,
    DEADLINE_EXCEEDED,
    ENDPOINT_NOT_FOUND,
    INTERNAL_ERROR,
    METHOD_NOT_ALLOWED,
    RESOURCE_DOES_NOT_EXIST,
    GatewayError,
)
from modelport.gateway.metrics import Metrics
from modelport.gateway.protocol import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    validate,
)
from modelport.gateway.providers import REGISTRY
from modelport.gateway.providers.base import Call, Provider
from modelport.gateway.secrets import SecretStore
from modelport.gateway.traffic import AdmitAll, Policy, Router
from modelport.gateway.upstream import KEEPALIVE_SECONDS, MAX_IDLE_PER_ORIGIN, Upstream
from modelport.gatewayconfig import ConfigError, EntityConfig, GatewayConfig, Task

log = logging.getLogger("modelport.gateway")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

REQUEST_MODELS: dict[Task, type[ChatRequest | CompletionRequest | EmbeddingRequest]] = {
    Task.CHAT: ChatRequest,
    Task.COMPLETIONS: CompletionRequest,
    Task.EMBEDDINGS: EmbeddingRequest,
}
OPENAI_PATHS = {
    Task.CHAT: "/v1/chat/completions",
    Task.COMPLETIONS: "/v1/completions",
    Task.EMBEDDINGS: "/v1/embeddings",
}
JSON = b"application/json"
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # no proxy in between may buffer the stream
]
DONE = b"data: [DONE]\n\n"


@dataclass(slots=True)
class _Exchange:
    """One proxied request's progress, shared by the work and the disconnect watcher."""

    started: bool = False
    finished: bool = False
    status: int = 0


def check_providers(config: GatewayConfig) -> None:
    """Fail at start-up when an entity's provider cannot serve its task."""
    for entity in config.entities:
        provider = REGISTRY[entity.provider]
        if entity.task not in provider.tasks:
            supported = ", ".join(sorted(t.value for t in provider.tasks))
            raise ConfigError(
                f"entities.{entity.name}: provider {entity.provider.value} cannot serve task "
                f"{entity.task.value}; it serves {supported}"
            )


class GatewayApp:
    """The ASGI callable for one endpoint."""

    def __init__(
        self,
        config: GatewayConfig,
        secrets_dir: Path,
        *,
        policy: Policy | None = None,
        router: Router | None = None,
        max_idle_per_origin: int = MAX_IDLE_PER_ORIGIN,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
    ) -> None:
        check_providers(config)
        self.config = config
        self.secrets = SecretStore(secrets_dir)
        self.upstream = Upstream(
            self.secrets,
            config.request_timeout_seconds,
            max_idle_per_origin=max_idle_per_origin,
            keepalive_seconds=keepalive_seconds,
        )
        self.router = router or Router(config)
        self.policy: Policy = policy or AdmitAll()
        self.metrics = Metrics()
        self._started = False
        ep = config.endpoint_name
        proxied: dict[str, Task | None] = {}
        for task, path in OPENAI_PATHS.items():
            proxied[path] = task
            proxied[path.replace("/v1/", "/serving-endpoints/", 1)] = task
        self._proxied = proxied
        self._invocations = f"/serving-endpoints/{ep}/invocations"
        self._models_body = orjson.dumps(
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": 0, "owned_by": "modelport"}
                    for name in [ep, *(e.name for e in config.entities)]
                ],
            }
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.upstream.start()  # the session belongs to the serving loop
                self._started = True
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._started = False
                await self.upstream.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            if path in self._proxied or path == self._invocations:
                if method != "POST":
                    raise _method_not_allowed(path, "POST")
                task = self._proxied.get(path) or self.config.task
                await self._proxy(scope, receive, send, path, task)
            elif path in ("/v1/models", "/serving-endpoints/models"):
                _require(method, path, "GET")
                await _respond(send, 200, self._models_body)
            elif path == "/healthz":
                _require(method, path, "GET")
                await _respond(send, 200, b'{"status":"ok"}')
            elif path == "/readyz":
                _require(method, path, "GET")
                await self._readyz(send)
            elif path == "/metrics":
                _require(method, path, "GET")
                await _respond(
                    send, 200, self.metrics.render(), b"text/plain; version=0.0.4; charset=utf-8"
                )
            elif path.startswith("/serving-endpoints/") and path.endswith("/invocations"):
                name = path.removeprefix("/serving-endpoints/").removesuffix("/invocations")
                raise GatewayError(
                    404,
                    ENDPOINT_NOT_FOUND,
                    f"endpoint {name!r} is not served here; this gateway serves "
                    f"{self.config.endpoint_name!r}",
                )
            else:
                raise GatewayError(
                    404,
                    RESOURCE_DOES_NOT_EXIST,
                    f"no route {method} {path}; use {OPENAI_PATHS[self.config.task]} or "
                    f"{self._invocations}",
                )
        except GatewayError as exc:
            await _respond(send, exc.status, exc.body(), extra=_allow(exc))
        except _DisconnectedError:
            return  # nobody is left to answer

    async def _readyz(self, send: Send) -> None:
        missing = [m for e in self.config.entities for m in self.secrets.missing(e.credentials)]
        if not self._started or missing:
            reason = (
                "starting" if not self._started else f"{len(missing)} credential file(s) missing"
            )
            await _respond(send, 503, orjson.dumps({"status": "not ready", "reason": reason}))
            return
        await _respond(send, 200, b'{"status":"ready"}')

    async def _proxy(
        self, scope: Scope, receive: Receive, send: Send, path: str, task: Task
    ) -> None:
        call, plan = await self._parse(scope, receive, path, task)
        exchange = _Exchange()
        start = time.monotonic()
        self.metrics.in_flight += 1
        entity = plan[0]
        try:
            entity = await self._guarded(
                receive, self._dispatch(call, plan, send, exchange), exchange
            )
        finally:
            self.metrics.in_flight -= 1
            self.metrics.observe(
                entity.name, path, exchange.status or 499, time.monotonic() - start
            )

    async def _parse(
        self, scope: Scope, receive: Receive, path: str, task: Task
    ) -> tuple[Call, list[EntityConfig]]:
        if task is not self.config.task:
            raise GatewayError(
                400,
                BAD_REQUEST,
                f"endpoint {self.config.endpoint_name!r} serves {self.config.task.value}; send "
                f"this request to {OPENAI_PATHS[self.config.task]} or {self._invocations}",
            )
        body = await _read_body(scope, receive, self.config.max_request_bytes)
        try:
            raw = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise GatewayError(400, BAD_REQUEST, f"request body is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise GatewayError(400, BAD_REQUEST, "request body must be a JSON object")
        request = validate(REQUEST_MODELS[task], raw)
        plan = self.router.plan(request.model)
        stream = bool(getattr(request, "stream", False))
        options = getattr(request, "stream_options", None)
        call = Call(
            entity=plan[0],
            task=task,
            raw=raw,
            request=request,
            stream=stream,
            include_usage=bool(stream and options is not None and options.include_usage),
        )
        return call, plan

    async def _dispatch(
        self, call: Call, plan: list[EntityConfig], send: Send, exchange: _Exchange
    ) -> EntityConfig:
        """Try the planned entities in order; only errors before the response started and
        worth retrying elsewhere (429, 5xx) move on to the next one (fallback)."""
        for i, entity in enumerate(plan):
            call.entity = entity
            provider = REGISTRY[entity.provider]
            try:
                await self.policy.admit(call)
                async with asyncio.timeout(self.config.request_timeout_seconds):
                    if call.stream:
                        await self._stream(call, provider, send, exchange)
                    else:
                        await self._complete(call, provider, send, exchange)
                return entity
            except TimeoutError:
                error = GatewayError(
                    504,
                    DEADLINE_EXCEEDED,
                    f"no complete answer within the request timeout of "
                    f"{self.config.request_timeout_seconds:g}s",
                )
            except GatewayError as exc:
                error = exc
            except Exception:
                incident = uuid.uuid4().hex[:12]
                log.exception("unexpected error (incident %s)", incident)
                error = GatewayError(500, INTERNAL_ERROR, f"internal error (incident {incident})")
            retryable = error.status == 429 or error.status >= 500
            if exchange.started or not retryable or i == len(plan) - 1:
                await self._fail(send, exchange, error, entity)
                return entity
            log.info("falling back from entity=%s after %s", entity.name, error.status)
        return plan[-1]

    async def _complete(
        self, call: Call, provider: Provider, send: Send, exchange: _Exchange
    ) -> None:
        body, usage = await self.upstream.complete(call, provider)
        if usage is not None:
            self.metrics.add_tokens(call.entity.name, usage.prompt_tokens, usage.completion_tokens)
        exchange.started = exchange.finished = True
        exchange.status = 200
        await _respond(send, 200, body, served=call.entity.name)

    async def _stream(
        self, call: Call, provider: Provider, send: Send, exchange: _Exchange
    ) -> None:
        async with self.upstream.stream(call, provider) as upstream:
            headers = [*SSE_HEADERS, (b"served-model-name", call.entity.name.encode())]
            exchange.started = True
            exchange.status = 200
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            async for payloads in upstream:
                frame = b"".join(b"data: " + p + b"\n\n" for p in payloads)
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            usage = upstream.translator.usage
            if usage is not None:
                self.metrics.add_tokens(
                    call.entity.name, usage.prompt_tokens, usage.completion_tokens
                )
        exchange.finished = True
        await send({"type": "http.response.body", "body": DONE, "more_body": False})

    async def _fail(
        self, send: Send, exchange: _Exchange, error: GatewayError, entity: EntityConfig
    ) -> None:
        if error.status >= 500:
            log.warning(
                "entity=%s status=%s code=%s: %s",
                entity.name,
                error.status,
                error.code,
                error.message,
            )
        if not exchange.started:
            exchange.started = exchange.finished = True
            exchange.status = error.status
            await _respond(send, error.status, error.body(), served=entity.name)
            return
        # Headers are gone: the OpenAI SDKs raise on an SSE event carrying "error".
        exchange.finished = True
        exchange.status = error.status
        frame = b"data: " + error.body() + b"\n\n"
        await send({"type": "http.response.body", "body": frame, "more_body": False})

    async def _guarded(
        self, receive: Receive, work: Awaitable[EntityConfig], exchange: _Exchange
    ) -> EntityConfig:
        """Run ``work`` in this task, cancelling it as soon as the client disconnects.

        The work runs here and only the watcher gets a task of its own: one task a
        request, not two. A cancellation is ours when the watcher saw the disconnect and
        no one else cancelled this task too (``uncancel`` leaves no request pending).
        """
        current = asyncio.current_task()
        assert current is not None  # always inside a task under an ASGI server
        disconnected = False

        async def watch() -> None:
            nonlocal disconnected
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    # After the last byte the server reports a disconnect too; that one
                    # must not cancel the bookkeeping still running.
                    if not exchange.finished:
                        disconnected = True
                        current.cancel()
                    return

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            return await work
        except asyncio.CancelledError:
            if disconnected and current.uncancel() == 0:
                log.info("client disconnected; upstream request closed")
                raise _DisconnectedError from None
            raise
        finally:
            # Not awaited: it holds nothing, and the loop finishes the cancellation.
            watcher.cancel()


class _DisconnectedError(Exception):
    """The client went away; nothing more can be sent."""


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body, once its content type is JSON and its size within ``limit``."""
    # One pass over the headers; the content type is judged first, then the length.
    content_type: bytes | None = None
    length: bytes | None = None
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            content_type = value if content_type is None else content_type
        elif name == b"content-length":
            length = value if length is None else length
    _check_content_type(content_type)
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise GatewayError(400, BAD_REQUEST, "content-length is not a number") from None
        if declared > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _DisconnectedError
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        if not message.get("more_body", False):
            if not chunks:
                return chunk  # the usual case: the whole body in one message
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        413, BAD_REQUEST, f"request body exceeds {limit} bytes; send a smaller request"
    )


def _check_content_type(value: bytes | None) -> None:
    if value is None:
        raise GatewayError(415, BAD_REQUEST, "content-type is missing; send 'application/json'")
    media = value.split(b";", 1)[0].strip().lower()
    if media == JSON or (media.startswith(b"application/") and media.endswith(b"+json")):
        return
    raise GatewayError(
        415,
        BAD_REQUEST,
        f"content-type {value.decode('latin-1')!r} is not supported; send 'application/json'",
    )


def _require(method: str, path: str, allowed: str) -> None:
    if method != allowed and not (allowed == "GET" and method == "HEAD"):
        raise _method_not_allowed(path, allowed)


def _method_not_allowed(path: str, allowed: str) -> GatewayError:
    return GatewayError(405, METHOD_NOT_ALLOWED, f"{path} accepts {allowed} only", allow=allowed)


def _allow(error: GatewayError) -> list[tuple[bytes, bytes]]:
    return [(b"allow", error.allow.encode())] if error.allow else []


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = JSON,
    *,
    served: str | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if served is not None:
        headers.append((b"served-model-name", served.encode()))
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
