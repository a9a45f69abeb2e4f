"""The autoscaler's decisions (pure): up at once, down after the stabilisation window, to
zero after the idle period, never outside the bounds; and the figures it reads from a
gateway's /metrics, which the gateway's own metrics module writes."""

from __future__ import annotations

import pytest

from modelport.gateway.context import Attempt, RequestContext
from modelport.gateway.metrics import Metrics
from modelport.scaling import (
    CPU_SECONDS,
    ENTITY_IN_FLIGHT,
    HELD,
    IN_FLIGHT,
    Load,
    Scaler,
    ScaleTarget,
    cpu_utilisation,
    entity_load,
    gateway_load,
    parse_metrics,
)

WINDOW = 300.0
ENTITY = ScaleTarget("chat-llama", "llama", min_replicas=1, max_replicas=4, target_in_flight=4)
ZERO = ScaleTarget(
    "chat-llama", "llama", min_replicas=0, max_replicas=2, target_in_flight=4, idle_seconds=1800
)
GATEWAY = ScaleTarget(
    "chat-gateway", None, 1, 5, target_in_flight=100, cpu_request=0.1, target_cpu=0.7
)


class Run:
    """One target's scaler driven tick by tick, with the replicas kept as the writes
    leave them (a write always succeeds here)."""

    def __init__(self, target: ScaleTarget, replicas: int, now: float = 1000.0) -> None:
        self.target = target
        self.replicas = replicas
        self.now = now
        self.scaler = Scaler(now)
        self.reasons: list[str] = []

    def tick(self, load: Load, after: float = 10.0, available: int | None = None) -> int:
        self.now += after
        self.scaler.observe(self.replicas, self.now, available)
        decision = self.scaler.decide(self.target, load, self.replicas, self.now, WINDOW)
        if decision is not None:
            self.replicas = decision.replicas
            self.reasons.append(decision.reason)
        return self.replicas


def busy(in_flight: float, held: float = 0.0) -> Load:
    return Load(in_flight=in_flight, held=held)


IDLE = Load()


def test_scales_up_at_once_to_demand_over_target_and_never_above_max() -> None:
    run = Run(ENTITY, 1)
    assert run.tick(busy(9)) == 3  # ceil(9 / 4)
    assert "9 requests in flight (a replica is sized for 4)" in run.reasons[-1]
    assert run.tick(busy(40)) == 4  # capped
    assert run.tick(busy(400)) == 4


