"""How an endpoint converges through changes, with one operator for the module:
edits roll out through IN_PROGRESS to NOT_UPDATING, stale children are pruned, hand
edits are repaired, an unchanged endpoint costs no writes, a missing Secret is named
and then recovers without a restart, and an unschedulable entity says why."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Cluster
from tests.integration.operator.conftest import running_operator, scratch_namespace
from tests.integration.operator.support import (
    FAKE_SECRET_PREFIX,
    WRITES,
    Operator,
    StateRecorder,
    apply,
    children,
    create_secret,
    endpoint,
    kubectl_json,
    state,
    wait_ready,
    write_snapshot,
)
from tests.support import eventually

pytestmark = pytest.mark.cluster

KEY = f"{FAKE_SECRET_PREFIX}-{uuid.uuid4().hex[:12]}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


LIVENESS_PORT = _free_port()


@pytest.fixture(scope="module")
def doomed_namespace(crd: Cluster) -> Iterator[str]:
    """A second watched namespace, which a test deletes under the operator's feet."""
    with scratch_namespace(crd, "doomed") as name:
        yield name


@pytest.fixture(scope="module")
def operator(
    crd: Cluster,
    op_namespace: str,
    doomed_namespace: str,
    tokenreview_binding: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Operator]:
    """This module's operator watches two namespaces and serves its liveness endpoint."""
    liveness = f"http://127.0.0.1:{LIVENESS_PORT}/healthz"
    with running_operator(
        crd, [op_namespace, doomed_namespace], tmp_path_factory, "--liveness", liveness,
        binding=tokenreview_binding,
    ) as op:  # fmt: skip
        yield op


@pytest.fixture(scope="module")
def keys(crd: Cluster, op_namespace: str) -> str:
    create_secret(crd, op_namespace, "llm-keys", {"openai": KEY, "anthropic": KEY + "-a"})
    return op_namespace


def _endpoint(
    name: str, *, weights: tuple[int, int] = (80, 20), org: str | None = None, gpu: bool = True
) -> dict[str, Any]:
    openai: dict[str, Any] = {
        "openaiApiKey": {"secretKeyRef": {"name": "llm-keys", "key": "openai"}}
    }
    if org:
        openai["openaiOrganization"] = org
    entities: list[dict[str, Any]] = [
        {
            "name": "gpt-4o",
            "externalModel": {
                "name": "gpt-4o",
                "provider": "openai",
                "task": "llm/v1/chat",
                "openaiConfig": openai,
            },
        },
        {
            "name": "claude",
            "externalModel": {
                "name": "claude-3-5-sonnet",
                "provider": "anthropic",
                "task": "llm/v1/chat",
                "anthropicConfig": {
                    "anthropicApiKey": {"secretKeyRef": {"name": "llm-keys", "key": "anthropic"}}
                },
            },
        },
    ]
    routes = [
        {"servedEntityName": "gpt-4o", "trafficPercentage": weights[0]},
        {"servedEntityName": "claude", "trafficPercentage": weights[1]},
    ]
    if gpu:
        entities.append(
            {
                "name": "llama",
                "entityName": "hf://meta-llama/Llama-3.1-8B-Instruct",
                "task": "llm/v1/chat",
                "workloadType": "GPU_SMALL",
            }
        )
        routes.append({"servedEntityName": "llama", "trafficPercentage": 0})
    return {
        "apiVersion": "serving.modelport.io/v1alpha1",
        "kind": "ServingEndpoint",
        "metadata": {"name": name},
        "spec": {"servedEntities": entities, "trafficConfig": {"routes": routes}},
    }


