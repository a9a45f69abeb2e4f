"""Which events make a reconcile, and what a failing one does: the manager over the
in-memory world (`tests.unit.operator.world`), with real queue timing."""

from __future__ import annotations

import asyncio
import copy
import itertools
from typing import Any

from modelport.controller.manager import Manager
from modelport.controller.queue import WorkQueue
from tests.unit.operator.world import NS, FakeKube, make_reconciler, sample_body

NAME = "chat"
KEY = (NS, NAME)


def _manager(kube: FakeKube, queue: WorkQueue[tuple[str, str]] | None = None) -> Manager:
    reconciler = make_reconciler(kube)
    return Manager(
        reconciler, reconciler.cache, workers=2, resync_seconds=0, queue=queue, debounce=0.05
    )


async def _settle(manager: Manager, seconds: float = 0.3) -> None:
    """Until the queue has been empty for a while."""
    quiet = 0.0
    while quiet < seconds:
        await asyncio.sleep(0.05)
        quiet = quiet + 0.05 if not len(manager.queue) else 0.0


def _status_changes(kube: FakeKube, kind: str, change: dict[str, Any]) -> dict[str, Any]:
    obj = next(o for (k, _), o in kube.objects.items() if k == kind)
    obj["status"] = {**obj.get("status", {}), **change}
    return copy.deepcopy(obj)


def test_a_burst_of_status_changes_on_children_makes_at_most_a_few_reconciles() -> None:
    kube = FakeKube(sample_body("mixed-traffic-fallback"), {"llm-keys": {"openai": "x"}})

    async def scenario() -> tuple[int, int, int]:
        manager = _manager(kube)
        manager.start()
        manager.endpoint_event(None, *KEY)
        await _settle(manager)
        assert kube.endpoint["status"]["state"]["ready"] == "READY"
        before = manager.stats["reconciles"]
        # 50 status writes no reconcile reads: the HPA controller's and a Deployment's
        # conditions being touched.
        for i in range(25):
            hpa = _status_changes(kube, "HorizontalPodAutoscaler", {"currentReplicas": i})
            manager.child_event("MODIFIED", "HorizontalPodAutoscaler", hpa)
            deployment = _status_changes(
                kube, "Deployment", {"conditions": [{"type": "Available", "reason": str(i)}]}
            )
            manager.child_event("MODIFIED", "Deployment", deployment)
        await _settle(manager)
        ignored = manager.stats["reconciles"] - before
        # 50 that do matter (the rollout state flapping), in a burst: debounced.
        for i in range(50):
            deployment = _status_changes(kube, "Deployment", {"availableReplicas": i % 2})
            manager.child_event("MODIFIED", "Deployment", deployment)
        await _settle(manager)
        burst = manager.stats["reconciles"] - before - ignored
        writes = kube.writes
        await manager.stop()
        return ignored, burst, writes

    ignored, burst, _ = asyncio.run(scenario())
    assert ignored == 0
    assert 1 <= burst <= 3


def test_a_deleted_child_is_recreated() -> None:
    kube = FakeKube(sample_body("mixed-traffic-fallback"), {"llm-keys": {"openai": "x"}})

    async def scenario() -> None:
        manager = _manager(kube)
        manager.start()
        manager.endpoint_event(None, *KEY)
        await _settle(manager)
        gone = kube.objects.pop(("Service", "chat"))
        manager.child_event("DELETED", "Service", gone)
        await _settle(manager)
        await manager.stop()

    asyncio.run(scenario())
    assert ("Service", "chat") in kube.objects


def test_a_failing_reconcile_backs_off_and_recovers_when_the_cause_is_fixed() -> None:
    kube = FakeKube(sample_body("mixed-traffic-fallback"), {"llm-keys": {"openai": "x"}})
    kube.unavailable = True

    async def scenario() -> None:
        queue: WorkQueue[tuple[str, str]] = WorkQueue(backoff_base=0.02, backoff_cap=10)
        manager = _manager(kube, queue)
        manager.start()
        manager.endpoint_event(None, *KEY)
        while len(kube.attempts) < 6:
            await asyncio.sleep(0.01)
        assert queue.failures(KEY) >= 5
        kube.unavailable = False  # the cause is fixed; no event says so
        await asyncio.sleep(1.5)  # the next retry (at most 1.28 s away) succeeds
        assert queue.failures(KEY) == 0
        await manager.stop()

    asyncio.run(scenario())
    gaps = [b - a for a, b in itertools.pairwise(kube.attempts)]
    # Each wait is at least its backoff, which doubles: 0.02, 0.04, 0.08 ... s.
    assert all(gap >= 0.9 * 0.02 * 2**i for i, gap in enumerate(gaps)), gaps
    assert gaps[-1] > 8 * 0.02, gaps
    assert kube.endpoint["status"]["state"] == {"ready": "READY", "configUpdate": "NOT_UPDATING"}


def test_a_secret_event_reconciles_only_the_endpoints_using_it() -> None:
    kube = FakeKube(sample_body("openai"), {})

    async def scenario() -> tuple[int, int]:
        manager = _manager(kube)
        manager.start()
        manager.endpoint_event(None, NS, "openai-chat")
        await _settle(manager)
        assert kube.endpoint["status"]["state"]["configUpdate"] == "UPDATE_FAILED"
        before = manager.stats["reconciles"]
        manager.secret_event(NS, "unrelated")
        await _settle(manager)
        unrelated = manager.stats["reconciles"] - before
        kube.secrets["llm-keys"] = {"openai": "x"}
        manager.secret_event(NS, "llm-keys")
        await _settle(manager)
        await manager.stop()
        return unrelated, manager.stats["reconciles"] - before

    unrelated, total = asyncio.run(scenario())
    assert unrelated == 0 and total == 1
    assert kube.endpoint["status"]["state"] == {"ready": "READY", "configUpdate": "NOT_UPDATING"}


def test_nothing_is_kept_about_a_deleted_endpoint() -> None:
    kube = FakeKube(sample_body("mixed-traffic-fallback"), {"llm-keys": {"openai": "x"}})

    async def scenario() -> Manager:
        manager = _manager(kube)
        manager.start()
        manager.endpoint_event(None, *KEY)
        await _settle(manager)
        assert KEY in manager.seen
        kube.gone = True  # deleted: the watch's index no longer has it
        manager.endpoint_event("DELETED", *KEY)
        await _settle(manager)
        await manager.stop()  # commits the binding's last group
        return manager

    manager = asyncio.run(scenario())
    assert manager.seen == {} and len(manager.queue) == 0
    assert len(manager.reconciler.expectations) == 0
    assert manager.queue.failures(KEY) == 0
    assert kube.subjects() == []  # its gateway's ServiceAccount left the binding too
