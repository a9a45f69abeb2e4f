"""SIGKILL in the middle of reconciling, then a restart (through `kopf run -m
modelport.controller`): the endpoints converge with exactly their children, none
duplicated and none orphaned."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cluster
from tests.integration.operator.support import (
    FAKE_SECRET_PREFIX,
    WRITES,
    Operator,
    all_managed,
    apply,
    binding_subjects,
    create_secret,
    endpoint,
    kubectl_json,
    wait_ready,
    write_snapshot,
)
from tests.support import eventually
from tests.unit.operator.helpers import external

pytestmark = pytest.mark.cluster

# Enough endpoints that the operator is still busy when the first child appears.
COUNT = 12
# ConfigMap, ServiceAccount, Service, Deployment of the gateway; Deployment and
# Service of the model.
CHILDREN = 6


def _body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "serving.modelport.io/v1alpha1",
        "kind": "ServingEndpoint",
        "metadata": {"name": name},
        "spec": {
            "servedEntities": [
                external("gpt", "keys"),
                {
                    "name": "llama",
                    "entityName": "hf://meta-llama/Llama-3.1-8B-Instruct",
                    "task": "llm/v1/chat",
                    "workloadType": "GPU_SMALL",
                },
            ],
            "trafficConfig": {
                "routes": [
                    {"servedEntityName": "gpt", "trafficPercentage": 50},
                    {"servedEntityName": "llama", "trafficPercentage": 50},
                ]
            },
        },
    }


@pytest.fixture
def log_path(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "operator.log"


def test_sigkill_mid_reconcile_then_restart_converges(
    crd: Cluster, op_namespace: str, tokenreview_binding: str, log_path: Path
) -> None:
    ns = op_namespace
    create_secret(crd, ns, "keys", {"openai": f"{FAKE_SECRET_PREFIX}-{uuid.uuid4().hex[:8]}"})
    first = Operator(crd, [ns], log_path, binding=tokenreview_binding).start()
    try:
        # All at once, in one request, so the operator gets them together.
        items = [_body(f"crash-{i}") for i in range(COUNT)]
        apply(crd, ns, {"apiVersion": "v1", "kind": "List", "items": items})
        # Kill as soon as the operator has written its first child: it is mid-way.
        eventually(lambda: all_managed(crd, ns), timeout=60, interval=0.05)
        first.stop(signal.SIGKILL)
    finally:
        first.stop(signal.SIGKILL)
    written = len(all_managed(crd, ns))
    assert written < COUNT * CHILDREN, "the kill came too late to interrupt anything"

    # The restart uses `kopf run -m modelport.controller`, the documented equivalent.
    second = Operator(crd, [ns], log_path, binding=tokenreview_binding).start(via_kopf=True)
    try:
        for i in range(COUNT):
            wait_ready(crd, ns, f"crash-{i}", timeout=120)
        children = all_managed(crd, ns)
        keys = [(c["kind"], c["metadata"]["name"]) for c in children]
        assert len(keys) == len(set(keys)) == COUNT * CHILDREN
        uids = {}
        for i in range(COUNT):
            live = endpoint(crd, ns, f"crash-{i}")
            assert live is not None
            uids[f"crash-{i}"] = live["metadata"]["uid"]
        for child in children:
            owner = child["metadata"]["ownerReferences"][0]
            assert uids[owner["name"]] == owner["uid"]
            assert (
                child["metadata"]["name"].startswith(owner["name"] + "-")
                or child["metadata"]["name"] == owner["name"]
            )
        # Every gateway's ServiceAccount is in the TokenReview binding, exactly once,
        # although twelve reconciles added theirs at the same time.
        subjects = [s for s in binding_subjects(crd, tokenreview_binding) if s.startswith(ns)]
        assert sorted(subjects) == sorted(f"{ns}/crash-{i}-gateway" for i in range(COUNT))
        # One ReplicaSet per Deployment: no duplicate pods from a half-done rollout.
        time.sleep(1)
        sets = kubectl_json(crd, "-n", ns, "get", "replicasets")["items"]
        assert len(sets) == COUNT * 2
        second.assert_alive()
    finally:
        second.stop()

    # One more restart of a converged operator: resuming writes nothing at all.
    before = {f"crash-{i}": write_snapshot(crd, ns, f"crash-{i}") for i in range(COUNT)}
    offset = len(log_path.read_text())
    third = Operator(crd, [ns], log_path, binding=tokenreview_binding).start()
    try:
        eventually(lambda: len(third.reconcile_lines(offset)) >= COUNT, timeout=60)
        after = {f"crash-{i}": write_snapshot(crd, ns, f"crash-{i}") for i in range(COUNT)}
        assert after == before
        writes = {WRITES.search(line).group(1) for line in third.reconcile_lines(offset)}  # type: ignore[union-attr]
        assert writes == {"0"}
    finally:
        third.stop()
