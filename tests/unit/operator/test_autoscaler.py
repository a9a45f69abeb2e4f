"""The autoscaler's I/O around the pure decisions: which pods it reads, what it writes
(with the resourceVersion it decided on), the events, and what it does when a gateway pod
does not answer or the Deployment changed meanwhile. A stand-in for the watch cache, the
gateways' metrics and the API's writes; decisions on an injected clock."""

from __future__ import annotations

from typing import Literal

import pytest

from modelport.controller.autoscaler import Autoscaler
from modelport.controller.cache import Cache, CachedChild, CachedEndpoint, CachedPod
from modelport.kube import KubeError
from modelport.observe import PodObservation
from modelport.render.names import COMPONENT_LABEL, ENTITY_LABEL, GATEWAY, INFERENCE
from modelport.scaling import EntityFigures, PodFigures, ScaleTarget
from modelport.settings import AutoscalingSettings
from modelport.status import DeploymentObservation
from tests.support import FakeClock, asynchronous

NS, NAME, UID = "team-a", "chat", "uid-1"
KEY = (NS, NAME)
TARGETS = (
    ScaleTarget("chat-gateway", None, 1, 3, 100),
    ScaleTarget("chat-llama", "llama", 0, 4, 4, idle_seconds=60),
)
SETTINGS = AutoscalingSettings(interval_seconds=1, scale_down_stabilization_seconds=30)


class World:
    """The cache's indexes, the gateways' figures, the writes."""

    def __init__(self) -> None:
        self.replicas = {"chat-gateway": 1, "chat-llama": 1}
        self.version = 7
        self.pods: list[CachedPod] = [
            _pod("gw-0", "10.0.0.1", GATEWAY),
            _pod("gw-1", "10.0.0.2", GATEWAY),
            _pod("gw-2", "", GATEWAY, ready=False),  # starting: not asked
            _pod("llama-0", "10.0.0.9", INFERENCE),  # not a gateway: not asked
        ]
        self.figures: dict[str, PodFigures | Exception] = {
            "10.0.0.1": PodFigures(),
            "10.0.0.2": PodFigures(),
        }
        self.asked: list[str] = []
        self.writes: list[tuple[str, int, str]] = []
        self.events: list[tuple[str, str]] = []
        self.conflict = False

    def cache(self) -> Cache:
        endpoint = CachedEndpoint(uid=UID, generation=1, deleting=False, body=b"{}")
        return Cache(
            endpoints={KEY: [endpoint]},
            labels={},
            children={KEY: [self._child(n) for n in self.replicas]},
            pods={KEY: self.pods},
            secrets={},
        )

    def _child(self, name: str) -> CachedChild:
        replicas = self.replicas[name]  # all of them ready
        observation = DeploymentObservation(
            name=name, replicas=replicas, available_replicas=replicas
        )
        return CachedChild(
            "Deployment", name, f"uid-{name}", UID, "digest", observation, str(self.version)
        )

    async def read(self, namespace: str, endpoint: str, pod: CachedPod) -> PodFigures:
        self.asked.append(pod.ip)
        found = self.figures[pod.ip]
        if isinstance(found, Exception):
            raise found
        return found

    async def aclose(self) -> None:
        return None

    async def scale(self, namespace: str, name: str, replicas: int, version: str) -> None:
        if self.conflict:
            raise KubeError("conflict", 409)
        self.writes.append((name, replicas, version))
        self.replicas[name] = replicas
        self.version += 1

    async def event(
        self,
        namespace: str,
        endpoint: str,
        uid: str,
        type_: Literal["Normal", "Warning"],
        reason: str,
        message: str,
    ) -> bool:
        self.events.append((reason, message))
        return True


def _pod(name: str, ip: str, component: str, *, ready: bool = True) -> CachedPod:
    labels = {(COMPONENT_LABEL, component)}
    if component == INFERENCE:
        labels.add((ENTITY_LABEL, "llama"))
    return CachedPod(
        uid=f"uid-{name}",
        labels=frozenset(labels),
        observation=PodObservation(name),
        ip=ip,
        ready=ready,
    )


