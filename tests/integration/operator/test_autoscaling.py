"""Replicas that follow request load, on kwok GPU nodes: many concurrent slow requests
through a real gateway against a slow fake model server raise the entity's replicas to
the right number within the stated window (one autoscaling interval, and the watch),
never above its maximum; once they finish, idle brings them back to the minimum, never
below it; status and events say so.

The operator is the real one (its Kopf handlers, watch cache, reconciles and autoscaler
against the real apiserver), run in this process so that it can be told where the
gateway's figures are: kwok pods run no container, so the endpoint's gateway runs here, on
loopback, and the autoscaler reads its /metrics instead of the kwok pod's. Everything
else is what a cluster does: the entity's pods are scheduled onto kwok's GPU nodes.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import kopf
import pytest

from modelport.controller import handlers
from modelport.controller.cache import CachedPod
from modelport.scaling import EntityFigures, PodFigures, parse_metrics
from modelport.settings import from_env
from tests.conftest import Cluster
from tests.integration.gateway.fakes import (
    FakeProvider,
    Reply,
    RunningGateway,
    Seen,
    chat_reply,
    endpoint,
    start_gateway,
    vllm,
)
from tests.integration.operator.support import apply, kubectl_json, wait_ready
from tests.support import eventually

pytestmark = pytest.mark.cluster

NAME, ENTITY = "busy", "llama"
DEPLOYMENT = f"{NAME}-{ENTITY}"
INTERVAL, WINDOW = 1.0, 6.0
# Within one interval, the watch and a reconcile: what the test allows for each step.
WITHIN = 10.0


class LocalGateway:
    """The autoscaler's reader of gateway figures, pointed at the gateway on loopback for
    whichever gateway pod of the endpoint it asks about."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.simulated: dict[str, PodFigures] = {}
        """Endpoint -> the figures its gateway pods report instead (simulated load)."""

    async def read(self, namespace: str, endpoint: str, pod: CachedPod) -> PodFigures:
        if endpoint in self.simulated:
            return self.simulated[endpoint]
        async with httpx.AsyncClient() as client:
            return parse_metrics((await client.get(self.url + "/metrics", timeout=2)).text)

    async def aclose(self) -> None:
        return None


class SlowModel:
    """A model server whose answers wait until the test releases them."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.fake = FakeProvider().start()

        @self.fake.route("POST", "/v1/chat/completions")
        def answer(seen: Seen) -> Reply:
            self.release.wait(120)
            return chat_reply("slowly")


@pytest.fixture
def model() -> Iterator[SlowModel]:
    slow = SlowModel()
    yield slow
    slow.release.set()
    slow.fake.stop()


@pytest.fixture
def gateway(model: SlowModel, tmp_path: Path) -> Iterator[RunningGateway]:
    gw = start_gateway(
        tmp_path / "gw", endpoint(vllm(ENTITY, model.fake.url + "/v1"), name=NAME), {}
    )
    yield gw
    gw.stop()


@pytest.fixture
def figures(gateway: RunningGateway) -> LocalGateway:
    return LocalGateway(gateway.url)


@pytest.fixture
def operator(
    crd: Cluster, op_namespace: str, figures: LocalGateway, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The operator in a thread of this process, its autoscaler reading `gateway`."""
    monkeypatch.setenv("KUBECONFIG", str(crd.kubeconfig))
    settings = from_env(
        {
            "MODELPORT_NAMESPACES": op_namespace,
            "MODELPORT_AUTOSCALING": json.dumps(
                {
                    "intervalSeconds": INTERVAL,
                    "scaleDownStabilizationSeconds": WINDOW,
                    # The loopback gateway's CPU seconds are this whole process's (the
                    # operator's threads too): its CPU bound would measure the test.
                    "gatewayTargetCpuPercent": 0,
                }
            ),
        }
    )
    memo = kopf.Memo(settings=settings, gateway_metrics=figures)
    stop, ready = threading.Event(), threading.Event()

    def run() -> None:
        asyncio.run(
            kopf.operator(
                registry=handlers.registry, standalone=True, namespaces=[op_namespace],
                memo=memo, stop_flag=stop, ready_flag=ready,
            )
        )  # fmt: skip

    thread = threading.Thread(target=run, name="operator", daemon=True)
    thread.start()
    assert ready.wait(60), "the operator did not start"
    yield
    stop.set()
    thread.join(30)


