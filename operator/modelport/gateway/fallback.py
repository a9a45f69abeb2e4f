"""Fallback's decisions, apart from its I/O: which errors move on, which are retried once,
and each entity's circuit breaker (pure, with an injectable clock).

With ``fallbackConfig.enabled`` the dispatcher tries the planned entities in order,
within **one deadline per request** (the request timeout), and only before the first
byte went to the client. Each attempt gets an equal share of what is left of the
deadline (with two entities left, half of it; the last one all of it), so that an
entity that hangs still leaves the next one time to answer; a stream that has started
keeps the whole rest of the deadline. Then:

- ``429`` and ``503`` whose ``Retry-After`` is at most :data:`MAX_RETRY_AFTER_SECONDS`
  (and fits in what is left of the deadline): the same entity is tried once more after
  that delay, then the next one;
- other ``5xx`` (``502``, ``504`` timeouts, ``503`` connection failures) and ``429``
  without a short ``Retry-After``: the next entity at once;
- anything else (``4xx``: the request itself is wrong) is final.

An entity is skipped without a request when its breaker is open or, for a self-hosted
entity, when it has no ready pod (:mod:`modelport.gateway.readiness`): cold starts spill
over to the next entity instead of waiting. When every entity is skipped the client
gets ``503`` with a ``Retry-After`` of the soonest probe.

**Breaker** (per entity and gateway process): after :data:`BREAKER_FAILURES`
consecutive failures (``5xx``, timeouts, connection errors; not ``429`` or ``4xx``) it
opens; for :data:`BREAKER_COOLDOWN_SECONDS` requests skip the entity; then one request
probes it (half-open): success closes the breaker, failure opens it for another
cool-down. With fallback off there is one entity to try and nothing to skip to, so
neither the breaker nor the retry applies.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable
from enum import StrEnum

from modelport.gateway.errors import GatewayError

MAX_RETRY_AFTER_SECONDS = 2.0
"""The longest ``Retry-After`` that is waited for on the same entity; a longer one moves
on at once (another entity answers sooner than that)."""
BREAKER_FAILURES = 5
BREAKER_COOLDOWN_SECONDS = 30.0

Clock = Callable[[], float]


class BreakerState(StrEnum):
    """Where an entity's breaker stands (also the metrics' label values)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def moves_on(error: GatewayError) -> bool:
    """Whether another entity may answer what this one failed (429 and 5xx)."""
    return error.status == 429 or error.status >= 500


def is_failure(error: GatewayError) -> bool:
    """Whether the error says the entity is unwell (counts towards its breaker)."""
    return error.status >= 500


def retry_delay(error: GatewayError, remaining: float, now: float | None = None) -> float | None:
    """Seconds to wait before trying the same entity once more, or None to move on."""
    if error.status not in (429, 503):
        return None
    for name, value in error.headers:
        if name == b"retry-after":
            delay = parse_retry_after(value.decode("latin-1"), now)
            if delay is not None and delay <= MAX_RETRY_AFTER_SECONDS and delay < remaining:
                return delay
            return None
    return None


def parse_retry_after(value: str, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds: delay-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Breaker:
    """One entity's circuit breaker (see the module's docstring)."""

    __slots__ = ("_clock", "_cooldown", "_limit", "failures", "opened_at", "probing", "state")

    def __init__(
        self,
        clock: Clock = time.monotonic,
        failures: int = BREAKER_FAILURES,
        cooldown: float = BREAKER_COOLDOWN_SECONDS,
    ) -> None:
        self._clock = clock
        self._limit = failures
        self._cooldown = cooldown
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.probing = False

    def allow(self) -> bool:
        """Whether a request may go to the entity now; an open breaker past its cool-down
        lets exactly one through (the probe)."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if self._clock() < self.opened_at + self._cooldown:
                return False
            self.state = BreakerState.HALF_OPEN
            self.probing = False
        if self.probing:
            return False
        self.probing = True
        return True

    def retry_after(self) -> float:
        """Seconds until the breaker lets a probe through."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self.opened_at + self._cooldown - self._clock())

    def succeeded(self) -> None:
        """The entity answered."""
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.probing = False

    def failed(self) -> None:
        """The entity failed (an error :func:`is_failure` counts)."""
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or self.failures >= self._limit:
            self.state = BreakerState.OPEN
            self.opened_at = self._clock()
        self.probing = False

    def abandoned(self) -> None:
        """An attempt ended with no verdict on the entity (the client left, a 4xx): a
        probe may be sent again."""
        self.probing = False


class Breakers:
    """The breakers of one gateway's entities; ``on_change(entity, state)`` is told of
    every transition (metrics)."""

    def __init__(
        self,
        entities: list[str],
        clock: Clock = time.monotonic,
        on_change: Callable[[str, BreakerState], None] | None = None,
        *,
        failures: int = BREAKER_FAILURES,
        cooldown: float = BREAKER_COOLDOWN_SECONDS,
    ) -> None:
        self._breakers = {e: Breaker(clock, failures, cooldown) for e in entities}
        self._on_change = on_change

    def __getitem__(self, entity: str) -> Breaker:
        return self._breakers[entity]

    def allow(self, entity: str) -> bool:
        """:meth:`Breaker.allow`, telling ``on_change`` of a move to half-open."""
        breaker = self._breakers[entity]
        before = breaker.state
        allowed = breaker.allow()
        self._changed(entity, before, breaker.state)
        return allowed

    def record(self, entity: str, error: GatewayError | None) -> None:
        """How an attempt on ``entity`` ended: None for an answer."""
        breaker = self._breakers[entity]
        before = breaker.state
        if error is None:
            breaker.succeeded()
        elif is_failure(error):
            breaker.failed()
        else:
            breaker.abandoned()
        self._changed(entity, before, breaker.state)

    def soonest_probe(self, entities: list[str]) -> float:
        """Seconds until the first of ``entities`` whose breaker is open lets a probe in."""
        waits = [self._breakers[e].retry_after() for e in entities]
        return min((w for w in waits if w > 0), default=0.0)

    def _changed(self, entity: str, before: BreakerState, after: BreakerState) -> None:
        if before is not after and self._on_change is not None:
            self._on_change(entity, after)


def retry_after_header(seconds: float) -> tuple[bytes, bytes]:
    """A ``Retry-After`` header of at least one second."""
    return (b"retry-after", str(max(1, math.ceil(seconds))).encode())