def _llama(in_flight: float = 0, held: float = 0) -> PodFigures:
    return PodFigures(in_flight=in_flight, entities={"llama": EntityFigures(in_flight, held)})


class Scaling:
    """An autoscaler over a world; `tick` rebuilds the cache as a watch would show it."""

    def __init__(self, world: World, clock: FakeClock) -> None:
        self.world = world
        self.clock = clock
        self.autoscaler = Autoscaler(
            world.cache(), world, lambda key: TARGETS if key == KEY else (), SETTINGS,
            metrics=world, clock=clock,
        )  # fmt: skip

    async def tick(self, after: float = 1.0) -> None:
        self.clock.advance(after)
        self.autoscaler.cache = self.world.cache()
        await self.autoscaler.tick()


@asynchronous
async def test_reads_the_ready_gateway_pods_and_scales_up_with_the_version_it_saw() -> None:
    world, clock = World(), FakeClock()
    scaling = Scaling(world, clock)
    world.figures["10.0.0.1"] = _llama(in_flight=6)
    world.figures["10.0.0.2"] = _llama(in_flight=3, held=1)
    await scaling.tick()
    assert sorted(world.asked) == ["10.0.0.1", "10.0.0.2"]
    assert world.writes == [("chat-llama", 3, "7")]  # ceil(10 / 4)
    ((reason, message),) = world.events
    assert reason == "ScaledUp"
    assert message == (
        "entity llama: 1 -> 3 replicas: 9 requests in flight and 1 waiting for a replica "
        "(a replica is sized for 4)"
    )


@asynchronous
async def test_idle_goes_to_zero_the_gateway_wakes_it_and_that_is_an_event() -> None:
    world, clock = World(), FakeClock()
    scaling = Scaling(world, clock)
    for _ in range(61):
        await scaling.tick()
    assert world.replicas["chat-llama"] == 0
    assert world.replicas["chat-gateway"] == 1, "never below its minimum"
    assert world.events[-1][0] == "ScaledToZero"
    world.replicas["chat-llama"] = 1  # the gateway's compare-and-set
    world.figures["10.0.0.1"] = _llama(held=1)
    await scaling.tick()
    assert world.events[-1] == (
        "WokenUp",
        "entity llama: 0 -> 1 replicas: a request arrived (the gateway started it)",
    )
    assert world.replicas["chat-llama"] == 1


@asynchronous
async def test_a_silent_gateway_pod_blocks_scale_down_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world, clock = World(), FakeClock()
    world.replicas["chat-llama"] = 3
    world.figures["10.0.0.2"] = OSError("connection refused")
    scaling = Scaling(world, clock)
    for _ in range(100):
        await scaling.tick()
    assert world.replicas["chat-llama"] == 3 and not world.writes
    warnings = [r for r in caplog.records if "cannot read the load of gateway pod" in r.message]
    assert len(warnings) == 1 and "gw-1" in warnings[0].message
    world.figures["10.0.0.2"] = PodFigures()
    await scaling.tick()
    assert world.replicas["chat-llama"] == 0  # idle for longer than its idle period


@asynchronous
async def test_a_conflict_writes_nothing_and_the_next_look_decides_again() -> None:
    world, clock = World(), FakeClock()
    scaling = Scaling(world, clock)
    world.figures["10.0.0.1"] = _llama(in_flight=8)
    world.conflict = True
    await scaling.tick()
    assert not world.writes and not world.events
    world.conflict = False
    await scaling.tick()
    assert world.writes == [("chat-llama", 2, "7")]


@asynchronous
async def test_an_endpoint_without_a_ready_gateway_is_left_alone() -> None:
    world, clock = World(), FakeClock()
    world.pods = [p for p in world.pods if not p.ready or p.observation.name == "llama-0"]
    world.replicas["chat-llama"] = 9
    scaling = Scaling(world, clock)
    await scaling.tick()
    assert not world.asked and not world.writes
