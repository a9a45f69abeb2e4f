"""Self-hosted models against the test cluster's kwok GPU nodes (two nodes of 8 H100,
one of 8 L4, tainted nvidia.com/gpu): every catalog model at its default profile
schedules onto GPU nodes, a 70B model on an 8-GPU profile takes one whole node, a
profile larger than any node leaves the entity NOT_READY naming the shortage, a
model too big for its profile is refused naming one that fits, and a mixed endpoint
(external + self-hosted) becomes READY. The real operator runs as a subprocess."""

from __future__ import annotations

from typing import Any

import pytest

from modelport.render.profiles import resolve
from modelport.runtimes.catalog import CatalogEntry, builtin_entries
from modelport.settings import from_env
from tests.conftest import Cluster
from tests.integration.operator.support import (
    FAKE_SECRET_PREFIX,
    Operator,
    apply,
    create_secret,
    endpoint,
    kubectl_json,
    state,
    wait_ready,
)
from tests.support import eventually

SETTINGS = from_env({})


def _body(name: str, *entities: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "serving.modelport.io/v1alpha1",
        "kind": "ServingEndpoint",
        "metadata": {"name": name},
        "spec": {"servedEntities": list(entities)},
    }


def _pods(cluster: Cluster, ns: str, name: str, entity: str) -> list[dict[str, Any]]:
    selector = f"serving.modelport.io/endpoint={name},serving.modelport.io/entity={entity}"
    listing = kubectl_json(cluster, "-n", ns, "get", "pods", "-l", selector)
    return [p for p in listing["items"] if not p["metadata"].get("deletionTimestamp")]


def _entity_state(cluster: Cluster, ns: str, name: str, entity: str) -> dict[str, Any] | None:
    status = (endpoint(cluster, ns, name) or {}).get("status") or {}
    found = next((e for e in status.get("servedEntities") or [] if e["name"] == entity), None)
    return found["state"] if found else None


def _delete(cluster: Cluster, ns: str, name: str) -> None:
    """Delete the endpoint and wait until its inference pods are gone (GPUs freed)."""
    cluster.kubectl("-n", ns, "delete", "servingendpoint", name, "--wait=true")
    cluster.kubectl(
        "-n",
        ns,
        "delete",
        "pods",
        "-l",
        f"serving.modelport.io/endpoint={name}",
        "--grace-period=0",
        "--force",
        "--wait=true",
        check=False,
    )
    eventually(
        lambda: (
            not kubectl_json(
                cluster, "-n", ns, "get", "pods", "-l", f"serving.modelport.io/endpoint={name}"
            )["items"]
        ),
        timeout=60,
    )


def _node(cluster: Cluster, node: str) -> dict[str, Any]:
    result: dict[str, Any] = kubectl_json(cluster, "get", "node", node)
    return result


@pytest.mark.parametrize("entry", builtin_entries(), ids=lambda e: e.name)
def test_catalog_model_schedules_at_its_default_profile(
    crd: Cluster, op_namespace: str, operator: Operator, entry: CatalogEntry
) -> None:
    ns, name = op_namespace, f"cat-{entry.name.replace('_', '-')}"[:40].rstrip("-")
    apply(crd, ns, _body(name, {"name": "model", "entityName": entry.catalog_name}))
    try:
        wait_ready(crd, ns, name, timeout=90)
        pods = _pods(crd, ns, name, "model")
        assert pods
        profile = resolve(entry.default_workload_type, SETTINGS.gpu_profiles)
        for pod in pods:
            node = pod["spec"]["nodeName"]
            container = pod["spec"]["containers"][0]
            gpus = container["resources"]["limits"].get("nvidia.com/gpu")
            if profile.gpus:
                assert node.startswith("kwok-gpu-"), node
                assert gpus == str(entry.tensor_parallel_size)
                labels = _node(crd, node)["metadata"]["labels"]
                assert labels["nvidia.com/gpu.present"] == "true"
            else:
                assert node.startswith("kwok-cpu-") and gpus is None, (node, gpus)
                assert container["name"] == "llamacpp"
        state_ = _entity_state(crd, ns, name, "model")
        assert state_ == {"deployment": "DEPLOYMENT_READY", "deploymentStateMessage": ""}
    finally:
        _delete(crd, ns, name)
    operator.assert_alive()


