"""The gateway's raw ASGI app: one endpoint, its routes, and how a request is proxied.

A proxied request passes the stages of :mod:`modelport.gateway.pipeline`: authenticate
(headers only) → content type → body (bounded) → JSON → task check → validation → admit
→ plan (traffic split, fallback order) → (a hold, for an entity starting from zero
replicas: :mod:`modelport.gateway.coldstart`) → attempt(s): provider translation +
upstream I/O → relay through the taps → finish (metrics, sinks), which runs whatever happened. Each
step fails with a :class:`GatewayError`, which becomes an OpenAI-shaped JSON error;
nothing else reaches the client, so a bug shows up as a 500 with an incident id in the
log, never as a traceback. Every step records into the request's
:class:`~modelport.gateway.context.RequestContext`.

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

from modelport.gateway.auth.base import Fingerprinter
from modelport.gateway.coldstart import MAX_PAUSE_SECONDS, ColdStarts, Waker
from modelport.gateway.context import Attempt, RequestContext, TokenUsage
from modelport.gateway.errors import (
    BAD_REQUEST,
    DEADLINE_EXCEEDED,
    ENDPOINT_NOT_FOUND,
    INTERNAL_ERROR,
    METHOD_NOT_ALLOWED,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
    GatewayError,
    UnreachableError,
)
from modelport.gateway.fallback import Breakers, moves_on, retry_after_header, retry_delay
from modelport.gateway.invocations import InvocationRequest
from modelport.gateway.metrics import Metrics
from modelport.gateway.pipeline import Pipeline, Tap
from modelport.gateway.protocol import (
    CLIENT_REQUEST_ID,
    USAGE_CONTEXT,
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    take_client_fields,
    validate,
)
from modelport.gateway.providers import REGISTRY
from modelport.gateway.providers.base import Call, Provider
from modelport.gateway.readiness import EndpointSliceReadiness, Readiness
from modelport.gateway.secrets import SecretStore
from modelport.gateway.traffic import Router
from modelport.gateway.upstream import (
    KEEPALIVE_SECONDS,
    MAX_IDLE_PER_ORIGIN,
    Upstream,
    UpstreamStream,
)
from modelport.gateway.usage import estimate_completion_of_body, estimated
from modelport.gatewayconfig import ConfigError, EntityConfig, GatewayConfig, Task

log = logging.getLogger("modelport.gateway")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

REQUEST_MODELS: dict[
    Task, type[ChatRequest | CompletionRequest | EmbeddingRequest | InvocationRequest]
] = {
    Task.CHAT: ChatRequest,
    Task.COMPLETIONS: CompletionRequest,
    Task.EMBEDDINGS: EmbeddingRequest,
    Task.CUSTOM: InvocationRequest,
}
OPENAI_PATHS = {
    Task.CHAT: "/v1/chat/completions",
    Task.COMPLETIONS: "/v1/completions",
    Task.EMBEDDINGS: "/v1/embeddings",
}
"""The OpenAI routes; a custom model (Task.CUSTOM) has only the invocations path."""
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
    """The status line went to the client: from here on only the body can follow."""
    finished: bool = False
    disconnected: bool = False
    chunks: int = 0
    """Stream chunks relayed (the completion estimate when the upstream reports no usage)."""
    body: bytes | None = None
    """A whole response body, kept for the estimate only when it carried no usage."""
    extend: Callable[[], None] | None = None
    """Lifts an attempt's share of the deadline to all of it, once a stream has started
    (fallback is over then); None when the attempt already has all of it."""


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


def default_pipeline(
    config: GatewayConfig, secrets_dir: Path, metrics: Metrics | None = None
) -> Pipeline:
    """The stages ``config`` asks for: caller authentication when it is enabled, rate
    limits when there are any (their tap and settlement only with a token limit), the
    guardrails of each direction that has a check on (input after the limits: a request
    over its limit is refused before any guard model is asked), and the recording tap
    (last, so it sees what the client gets) and the table writers when usage rows or an
    inference table are on (``metrics`` counts their rows), and, when the cluster asks
    for them, the trace context (an opener and an attempt hook) with its span exporter,
    and the access log (sinks)."""
    ai = config.ai_gateway
    authenticator = None
    if ai.auth.enabled:
        from modelport.gateway.auth.callers import build

        authenticator = build(ai.auth, secrets_dir, Fingerprinter())
    guardrails = ai.guardrails
    tables = bool((ai.usage_tracking_enabled and ai.usage_table) or ai.inference_table)
    observed = config.tracing is not None or config.access_log
    if not (
        ai.rate_limits or guardrails.input.active or guardrails.output.active or tables or observed
    ):
        return Pipeline(authenticator=authenticator)
    openers: list[Any] = []
    admission: list[Any] = []
    attempt_hooks: list[Any] = []
    taps: list[Any] = []
    sinks: list[Any] = []
    judges: list[Any] = []
    if config.tracing is not None:
        from modelport.gateway.tracing import otlp
        from modelport.gateway.tracing.stages import TraceStart

        start = TraceStart(config.tracing.sample_ratio)
        openers.append(start)
        attempt_hooks.append(start)
        sinks.append(otlp.build(config, config.tracing))
    if config.access_log:
        from modelport.gateway.accesslog import AccessLog

        sinks.append(AccessLog())
    if ai.rate_limits:
        from modelport.gateway import ratelimit

        limiter = ratelimit.build(config, secrets_dir, metrics or Metrics())
        admission.append(limiter)
        if limiter.policy.has_tokens:
            taps.append(limiter)
            sinks.append(limiter)
    if guardrails.input.active or guardrails.output.active:
        from modelport.gateway.guardrails.stages import build as build_guardrails

        checks_in, checks_out = build_guardrails(guardrails, secrets_dir)
        if checks_in is not None:
            admission.append(checks_in)
        if checks_out is not None:
            # Before the limiter's tap: tokens are counted on what the client receives.
            taps.insert(0, checks_out)
            if checks_out.judges:
                judges.append(checks_out)
    if tables:
        from modelport.gateway.tables import stages

        recorder, writers = stages.build(config, secrets_dir, metrics)
        taps.extend(recorder)  # last: it records what the client gets
        sinks.extend(writers)
    return Pipeline(
        authenticator=authenticator,
        openers=tuple(openers),
        admission=tuple(admission),
        attempt_hooks=tuple(attempt_hooks),
        taps=tuple(taps),
        sinks=tuple(sinks),
        judges=tuple(judges),
    )


class GatewayApp:
    """The ASGI callable for one endpoint."""

    def __init__(
        self,
        config: GatewayConfig,
        secrets_dir: Path,
        *,
        pipeline: Pipeline | None = None,
        router: Router | None = None,
        max_idle_per_origin: int = MAX_IDLE_PER_ORIGIN,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
        breakers: Breakers | None = None,
        readiness: Readiness | None = None,
        waker: Waker | None = None,
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
        usage_endpoint = None
        if config.ai_gateway.usage_tracking_enabled:
            usage_endpoint = f"{config.endpoint_namespace}/{config.endpoint_name}"
        self.metrics = Metrics(usage_endpoint=usage_endpoint)
        if pipeline is None:
            pipeline = default_pipeline(config, secrets_dir, self.metrics)
        self.pipeline = pipeline
        # Fallback's state: each entity's breaker, and which self-hosted ones have a ready
        # pod (from their EndpointSlices, when the operator set that up).
        self.breakers = breakers or Breakers(
            [e.name for e in config.entities], on_change=self.metrics.breaker_changed
        )
        fallback = config.ai_gateway.fallback_enabled
        scales = config.scale_to_zero
        if readiness is None and config.readiness is not None and (fallback or scales):
            readiness = EndpointSliceReadiness(config.readiness)
        self.readiness = readiness
        # Entities that scale to zero: their requests are held while they start.
        self.cold_starts = (
            ColdStarts(scales, readiness, self.metrics, waker=waker) if scales else None
        )
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
                await self.metrics.start()
                if self.readiness is not None:
                    await self.readiness.start()
                for stage in self._stages():
                    if hasattr(stage, "start"):
                        await stage.start()
                self._started = True
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._started = False
                # Together: each sink drains within its own budget (a table writer's 10 s),
                # and the pod's grace period must cover the longest, not their sum.
                await asyncio.gather(
                    *(stage.aclose() for stage in self._stages() if hasattr(stage, "aclose"))
                )
                if self.cold_starts is not None:
                    await self.cold_starts.aclose()
                if self.readiness is not None:
                    await self.readiness.aclose()
                await self.upstream.aclose()
                await self.metrics.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _stages(self) -> list[Any]:
        """Every configured stage; those with a lifetime of their own (sinks, verifiers)
        have ``start`` and/or ``aclose``, called at start-up and shutdown."""
        p = self.pipeline
        stages = [
            p.authenticator,
            *p.openers,
            *p.admission,
            *p.attempt_hooks,
            *p.taps,
            *p.judges,
            *p.sinks,
        ]
        # One object may be several stages (the rate limiter; output guardrails, a tap and
        # a judge): started and closed once.
        return list({id(s): s for s in stages if s is not None}.values())

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
                auth = self.pipeline.authenticator
                if auth is not None:
                    await auth.authenticate(
                        RequestContext(self.config.endpoint_name, path), scope["headers"]
                    )
                await _respond(send, 200, self._models_body)
            elif path == "/healthz":
                _require(method, path, "GET")
                await _respond(send, 200, b'{"status":"ok"}')
            elif path == "/readyz":
                _require(method, path, "GET")
                await self._readyz(send)
            elif path == "/metrics":
                _require(method, path, "GET")
                body, content_type = self.metrics.render()
                await _respond(send, 200, body, content_type)
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
                    404, RESOURCE_DOES_NOT_EXIST, f"no route {method} {path}; {self._use()}"
                )
        except GatewayError as exc:
            await _respond(send, exc.status, exc.body(), extra=_extra_headers(exc))
        except _DisconnectedError:
            return  # nobody is left to answer

    def _use(self) -> str:
        """Where this endpoint's requests go, for error messages."""
        path = OPENAI_PATHS.get(self.config.task)
        return f"use {path} or {self._invocations}" if path else f"use {self._invocations}"

    async def _readyz(self, send: Send) -> None:
        missing = [m for e in self.config.entities for m in self.secrets.missing(e.credentials)]
        if not self._started or missing:
            reason = (
                "starting" if not self._started else f"{len(missing)} credential file(s) missing"
            )
            await _respond(send, 503, orjson.dumps({"status": "not ready", "reason": reason}))
            return
        store = self._rate_limit_store()
        if store is None:
            await _respond(send, 200, b'{"status":"ready"}')
            return
        # Reported, not failed on: an unready pod leaves the Service, and its callers would
        # get connection errors instead of the clean 503 (or the admission) of failOpen.
        state = {"status": "ready", "rateLimitStore": "up" if store.up else "unreachable"}
        await _respond(send, 200, orjson.dumps(state))

    def _rate_limit_store(self) -> Any:
        """The shared rate-limit store, when this gateway counts in one."""
        for stage in self.pipeline.admission:
            store = getattr(stage, "store", None)
            if store is not None and hasattr(store, "address"):
                return store
        return None

    async def _proxy(
        self, scope: Scope, receive: Receive, send: Send, path: str, task: Task
    ) -> None:
        """One proxied request through every stage; ``finish`` runs whatever happens."""
        ctx = RequestContext(self.config.endpoint_name, path)
        exchange = _Exchange()
        call: Call | None = None
        self.metrics.request_started()
        if self.pipeline.openers:
            for opener in self.pipeline.openers:
                opener.open(ctx, scope["headers"])
        try:
            try:
                auth = self.pipeline.authenticator
                if auth is not None:
                    await auth.authenticate(ctx, scope["headers"])
                call, plan = await self._parse(ctx, scope, receive, path, task)
                for stage in self.pipeline.admission:
                    await stage.admit(ctx, call)
            except GatewayError as exc:
                # Refused before any entity was tried: final, never retried elsewhere.
                await self._fail(send, ctx, exchange, exc)
                return
            await self._guarded(receive, self._dispatch(ctx, call, plan, send, exchange), exchange)
        except _DisconnectedError:
            exchange.disconnected = True
            raise
        finally:
            self._finish(ctx, exchange, call)

    def _finish(self, ctx: RequestContext, exchange: _Exchange, call: Call | None) -> None:
        """Always: close the context's books, count it, hand it to the sinks."""
        ctx.ended = time.monotonic()
        if exchange.disconnected or not exchange.finished:
            ctx.status, ctx.outcome = 499, "disconnected"
        request = call.request if call is not None else None
        # A custom model's usage is its rows, never tokens (ctx.tokens_apply is False).
        if (
            ctx.usage is None
            and ctx.status == 200
            and request is not None
            and not isinstance(request, InvocationRequest)
        ):
            if exchange.body is not None:
                ctx.usage = estimated(request, estimate_completion_of_body(exchange.body))
            else:
                ctx.usage = estimated(request, exchange.chunks)
        self.metrics.request_finished(ctx)
        if self.pipeline.sinks:
            self.pipeline.finish(ctx)

    async def _parse(
        self, ctx: RequestContext, scope: Scope, receive: Receive, path: str, task: Task
    ) -> tuple[Call, list[EntityConfig]]:
        if task is not self.config.task:
            raise GatewayError(
                400,
                BAD_REQUEST,
                f"endpoint {self.config.endpoint_name!r} serves {self.config.task.value}; "
                f"{self._use()}",
            )
        body = await _read_body(scope, receive, self.config.max_request_bytes)
        try:
            raw = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise GatewayError(400, BAD_REQUEST, f"request body is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise GatewayError(400, BAD_REQUEST, "request body must be a JSON object")
        if CLIENT_REQUEST_ID in raw or USAGE_CONTEXT in raw:
            ctx.client_request_id, ctx.usage_context = take_client_fields(raw)
        request = validate(REQUEST_MODELS[task], raw)
        if isinstance(request, InvocationRequest):
            ctx.tokens_apply, ctx.rows = False, request.check().rows()
        stream = bool(getattr(request, "stream", False))
        ctx.task, ctx.model, ctx.stream = task, request.model, stream
        ctx.request, ctx.request_body = request, body
        plan = self.router.plan(request.model)
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
        self,
        ctx: RequestContext,
        call: Call,
        plan: list[EntityConfig],
        send: Send,
        exchange: _Exchange,
    ) -> None:
        """Try the planned entities in order within one deadline (see
        :mod:`modelport.gateway.fallback`): the first answer is relayed; an error before
        the response started that another entity may not share (429, 5xx) moves on, once
        after a short ``Retry-After`` on the same entity; the last error is the answer.

        An entity that scales to zero and has no ready pod is woken, and its request held
        until one is (:mod:`modelport.gateway.coldstart`), unless fallback has another
        entity to spill it to; a connection it refuses is held and tried again."""
        deadline = ctx.started + self.config.request_timeout_seconds
        fallback = self.config.ai_gateway.fallback_enabled
        cold = self.cold_starts
        error: GatewayError | None = None
        answered_by = plan[0]  # the entity whose error stands
        skipped: list[str] = []
        for i, entity in enumerate(plan):
            # Fallback moves on from this entity: there is another one after it.
            spills = fallback and i < len(plan) - 1
            if cold is not None and cold.cold(entity.name):
                if spills:
                    cold.spilled(entity.name)
                    self._skipped(ctx, entity, "starting", skipped)
                    continue
                try:
                    await cold.hold(entity.name, deadline)
                except GatewayError as exc:
                    error, answered_by = exc, entity
                    self._skipped(ctx, entity, "starting", skipped, exc)
                    continue
            elif fallback and (reason := self._skip(entity)) is not None:
                self._skipped(ctx, entity, reason, skipped)
                continue
            retried = False
            refused = 0
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 and error is not None:
                    break  # no time left for another try: the last error stands
                # An attempt with entities after it gets an equal share of what is left (a
                # hanging entity must leave time for the next); the last gets all of it.
                share = max(remaining, 0) / (len(plan) - i if fallback else 1)
                error = await self._attempt(ctx, call, entity, send, exchange, share, deadline)
                answered_by = entity
                if error is None:
                    if cold is not None and cold.scales(entity.name):
                        cold.answered(entity.name)
                    return
                if exchange.started or not moves_on(error):
                    await self._fail(send, ctx, exchange, error, entity)
                    return
                if (
                    cold is not None
                    and isinstance(error, UnreachableError)
                    and cold.scales(entity.name)
                    and not spills
                ):
                    # Nothing was sent: it is starting, or just stopped. Hold, try again.
                    cold.refused(entity.name)
                    pause = min(MAX_PAUSE_SECONDS, 0.1 * 2**refused)
                    refused += 1
                    try:
                        await cold.hold(entity.name, deadline, pause=pause)
                    except GatewayError as exc:
                        error = exc
                        break
                    continue
                if not fallback or retried:
                    break
                delay = retry_delay(error, deadline - time.monotonic())
                if delay is None:
                    break
                retried = True
                log.info("retrying entity=%s after %.2fs (%s)", entity.name, delay, error.status)
                await asyncio.sleep(delay)
            if deadline - time.monotonic() <= 0:
                break
            log.info("falling back from entity=%s after %s", entity.name, error.status)
        if error is None:
            error = self._all_skipped(skipped)
        await self._fail(send, ctx, exchange, error, answered_by)

    @staticmethod
    def _skipped(
        ctx: RequestContext,
        entity: EntityConfig,
        reason: str,
        skipped: list[str],
        error: GatewayError | None = None,
    ) -> None:
        """Record an entity passed by without a request (``reason``: not_ready,
        breaker_open, starting)."""
        now = time.monotonic()
        status, code = (error.status, error.code) if error else (503, TEMPORARILY_UNAVAILABLE)
        ctx.attempts.append(Attempt(entity.name, now, now, status, code, reason))
        skipped.append(entity.name)

    def _skip(self, entity: EntityConfig) -> str | None:
        """Why fallback passes ``entity`` by without a request, or None to try it."""
        if self.readiness is not None and not self.readiness.ready(entity.name):
            return "not_ready"
        if not self.breakers.allow(entity.name):
            return "breaker_open"
        return None

    def _all_skipped(self, skipped: list[str]) -> GatewayError:
        wait = self.breakers.soonest_probe(skipped) or 1.0
        return GatewayError(
            503,
            TEMPORARILY_UNAVAILABLE,
            f"no served entity can answer now: {', '.join(skipped)} have no ready pod or are "
            "failing (circuit breaker open); try again shortly",
            headers=(retry_after_header(wait),),
        )

    async def _attempt(
        self,
        ctx: RequestContext,
        call: Call,
        entity: EntityConfig,
        send: Send,
        exchange: _Exchange,
        budget: float,
        deadline: float,
    ) -> GatewayError | None:
        """One try of ``entity`` within ``budget`` seconds (a stream that starts gets up to
        the request's ``deadline``); the error it ended with, or None when it answered."""
        call.entity = entity
        attempt = Attempt(entity.name, time.monotonic())
        ctx.attempts.append(attempt)
        provider = REGISTRY[entity.provider]
        hooks = self.pipeline.attempt_hooks
        error: GatewayError | None = None
        # The entity's load, which the autoscaler reads: an int up, and down in `finally`.
        series = self.metrics.entity(entity.name)
        series.in_flight += 1
        try:
            for hook in hooks:
                await hook.before(ctx, call, attempt)
            async with asyncio.timeout(budget) as timeout:
                if deadline - time.monotonic() > budget:
                    loop = asyncio.get_running_loop()
                    exchange.extend = lambda: timeout.reschedule(
                        loop.time() + deadline - time.monotonic()
                    )
                if call.stream:
                    await self._stream(ctx, call, provider, send, exchange)
                else:
                    await self._complete(ctx, call, provider, send, exchange)
        except TimeoutError:
            left = deadline - time.monotonic()
            error = GatewayError(
                504,
                DEADLINE_EXCEEDED,
                f"served entity {entity.name!r} gave no answer within its share ({budget:.3g}s) "
                "of the request timeout"
                if left > 0.001
                else f"no complete answer within the request timeout of "
                f"{self.config.request_timeout_seconds:g}s",
            )
        except GatewayError as exc:
            error = exc
        except asyncio.CancelledError:
            self.breakers[entity.name].abandoned()  # the client left: no verdict on it
            raise
        except Exception:
            incident = uuid.uuid4().hex[:12]
            log.exception("unexpected error (incident %s)", incident)
            error = GatewayError(500, INTERNAL_ERROR, f"internal error (incident {incident})")
        finally:
            series.in_flight -= 1
        exchange.extend = None
        attempt.ended = time.monotonic()
        attempt.status = 200 if error is None else error.status
        attempt.error_code = None if error is None else error.code
        if self.config.ai_gateway.fallback_enabled:
            self.breakers.record(entity.name, error)
        for hook in hooks:
            hook.after(ctx, attempt)
        return error

    async def _complete(
        self,
        ctx: RequestContext,
        call: Call,
        provider: Provider,
        send: Send,
        exchange: _Exchange,
    ) -> None:
        body, usage = await self.upstream.complete(call, provider)
        if usage is not None:
            ctx.usage = TokenUsage.reported(usage)
        elif ctx.tokens_apply:
            exchange.body = body
        if self.pipeline.taps:
            for tap in self.pipeline.open_taps(ctx, call):
                body = tap.body(body)
        for judge in self.pipeline.judges:
            await judge.judge(ctx, call, [body], False)
        exchange.started = True
        ctx.status = 200
        ctx.first_byte = time.monotonic()
        await _respond(send, 200, body, served=call.entity.name, extra=ctx.response_headers)
        exchange.finished = True

    async def _stream(
        self,
        ctx: RequestContext,
        call: Call,
        provider: Provider,
        send: Send,
        exchange: _Exchange,
    ) -> None:
        if self.pipeline.judges:
            await self._stream_judged(ctx, call, provider, send, exchange)
            return
        async with self.upstream.stream(call, provider) as upstream:
            taps = self.pipeline.open_taps(ctx, call) if self.pipeline.taps else None
            await _start_stream(ctx, call, send, exchange)
            async for payloads in upstream:
                stop = None
                if taps:
                    payloads, stop = _tapped(taps, payloads)
                if payloads:
                    if ctx.first_byte is None:
                        ctx.first_byte = time.monotonic()
                    exchange.chunks += len(payloads)
                    frame = b"".join(b"data: " + p + b"\n\n" for p in payloads)
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
                if stop is not None:
                    raise stop
            _take_usage(ctx, upstream)
        exchange.finished = True
        await send({"type": "http.response.body", "body": DONE, "more_body": False})

    async def _stream_judged(
        self,
        ctx: RequestContext,
        call: Call,
        provider: Provider,
        send: Send,
        exchange: _Exchange,
    ) -> None:
        """A stream whose whole answer must be judged first: held until the upstream has
        finished and the judges have passed it, then sent at once (before that, an upstream
        failure may still fall back)."""
        held: list[bytes] = []
        async with self.upstream.stream(call, provider) as upstream:
            taps = self.pipeline.open_taps(ctx, call) if self.pipeline.taps else None
            async for payloads in upstream:
                stop = None
                if taps:
                    payloads, stop = _tapped(taps, payloads)
                held.extend(payloads)
                if stop is not None:
                    raise stop
            _take_usage(ctx, upstream)
        for judge in self.pipeline.judges:
            await judge.judge(ctx, call, held, True)
        await _start_stream(ctx, call, send, exchange)
        ctx.first_byte = time.monotonic()
        exchange.chunks += len(held)
        frame = b"".join(b"data: " + p + b"\n\n" for p in held)
        exchange.finished = True
        await send({"type": "http.response.body", "body": frame + DONE, "more_body": False})

    async def _fail(
        self,
        send: Send,
        ctx: RequestContext,
        exchange: _Exchange,
        error: GatewayError,
        entity: EntityConfig | None = None,
    ) -> None:
        ctx.error_code = error.code
        ctx.outcome = "timeout" if error.code == DEADLINE_EXCEEDED else "error"
        if error.status >= 500:
            log.warning(
                "request=%s entity=%s status=%s code=%s: %s",
                ctx.request_id,
                entity.name if entity else "-",
                error.status,
                error.code,
                error.message,
            )
        if not exchange.started:
            exchange.started = True
            ctx.status = error.status
            ctx.first_byte = time.monotonic()
            served = entity.name if entity else None
            extra = _extra_headers(error)
            if ctx.response_headers:
                extra += ctx.response_headers
            await _respond(send, error.status, error.body(), served=served, extra=extra)
            exchange.finished = True
            return
        # Headers are gone: the OpenAI SDKs raise on an SSE event carrying "error".
        frame = b"data: " + error.body() + b"\n\n"
        await send({"type": "http.response.body", "body": frame, "more_body": False})
        exchange.finished = True

    async def _guarded(self, receive: Receive, work: Awaitable[None], exchange: _Exchange) -> None:
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
            await work
        except asyncio.CancelledError:
            if disconnected and current.uncancel() == 0:
                log.info("client disconnected; upstream request closed")
                raise _DisconnectedError from None
            raise
        finally:
            # Not awaited: it holds nothing, and the loop finishes the cancellation.
            watcher.cancel()