def _replicas(cluster: Cluster, namespace: str, name: str = DEPLOYMENT) -> int:
    deployment = kubectl_json(cluster, "-n", namespace, "get", "deployment", name)
    return int(deployment["spec"]["replicas"])


class Watcher:
    """Samples the entity's replicas in the background: the most and the fewest seen."""

    def __init__(self, cluster: Cluster, namespace: str, name: str = DEPLOYMENT) -> None:
        self.seen: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(cluster, namespace, name), daemon=True
        )
        self._thread.start()

    def _run(self, cluster: Cluster, namespace: str, name: str) -> None:
        while not self._stop.wait(0.5):
            self.seen.append(_replicas(cluster, namespace, name))

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(10)
        return self.seen


def test_load_raises_replicas_within_the_window_and_idle_lowers_them_to_min(
    crd: Cluster,
    op_namespace: str,
    operator: None,
    gateway: RunningGateway,
    model: SlowModel,
) -> None:
    ns = op_namespace
    body: dict[str, Any] = {
        "apiVersion": "serving.modelport.io/v1alpha1",
        "kind": "ServingEndpoint",
        "metadata": {"name": NAME},
        "spec": {
            "servedEntities": [
                {
                    "name": ENTITY,
                    "entityName": "system.ai.meta_llama_v3_1_8b_instruct",
                    "workloadSize": "Medium",  # 16 concurrent: 1 to 4 replicas of 4 each
                }
            ],
            "aiGateway": {"auth": {"enabled": False}},
        },
    }
    apply(crd, ns, body)
    wait_ready(crd, ns, NAME, timeout=120)
    assert _replicas(crd, ns) == 1
    watcher = Watcher(crd, ns)
    chat = {"model": NAME, "messages": [{"role": "user", "content": "hi"}]}

    def send(_: int) -> int:
        return httpx.post(gateway.url + "/v1/chat/completions", json=chat, timeout=120).status_code

    with ThreadPoolExecutor(20) as pool:
        first = [pool.submit(send, i) for i in range(10)]
        began = time.monotonic()
        eventually(lambda: _replicas(crd, ns) == 3, timeout=WITHIN)  # ceil(10 / 4)
        print(f"10 in flight: 3 replicas after {time.monotonic() - began:.1f}s")
        more = [pool.submit(send, i) for i in range(10)]
        began = time.monotonic()
        eventually(lambda: _replicas(crd, ns) == 4, timeout=WITHIN)  # ceil(20 / 4) > max 4
        print(f"20 in flight: 4 replicas (its maximum) after {time.monotonic() - began:.1f}s")
        # The new pods land on kwok's GPU nodes and become ready; status says so.
        eventually(
            lambda: (
                kubectl_json(crd, "-n", ns, "get", "servingendpoint", NAME)["status"].get(
                    "replicaSummary"
                )
                == f"{ENTITY} 4/4"
            ),
            timeout=60,
        )
        time.sleep(3 * INTERVAL)  # still 20 in flight: no more than 4
        model.release.set()
        assert [f.result() for f in first + more] == [200] * 20
    began = time.monotonic()
    eventually(lambda: _replicas(crd, ns) == 1, timeout=WINDOW + WITHIN)
    print(f"idle: back to 1 replica after {time.monotonic() - began:.1f}s (window {WINDOW}s)")
    time.sleep(3 * INTERVAL + WINDOW)  # idle for longer than the window: never below min
    seen = watcher.stop()
    assert max(seen) == 4 and min(seen) == 1, seen
    assert _replicas(crd, ns) == 1

    pods = kubectl_json(
        crd, "-n", ns, "get", "pods", "-l", f"serving.modelport.io/entity={ENTITY}"
    )["items"]
    assert {p["spec"]["nodeName"] for p in pods if not p["metadata"].get("deletionTimestamp")} <= {
        "kwok-gpu-h100-0",
        "kwok-gpu-h100-1",
        "kwok-gpu-l4-0",
    }
    events = kubectl_json(
        crd, "-n", ns, "get", "events", "--field-selector", f"involvedObject.name={NAME}"
    )["items"]
    messages = [(e["reason"], e["message"]) for e in events if e["reason"].startswith("Scaled")]
    # 20 requests in flight are well within one gateway replica's 100: it stays at 1.
    assert not [m for _, m in messages if m.startswith("gateway")], messages
    ups = [m for r, m in messages if r == "ScaledUp"]
    assert ups and all("requests in flight (a replica is sized for 4)" in m for m in ups), ups
    assert any(m.startswith(f"entity {ENTITY}: 4 -> 1 replicas") for r, m in messages), messages


