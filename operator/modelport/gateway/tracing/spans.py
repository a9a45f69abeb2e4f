"""A finished request as span records, with the GenAI semantic conventions. Pure but
for the attempt spans' ids, which are drawn here.

Attribute names follow OpenTelemetry's semantic conventions: HTTP server attributes on
the request's span, and the GenAI client attributes (``gen_ai.*``, conventions 1.37 and
later) on each upstream call. ``gen_ai.system``, the older name of
``gen_ai.provider.name``, is written too: tracing back ends that predate the rename key
their LLM views on it. Modelport's own facts are ``modelport.*``.

Times: the context keeps monotonic seconds; a span's wall-clock time is the request's
arrival (``started_at``) plus the monotonic offset, so spans of one request never
disagree with each other, whatever the wall clock does meanwhile.

The upstream call's span covers its attempt (the hooks before a call are in-memory
checks of microseconds); a skipped attempt (no ready pod, an open breaker) has no
upstream span.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from modelport.gateway.context import Attempt, RequestContext, TraceIds
from modelport.gateway.tracing.ids import new_span_id
from modelport.gatewayconfig import EntityConfig, ProviderName, Task

SpanKind = Literal["server", "internal", "client"]
AttributeValue = str | int | float | bool
Attributes = dict[str, AttributeValue]

OPERATIONS: Mapping[Task, str] = {
    Task.CHAT: "chat",
    Task.COMPLETIONS: "text_completion",
    Task.EMBEDDINGS: "embeddings",
}
"""``gen_ai.operation.name`` of each task."""

PROVIDERS: Mapping[ProviderName, str] = {
    ProviderName.OPENAI: "openai",
    ProviderName.ANTHROPIC: "anthropic",
    ProviderName.COHERE: "cohere",
    ProviderName.AMAZON_BEDROCK: "aws.bedrock",
    ProviderName.GOOGLE_CLOUD_VERTEX_AI: "gcp.vertex_ai",
    ProviderName.AI21LABS: "ai21",
    ProviderName.DATABRICKS_MODEL_SERVING: "databricks",
    ProviderName.CUSTOM: "custom",
    ProviderName.SELF_HOSTED: "modelport.self_hosted",
}
"""``gen_ai.provider.name``: the conventions' well-known values where there is one."""


@dataclass(frozen=True, slots=True)
class SpanEvent:
    """A point in a span's time (the first token)."""

    name: str
    time: float
    """Wall-clock seconds."""


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One span, ready for any exporter: hex ids, wall-clock seconds, attributes."""

    name: str
    kind: SpanKind
    span_id: str
    parent_span_id: str | None
    start: float
    end: float
    attributes: Attributes
    error: str | None = None
    """The span's status is ERROR with this description; None: unset (OK)."""
    events: tuple[SpanEvent, ...] = field(default=())


def request_spans(ctx: RequestContext, entities: Mapping[str, EntityConfig]) -> list[SpanRecord]:
    """The spans of a finished, traced request (none when it is not traced): the request,
    then each attempt followed by its upstream call."""
    trace = ctx.trace
    if trace is None:
        return []
    wall = _clock(ctx)
    operation = OPERATIONS.get(ctx.task) if ctx.task is not None else None
    status = ctx.status or 499
    attributes: Attributes = {
        "http.request.method": "POST",
        "url.path": ctx.route,
        "http.response.status_code": status,
        "modelport.endpoint": ctx.endpoint,
        "modelport.request_id": ctx.request_id,
        "modelport.outcome": ctx.outcome,
    }
    if operation is not None:
        attributes["gen_ai.operation.name"] = operation
    if ctx.model is not None:
        attributes["gen_ai.request.model"] = ctx.model
    if ctx.stream:
        attributes["modelport.stream"] = True
    if ctx.principal is not None:
        attributes["modelport.principal"] = ctx.principal.label
    if ctx.entity is not None:
        attributes["modelport.served_entity"] = ctx.entity
    if ctx.error_code is not None or status >= 400:
        attributes["error.type"] = ctx.error_code or str(status)
    _usage(attributes, ctx)
    events: tuple[SpanEvent, ...] = ()
    if ctx.first_byte is not None and status < 400:
        name = "gen_ai.first_token" if ctx.stream else "first_byte"
        events = (SpanEvent(name, wall(ctx.first_byte)),)
    end = wall(ctx.ended if ctx.ended is not None else ctx.started)
    spans = [
        SpanRecord(
            name=f"POST {ctx.route}",
            kind="server",
            span_id=trace.span_id,
            parent_span_id=trace.parent_span_id,
            start=ctx.started_at,
            end=end,
            attributes=attributes,
            error=f"HTTP {status}" if status >= 500 else None,
            events=events,
        )
    ]
    last = len(ctx.attempts) - 1
    for index, attempt in enumerate(ctx.attempts):
        spans += _attempt_spans(
            ctx, trace, attempt, entities.get(attempt.entity), operation, index == last, wall
        )
    return spans


