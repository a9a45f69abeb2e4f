"""The rate-limit stage of the pipeline: admission, the stream tap and settlement.

- **admit** (once per request, outside fallback, so a 429 here is never retried on
  another entity): the caller's budgets (:mod:`~modelport.gateway.ratelimit.policy`)
  each take 1 call or the request's token reservation, all or none, in one store
  decision. Refused → 429 ``REQUEST_LIMIT_EXCEEDED`` with ``Retry-After`` (whole seconds
  until every budget would admit it). Every response of a limited request, admitted or
  not, carries ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` of its most
  constrained calls and tokens budgets; ``reset`` is how long until that budget's oldest
  counted entry leaves the window (when ``remaining`` next goes up), e.g. ``12.5s``.
- **reservation**: prompt tokens (:mod:`~modelport.gateway.tokenizer`) plus the
  completion allowance: ``max_completion_tokens``/``max_tokens`` times ``n`` when the
  request sets them, else ``reserveCompletionTokens`` (cut to what the smallest token
  limit leaves after the prompt). A request that could never fit its token limit is
  refused with 400, naming what to lower.
- **tap** (streams under a token limit): counts the completion as it streams; at half the
  allowance it asks the store for as much again, and once the stream passes an allowance
  the store could not extend, it is stopped with an error event (what passed is sent).
- **settle** (a sink, at finish): the reservation becomes what the request used: the
  provider's reported usage, or the gateway's count when there is none (a stream cut
  short, a client that left).
- **store down**: within the store's timeout, refuse with 503 ``TEMPORARILY_UNAVAILABLE``
  (``failOpen: false``, the default) or admit without counting (``failOpen: true``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson

from modelport import gatewayconfig as gc
from modelport.gateway.context import RequestContext
from modelport.gateway.errors import (
    INVALID_PARAMETER_VALUE,
    REQUEST_LIMIT_EXCEEDED,
    TEMPORARILY_UNAVAILABLE,
    GatewayError,
)
from modelport.gateway.invocations import InvocationRequest
from modelport.gateway.metrics import Metrics
from modelport.gateway.protocol import ChatRequest, CompletionRequest
from modelport.gateway.providers.base import Call
from modelport.gateway.ratelimit.policy import Budget, Plan, Policy
from modelport.gateway.ratelimit.store import (
    WINDOW_MS,
    Decision,
    Store,
    StoreUnavailableError,
)
from modelport.gateway.tokenizer import PromptCounter
from modelport.gateway.usage import CHARS_PER_TOKEN

log = logging.getLogger("modelport.gateway.ratelimit")

Clock = Callable[[], int]
"""Milliseconds; the store's own clock when the limiter has none (production)."""
MAX_SETTLING = 10_000
"""Settlements in flight at most; beyond that one is dropped (and logged), never awaited
by a request."""
_HEADER_NAMES = {
    "calls": (b"x-ratelimit-limit-requests", b"x-ratelimit-remaining-requests",
              b"x-ratelimit-reset-requests"),
    "tokens": (b"x-ratelimit-limit-tokens", b"x-ratelimit-remaining-tokens",
               b"x-ratelimit-reset-tokens"),
}  # fmt: skip


@dataclass(slots=True)
class _Grant:
    """What a request under a token limit holds in its token budgets."""

    budgets: tuple[Budget, ...]
    charged: int
    """Tokens charged to the request in each of ``budgets`` so far."""
    prompt: int
    allowance: int
    """Completion tokens the request may stream before it needs an extension."""
    step: int
    """How much an extension asks for."""
    streamed: int = 0
    """Completion tokens counted in the stream so far."""
    extending: asyncio.Task[None] | None = None
    exhausted: bool = False


