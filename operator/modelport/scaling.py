"""Replicas that follow request load: the autoscaler's decisions, pure.

The operator's autoscaler (`modelport.controller.autoscaler`) is the one owner of the
replicas of every endpoint's gateway and of every self-hosted entity: no
HorizontalPodAutoscaler is rendered for them, so no two writers ever set the same
number. Every `intervalSeconds` it reads each ready gateway pod's `/metrics` (what the
gateway counts anyway: requests in flight per entity, requests held for an entity that
is starting, the container's CPU seconds), sums them per endpoint, and asks `Scaler.decide`
of each Deployment whether to change its `replicas`. Nothing here does I/O or reads a
clock: the caller passes `now`.

The policy, per Deployment (`ScaleTarget`):

- **Demand** is the requests in flight plus those held, over all gateway pods. A replica
  is sized for `target_in_flight` of them (an entity: 4 concurrent requests, the unit of
  `workloadSize` and provisioned concurrency; a gateway: the cluster's
  `gatewayTargetInFlight`), so the recommendation is ``ceil(demand / target)``. A gateway
  also has CPU as a second bound: ``ceil(replicas * utilisation / target)``, HPA's
  formula, ignored within 10% of the target; the larger recommendation wins.
- **Up at once**: a recommendation above the current replicas is applied at the next
  tick (GPU pods take minutes to start; waiting longer only adds to that).
- **Down slowly**: a recommendation below is applied only as the largest of every
  recommendation within the last `window` seconds (HPA's scale-down stabilisation), never
  while a request is held (a pod waiting for a GPU node is not taken away from the
  requests waiting for it), never while a gateway pod did not answer (what it did not
  say could be load), and not before the autoscaler has watched for a whole window (a
  restarted operator knows no history).
- **Within bounds**: never above `max_replicas` (a higher count, set by hand, is brought
  down at once), never below `min_replicas`.
- **To zero** (`idle_seconds`, entities with `scaleToZeroEnabled`): after that long
  without any request in flight or held and with every replica ready (the idle period
  runs from when the entity is up), and with every gateway pod answering, the
  entity goes to 0 at once (the idle period is its stabilisation). At zero it stays
  there until demand appears: an operator that restarts wakes nothing. The gateway
  wakes an entity at zero itself (0 to 1, a compare-and-set on the Deployment's
  resourceVersion) the moment a request arrives; the autoscaler sees that as the
  request it is, and owns the replicas from there.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

CPU_TOLERANCE = 0.1
"""HPA's tolerance: a CPU ratio within 10% of the target changes nothing."""

IN_FLIGHT = "modelport_gateway_in_flight_requests"
ENTITY_IN_FLIGHT = "modelport_gateway_entity_in_flight_requests"
HELD = "modelport_gateway_held_requests"
CPU_SECONDS = "modelport_gateway_cpu_seconds_total"
"""The series of a gateway's /metrics the autoscaler reads (the gateway's metrics module
names them too; a test checks the two agree)."""

_SAMPLE = re.compile(
    r'^(?P<name>[a-z_]+)(?:\{entity="(?P<entity>[A-Za-z0-9_-]*)"\})? (?P<value>\S+)'
)


@dataclass(frozen=True)
class ScaleTarget:
    """One Deployment whose replicas the autoscaler owns, and its bounds (rendered from
    the endpoint and the cluster's settings)."""

    deployment: str
    entity: str | None
    """The self-hosted entity it runs; None for the endpoint's gateway."""
    min_replicas: int
    max_replicas: int
    target_in_flight: float
    """Requests in flight one replica is sized for."""
    idle_seconds: float | None = None
    """Scale to zero after this long without a request (scaleToZeroEnabled); None: never."""
    cpu_request: float | None = None
    """A gateway's CPU request in cores: the CPU bound's denominator (None: no bound)."""
    target_cpu: float | None = None
    """A gateway's CPU utilisation target, 0-1 (None: no CPU bound)."""

    @property
    def what(self) -> str:
        """How events and logs name it."""
        return "gateway" if self.entity is None else f"entity {self.entity}"

    @property
    def scales_to_zero(self) -> bool:
        """Whether idle takes it to zero replicas."""
        return self.idle_seconds is not None and self.min_replicas == 0


@dataclass(frozen=True)
class EntityFigures:
    """One entity's requests, as one gateway pod counts them."""

    in_flight: float = 0.0
    held: float = 0.0


@dataclass(frozen=True)
class PodFigures:
    """What one gateway pod's /metrics says."""

    in_flight: float = 0.0
    entities: Mapping[str, EntityFigures] = field(default_factory=dict)
    cpu_seconds: float | None = None
    """CPU seconds its container has used (None: not reported)."""