def _attempt_spans(
    ctx: RequestContext,
    trace: TraceIds,
    attempt: Attempt,
    entity: EntityConfig | None,
    operation: str | None,
    answered: bool,
    wall: _Wall,
) -> list[SpanRecord]:
    """An attempt's span, and its upstream call's when a request was sent."""
    start = wall(attempt.started)
    end = wall(attempt.ended or attempt.started)
    failed = attempt.status != 200
    error = attempt.error_code or (str(attempt.status) if failed else None)
    attempt_id = new_span_id()  # drawn here, off the request path: nothing upstream names it
    own: Attributes = {
        "modelport.served_entity": attempt.entity,
        "modelport.status": attempt.status,
    }
    if attempt.skipped is not None:
        own["modelport.attempt.skipped"] = attempt.skipped
    if error is not None:
        own["error.type"] = error
    spans = [
        SpanRecord(
            name=f"attempt {attempt.entity}",
            kind="internal",
            span_id=attempt_id,
            parent_span_id=trace.span_id,
            start=start,
            end=end,
            attributes=own,
            error=error if failed else None,
        )
    ]
    if attempt.skipped is not None or attempt.span_id is None:
        return spans
    model = entity.model_name if entity is not None else attempt.entity
    call: Attributes = {"gen_ai.request.model": model}
    if operation is not None:
        call["gen_ai.operation.name"] = operation
    if entity is not None:
        provider = PROVIDERS.get(entity.provider, entity.provider.value)
        openai = entity.openai
        if entity.provider is ProviderName.OPENAI and openai and openai.api_type != "openai":
            provider = "azure.ai.openai"
        call["gen_ai.provider.name"] = provider
        call["gen_ai.system"] = provider
        _server(call, entity)
    _parameters(call, ctx)
    if answered and not failed:
        _usage(call, ctx)
    if error is not None:
        call["error.type"] = error
    spans.append(
        SpanRecord(
            name=f"{operation or 'call'} {model}",
            kind="client",
            span_id=attempt.span_id,
            parent_span_id=attempt_id,
            start=start,
            end=end,
            attributes=call,
            error=error if failed else None,
        )
    )
    return spans


def _usage(attributes: Attributes, ctx: RequestContext) -> None:
    usage = ctx.usage
    if usage is None:
        return
    attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
    attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
    if usage.estimated:
        attributes["modelport.usage.estimated"] = True


def _parameters(attributes: Attributes, ctx: RequestContext) -> None:
    """The request's sampling parameters (``gen_ai.request.*``), those it set."""
    request = ctx.request
    if request is None:
        return
    for name, key in (
        ("max_tokens", "gen_ai.request.max_tokens"),
        ("temperature", "gen_ai.request.temperature"),
        ("top_p", "gen_ai.request.top_p"),
        ("seed", "gen_ai.request.seed"),
    ):
        value = getattr(request, name, None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[key] = value


def _server(attributes: Attributes, entity: EntityConfig) -> None:
    """``server.address``/``server.port`` of an entity with a base URL (the providers'
    public hosts are implied by ``gen_ai.provider.name``)."""
    if not entity.base_url:
        return
    parts = urlsplit(entity.base_url)
    if parts.hostname:
        attributes["server.address"] = parts.hostname
        if parts.port is not None:
            attributes["server.port"] = parts.port


class _Wall:
    """Monotonic seconds of one request -> wall-clock seconds."""

    __slots__ = ("_offset",)

    def __init__(self, offset: float) -> None:
        self._offset = offset

    def __call__(self, monotonic: float) -> float:
        return monotonic + self._offset


def _clock(ctx: RequestContext) -> _Wall:
    return _Wall(ctx.started_at - ctx.started)