class RateLimiter:
    """Enforces an endpoint's ``rateLimits`` (an Admission, a TapFactory and a Sink)."""

    def __init__(
        self,
        config: gc.AiGatewayConfig,
        endpoint: str,
        store: Store,
        *,
        metrics: Metrics | None = None,
        counter: PromptCounter | None = None,
        clock: Clock | None = None,
    ) -> None:
        limiting = config.rate_limiting
        prefix = (limiting.store.key_prefix if limiting.store else None) or (
            f"modelport:{{{endpoint}}}:"
        )
        self.policy = Policy(config.rate_limits, prefix)
        self.store = store
        self._fail_open = limiting.fail_open
        self._reserve = limiting.reserve_completion_tokens
        self._counter = counter or PromptCounter()
        self._clock = clock
        self._metrics = metrics
        self._grants: dict[str, _Grant] = {}
        self._settling: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Load the tokenizer (token limits only) and start the store."""
        if self.policy.has_tokens:
            await asyncio.to_thread(self._counter.load)
        start = getattr(self.store, "start", None)
        if start is not None:
            await start()

    async def aclose(self) -> None:
        """Finish the settlements in flight (briefly), then close the store."""
        if self._settling:
            await asyncio.wait(self._settling, timeout=2.0)
        close = getattr(self.store, "aclose", None)
        if close is not None:
            await close()

    # -- admit

    async def admit(self, ctx: RequestContext, call: Call) -> None:
        """Take the request from every budget of its caller, or refuse it."""
        plan = self.policy.plan(ctx.principal)
        budgets = plan.budgets
        if not budgets:
            return
        prompt = allowance = reserve = 0
        if plan.tokens:
            # A custom model's request has no tokens (ctx.tokens_apply): its calls count,
            # token budgets take nothing.
            if ctx.tokens_apply:
                prompt, allowance = self._reservation(plan, call)
            reserve = prompt + allowance
            amounts: Sequence[int] = [1 if b.dimension == "calls" else reserve for b in budgets]
        else:
            amounts = [1] * len(budgets)
        try:
            decision = await self.store.admit(
                ctx.request_id, budgets, amounts, self._clock() if self._clock else None
            )
        except StoreUnavailableError as exc:
            self._count(plan.kinds, "unavailable")
            if self._fail_open:
                return
            raise GatewayError(
                503,
                TEMPORARILY_UNAVAILABLE,
                f"rate limits cannot be checked right now ({exc}); retry shortly",
                headers=((b"retry-after", b"1"),),
            ) from None
        ctx.response_headers = headers(budgets, decision)
        if not decision.admitted:
            refused = [
                b
                for b, total, amount in zip(budgets, decision.totals, amounts, strict=True)
                if total + amount > b.limit
            ]
            self._count(tuple(dict.fromkeys(b.kind for b in refused)), "limited")
            raise _refusal(refused, decision, reserve)
        self._count(plan.kinds, "admitted")
        if plan.tokens and ctx.tokens_apply:
            step = allowance or self._reserve
            self._grants[ctx.request_id] = _Grant(plan.tokens, reserve, prompt, allowance, step)

    def _reservation(self, plan: Plan, call: Call) -> tuple[int, int]:
        """(prompt tokens, completion allowance) of a request under a token limit."""
        request = call.request
        if isinstance(request, InvocationRequest):
            return 0, 0  # not reached: admit skips custom models (no tokens)
        prompt = self._counter.count(call.entity.model_name, request)
        choices = 1
        asked: int | None = None
        if isinstance(request, ChatRequest):
            asked, choices = request.max_output_tokens(), request.n or 1
        elif isinstance(request, CompletionRequest):
            asked, choices = request.max_tokens, request.n or 1
        else:
            return prompt, 0  # embeddings complete nothing
        if asked is not None:
            allowance = asked * choices
            if prompt + allowance > plan.smallest_tokens:
                raise GatewayError(
                    400,
                    INVALID_PARAMETER_VALUE,
                    f"this request reserves {prompt + allowance} tokens ({prompt} prompt, "
                    f"{allowance} completion), more than the endpoint's token limit of "
                    f"{plan.smallest_tokens} per minute allows; lower max_tokens to at most "
                    f"{max(0, plan.smallest_tokens - prompt) // choices}",
                    param="max_tokens",
                )
            return prompt, allowance
        if prompt >= plan.smallest_tokens:
            raise GatewayError(
                400,
                INVALID_PARAMETER_VALUE,
                f"the prompt is about {prompt} tokens, more than the endpoint's token limit "
                f"of {plan.smallest_tokens} per minute allows; send a shorter prompt",
                param="messages",
            )
        return prompt, min(self._reserve * choices, plan.smallest_tokens - prompt)

    # -- the stream tap

    def open(self, ctx: RequestContext, call: Call) -> _StreamTap | None:
        """A tap for a stream under a token limit; nothing otherwise."""
        if not call.stream:
            return None
        grant = self._grants.get(ctx.request_id)
        return None if grant is None else _StreamTap(self, ctx.request_id, grant)

    def _extend(self, rid: str, grant: _Grant) -> None:
        """Ask for more tokens in the background; the tap checks the answer later."""

        async def extend() -> None:
            try:
                now = self._clock() if self._clock else None
                granted = await self.store.extend(
                    rid, grant.budgets, grant.charged, grant.step, now
                )
            except StoreUnavailableError:
                if self._fail_open:
                    grant.allowance += grant.step  # uncounted, as admission would be
                else:
                    grant.exhausted = True
                return
            grant.charged += granted
            grant.allowance += granted
            grant.exhausted = granted == 0

        grant.extending = asyncio.get_running_loop().create_task(extend())
        grant.extending.add_done_callback(lambda _: setattr(grant, "extending", None))

    # -- settle (the sink)

    def submit(self, ctx: RequestContext) -> None:
        """Settle a finished request's reservation to what it used (in the background)."""
        grant = self._grants.pop(ctx.request_id, None)
        if grant is None:
            return
        usage = ctx.usage
        if usage is not None and not usage.estimated:
            used = usage.total_tokens
        else:
            completion = max(grant.streamed, usage.completion_tokens if usage else 0)
            used = grant.prompt + completion if ctx.status == 200 or grant.streamed else 0
        if used == grant.charged and grant.extending is None:
            return
        if len(self._settling) >= MAX_SETTLING:
            log.warning(
                "too many settlements in flight; request %s keeps its reservation",
                ctx.request_id,
            )
            return
        task = asyncio.get_running_loop().create_task(self._settle(ctx.request_id, grant, used))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, rid: str, grant: _Grant, used: int) -> None:
        if grant.extending is not None:
            await asyncio.wait([grant.extending])  # its charge first, then the final one
        if used == grant.charged:
            return
        try:
            now = self._clock() if self._clock else None
            await self.store.settle(rid, grant.budgets, grant.charged, used, now)
        except StoreUnavailableError:
            pass  # the reservation stays: the budget errs on the caller's side for a minute

    def _count(self, kinds: tuple[str, ...], decision: str) -> None:
        if self._metrics is not None:
            self._metrics.rate_limit_decision(kinds, decision)