async def _start_stream(ctx: RequestContext, call: Call, send: Send, exchange: _Exchange) -> None:
    """Send a stream's status line and headers: from here on there is no fallback, and the
    attempt may use the rest of the request's deadline."""
    headers = [*SSE_HEADERS, (b"served-model-name", call.entity.name.encode())]
    if ctx.response_headers:
        headers += ctx.response_headers
    exchange.started = True
    if exchange.extend is not None:
        exchange.extend()
    ctx.status = 200
    await send({"type": "http.response.start", "status": 200, "headers": headers})


def _take_usage(ctx: RequestContext, upstream: UpstreamStream) -> None:
    """The provider's token counts of a finished stream, when it reported them."""
    usage = upstream.translator.usage
    if usage is not None:
        ctx.usage = TokenUsage.reported(usage)


def _tapped(taps: list[Tap], payloads: list[bytes]) -> tuple[list[bytes], GatewayError | None]:
    """Each payload through every tap, in order; an empty result drops the chunk. A tap
    that stops the stream ends the batch there: what passed before it is still sent."""
    out: list[bytes] = []
    for payload in payloads:
        for tap in taps:
            try:
                payload = tap.chunk(payload)
            except GatewayError as stop:
                return out, stop
            if not payload:
                break
        else:
            out.append(payload)
    return out, None


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


def _extra_headers(error: GatewayError) -> list[tuple[bytes, bytes]]:
    extra = [(b"allow", error.allow.encode())] if error.allow else []
    extra.extend(error.headers)
    return extra


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