def parse_metrics(text: str) -> PodFigures:
    """The autoscaler's figures from a gateway's Prometheus text; series it does not read
    are skipped (a scrape is a few kilobytes: one pass over its lines)."""
    in_flight = 0.0
    cpu: float | None = None
    flights: dict[str, float] = {}
    held: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("modelport_gateway_"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name = match["name"]
        if name not in (IN_FLIGHT, ENTITY_IN_FLIGHT, HELD, CPU_SECONDS):
            continue
        try:
            value = float(match["value"])
        except ValueError:
            continue
        if not math.isfinite(value) or value < 0:
            continue
        entity = match["entity"]
        if name == IN_FLIGHT:
            in_flight = value
        elif name == CPU_SECONDS:
            cpu = value
        elif entity is not None:
            (flights if name == ENTITY_IN_FLIGHT else held)[entity] = value
    entities = {
        e: EntityFigures(flights.get(e, 0.0), held.get(e, 0.0)) for e in sorted({*flights, *held})
    }
    return PodFigures(in_flight, entities, cpu)


def cpu_utilisation(
    before: tuple[float, float], after: tuple[float, float], request: float
) -> float | None:
    """Utilisation of a CPU request between two (time, cpu seconds) samples of one pod;
    None when they say nothing (no time passed, the counter went back: a restart)."""
    elapsed = after[0] - before[0]
    used = after[1] - before[1]
    if elapsed <= 0 or used < 0 or request <= 0:
        return None
    return used / elapsed / request


@dataclass(frozen=True)
class Load:
    """One Deployment's demand, summed over the endpoint's gateway pods."""

    in_flight: float = 0.0
    held: float = 0.0
    cpu: float | None = None
    """Mean utilisation of the gateway pods' CPU request (a gateway's load only)."""
    complete: bool = True
    """Every ready gateway pod answered: no request can be missing from the sums."""

    @property
    def demand(self) -> float:
        """Requests in flight and held."""
        return self.in_flight + self.held


def entity_load(pods: list[PodFigures | None], entity: str) -> Load:
    """An entity's load from each gateway pod's figures (None: the pod did not answer)."""
    answered = [p for p in pods if p is not None]
    figures = [p.entities.get(entity, EntityFigures()) for p in answered]
    return Load(
        in_flight=sum(f.in_flight for f in figures),
        held=sum(f.held for f in figures),
        complete=len(answered) == len(pods),
    )


def gateway_load(pods: list[PodFigures | None], cpu: list[float]) -> Load:
    """The gateway's own load: its requests in flight, and the mean of the pods' CPU
    utilisations that could be measured (`cpu`)."""
    answered = [p for p in pods if p is not None]
    return Load(
        in_flight=sum(p.in_flight for p in answered),
        cpu=sum(cpu) / len(cpu) if cpu else None,
        complete=len(answered) == len(pods),
    )


@dataclass(frozen=True)
class Decision:
    """Set the Deployment's replicas to `replicas`, because `reason` (an event's words)."""

    replicas: int
    reason: str


class Scaler:
    """One Deployment's memory between ticks: the recommendations of the stabilisation
    window, when it last had a request, the replicas it last saw."""

    def __init__(self, now: float) -> None:
        self.started = now
        self.last_active = now
        self.last_replicas: int | None = None
        self.history: deque[tuple[float, int]] = deque()

    def observe(self, current: int, now: float, available: int | None = None) -> bool:
        """Note the replicas the Deployment has now (`available` of them ready); whether
        someone else took it from zero (the gateway woke it: a request arrived, which
        counts as activity). Replicas still starting count as activity too: the idle
        period runs from when the entity is up, so a model that takes longer to load
        than its idle period is not taken to zero before it could answer."""
        woken = self.last_replicas == 0 and current > 0
        self.last_replicas = current
        if woken or (available is not None and available < current):
            self.last_active = now
        return woken

    def decide(
        self, target: ScaleTarget, load: Load, current: int, now: float, window: float
    ) -> Decision | None:
        """The change to make now, or None to keep `current` (see the module docstring);
        `observe` comes first. A decision made is taken as done (`last_replicas`): should
        the write fail, the next `observe` corrects it."""
        if load.demand > 0:
            self.last_active = now
        decision = self._decide(target, load, current, now, window)
        if decision is not None:
            self.last_replicas = decision.replicas
        return decision

    def _decide(
        self, target: ScaleTarget, load: Load, current: int, now: float, window: float
    ) -> Decision | None:
        if current > target.max_replicas:
            return Decision(target.max_replicas, f"above its maximum of {target.max_replicas}")
        want, why = self._recommend(target, load, current)
        if target.scales_to_zero:
            if current == 0:
                # Only demand starts a replica: no figure, no history wakes an entity.
                want = min(want, target.max_replicas)
                return Decision(want, why) if want > 0 else None
            idle = now - self.last_active
            if load.complete and load.demand == 0 and idle >= (target.idle_seconds or 0):
                self.history.clear()
                return Decision(0, f"no request for {_duration(idle)}")
            floor = max(target.min_replicas, 1)
        else:
            floor = target.min_replicas
        want = max(floor, min(want, target.max_replicas))
        self.history.append((now, want))
        while self.history and self.history[0][0] < now - window:
            self.history.popleft()
        if want > current:
            return Decision(want, why if want > floor else f"its minimum is {floor}")
        if want == current:
            return None
        if load.held > 0 or not load.complete or now - self.started < window:
            return None
        settled = max(n for _, n in self.history)
        if settled >= current:
            return None
        return Decision(settled, f"{why}, for {_duration(window)}")

    @staticmethod
    def _recommend(target: ScaleTarget, load: Load, current: int) -> tuple[int, str]:
        """Replicas the demand asks for (uncapped), and why, in words."""
        want = math.ceil(load.demand / target.target_in_flight)
        why = f"{_requests(load)} (a replica is sized for {target.target_in_flight:g})"
        if target.target_cpu and load.cpu is not None and current > 0:
            ratio = load.cpu / target.target_cpu
            by_cpu = current if abs(ratio - 1) <= CPU_TOLERANCE else math.ceil(current * ratio)
            if by_cpu > want:
                want = by_cpu
                why = f"CPU at {load.cpu:.0%} of its request (target {target.target_cpu:.0%})"
        return want, why


def _requests(load: Load) -> str:
    text = f"{load.in_flight:g} request{'' if load.in_flight == 1 else 's'} in flight"
    if load.held:
        text += f" and {load.held:g} waiting for a replica"
    return text


def _duration(seconds: float) -> str:
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"