def _converges(cluster: Cluster, ns: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """Apply `body` and check that status goes IN_PROGRESS then NOT_UPDATING + READY."""
    before = endpoint(cluster, ns, name)
    recorder = StateRecorder(cluster, ns, name)
    try:
        time.sleep(0.5)  # let the watch start before the change
        apply(cluster, ns, body)
        live = endpoint(cluster, ns, name)
        assert live is not None
        generation = live["metadata"]["generation"]
        assert before is None or generation > before["metadata"]["generation"]
        wait_ready(cluster, ns, name)
        eventually(lambda: "NOT_UPDATING" in recorder.updates(generation), timeout=30)
        updates = recorder.updates(generation)
    finally:
        recorder.close()
    assert "IN_PROGRESS" in updates, updates
    assert updates.index("IN_PROGRESS") < len(updates) - 1 - updates[::-1].index("NOT_UPDATING")
    after = endpoint(cluster, ns, name)
    assert after is not None
    return after


def _config(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    cm = kubectl_json(cluster, "-n", ns, "get", "configmap", f"{name}-gateway")
    data: dict[str, Any] = json.loads(cm["data"]["gateway.json"])
    return data


def test_edits_converge(crd: Cluster, keys: str, operator: Operator) -> None:
    ns, name = keys, "edits"
    apply(crd, ns, _endpoint(name))
    wait_ready(crd, ns, name)
    assert ("Deployment", "edits-llama") in children(crd, ns, name)

    # Weights.
    live = _converges(crd, ns, name, _endpoint(name, weights=(30, 70)))
    assert live["status"]["traffic"][:2] == [
        {"servedEntityName": "gpt-4o", "trafficPercentage": 30},
        {"servedEntityName": "claude", "trafficPercentage": 70},
    ]
    assert [r["trafficPercentage"] for r in _config(crd, ns, name)["routes"]] == [30, 70, 0]

    # A provider setting: the config changes, and with its hash the gateway pods roll.
    template_hash = children(crd, ns, name)[("Deployment", "edits-gateway")]["spec"]["template"][
        "metadata"
    ]["annotations"]["serving.modelport.io/config-hash"]
    _converges(crd, ns, name, _endpoint(name, weights=(30, 70), org="org-test"))
    gpt = next(e for e in _config(crd, ns, name)["entities"] if e["name"] == "gpt-4o")
    assert gpt["openai"]["organization"] == "org-test"
    new_hash = children(crd, ns, name)[("Deployment", "edits-gateway")]["spec"]["template"][
        "metadata"
    ]["annotations"]["serving.modelport.io/config-hash"]
    assert new_hash != template_hash

    # Removing the self-hosted entity prunes its children; adding it back recreates them.
    live = _converges(crd, ns, name, _endpoint(name, weights=(30, 70), org="org-test", gpu=False))
    eventually(lambda: ("Deployment", "edits-llama") not in children(crd, ns, name))
    assert set(children(crd, ns, name)) == {
        ("ConfigMap", "edits-gateway"),
        ("ServiceAccount", "edits-gateway"),
        ("Deployment", "edits-gateway"),
        ("HorizontalPodAutoscaler", "edits-gateway"),
        ("Service", "edits"),
    }
    assert [e["name"] for e in live["status"]["servedEntities"]] == ["gpt-4o", "claude"]
    _converges(crd, ns, name, _endpoint(name, weights=(30, 70), org="org-test"))
    assert {
        ("Deployment", "edits-llama"),
        ("Service", "edits-llama"),
        ("HorizontalPodAutoscaler", "edits-llama"),
    } <= set(children(crd, ns, name))

    # What a user sees in `kubectl describe`.
    events = kubectl_json(
        crd, "-n", ns, "get", "events", "--field-selector", f"involvedObject.name={name}"
    )["items"]
    reasons = {e["reason"] for e in events}
    assert {"Created", "Updated", "RolloutComplete"} <= reasons, reasons
    updates = [e["message"] for e in events if e["reason"] == "Updated"]
    assert any("deleted" in m and "Deployment edits-llama" in m for m in updates), updates


def test_hand_edits_and_deletions_are_repaired(crd: Cluster, keys: str, operator: Operator) -> None:
    ns, name = keys, "repair"
    apply(crd, ns, _endpoint(name, gpu=False))
    wait_ready(crd, ns, name)
    good_config = _config(crd, ns, name)

    crd.kubectl(
        "-n",
        ns,
        "patch",
        "configmap",
        "repair-gateway",
        "--type",
        "merge",
        "-p",
        json.dumps({"data": {"gateway.json": "{}"}}),
    )
    eventually(lambda: _config(crd, ns, name) == good_config, timeout=30)

    crd.kubectl("-n", ns, "set", "image", "deployment/repair-gateway", "gateway=evil:latest")
    eventually(
        lambda: (
            children(crd, ns, name)[("Deployment", "repair-gateway")]["spec"]["template"]["spec"][
                "containers"
            ][0]["image"]
            != "evil:latest"
        ),
        timeout=30,
    )

    crd.kubectl("-n", ns, "delete", "service", "repair")
    crd.kubectl("-n", ns, "delete", "hpa", "repair-gateway")
    eventually(
        lambda: (
            {("Service", "repair"), ("HorizontalPodAutoscaler", "repair-gateway")}
            <= set(children(crd, ns, name))
        ),
        timeout=30,
    )
    wait_ready(crd, ns, name)
    events = kubectl_json(
        crd, "-n", ns, "get", "events", "--field-selector", "involvedObject.name=repair"
    )["items"]
    assert any(e["reason"] == "Repaired" for e in events)


def test_unchanged_endpoint_costs_no_writes(crd: Cluster, keys: str, operator: Operator) -> None:
    ns, name = keys, "steady"
    apply(crd, ns, _endpoint(name))
    wait_ready(crd, ns, name)
    time.sleep(4)  # let the rollout's last child events settle
    before = write_snapshot(crd, ns, name)
    offset = len(operator.log())
    time.sleep(10)  # more than three resync periods (3 s each)
    assert write_snapshot(crd, ns, name) == before
    lines = [line for line in operator.reconcile_lines(offset) if f"/{name}:" in line]
    assert len(lines) >= 3, "the resync loop should have reconciled the endpoint"
    assert {int(WRITES.search(line).group(1)) for line in lines} == {0}  # type: ignore[union-attr]


def test_missing_secret_is_named_then_recovers_without_restart(
    crd: Cluster, keys: str, operator: Operator
) -> None:
    ns, name = keys, "late-secret"
    body = _endpoint(name, gpu=False)
    body["spec"]["servedEntities"][1]["externalModel"]["anthropicConfig"]["anthropicApiKey"] = {
        "secretKeyRef": {"name": "late-keys", "key": "anthropic"}
    }
    apply(crd, ns, body)

    def failing() -> dict[str, Any] | None:
        live = endpoint(crd, ns, name)
        status = (live or {}).get("status") or {}
        return (
            status if (status.get("state") or {}).get("configUpdate") == "UPDATE_FAILED" else None
        )

    status = eventually(failing, timeout=60)
    claude = next(e for e in status["servedEntities"] if e["name"] == "claude")
    assert claude["state"]["deployment"] == "DEPLOYMENT_FAILED"
    message = claude["state"]["deploymentStateMessage"]
    assert "late-keys" in message and "anthropicApiKey" in message and "create" in message
    assert status["state"]["ready"] == "NOT_READY"
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and "late-keys" in degraded["message"]
    events = kubectl_json(
        crd, "-n", ns, "get", "events", "--field-selector", f"involvedObject.name={name}"
    )["items"]
    assert any(e["reason"] == "SecretMissing" and "late-keys" in e["message"] for e in events)

    pods_before = {
        p["metadata"]["uid"]
        for p in kubectl_json(
            crd, "-n", ns, "get", "pods", "-l", f"serving.modelport.io/endpoint={name}"
        )["items"]
    }
    deployment_gen = children(crd, ns, name)[("Deployment", f"{name}-gateway")]["metadata"][
        "generation"
    ]
    create_secret(crd, ns, "late-keys", {"anthropic": KEY + "-late"})
    wait_ready(crd, ns, name, timeout=30)
    pods = kubectl_json(
        crd, "-n", ns, "get", "pods", "-l", f"serving.modelport.io/endpoint={name}"
    )["items"]
    assert {p["metadata"]["uid"] for p in pods} == pods_before
    assert all(c["restartCount"] == 0 for p in pods for c in p["status"]["containerStatuses"])
    assert (
        children(crd, ns, name)[("Deployment", f"{name}-gateway")]["metadata"]["generation"]
        == deployment_gen
    )
    operator.assert_alive()


def test_unschedulable_entity_says_why(crd: Cluster, keys: str, operator: Operator) -> None:
    ns, name = keys, "too-big"
    body = _endpoint(name)
    body["spec"]["servedEntities"][2]["workloadType"] = "GPU_XLARGE_16"  # 16 GPUs > 8 per node

    apply(crd, ns, body)

    def failed() -> str | None:
        live = endpoint(crd, ns, name)
        status = (live or {}).get("status") or {}
        llama = next((e for e in status.get("servedEntities") or [] if e["name"] == "llama"), None)
        if llama and llama["state"]["deployment"] == "DEPLOYMENT_FAILED":
            return str(llama["state"]["deploymentStateMessage"])
        return None

    message = eventually(failed, timeout=60)
    # "0/N nodes are available": N counts every node, kwok's and a real one.
    assert re.search(r"0/\d+ nodes are available", message), message
    assert "nvidia.com/gpu" in message, message
    # llama has 0% of the traffic: the endpoint serves, but the update failed.
    eventually(lambda: state(crd, ns, name) == ("READY", "UPDATE_FAILED"), timeout=30)


def test_bad_workload_type_is_reported_and_others_keep_working(
    crd: Cluster, keys: str, operator: Operator
) -> None:
    ns, name = keys, "bad-profile"
    body = _endpoint(name)
    body["spec"]["servedEntities"][2]["workloadType"] = "GPU_NONEXISTENT"
    apply(crd, ns, body)

    def reported() -> str | None:
        live = endpoint(crd, ns, name)
        for c in ((live or {}).get("status") or {}).get("conditions") or []:
            if c["type"] == "Degraded" and c["status"] == "True":
                return str(c["message"])
        return None

    message = eventually(reported, timeout=60)
    assert "workloadType 'GPU_NONEXISTENT'" in message and "GPU_SMALL" in message
    # Another endpoint in the same namespace still converges.
    apply(crd, ns, _endpoint("still-fine", gpu=False))
    wait_ready(crd, ns, "still-fine")
    operator.assert_alive()


def test_liveness_endpoint_answers(operator: Operator) -> None:
    def probe() -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{LIVENESS_PORT}/healthz", timeout=2
            ) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    assert eventually(probe, timeout=30)


def test_namespace_deleted_under_the_operator(
    crd: Cluster, keys: str, doomed_namespace: str, operator: Operator
) -> None:
    ns = doomed_namespace
    create_secret(crd, ns, "llm-keys", {"openai": KEY, "anthropic": KEY})
    apply(crd, ns, _endpoint("doomed"))
    wait_ready(crd, ns, "doomed")
    crd.kubectl("delete", "namespace", ns, "--wait=false")
    # While the namespace goes, the operator keeps serving the other one.
    apply(crd, keys, _endpoint("survivor", gpu=False))
    wait_ready(crd, keys, "survivor")
    eventually(lambda: crd.kubectl("get", "namespace", ns, check=False).returncode != 0, timeout=90)
    operator.assert_alive()
    assert "Traceback" not in operator.log()
