"""The local control plane behaves like a real cluster in the ways Modelport relies on.

These run against the real kube-apiserver, controller manager, scheduler and
kwok nodes that `hack/cluster up` starts; nothing here is mocked.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client

from tests.conftest import Cluster
from tests.support import eventually

pytestmark = pytest.mark.cluster

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def apply(cluster: Cluster, namespace: str, manifest: dict[str, Any]) -> None:
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(manifest))


def get(cluster: Cluster, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    out = cluster.kubectl("-n", namespace, "get", kind, name, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def pod(name: str, resources: dict[str, Any] | None = None, gpu: bool = False) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "registry.invalid/app:1"}
    if resources:
        container["resources"] = resources
    spec: dict[str, Any] = {"containers": [container]}
    if gpu:
        spec["tolerations"] = [GPU_TOLERATION]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def node_labels(cluster: Cluster, node: str) -> dict[str, str]:
    out = cluster.kubectl("get", "node", node, "-o", "json")
    labels: dict[str, str] = json.loads(out.stdout)["metadata"]["labels"]
    return labels


def test_nodes_advertise_cpus_and_gpus(cluster: Cluster) -> None:
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    gpu = [n for n in nodes if n["status"]["allocatable"].get("nvidia.com/gpu") == "8"]
    cpu = [n for n in nodes if "nvidia.com/gpu" not in n["status"]["allocatable"]]
    assert len(cpu) >= 2
    assert len(gpu) >= 2
    for node in gpu:
        assert node["metadata"]["labels"]["nvidia.com/gpu.product"]
        assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in node[
            "spec"
        ]["taints"]


def test_deployment_pods_become_ready_on_cpu_nodes(cluster: Cluster, namespace: str) -> None:
    labels = {"app": "web"}
    apply(
        cluster,
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]},
                },
            },
        },
    )

    def ready() -> int | None:
        dep = get(cluster, namespace, "deployment", "web")
        return dep and dep.get("status", {}).get("readyReplicas") == 3 and 3

    eventually(ready, timeout=90)
    pods = json.loads(cluster.kubectl("-n", namespace, "get", "pods", "-o", "json").stdout)
    assert len(pods["items"]) == 3
    for item in pods["items"]:
        assert item["status"]["phase"] == "Running"
        assert node_labels(cluster, item["spec"]["nodeName"])["modelport.io/node-kind"] == "cpu"


def test_gpu_pod_with_toleration_lands_on_gpu_node(cluster: Cluster, namespace: str) -> None:
    apply(cluster, namespace, pod("gpu", {"limits": {"nvidia.com/gpu": "1"}}, gpu=True))

    def running() -> dict[str, Any] | None:
        p = get(cluster, namespace, "pod", "gpu")
        return p if p and p["status"].get("phase") == "Running" else None

    scheduled = eventually(running, timeout=60)
    labels = node_labels(cluster, scheduled["spec"]["nodeName"])
    assert labels["nvidia.com/gpu.present"] == "true"


def test_pod_asking_for_nine_gpus_stays_unschedulable(cluster: Cluster, namespace: str) -> None:
    apply(cluster, namespace, pod("huge", {"limits": {"nvidia.com/gpu": "9"}}, gpu=True))

    def unschedulable() -> dict[str, Any] | None:
        p = get(cluster, namespace, "pod", "huge")
        conditions = (p or {}).get("status", {}).get("conditions", [])
        return next(
            (c for c in conditions if c["type"] == "PodScheduled" and c["status"] == "False"),
            None,
        )

    condition = eventually(unschedulable, timeout=60)
    assert condition["reason"] == "Unschedulable"
    assert "nvidia.com/gpu" in condition["message"]
    assert get(cluster, namespace, "pod", "huge")["status"]["phase"] == "Pending"  # type: ignore[index]


def test_gpu_pod_without_toleration_is_kept_off_gpu_nodes(cluster: Cluster, namespace: str) -> None:
    apply(cluster, namespace, pod("untolerated", {"limits": {"nvidia.com/gpu": "1"}}))

    def reason() -> str | None:
        p = get(cluster, namespace, "pod", "untolerated")
        conditions = (p or {}).get("status", {}).get("conditions", [])
        return next((c["message"] for c in conditions if c["type"] == "PodScheduled"), None)

    assert "untolerated taint" in eventually(reason, timeout=60)


def test_deleting_an_owner_garbage_collects_what_it_owns(cluster: Cluster, namespace: str) -> None:
    apply(
        cluster, namespace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}}
    )
    owner = get(cluster, namespace, "configmap", "owner")
    assert owner
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
    }
    apply(
        cluster,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "owned", "ownerReferences": [ref]},
        },
    )
    cluster.kubectl("-n", namespace, "delete", "configmap", "owner")
    eventually(lambda: get(cluster, namespace, "configmap", "owned") is None, timeout=60)


def test_hpa_controller_acts_on_autoscalers(cluster: Cluster, namespace: str) -> None:
    apply(
        cluster,
        namespace,
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "missing-target"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "nope"},
                "minReplicas": 1,
                "maxReplicas": 2,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 50},
                        },
                    }
                ],
            },
        },
    )

    def able_to_scale() -> dict[str, Any] | None:
        hpa = get(cluster, namespace, "hpa", "missing-target")
        conditions = (hpa or {}).get("status", {}).get("conditions", [])
        return next((c for c in conditions if c["type"] == "AbleToScale"), None)

    # Only the controller writes this condition; its verdict on a missing target is False.
    condition = eventually(able_to_scale, timeout=60)
    assert condition["status"] == "False"


def test_pod_security_admission_enforces_the_restricted_level(
    cluster: Cluster, namespace: str
) -> None:
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    refused = cluster.kubectl(
        "-n", namespace, "apply", "-f", "-", input=json.dumps(pod("lax")), check=False
    )
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in refused.stderr

    compliant = pod("strict")
    compliant["spec"]["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    compliant["spec"]["containers"][0]["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    apply(cluster, namespace, compliant)


def test_service_account_token_authenticates_and_rbac_denies_the_rest(
    cluster: Cluster, namespace: str
) -> None:
    cluster.kubectl("-n", namespace, "create", "serviceaccount", "reader")
    cluster.kubectl(
        "-n", namespace, "create", "role", "read-configmaps", "--verb=get,list",
        "--resource=configmaps",
    )  # fmt: skip
    cluster.kubectl(
        "-n", namespace, "create", "rolebinding", "reader", "--role=read-configmaps",
        f"--serviceaccount={namespace}:reader",
    )  # fmt: skip
    token = cluster.kubectl("-n", namespace, "create", "token", "reader").stdout.strip()

    admin = cluster.api_client()
    config = client.Configuration()
    config.host = admin.configuration.host
    config.ssl_ca_cert = admin.configuration.ssl_ca_cert
    config.api_key = {"authorization": f"Bearer {token}"}
    core = client.CoreV1Api(client.ApiClient(config))

    review = client.AuthenticationV1Api(admin).create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
    )
    assert review.status.authenticated
    assert review.status.user.username == f"system:serviceaccount:{namespace}:reader"

    # Granted by the Role: succeeds with the token.
    assert core.list_namespaced_config_map(namespace).items is not None
    # Not granted: each is refused with 403 Forbidden, not 401 (the token is valid).
    for call in (
        lambda: core.list_namespaced_secret(namespace),
        lambda: core.create_namespaced_config_map(
            namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x"))
        ),
        lambda: core.list_namespaced_config_map("default"),
    ):
        with pytest.raises(client.ApiException) as denied:
            call()
        assert denied.value.status == 403


def test_kwok_renews_node_leases(cluster: Cluster) -> None:
    # Without Leases the node controller marks kwok's nodes, and every pod on
    # them, NotReady each minute (kwok's status heartbeat is slower than the
    # controller's grace period).
    def renew_time() -> str:
        out = cluster.kubectl(
            "-n", "kube-node-lease", "get", "lease", "kwok-cpu-0", "-o",
            "jsonpath={.spec.renewTime}",
        )  # fmt: skip
        return out.stdout

    first = renew_time()
    eventually(lambda: renew_time() != first, timeout=30, interval=1)
