"""Guardrails as pipeline stages: input checks at admission, output checks on the relay.

- **Input** (:class:`InputGuardrails`, an admission stage: once per request, outside the
  fallback loop, so a refusal is final): invalid keywords (any message), valid topics
  (the caller's last message), PII (BLOCK refuses; MASK rewrites the request before it
  goes to any entity), then safety (the guard model sees the masked conversation).
- **Output** (:class:`OutputGuardrails`): PII and keywords in a tap, chunk by chunk with a
  bounded look-behind (:mod:`.stream`) or on the whole body; safety and valid topics
  need the whole answer, so they judge it before any of it is sent (a stream is then
  held until the upstream has finished: see the chart's README).

A refusal is ``400 BAD_REQUEST`` with ``reason`` (``pii:EMAIL,PHONE``, ``keywords``,
``topics``, ``safety:S1``) and never the offending text; a guard that cannot judge
is ``503`` when it fails closed. Every action is recorded on the request's context
(:class:`~modelport.gateway.context.GuardrailDecision`), which metrics and the usage and
payload rows read.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson

from modelport import gatewayconfig as gc
from modelport.gateway.context import Direction, GuardrailCheck, GuardrailDecision, RequestContext
from modelport.gateway.errors import BAD_REQUEST, TEMPORARILY_UNAVAILABLE, GatewayError
from modelport.gateway.guardrails import extract, pii
from modelport.gateway.guardrails.safety import Guard, GuardUnavailableError
from modelport.gateway.guardrails.stream import HeldText, ViolationError
from modelport.gateway.guardrails.text import KeywordMatcher, TopicClassifier
from modelport.gateway.protocol import validate
from modelport.gateway.providers.base import Call
from modelport.gatewayconfig import Task

log = logging.getLogger("modelport.gateway.guardrails")


def build(
    config: gc.GuardrailsConfig, secrets_dir: Path
) -> tuple[InputGuardrails | None, OutputGuardrails | None]:
    """The stages ``config`` asks for (None for a direction with no check on)."""
    guard = Guard(config.guard, secrets_dir) if config.guard is not None else None
    return (
        InputGuardrails(config.input, guard) if config.input.active else None,
        OutputGuardrails(config.output, guard) if config.output.active else None,
    )


class _Checks:
    """One direction's configured checks, compiled once."""

    def __init__(self, direction: Direction, checks: gc.GuardrailChecks, guard: Guard | None):
        self.direction: Direction = direction
        self.pii = checks.pii
        self.keywords = KeywordMatcher(checks.invalid_keywords) if checks.invalid_keywords else None
        self.topics = TopicClassifier(checks.valid_topics) if checks.valid_topics else None
        self.guard = guard if checks.safety else None

    async def start(self) -> None:
        """Open the guard's session."""
        if self.guard is not None:
            await self.guard.start()

    async def aclose(self) -> None:
        """Close the guard's session."""
        if self.guard is not None:
            await self.guard.aclose()

    def refuse(
        self, ctx: RequestContext, check: GuardrailCheck, kinds: tuple[str, ...] = ()
    ) -> GatewayError:
        """Record a block and make the client's error (which never quotes the text)."""
        ctx.record(GuardrailDecision(self.direction, check, "block", kinds))
        what = {
            "pii": f"personal data ({', '.join(kinds)})",
            "keywords": "a word this endpoint does not accept",
            "topics": "a subject outside this endpoint's topics",
            "safety": "content its safety check judged unsafe"
            + (f" ({', '.join(kinds)})" if kinds else ""),
        }[check]
        whose = "request" if self.direction == "input" else "answer"
        return GatewayError(
            400,
            BAD_REQUEST,
            f"{self.direction} guardrail: the {whose} contains {what}; "
            + (
                "remove it and send the request again"
                if self.direction == "input"
                else "the answer was withheld"
            ),
            reason=check + (":" + ",".join(kinds) if kinds else ""),
        )

    def check_topics(self, ctx: RequestContext, text: str) -> None:
        """Refuse a text about none of the valid topics."""
        if self.topics is not None and not self.topics.on_topic(text):
            raise self.refuse(ctx, "topics")

    async def check_safety(self, ctx: RequestContext, turns: list[dict[str, str]]) -> None:
        """Ask the guard; refuse what it calls unsafe; follow failOpen when it cannot say."""
        guard = self.guard
        if guard is None or not turns:
            return
        try:
            verdict = await guard.judge(turns)
        except GuardUnavailableError as exc:
            if guard.config.fail_open:
                ctx.record(GuardrailDecision(self.direction, "safety", "fail_open"))
                log.warning("request=%s: %s; let through (failOpen)", ctx.request_id, exc)
                return
            ctx.record(GuardrailDecision(self.direction, "safety", "fail_closed"))
            raise GatewayError(
                503,
                TEMPORARILY_UNAVAILABLE,
                f"{self.direction} guardrail: {exc}, and this endpoint does not serve "
                "unjudged content; try again later",
                reason="safety:unavailable",
            ) from None
        if not verdict.safe:
            raise self.refuse(ctx, "safety", verdict.categories)