class _StreamTap:
    """Counts a stream's completion tokens against its grant (see the module)."""

    __slots__ = ("_grant", "_limiter", "_rid")

    def __init__(self, limiter: RateLimiter, rid: str, grant: _Grant) -> None:
        self._limiter = limiter
        self._rid = rid
        self._grant = grant

    def chunk(self, payload: bytes) -> bytes:
        grant = self._grant
        grant.streamed += _completion_tokens(payload)
        halfway = grant.streamed * 2 >= grant.allowance
        if halfway and grant.extending is None and not grant.exhausted:
            self._limiter._extend(self._rid, grant)
        if grant.streamed > grant.allowance and grant.exhausted and grant.extending is None:
            budget = min(grant.budgets, key=lambda b: b.limit)
            raise GatewayError(
                429,
                REQUEST_LIMIT_EXCEEDED,
                f"rate limit exceeded: this stream used up the token budget "
                f"({budget.describe()}); it was stopped after about {grant.streamed} "
                "completion tokens",
            )
        return payload

    def body(self, body: bytes) -> bytes:
        return body


def _completion_tokens(payload: bytes) -> int:
    """About how many tokens a stream chunk carries: its text / 4, at least 1 when it has
    any (OpenAI-compatible servers stream one token a chunk; translated providers more)."""
    try:
        data = orjson.loads(payload)
        chars = 0
        for choice in data.get("choices") or ():
            delta = choice.get("delta") or {}
            chars += len(delta.get("content") or choice.get("text") or "")
            for call in delta.get("tool_calls") or ():
                chars += len((call.get("function") or {}).get("arguments") or "")
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return 0
    return max(1, chars // CHARS_PER_TOKEN) if chars else 0


def headers(budgets: Sequence[Budget], decision: Decision) -> list[tuple[bytes, bytes]]:
    """``x-ratelimit-*`` of the most constrained calls and tokens budgets."""
    tightest: dict[str, tuple[int, int, int]] = {}
    for budget, total, oldest in zip(budgets, decision.totals, decision.oldest_ms, strict=True):
        remaining = max(0, budget.limit - total)
        before = tightest.get(budget.dimension)
        if before is None or remaining < before[0]:
            reset = max(0, oldest + WINDOW_MS - decision.now_ms) if oldest >= 0 else 0
            tightest[budget.dimension] = (remaining, budget.limit, reset)
    out: list[tuple[bytes, bytes]] = []
    for dimension, (remaining, limit, reset) in tightest.items():
        limit_name, remaining_name, reset_name = _HEADER_NAMES[dimension]
        out += (
            (limit_name, b"%d" % limit),
            (remaining_name, b"%d" % remaining),
            (reset_name, _seconds(reset)),
        )
    return out


def _seconds(ms: int) -> bytes:
    whole, part = divmod(ms, 1000)
    return b"%ds" % whole if not part else (b"%d.%03d" % (whole, part)).rstrip(b"0") + b"s"


def _refusal(refused: list[Budget], decision: Decision, reserve: int) -> GatewayError:
    which = "; ".join(b.describe() for b in refused)
    if decision.wait_ms < 0:
        # Only a token budget can be smaller than one request (a calls limit of 0 too).
        return GatewayError(
            429,
            REQUEST_LIMIT_EXCEEDED,
            f"rate limit exceeded: {which}; this request ({reserve or 1} of it) can never "
            "fit: ask the endpoint's owner to raise the limit",
        )
    retry = max(1, -(-decision.wait_ms // 1000))
    return GatewayError(
        429,
        REQUEST_LIMIT_EXCEEDED,
        f"rate limit exceeded: {which}; retry in {retry} s",
        headers=((b"retry-after", b"%d" % retry),),
    )
