"""What the gateway knows about one request as it passes the pipeline: pure data, no I/O.

A :class:`RequestContext` is made when a proxied request arrives and handed, finished,
to every sink (metrics, usage rows, payload rows, traces). Each stage of
:mod:`modelport.gateway.pipeline` fills in its part: ``authenticate`` the principal,
parsing the call, the dispatcher the attempts, the relay the timings and usage, and
``finish`` the outcome. Sinks read it and never write it back.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from modelport.gateway.invocations import InvocationRequest
from modelport.gateway.openai_format import Usage
from modelport.gateway.protocol import Request
from modelport.gatewayconfig import Task

if TYPE_CHECKING:
    from modelport.gateway.tables.aggregate import StreamAggregate

PrincipalKind = Literal["user", "service_principal"]
AuthMethod = Literal["api_key", "service_account", "oidc"]
Outcome = Literal["ok", "error", "timeout", "disconnected"]
Direction = Literal["input", "output"]
GuardrailCheck = Literal["pii", "keywords", "topics", "safety"]
GuardrailAction = Literal["mask", "block", "fail_open", "fail_closed"]

_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count()


def new_request_id() -> str:
    """32 hex digits, unique across processes and restarts: a random prefix drawn when
    the process starts, then a counter (a tenth of the cost of a ``uuid4``, on every
    request)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller, as the rest of the pipeline sees it (rate limits, usage, logs).

    ``kind`` matches the reference service's rate-limit keys: a ``user`` (an OIDC user, an
    API key issued to a person) or a ``service_principal`` (a Kubernetes ServiceAccount,
    named ``system:serviceaccount:<namespace>:<name>``, or an API key issued to a
    program). ``groups`` are the ``user_group`` keys.
    """

    kind: PrincipalKind
    name: str
    groups: tuple[str, ...] = ()
    method: AuthMethod = "api_key"
    label: str = field(init=False, compare=False, repr=False)
    """``user:<name>`` or ``service_principal:<name>``, for logs and metrics (made once:
    metrics read it on every request)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", f"{self.kind}:{self.name}")


@dataclass(slots=True)
class TraceIds:
    """The W3C trace context of a traced request (hex ids, as ``traceparent`` writes
    them). Set by the tracing stage only when tracing is configured."""

    trace_id: str
    """32 hex digits: the caller's (from its ``traceparent``) or a new one."""
    span_id: str
    """16 hex digits: the gateway's own span of the request."""
    parent_span_id: str | None = None
    """The caller's span, when it sent a ``traceparent``."""
    sampled: bool = True
    """Whether the spans are exported (the caller's flag, or the sample ratio's draw)."""


@dataclass(slots=True)
class Attempt:
    """One try of one served entity (several with fallback)."""

    entity: str
    started: float
    """Monotonic seconds."""
    ended: float = 0.0
    status: int = 0
    """What this attempt would have answered: 200, or the error's status."""
    error_code: str | None = None
    skipped: str | None = None
    """Why no request was sent (``not_ready``, ``breaker_open``); None when one was."""
    span_id: str | None = None
    """The span id of this attempt's upstream call, when the request is traced: sent
    upstream in ``traceparent`` (16 hex digits); None otherwise."""


@dataclass(frozen=True, slots=True)
class GuardrailDecision:
    """A guardrail that acted on the request: masked or blocked something, or could not
    judge (the guard model down) and let it through or refused it. ``kinds`` names what
    was found (``EMAIL``, a safety category ...), never the text."""

    direction: Direction
    check: GuardrailCheck
    action: GuardrailAction
    kinds: tuple[str, ...] = ()


@dataclass(slots=True)
class TokenUsage:
    """Token counts of a finished request; ``estimated`` when the provider gave none."""

    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        """Prompt and completion together."""
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def reported(cls, usage: Usage) -> TokenUsage:
        """The provider's own counts."""
        return cls(usage.prompt_tokens, usage.completion_tokens, False)