SLEEPY = "sleepy"
IDLE = 10
"""The entity's scaleToZeroIdleSeconds (the API's minimum)."""


def _summary(cluster: Cluster, namespace: str) -> str | None:
    status = kubectl_json(cluster, "-n", namespace, "get", "servingendpoint", SLEEPY)["status"]
    summary: str | None = status.get("replicaSummary")
    return summary if status["state"]["ready"] == "READY" else None


def test_idle_takes_an_entity_to_zero_and_held_requests_bring_it_back(
    crd: Cluster, op_namespace: str, operator: None, figures: LocalGateway
) -> None:
    """On kwok GPU nodes, with the gateway's figures simulated: idle for its
    scaleToZeroIdleSeconds, the entity goes to zero pods and the endpoint stays READY,
    saying so in `kubectl get` and `describe`; requests held for it bring it back to one
    replica, and while any is held it is not taken to zero again, however long."""
    ns, deployment = op_namespace, f"{SLEEPY}-{ENTITY}"
    entity = {
        "name": ENTITY,
        "entityName": "system.ai.meta_llama_v3_1_8b_instruct",
        "workloadSize": "Small",
        "scaleToZeroEnabled": True,
        "scaleToZeroIdleSeconds": IDLE,
    }
    body: dict[str, Any] = {
        "apiVersion": "serving.modelport.io/v1alpha1",
        "kind": "ServingEndpoint",
        "metadata": {"name": SLEEPY},
        "spec": {"servedEntities": [entity], "aiGateway": {"auth": {"enabled": False}}},
    }
    figures.simulated[SLEEPY] = PodFigures()  # no request at all
    apply(crd, ns, body)
    wait_ready(crd, ns, SLEEPY, timeout=120)
    began = time.monotonic()
    eventually(lambda: _replicas(crd, ns, deployment) == 0, timeout=IDLE + WITHIN + 30)
    print(f"idle: zero replicas after {time.monotonic() - began:.1f}s (idle period {IDLE}s)")
    eventually(
        lambda: not kubectl_json(
            crd, "-n", ns, "get", "pods", "-l", f"serving.modelport.io/endpoint={SLEEPY},"
            f"serving.modelport.io/entity={ENTITY}",
        )["items"],
        timeout=60,
    )  # fmt: skip
    eventually(lambda: _summary(crd, ns) == f"{ENTITY} 0/0 (scaled to zero)", timeout=30)

    # What a user sees: READY, and why no pod runs.
    listed = crd.kubectl("-n", ns, "get", "sep", SLEEPY).stdout
    header, row = listed.strip().splitlines()
    print(f"\n{listed}")
    assert header.split()[:4] == ["NAME", "READY", "CONFIG", "UPDATE"], listed
    assert "REPLICAS" in header and f"{ENTITY} 0/0 (scaled to zero)" in row, listed
    assert row.split()[1] == "READY", listed
    described = crd.kubectl("-n", ns, "describe", "sep", SLEEPY).stdout
    for words in (
        "ScaledToZero",  # the entity's scale.state, and the event's reason
        "scaled to zero while idle; the next request starts a replica",
        f"entity {ENTITY}: 1 -> 0 replicas: no request for",  # the event
    ):
        assert words in described, (words, described)

    # Two requests held at the gateway for it: back to one replica within an interval.
    figures.simulated[SLEEPY] = PodFigures(entities={ENTITY: EntityFigures(held=2)})
    began = time.monotonic()
    eventually(lambda: _replicas(crd, ns, deployment) == 1, timeout=WITHIN)
    print(f"2 held: 1 replica after {time.monotonic() - began:.1f}s")
    eventually(lambda: _summary(crd, ns) == f"{ENTITY} 1/1", timeout=60)
    # Held for longer than the idle period: never taken away from them.
    watcher = Watcher(crd, ns, deployment)
    time.sleep(IDLE + 3 * INTERVAL)
    assert min(watcher.stop()) == 1
    events = kubectl_json(
        crd, "-n", ns, "get", "events", "--field-selector", f"involvedObject.name={SLEEPY}"
    )["items"]
    ups = [e["message"] for e in events if e["reason"] == "ScaledUp"]
    assert f"entity {ENTITY}: 0 -> 1 replicas: 0 requests in flight and 2 waiting for a replica" \
        " (a replica is sized for 4)" in ups, ups  # fmt: skip