def test_scales_down_only_to_the_largest_need_of_the_window_and_never_below_min() -> None:
    run = Run(ENTITY, 1, now=0.0)
    run.tick(busy(16), after=WINDOW)  # a whole window watched: scale-downs allowed
    assert run.replicas == 4
    replicas = [run.tick(busy(4)) for _ in range(int(WINDOW // 10) - 1)]
    assert set(replicas) == {4}, "within the window the peak still counts"
    for _ in range(3):
        run.tick(busy(4))
    assert run.replicas == 1
    for _ in range(int(WINDOW // 10) + 2):
        run.tick(IDLE)
    assert run.replicas == 1, "min is 1 without scale to zero"


def test_a_fresh_scaler_waits_a_window_before_scaling_down() -> None:
    """A restarted operator knows no history: it must not drop replicas on its first look."""
    run = Run(ENTITY, 4, now=0.0)
    assert run.tick(IDLE) == 4
    assert run.tick(IDLE, after=WINDOW) == 1


def test_nothing_is_scaled_down_while_a_request_is_held_or_a_gateway_is_silent() -> None:
    run = Run(ENTITY, 3, now=0.0)
    run.tick(busy(0, held=1), after=WINDOW * 2)
    assert run.replicas == 3
    run.tick(Load(complete=False), after=WINDOW * 2)
    assert run.replicas == 3
    run.tick(IDLE, after=WINDOW * 2)
    assert run.replicas == 1


def test_above_max_is_brought_down_at_once() -> None:
    run = Run(ENTITY, 9)
    assert run.tick(busy(100)) == 4
    assert run.reasons == ["above its maximum of 4"]


def test_below_min_is_brought_up_at_once() -> None:
    run = Run(ENTITY, 0)
    assert run.tick(IDLE) == 1


def test_scale_to_zero_after_the_idle_period_and_wake_on_demand_only() -> None:
    run = Run(ZERO, 1, now=0.0)
    run.tick(busy(1))
    for _ in range(178):
        run.tick(IDLE)
    assert run.replicas == 1, "idle for less than 1800 s"
    run.tick(IDLE, after=20)
    assert run.replicas == 0
    assert run.reasons[-1] == "no request for 30 min"
    # At zero, time and history start nothing; only demand does.
    for _ in range(50):
        assert run.tick(IDLE, after=WINDOW) == 0
    assert run.tick(busy(0, held=6)) == 2  # ceil(6 / 4), within max


def test_never_to_zero_without_every_gateways_word() -> None:
    run = Run(ZERO, 1, now=0.0)
    run.tick(Load(complete=False), after=4000)
    assert run.replicas == 1


def test_a_wake_by_the_gateway_counts_as_a_request() -> None:
    """The gateway took the entity from 0 to 1: the idle period starts again, so the
    autoscaler does not put it straight back to zero."""
    run = Run(ZERO, 1, now=0.0)
    run.tick(IDLE, after=2000)
    assert run.replicas == 0
    run.replicas = 1  # the gateway's write, seen at the next tick
    run.tick(IDLE)
    run.tick(IDLE, after=1790)
    assert run.replicas == 1
    run.tick(IDLE)
    assert run.replicas == 0


def test_the_idle_period_runs_from_when_the_entity_is_up() -> None:
    """A first replica that loads its model for longer than the idle period is not taken
    to zero before it could answer: the idle period starts once every replica is ready."""
    run = Run(ZERO, 1, now=0.0)
    for _ in range(30):
        assert run.tick(IDLE, after=100, available=0) == 1  # loading for 3000 s
    run.tick(IDLE, after=10, available=1)
    run.tick(IDLE, after=1780, available=1)
    assert run.replicas == 1
    run.tick(IDLE, after=20, available=1)
    assert run.replicas == 0


def test_a_scale_to_zero_entity_stays_at_one_while_active() -> None:
    run = Run(ZERO, 2, now=0.0)
    run.tick(busy(1), after=WINDOW)
    for _ in range(40):
        run.tick(IDLE)
    assert run.replicas == 1


@pytest.mark.parametrize(
    ("cpu", "replicas", "expected"),
    [
        (0.75, 2, 2),  # within 10% of 70%: nothing
        (1.4, 2, 4),  # twice the target: twice the replicas
        (3.5, 2, 5),  # capped
        (None, 2, 2),  # not measured yet
    ],
)
def test_the_gateway_has_cpu_as_a_second_bound(
    cpu: float | None, replicas: int, expected: int
) -> None:
    run = Run(GATEWAY, replicas)
    assert run.tick(Load(in_flight=10, cpu=cpu)) == expected


def test_the_gateway_follows_its_requests_in_flight() -> None:
    run = Run(GATEWAY, 1)
    assert run.tick(Load(in_flight=350, cpu=0.2)) == 4


def test_figures_from_the_gateways_own_metrics() -> None:
    """What the gateway's metrics module writes is what the autoscaler reads."""
    metrics = Metrics()
    for _ in range(3):
        metrics.request_started()
    metrics.entity("llama").in_flight = 2
    metrics.entity("llama").held = 1
    metrics.entity("gpt").in_flight = 1
    body, _ = metrics.render()
    figures = parse_metrics(body.decode())
    assert figures.in_flight == 3
    assert figures.entities["llama"].in_flight == 2 and figures.entities["llama"].held == 1
    assert figures.entities["gpt"].in_flight == 1 and figures.entities["gpt"].held == 0
    assert figures.cpu_seconds is not None and figures.cpu_seconds >= 0
    # A request that finished leaves nothing behind.
    metrics.entity("llama").in_flight = 0
    metrics.entity("llama").held = 0
    ctx = RequestContext("chat", "/v1/chat/completions")
    ctx.attempts.append(Attempt("llama", ctx.started, ctx.started, 200))
    metrics.request_finished(ctx)
    again = parse_metrics(metrics.render()[0].decode())
    assert again.entities["llama"].in_flight == 0 and again.entities["llama"].held == 0
    text = body.decode()
    for name in (IN_FLIGHT, ENTITY_IN_FLIGHT, HELD, CPU_SECONDS):
        assert f"\n{name}" in text


def test_parse_skips_what_it_does_not_read() -> None:
    text = "\n".join(
        [
            "# HELP modelport_gateway_held_requests ...",
            'modelport_gateway_held_requests{entity="llama"} 2.0',
            'modelport_gateway_requests_total{entity="llama",route="/v1",status="200"} 5.0',
            'modelport_gateway_entity_in_flight_requests{entity="llama"} NaN',
            "modelport_gateway_in_flight_requests -1",
            "garbage",
        ]
    )
    figures = parse_metrics(text)
    assert figures.entities["llama"].held == 2 and figures.entities["llama"].in_flight == 0
    assert figures.in_flight == 0 and figures.cpu_seconds is None


def test_loads_sum_over_gateway_pods() -> None:
    a = parse_metrics('modelport_gateway_entity_in_flight_requests{entity="llama"} 3')
    b = parse_metrics('modelport_gateway_held_requests{entity="llama"} 2')
    assert entity_load([a, b], "llama") == Load(in_flight=3, held=2, complete=True)
    assert entity_load([a, None], "llama").complete is False
    assert gateway_load([a, b], [0.5, 0.7]).cpu == pytest.approx(0.6)
    assert cpu_utilisation((0, 10.0), (10, 10.5), 0.1) == pytest.approx(0.5)
    assert cpu_utilisation((0, 10.0), (10, 2.0), 0.1) is None  # the counter restarted