@dataclass(slots=True)
class Relayed:
    """What went to the client, as far as usage rows and inference tables need it.

    Filled by the recording tap (:mod:`modelport.gateway.tables.capture`) only when one of
    those features is on; otherwise it stays None and costs nothing.
    """

    output_characters: int = 0
    """Characters of a stream's generated text (content, text, tool-call arguments)."""
    body: bytes | None = None
    """A whole response body as sent (a reference, not a copy)."""
    stream: StreamAggregate | None = None
    """A stream's aggregate (:class:`~modelport.gateway.tables.aggregate.StreamAggregate`)
    while payloads are captured and within the limit; None otherwise."""
    response_bytes: int = 0
    """Bytes of a stream's chunk payloads relayed (while captured: until the limit)."""
    too_large: bool = False
    """The response passed the payload limit: it is not stored, only marked."""
    sampled: bool = False
    """This request's payloads go to the inference table."""


@dataclass(slots=True)
class RequestContext:
    """One proxied request, from arrival to the last byte (or its failure)."""

    endpoint: str
    route: str
    request_id: str = field(default_factory=new_request_id)
    started: float = field(default_factory=time.monotonic)
    """Monotonic seconds at arrival; every other time here is on the same clock."""
    started_at: float = field(default_factory=time.time)
    """Wall-clock seconds at arrival (for rows and logs)."""
    principal: Principal | None = None
    """None when the endpoint does not authenticate callers (or before ``authenticate``)."""
    task: Task | None = None
    stream: bool = False
    model: str | None = None
    """The ``model`` the client asked for."""
    attempts: list[Attempt] = field(default_factory=list)
    first_byte: float | None = None
    """When the response's first byte went to the client: headers of a whole body, the
    first chunk of a stream (time to first token)."""
    ended: float | None = None
    status: int = 0
    """What the client got (the status line), 0 until then; 499 if it went away first."""
    error_code: str | None = None
    usage: TokenUsage | None = None
    tokens_apply: bool = True
    """False for a custom model (task ``ml/v1/predict``): its input is a dataframe or a
    tensor, not text, so ``usage`` stays None, is never estimated, and token limits and
    token columns do not apply; ``rows`` is its measure instead."""
    rows: int | None = None
    """A custom model's request: the records (rows, instances) it asked to score."""
    outcome: Outcome = "ok"
    response_headers: list[tuple[bytes, bytes]] | None = None
    """Headers a stage adds to whatever response the request gets, success or error (the
    rate limits' ``x-ratelimit-*``); None when no stage adds any."""
    request: Request | InvocationRequest | None = None
    """The validated request (once parsed)."""
    request_body: bytes | None = None
    """The request body as received (a reference, not a copy), for payload rows."""
    client_request_id: str | None = None
    """The body's ``client_request_id`` (reference-service field), taken out of it."""
    usage_context: dict[str, str] | None = None
    """The body's ``usage_context`` (reference-service field), taken out of it."""
    relayed: Relayed | None = None
    """What the client got, when usage rows or payload rows need it."""
    guardrails: list[GuardrailDecision] | None = None
    """The guardrails that acted, in order; None when none did (the usual case)."""
    trace: TraceIds | None = None
    """The request's trace context when tracing is configured; None otherwise."""

    def record(self, decision: GuardrailDecision) -> None:
        """Add a guardrail's decision."""
        if self.guardrails is None:
            self.guardrails = [decision]
        else:
            self.guardrails.append(decision)

    @property
    def entity(self) -> str | None:
        """The entity that answered, or the last one tried; None before dispatch."""
        return self.attempts[-1].entity if self.attempts else None

    @property
    def duration(self) -> float:
        """Seconds from arrival to the end (or to now, while running)."""
        return (self.ended if self.ended is not None else time.monotonic()) - self.started

    @property
    def time_to_first_byte(self) -> float | None:
        """Seconds from arrival to the first response byte; None if none was sent."""
        return None if self.first_byte is None else self.first_byte - self.started
