"""The stages every proxied request passes, and the contracts features plug in with.

::

    open ─► authenticate ─► parse ─► admit ─► plan ─► attempt(s) ─► relay (taps) ─► finish ─► sinks

- ``open`` (:class:`Opener`): sees the headers as the request arrives, before anything
  can refuse it (the trace context: a refused request is traced too).
- ``authenticate`` (:class:`Authenticator`): once, from the headers, before the body is
  read; sets ``ctx.principal`` or raises a 401/403 :class:`GatewayError`.
- ``admit`` (:class:`Admission`): once per request, after parsing and *outside* the
  fallback loop: a refusal (429 of a rate limit, 400 of an input guardrail) is final and
  never retried on another entity.
- per attempt (:class:`AttemptHook`): ``before`` may refuse one entity with a retryable
  error (429/5xx: a per-entity limit, an open breaker) so fallback moves on; ``after``
  sees how the attempt ended.
- relay (:class:`TapFactory` / :class:`Tap`): sees every chunk of a stream, or the whole
  body, as the bytes that go to the client; returns them (the same object when it
  changes nothing: no copy) or different bytes, or raises :class:`GatewayError` to stop.
- judge (:class:`Judge`): an async check of a whole answer before any of it is sent
  (output safety and topics need the whole text); with a judge configured, a stream is
  held until the upstream has finished, and may still fall back until then.
- ``finish``: always runs, on success, error, timeout or disconnect; the finished
  context goes to metrics and then to each :class:`Sink`, which must not block.

A stage nobody configured is an empty tuple: the request path tests ``if tuple:`` and
moves on, so an unused feature costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from modelport.gateway.context import Attempt, RequestContext
from modelport.gateway.providers.base import Call

log = logging.getLogger("modelport.gateway")

Headers = Sequence[tuple[bytes, bytes]]
"""The request's raw header pairs, names lower-case (as ASGI gives them)."""


class Opener(Protocol):
    """Sees a request's headers first, before it can be refused."""

    def open(self, ctx: RequestContext, headers: Headers) -> None:
        """Record what the request brings (never refuses; must not block)."""
        ...


class Authenticator(Protocol):
    """Establishes who is calling."""

    async def authenticate(self, ctx: RequestContext, headers: Headers) -> None:
        """Set ``ctx.principal``; raise GatewayError (401 UNAUTHENTICATED, 403
        PERMISSION_DENIED, 503 when the credential cannot be checked now) to refuse."""
        ...


class Admission(Protocol):
    """A check of the whole request before any entity is tried."""

    async def admit(self, ctx: RequestContext, call: Call) -> None:
        """Raise GatewayError to refuse the request (never retried by fallback)."""
        ...


class AttemptHook(Protocol):
    """Sees each try of an entity."""

    async def before(self, ctx: RequestContext, call: Call, attempt: Attempt) -> None:
        """Raise GatewayError to skip this entity; 429/5xx let fallback try the next."""
        ...

    def after(self, ctx: RequestContext, attempt: Attempt) -> None:
        """The attempt ended (``attempt.status`` and ``error_code`` are set)."""
        ...


class Tap(Protocol):
    """One response's view of what goes to the client."""

    def chunk(self, payload: bytes) -> bytes:
        """A stream chunk's payload (the bytes after ``data: ``); return what to send."""
        ...

    def body(self, body: bytes) -> bytes:
        """A whole (non-streamed) body; return what to send."""
        ...


class TapFactory(Protocol):
    """Makes a tap per response, or None when this response needs none."""

    def open(self, ctx: RequestContext, call: Call) -> Tap | None:
        """A tap for this response."""
        ...


class Judge(Protocol):
    """Judges a whole answer before the client gets any of it."""

    async def judge(
        self, ctx: RequestContext, call: Call, payloads: list[bytes], stream: bool
    ) -> None:
        """``payloads``: the body (one item), or a stream's chunk payloads as the taps left
        them. Raise GatewayError to withhold the answer."""
        ...


class Sink(Protocol):
    """Takes finished contexts; must return at once (queue, and drop when full)."""

    def submit(self, ctx: RequestContext) -> None:
        """Hand over a finished context; never raises, never blocks."""
        ...


@dataclass(frozen=True, slots=True)
class Pipeline:
    """The configured stages of one gateway; empty tuples cost nothing."""

    authenticator: Authenticator | None = None
    openers: tuple[Opener, ...] = ()
    admission: tuple[Admission, ...] = ()
    attempt_hooks: tuple[AttemptHook, ...] = ()
    taps: tuple[TapFactory, ...] = ()
    sinks: tuple[Sink, ...] = ()
    judges: tuple[Judge, ...] = ()

    def open_taps(self, ctx: RequestContext, call: Call) -> list[Tap]:
        """The taps of one response (usually none)."""
        return [t for f in self.taps if (t := f.open(ctx, call)) is not None]

    def finish(self, ctx: RequestContext) -> None:
        """Hand the finished context to every sink; a failing sink is logged, never raised."""
        for sink in self.sinks:
            try:
                sink.submit(ctx)
            except Exception:
                log.exception("sink %s failed; the request is unaffected", type(sink).__name__)


class QueueSink:
    """A :class:`Sink` that queues contexts (bounded) for one consumer coroutine.

    ``submit`` never waits: when the queue is full the context is dropped and counted in
    ``dropped``. ``start`` runs the consumer on the serving loop; ``aclose`` drains what
    is queued (up to ``drain_seconds``) and stops it.
    """

    def __init__(
        self,
        consume: Callable[[RequestContext], Awaitable[None]],
        *,
        max_queued: int = 10000,
        name: str = "sink",
    ) -> None:
        self._consume = consume
        self._queue: asyncio.Queue[RequestContext] = asyncio.Queue(max_queued)
        self._task: asyncio.Task[None] | None = None
        self.name = name
        self.dropped = 0
        self.failed = 0

    def submit(self, ctx: RequestContext) -> None:
        """Queue ``ctx`` or drop it when the queue is full."""
        try:
            self._queue.put_nowait(ctx)
        except asyncio.QueueFull:
            self.dropped += 1

    async def start(self) -> None:
        """Start consuming (at start-up, on the serving loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def aclose(self, drain_seconds: float = 5.0) -> None:
        """Consume what is queued, then stop."""
        if self._task is None:
            return
        try:
            async with asyncio.timeout(drain_seconds):
                await self._queue.join()
        except TimeoutError:
            log.warning(
                "%s: %d finished requests not written at shutdown", self.name, self._queue.qsize()
            )
        self._task.cancel()
        self._task = None

    async def _run(self) -> None:
        while True:
            ctx = await self._queue.get()
            try:
                await self._consume(ctx)
            except Exception:
                self.failed += 1
                log.exception("%s could not take a finished request", self.name)
            finally:
                self._queue.task_done()