def test_70b_on_an_8_gpu_profile_takes_one_node_with_8_gpus(
    crd: Cluster, op_namespace: str, operator: Operator
) -> None:
    ns, name = op_namespace, "llama-70b-x8"
    body = _body(
        name,
        {
            "name": "llama-70b",
            "entityName": "system.ai.meta_llama_v3_3_70b_instruct",
            "workloadType": "GPU_XLARGE_8",
        },
    )
    apply(crd, ns, body)
    try:
        wait_ready(crd, ns, name, timeout=90)
        (pod,) = _pods(crd, ns, name, "llama-70b")
        container = pod["spec"]["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
        args = container["args"]
        assert args[args.index("--tensor-parallel-size") + 1] == "8"
        # All eight GPUs of one node: the node has exactly 8 and runs no other GPU pod.
        node = _node(crd, pod["spec"]["nodeName"])
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
        on_node = kubectl_json(
            crd, "get", "pods", "-A", "--field-selector", f"spec.nodeName={pod['spec']['nodeName']}"
        )["items"]
        gpu_pods = [
            p
            for p in on_node
            if p["spec"]["containers"][0]
            .get("resources", {})
            .get("limits", {})
            .get("nvidia.com/gpu")
        ]
        assert [p["metadata"]["name"] for p in gpu_pods] == [pod["metadata"]["name"]]
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes["shm"]["emptyDir"] == {"medium": "Memory"}
    finally:
        _delete(crd, ns, name)


def test_more_gpus_than_any_node_is_not_ready_naming_the_shortage(
    crd: Cluster, op_namespace: str, operator: Operator
) -> None:
    ns, name = op_namespace, "too-many-gpus"
    entity = {
        "name": "llama-405b",
        "entityName": "system.ai.meta_llama_v3_1_405b_instruct",
        "workloadType": "GPU_XLARGE_16",
    }
    apply(crd, ns, _body(name, entity))
    try:

        def failed() -> str | None:
            found = _entity_state(crd, ns, name, "llama-405b")
            if found and found["deployment"] == "DEPLOYMENT_FAILED":
                return str(found["deploymentStateMessage"])
            return None

        message = eventually(failed, timeout=60)
        assert "waiting for a GPU node" in message, message
        assert "Insufficient nvidia.com/gpu" in message, message
        eventually(lambda: state(crd, ns, name) == ("NOT_READY", "UPDATE_FAILED"), timeout=30)
    finally:
        _delete(crd, ns, name)


def test_model_too_big_for_its_profile_is_refused_naming_one_that_fits(
    crd: Cluster, op_namespace: str, operator: Operator
) -> None:
    ns, name = op_namespace, "too-small"
    entity = {
        "name": "llama-70b",
        "entityName": "databricks-meta-llama-3-3-70b-instruct",
        "workloadType": "GPU_SMALL",
    }
    apply(crd, ns, _body(name, entity))
    try:

        def refused() -> str | None:
            found = _entity_state(crd, ns, name, "llama-70b")
            if found and found["deployment"] == "DEPLOYMENT_FAILED":
                return str(found["deploymentStateMessage"])
            return None

        message = eventually(refused, timeout=60)
        assert "160 GiB of GPU memory" in message and "use workloadType GPU_LARGE_2" in message
        assert state(crd, ns, name) == ("NOT_READY", "UPDATE_FAILED")
        assert not _pods(crd, ns, name, "llama-70b")  # nothing was applied
    finally:
        _delete(crd, ns, name)


def test_mixed_endpoint_becomes_ready(crd: Cluster, op_namespace: str, operator: Operator) -> None:
    ns, name = op_namespace, "mixed"
    create_secret(crd, ns, "mixed-keys", {"openai": FAKE_SECRET_PREFIX + "-mixed"})
    body = _body(
        name,
        {
            "name": "gpt-4o",
            "externalModel": {
                "name": "gpt-4o",
                "provider": "openai",
                "task": "llm/v1/chat",
                "openaiConfig": {
                    "openaiApiKey": {"secretKeyRef": {"name": "mixed-keys", "key": "openai"}}
                },
            },
        },
        {
            "name": "llama-8b",
            "entityName": "system.ai.meta_llama_v3_1_8b_instruct",
            "workloadSize": "Medium",
        },
    )
    body["spec"]["trafficConfig"] = {
        "routes": [
            {"servedEntityName": "gpt-4o", "trafficPercentage": 50},
            {"servedEntityName": "llama-8b", "trafficPercentage": 50},
        ]
    }
    apply(crd, ns, body)
    try:
        wait_ready(crd, ns, name, timeout=90)
        status = (endpoint(crd, ns, name) or {})["status"]
        states = {e["name"]: e["state"]["deployment"] for e in status["servedEntities"]}
        assert states == {"gpt-4o": "DEPLOYMENT_READY", "llama-8b": "DEPLOYMENT_READY"}
        (pod,) = _pods(crd, ns, name, "llama-8b")
        assert pod["spec"]["nodeName"].startswith("kwok-gpu-")
        # No HPA: the operator's autoscaler owns replicas (1 to 4 for Medium).
        hpas = kubectl_json(
            crd, "-n", ns, "get", "hpa", "-l", f"serving.modelport.io/endpoint={name}"
        )
        assert not hpas["items"]
    finally:
        _delete(crd, ns, name)


def test_gpu_profile_custom_model_lands_on_a_gpu_node_with_its_resources(
    crd: Cluster, op_namespace: str, operator: Operator
) -> None:
    """A custom (MLflow) model on a GPU profile: the scoring server's pod gets the
    profile's GPU, CPU and memory and lands on a kwok GPU node; its model is fetched by
    the init container first (no real GPU or model needed for the placement)."""
    ns, name = op_namespace, "custom-gpu"
    body = _body(
        name,
        {
            "name": "vision",
            "entityName": "s3://models/vision/3",
            "runtime": {"engine": "mlflow"},
            "workloadType": "GPU_MEDIUM_2",
        },
    )
    apply(crd, ns, body)
    try:
        wait_ready(crd, ns, name, timeout=90)
        (pod,) = _pods(crd, ns, name, "vision")
        node = pod["spec"]["nodeName"]
        assert node.startswith("kwok-gpu-"), node
        assert _node(crd, node)["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
        (fetch,) = pod["spec"]["initContainers"]
        container = pod["spec"]["containers"][0]
        assert (fetch["name"], container["name"]) == ("fetch-model", "mlflow")
        profile = resolve("GPU_MEDIUM_2", SETTINGS.gpu_profiles)
        assert container["resources"] == {
            "limits": {"memory": profile.memory, "nvidia.com/gpu": "2"},
            "requests": {"cpu": profile.cpu, "memory": profile.memory, "nvidia.com/gpu": "2"},
        }
        status = (endpoint(crd, ns, name) or {})["status"]
        assert status["state"] == {"ready": "READY", "configUpdate": "NOT_UPDATING"}
        # The gateway serves it at the invocations route only (task ml/v1/predict).
        config = kubectl_json(crd, "-n", ns, "get", "configmap", f"{name}-gateway")
        assert '"task": "ml/v1/predict"' in config["data"]["gateway.json"]
    finally:
        _delete(crd, ns, name)
    operator.assert_alive()