class InputGuardrails:
    """An admission stage: the input checks of one endpoint."""

    def __init__(self, checks: gc.GuardrailChecks, guard: Guard | None) -> None:
        self._c = _Checks("input", checks, guard)
        self.start = self._c.start
        self.aclose = self._c.aclose

    async def admit(self, ctx: RequestContext, call: Call) -> None:
        """Refuse, or let through (with PII masked in ``call``), see the module."""
        c = self._c
        task, raw = call.task, call.raw
        if c.keywords is not None:
            for text in extract.request_texts(task, raw):
                if c.keywords.search(text):
                    raise c.refuse(ctx, "keywords")
        if c.topics is not None:
            c.check_topics(ctx, extract.last_user_text(task, raw))
        if c.pii != "NONE":
            self._pii(ctx, call)
        if c.guard is not None:
            await c.check_safety(ctx, extract.conversation(task, call.raw))

    def _pii(self, ctx: RequestContext, call: Call) -> None:
        kinds: set[str] = set()

        def masked(text: str) -> str:
            findings = pii.find(text)
            kinds.update(f.kind for f in findings)
            return pii.mask(text, findings) if findings else text

        rewritten = extract.rewrite_request(call.task, call.raw, masked)
        if not kinds:
            return
        found = tuple(sorted(kinds))
        if self._c.pii == "BLOCK":
            raise self._c.refuse(ctx, "pii", found)
        assert rewritten is not None
        # Both forms the providers read: the raw body (pass-through) and the model.
        call.raw = rewritten
        call.request = validate(type(call.request), rewritten)
        ctx.record(GuardrailDecision("input", "pii", "mask", found))


class OutputGuardrails:
    """The output checks of one endpoint: a tap factory (PII, keywords) and a judge
    (safety, topics) of whole answers."""

    def __init__(self, checks: gc.GuardrailChecks, guard: Guard | None) -> None:
        self._c = _Checks("output", checks, guard)
        self.start = self._c.start
        self.aclose = self._c.aclose
        self.judges = self._c.guard is not None or self._c.topics is not None
        """Whether answers must be judged whole (see :meth:`judge`)."""
        self._taps = self._c.pii != "NONE" or self._c.keywords is not None

    def open(self, ctx: RequestContext, call: Call) -> _OutputTap | None:
        """A tap for one answer, when PII or keywords are checked (embeddings have no text)."""
        if not self._taps or call.task is Task.EMBEDDINGS:
            return None
        return _OutputTap(self._c, ctx)

    async def judge(
        self, ctx: RequestContext, call: Call, payloads: list[bytes], stream: bool
    ) -> None:
        """Judge a whole answer (a body, or every chunk of a stream) before it is sent."""
        if call.task is Task.EMBEDDINGS:
            return
        text = _stream_text(payloads) if stream else _body_text(payloads[0])
        if not text:
            return
        self._c.check_topics(ctx, text)
        if self._c.guard is not None:
            turns = extract.conversation(call.task, call.raw)
            await self._c.check_safety(ctx, [*turns, {"role": "assistant", "content": text}])


class _OutputTap:
    """One answer's PII and keyword checks."""

    __slots__ = ("_c", "_ctx", "_held", "_recorded")

    def __init__(self, checks: _Checks, ctx: RequestContext) -> None:
        self._c = checks
        self._ctx = ctx
        self._held: dict[int, HeldText] = {}
        self._recorded: set[str] = set()

    def chunk(self, payload: bytes) -> bytes:
        """Hold back, check and mask each choice's text (see :mod:`.stream`)."""
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return payload
        choices = data.get("choices") if isinstance(data, dict) else None
        if not choices:
            return payload  # a usage-only or error chunk: nothing to read
        changed = False
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            text = extract.chunk_text(choice)
            finished = choice.get("finish_reason") is not None
            if text is None and not finished:
                continue
            index = choice.get("index", 0)
            held = self._held.get(index)
            if held is None:
                held = self._held[index] = HeldText(self._c.pii, self._c.keywords)
            try:
                out = held.feed(text or "")
                if finished:
                    out += held.flush()
            except ViolationError as v:
                raise self._refusal(v) from None
            if held.masked - self._recorded:
                self._record_masks(held.masked)
            if out != (text or ""):
                extract.set_chunk_text(choice, out)
                changed = True
        return orjson.dumps(data) if changed else payload

    def body(self, body: bytes) -> bytes:
        """Check and mask a whole answer."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        if not isinstance(data, dict):
            return body
        c = self._c
        if c.keywords is not None:
            for text in extract.answer_texts(data):
                if c.keywords.search(text):
                    raise c.refuse(self._ctx, "keywords")
        if c.pii == "NONE":
            return body
        kinds: set[str] = set()

        def masked(text: str) -> str:
            findings = pii.find(text)
            kinds.update(f.kind for f in findings)
            return pii.mask(text, findings) if findings else text

        changed = extract.rewrite_answer(data, masked)
        if not kinds:
            return body
        if c.pii == "BLOCK":
            raise c.refuse(self._ctx, "pii", tuple(sorted(kinds)))
        self._record_masks(kinds)
        return orjson.dumps(data) if changed else body

    def _refusal(self, violation: ViolationError) -> GatewayError:
        check: GuardrailCheck = "pii" if violation.check == "pii" else "keywords"
        return self._c.refuse(self._ctx, check, violation.kinds)

    def _record_masks(self, kinds: set[str]) -> None:
        new = tuple(sorted(kinds - self._recorded))
        if new:
            self._recorded.update(new)
            self._ctx.record(GuardrailDecision("output", "pii", "mask", new))


def _body_text(body: bytes) -> str:
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    return "\n".join(extract.answer_texts(data)) if isinstance(data, dict) else ""


def _stream_text(payloads: list[bytes]) -> str:
    """The text a stream's chunks add up to (every choice, in order)."""
    parts: list[str] = []
    for payload in payloads:
        try:
            data: Any = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        for choice in (data.get("choices") or []) if isinstance(data, dict) else []:
            text = extract.chunk_text(choice) if isinstance(choice, dict) else None
            if text:
                parts.append(text)
    return "".join(parts)
