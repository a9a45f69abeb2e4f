"""Fallback's decisions: what moves on, what is retried once, and the circuit breaker
(on a clock that moves only when told)."""

from __future__ import annotations

import email.utils

import pytest

from modelport.gateway.errors import GatewayError
from modelport.gateway.fallback import (
    MAX_RETRY_AFTER_SECONDS,
    Breakers,
    BreakerState,
    moves_on,
    parse_retry_after,
    retry_delay,
)
from modelport.gateway.guardrails.safety import parse_verdict
from tests.support import FakeClock


def error(status: int, retry_after: str | None = None) -> GatewayError:
    headers = ((b"retry-after", retry_after.encode()),) if retry_after else ()
    return GatewayError(status, "X", "x", headers=headers)


@pytest.mark.parametrize(
    ("status", "moves"), [(400, False), (404, False), (429, True), (500, True), (503, True)]
)
def test_what_moves_on(status: int, moves: bool) -> None:
    assert moves_on(error(status)) is moves


@pytest.mark.parametrize(
    ("err", "remaining", "delay"),
    [
        (error(429, "1"), 10.0, 1.0),
        (error(503, "0"), 10.0, 0.0),
        (error(503, "2"), 10.0, 2.0),
        (error(429, "3"), 10.0, None),  # longer than the bound: move on at once
        (error(429, "1"), 0.5, None),  # does not fit in what is left of the deadline
        (error(429), 10.0, None),  # no Retry-After
        (error(500, "1"), 10.0, None),  # only 429 and 503 are retried
        (error(429, "soon"), 10.0, None),
    ],
)
def test_retry_delay(err: GatewayError, remaining: float, delay: float | None) -> None:
    assert retry_delay(err, remaining) == delay


def test_retry_after_as_a_date() -> None:
    now = 1_800_000_000.0
    value = email.utils.formatdate(now + 1.0, usegmt=True)
    assert parse_retry_after(value, now) == pytest.approx(1.0)
    assert retry_delay(error(503, value), 10.0, now) == pytest.approx(1.0)
    assert MAX_RETRY_AFTER_SECONDS == 2.0


def test_breaker_opens_after_k_failures_then_lets_one_probe() -> None:
    clock = FakeClock()
    changes: list[tuple[str, BreakerState]] = []
    breakers = Breakers(
        ["a"], clock, lambda e, s: changes.append((e, s)), failures=3, cooldown=30.0
    )
    for _ in range(2):
        assert breakers.allow("a")
        breakers.record("a", error(502))
    breakers.record("a", error(429))  # rate limiting is not a failure
    breakers.record("a", error(400))
    assert breakers.allow("a")
    breakers.record("a", error(504))
    assert changes == [("a", BreakerState.OPEN)]
    assert not breakers.allow("a")
    assert breakers.soonest_probe(["a"]) == pytest.approx(30.0)
    clock.advance(30.0)
    assert breakers.allow("a")  # the probe
    assert not breakers.allow("a")  # only one at a time
    breakers.record("a", error(503))  # the probe failed: open for another cool-down
    assert changes[-1] == ("a", BreakerState.OPEN)
    assert not breakers.allow("a")
    clock.advance(30.0)
    assert breakers.allow("a")
    breakers.record("a", None)
    assert changes[-2:] == [("a", BreakerState.HALF_OPEN), ("a", BreakerState.CLOSED)]
    assert breakers.allow("a") and breakers.allow("a")


def test_an_abandoned_probe_can_be_sent_again() -> None:
    clock = FakeClock()
    breakers = Breakers(["a"], clock, failures=1, cooldown=5.0)
    breakers.record("a", error(500))
    clock.advance(5.0)
    assert breakers.allow("a")
    breakers["a"].abandoned()  # the client went away mid-probe
    assert breakers.allow("a")


def test_success_resets_the_count() -> None:
    breakers = Breakers(["a"], FakeClock(), failures=2)
    breakers.record("a", error(500))
    breakers.record("a", None)
    breakers.record("a", error(500))
    assert breakers["a"].state is BreakerState.CLOSED


@pytest.mark.parametrize(
    ("text", "safe", "categories"),
    [
        ("safe", True, ()),
        ("  safe\n", True, ()),
        ("unsafe", False, ()),
        ("unsafe\nS1", False, ("S1",)),
        ("unsafe\nS1,S10", False, ("S1", "S10")),
        ("unsafe\nS2, S3\n", False, ("S2", "S3")),
    ],
)
def test_guard_verdicts(text: str, safe: bool, categories: tuple[str, ...]) -> None:
    verdict = parse_verdict(text)
    assert (verdict.safe, verdict.categories) == (safe, categories)


@pytest.mark.parametrize(
    "text", ["", "Safe", "safe.", "The content is safe", "unsafe\nviolence", "safe\nS1", "maybe"]
)
def test_what_is_not_a_verdict(text: str) -> None:
    with pytest.raises(ValueError, match="not a guard verdict"):
        parse_verdict(text)
