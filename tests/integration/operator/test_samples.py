"""Every sample endpoint, applied to a real cluster with the real operator running:
exactly the children of design.md, with owner references and labels, READY and
NOT_UPDATING with the traffic weights in status, each gateway's ServiceAccount in the
TokenReview binding; deleting removes every child and every subject; and no Secret
value (provider keys, callers' API keys) shows up in any ConfigMap, status, event or
operator log line."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from modelport.api import ServingEndpoint
from modelport.render.config import secret_refs
from tests.conftest import Cluster
from tests.integration.operator.support import (
    FAKE_SECRET_PREFIX,
    SAMPLES,
    Operator,
    apply,
    binding_subjects,
    bound_pvc,
    can_create_tokenreviews,
    children,
    create_secret,
    endpoint,
    kubectl_json,
    sample,
    wait_ready,
)
from tests.support import eventually

pytestmark = pytest.mark.cluster

SAMPLE_NAMES = sorted(p.stem for p in SAMPLES.glob("*.yaml"))
WAKES = {"self-hosted-gpu"}
SELF_HOSTED = {
    "custom-model": ["sklearn", "xgboost"],
    "embeddings": ["bge-large"],
    "mixed-traffic-fallback": ["llama-8b"],
    "local-llamacpp": ["smollm2"],
    "self-hosted-gpu": ["llama-8b"],
}


@pytest.fixture(scope="module")
def secret_values() -> dict[tuple[str, str], str]:
    """A distinct fake value for every Secret key the samples name."""
    values = {}
    for name in SAMPLE_NAMES:
        body = sample(name)
        body["metadata"].update(namespace="x", uid="x")
        for ref in secret_refs(ServingEndpoint.parse(body)):
            values[(ref.name, ref.key)] = f"{FAKE_SECRET_PREFIX}-{uuid.uuid4().hex[:12]}"
    return values


@pytest.fixture(scope="module")
def applied(
    crd: Cluster,
    op_namespace: str,
    operator: Operator,
    secret_values: dict[tuple[str, str], str],
) -> dict[str, dict[str, Any]]:
    """All samples applied at once, with their Secrets and the model-cache PVC."""
    by_secret: dict[str, dict[str, str]] = {}
    for (secret, key), value in secret_values.items():
        by_secret.setdefault(secret, {})[key] = value
    for secret, data in by_secret.items():
        create_secret(crd, op_namespace, secret, data)
    bound_pvc(crd, op_namespace, "model-cache")
    bodies = {}
    for name in SAMPLE_NAMES:
        body = sample(name)
        apply(crd, op_namespace, body)
        bodies[name] = body
    return bodies


def _expected(ep: str, sample_name: str) -> set[tuple[str, str]]:
    want = {
        ("ConfigMap", f"{ep}-gateway"),
        ("ServiceAccount", f"{ep}-gateway"),  # callers authenticate by default
        ("Deployment", f"{ep}-gateway"),
        ("Service", ep),
    }
    for entity in SELF_HOSTED.get(sample_name, []):
        want |= {(kind, f"{ep}-{entity}") for kind in ("Deployment", "Service")}
    if sample_name in WAKES:
        # scaleToZeroEnabled: the gateway may wake the entity (no HPA anywhere).
        want |= {("Role", f"{ep}-gateway-scale"), ("RoleBinding", f"{ep}-gateway-scale")}
    return want


@pytest.mark.parametrize("sample_name", SAMPLE_NAMES)
def test_sample_reaches_ready_with_exact_children(
    crd: Cluster,
    op_namespace: str,
    tokenreview_binding: str,
    applied: dict[str, dict[str, Any]],
    sample_name: str,
) -> None:
    body = applied[sample_name]
    ep = body["metadata"]["name"]
    wait_ready(crd, op_namespace, ep, timeout=120)

    live = endpoint(crd, op_namespace, ep)
    assert live is not None
    # No finalizer: a stopped operator must never block deleting an endpoint.
    assert not live["metadata"].get("finalizers")
    found = children(crd, op_namespace, ep)
    assert set(found) == _expected(ep, sample_name)
    for (kind, name), child in found.items():
        labels = child["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "modelport", (kind, name)
        assert labels["serving.modelport.io/endpoint"] == ep, (kind, name)
        if name.startswith(f"{ep}-") and not name.startswith(f"{ep}-gateway"):
            assert labels["serving.modelport.io/entity"] == name.removeprefix(f"{ep}-")
        owners = child["metadata"]["ownerReferences"]
        assert owners == [
            {
                "apiVersion": "serving.modelport.io/v1alpha1",
                "kind": "ServingEndpoint",
                "name": ep,
                "uid": live["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]

    status = live["status"]
    routes = (body["spec"].get("trafficConfig") or {}).get("routes") or [
        {"servedEntityName": body["spec"]["servedEntities"][0]["name"], "trafficPercentage": 100}
    ]
    assert status["traffic"] == routes
    assert status["url"] == f"http://{ep}.{op_namespace}.svc.cluster.local"
    assert {e["name"]: e["state"]["deployment"] for e in status["servedEntities"]} == {
        e["name"]: "DEPLOYMENT_READY" for e in body["spec"]["servedEntities"]
    }
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Progressing"]["status"] == "False"
    assert conditions["Degraded"]["status"] == "False"
    assert all(
        c["observedGeneration"] == live["metadata"]["generation"] for c in conditions.values()
    )

    # The gateway pod mounts each Secret key as a 0400 file, never as an env var.
    deployment = found[("Deployment", f"{ep}-gateway")]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "env" not in container and "envFrom" not in container
    volume = next(v for v in pod["volumes"] if v["name"] == "secrets")
    refs = secret_refs(ServingEndpoint.parse(live))
    mounted = {(r.name, r.key) for r in refs if r.mounted}
    if mounted:
        assert volume["projected"]["defaultMode"] == 0o400
        items = {
            (s["secret"]["name"], i["key"], i["path"])
            for s in volume["projected"]["sources"]
            for i in s["secret"]["items"]
        }
        assert items == {(n, k, f"{n}/{k}") for n, k in mounted}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "secrets")
    assert mount["readOnly"] is True

    # The gateway verifies callers' ServiceAccount tokens as its own ServiceAccount,
    # which may create TokenReviews (through the binding) and nothing else.
    account = f"{ep}-gateway"
    assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == (account, True)
    assert f"{op_namespace}/{account}" in binding_subjects(crd, tokenreview_binding)
    assert can_create_tokenreviews(crd, op_namespace, account)
    config = json.loads(found[("ConfigMap", f"{ep}-gateway")]["data"]["gateway.json"])
    auth = config["aiGateway"]["auth"]
    assert auth["enabled"] is True and auth["serviceAccountTokens"]["audiences"] == ["modelport"]
    api_keys = {(r.name, r.key) for r in refs if r.field.startswith("spec.aiGateway.auth")}
    assert {k["path"] for k in auth["apiKeys"]} == {f"{n}/{k}" for n, k in api_keys}


def test_gpu_pods_run_on_gpu_nodes(
    crd: Cluster, op_namespace: str, applied: dict[str, dict[str, Any]]
) -> None:
    wait_ready(crd, op_namespace, "chat", timeout=120)
    pods = kubectl_json(
        crd,
        "-n",
        op_namespace,
        "get",
        "pods",
        "-l",
        "serving.modelport.io/endpoint=chat,serving.modelport.io/entity=llama-8b",
    )
    nodes = {p["spec"].get("nodeName") for p in pods["items"]}
    assert nodes and all(n and n.startswith("kwok-gpu-") for n in nodes), nodes


def test_no_secret_value_leaks(
    crd: Cluster,
    op_namespace: str,
    operator: Operator,
    applied: dict[str, dict[str, Any]],
    secret_values: dict[tuple[str, str], str],
) -> None:
    for name in applied.values():
        wait_ready(crd, op_namespace, name["metadata"]["name"], timeout=120)
    values = list(secret_values.values())
    # Callers' API keys are scanned for too (the callers sample lists two).
    assert any(name == "chat-callers" for name, _ in secret_values)
    places = {
        "configmaps": json.dumps(kubectl_json(crd, "-n", op_namespace, "get", "configmaps")),
        "endpoints": json.dumps(kubectl_json(crd, "-n", op_namespace, "get", "servingendpoints")),
        "events": json.dumps(kubectl_json(crd, "-n", op_namespace, "get", "events")),
        "deployments": json.dumps(kubectl_json(crd, "-n", op_namespace, "get", "deployments")),
        "operator log": operator.log(),
    }
    assert operator.log(), "the operator logged nothing: the scan would prove nothing"
    leaks = {where: [v for v in values if v in text] for where, text in places.items()}
    assert leaks == {where: [] for where in places}


def test_deleting_endpoints_removes_every_child(
    crd: Cluster, op_namespace: str, tokenreview_binding: str, applied: dict[str, dict[str, Any]]
) -> None:
    for body in applied.values():
        wait_ready(crd, op_namespace, body["metadata"]["name"], timeout=120)
    for body in applied.values():
        crd.kubectl(
            "-n",
            op_namespace,
            "delete",
            "servingendpoint",
            body["metadata"]["name"],
            "--wait=false",
        )
    eventually(
        lambda: (
            not kubectl_json(
                crd,
                "-n",
                op_namespace,
                "get",
                "configmaps,serviceaccounts,services,deployments,horizontalpodautoscalers",
                "-l",
                "app.kubernetes.io/managed-by=modelport",
            )["items"]
        ),
        timeout=90,
    )
    # The binding is cluster-scoped, owned by no endpoint: the operator removes them.
    eventually(
        lambda: (
            not [
                s
                for s in binding_subjects(crd, tokenreview_binding)
                if s.startswith(f"{op_namespace}/")
            ]
        ),
        timeout=60,
    )
    crd.kubectl("delete", "pv", "-l", f"modelport-test={op_namespace}", "--wait=false", check=False)
