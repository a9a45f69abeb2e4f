"""The chart's RBAC is enough, and no more: the operator runs with a token of the
chart's ServiceAccount and reconciles every sample to READY in a namespace that
enforces the restricted Pod Security level, keeping the gateways' TokenReview
binding with the one cluster-scoped right it has (which `helm upgrade` leaves
alone)."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelport.api import ServingEndpoint
from modelport.render.config import secret_refs
from tests.conftest import ROOT, Cluster
from tests.integration.operator.support import (
    FAKE_SECRET_PREFIX,
    SAMPLES,
    Operator,
    apply,
    binding_subjects,
    bound_pvc,
    can_create_tokenreviews,
    create_secret,
    sample,
    wait_ready,
)
from tests.support import eventually

pytestmark = pytest.mark.cluster

CHART = str(ROOT / "charts" / "modelport")
SAMPLE_NAMES = sorted(p.stem for p in SAMPLES.glob("*.yaml"))


def token_kubeconfig(cluster: Cluster, namespace: str, sa: str, path: Path) -> Path:
    """A kubeconfig that authenticates as `namespace:sa` with a bound token."""
    admin = json.loads(cluster.kubeconfig.read_text())
    token = cluster.kubectl("-n", namespace, "create", "token", sa, "--duration=1h").stdout
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": sa, "user": {"token": token.strip()}}],
        "contexts": [
            {"name": "sa", "context": {"cluster": admin["clusters"][0]["name"], "user": sa}}
        ],
        "current-context": "sa",
    }
    path.write_text(json.dumps(config))
    return path


def can_i(cluster: Cluster, *args: str) -> bool:
    done = cluster.kubectl("auth", "can-i", *args, check=False)
    return done.stdout.strip() == "yes"


def helm(cluster: Cluster, *args: str) -> None:
    subprocess.run(
        [str(cluster.tools / "helm"), *args],
        env=cluster.env, capture_output=True, text=True, check=True, timeout=180,
    )  # fmt: skip


@pytest.fixture
def release(cluster: Cluster, namespace: str) -> Iterator[str]:
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    name = f"mp-{uuid.uuid4().hex[:6]}"
    helm(
        cluster, "install", name, CHART, "--namespace", namespace,
        "--set", f"watchNamespaces={{{namespace}}}", "--wait", "--timeout", "120s",
    )  # fmt: skip
    yield name
    # The TokenReview ClusterRoles and bindings outlive the namespace otherwise.
    helm(cluster, "uninstall", name, "--namespace", namespace, "--wait")


def test_chart_rbac_is_sufficient_and_least_privilege(
    cluster: Cluster, namespace: str, release: str, tmp_path: Path
) -> None:
    sa = f"{release}-modelport"
    binding = f"{release}-modelport-gateways"
    as_operator = Cluster(
        token_kubeconfig(cluster, namespace, sa, tmp_path / "sa.kubeconfig"), cluster.tools
    )

    # What it needs, in the namespace it manages.
    for verb, resource, *extra in [
        ("watch", "servingendpoints.serving.modelport.io"),
        ("patch", "servingendpoints.serving.modelport.io", "--subresource=status"),
        ("create", "deployments.apps"),
        ("delete", "horizontalpodautoscalers.autoscaling"),
        ("get", "secrets"),
        ("create", "events"),
        ("create", "serviceaccounts"),
        ("delete", "serviceaccounts"),
        # The gateways' RoleBindings to the readiness role (fallback's EndpointSlices).
        ("create", "rolebindings.rbac.authorization.k8s.io"),
        ("bind", f"roles.rbac.authorization.k8s.io/{release}-modelport-gateway-readiness"),
    ]:
        assert can_i(as_operator, verb, resource, *extra, "-n", namespace), (verb, resource)
    # Its one cluster-scoped right: the subjects of the gateways' TokenReview binding.
    rbac = "rbac.authorization.k8s.io"
    for verb, resource in [
        ("get", f"clusterrolebindings.{rbac}/{binding}"),
        ("update", f"clusterrolebindings.{rbac}/{binding}"),
        ("bind", f"clusterroles.{rbac}/{release}-modelport-gateway-tokenreview"),
    ]:
        assert can_i(as_operator, verb, resource), (verb, resource)
    # What it must not do.
    for verb, resource, where in [
        ("get", "secrets", "default"),
        ("list", "secrets", "--all-namespaces"),
        ("create", "secrets", namespace),
        ("update", "secrets", namespace),
        ("delete", "servingendpoints.serving.modelport.io", namespace),
        # It writes an endpoint's status only, never the endpoint (no Kopf annotations).
        ("patch", "servingendpoints.serving.modelport.io", namespace),
        ("create", "servingendpoints.serving.modelport.io", namespace),
        ("create", "roles.rbac.authorization.k8s.io", namespace),
        ("create", "pods", namespace),
        ("create", "deployments.apps", "default"),
        ("list", "nodes", ""),
        ("create", "customresourcedefinitions.apiextensions.k8s.io", ""),
        ("create", "serviceaccounts", "default"),
        # It may name the TokenReview role in its binding, not hold its right, and
        # no other binding or role is within reach.
        ("create", "tokenreviews.authentication.k8s.io", ""),
        ("list", "clusterrolebindings.rbac.authorization.k8s.io", ""),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", ""),
        ("update", "clusterrolebindings.rbac.authorization.k8s.io/cluster-admin", ""),
        ("update", f"clusterrolebindings.rbac.authorization.k8s.io/{release}-modelport", ""),
        ("bind", "clusterroles.rbac.authorization.k8s.io/cluster-admin", ""),
        ("bind", "clusterroles.rbac.authorization.k8s.io/admin", ""),
        ("bind", "clusterroles.rbac.authorization.k8s.io/admin", namespace),
        ("bind", "roles.rbac.authorization.k8s.io/other", namespace),
        ("create", "rolebindings.rbac.authorization.k8s.io", "default"),
    ]:
        scope = (
            [] if not where else (["--all-namespaces"] if where.startswith("--") else ["-n", where])
        )
        assert not can_i(as_operator, verb, resource, *scope), (verb, resource, where)
    # A RoleBinding it may create grants only what it holds or may bind: not admin.
    escalate = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "escalate", "namespace": namespace},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "admin",
        },
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}],
    }
    refused = as_operator.kubectl("create", "-f", "-", input=json.dumps(escalate), check=False)
    assert refused.returncode != 0 and "forbidden" in refused.stderr, refused.stderr
    # It creates the gateways' ServiceAccounts, never tokens for them.
    assert not can_i(
        as_operator, "create", "serviceaccounts", "--subresource=token", "-n", namespace
    )

    # Every sample, reconciled by the operator with only these rights.
    values: dict[str, dict[str, str]] = {}
    for name in SAMPLE_NAMES:
        body = sample(name)
        body["metadata"].update(namespace=namespace, uid="x")
        for ref in secret_refs(ServingEndpoint.parse(body)):
            values.setdefault(ref.name, {})[ref.key] = (
                f"{FAKE_SECRET_PREFIX}-{uuid.uuid4().hex[:8]}"
            )
    for secret, data in values.items():
        create_secret(cluster, namespace, secret, data)
    bound_pvc(cluster, namespace, "model-cache")

    log = tmp_path / "operator.log"
    # As the chart runs it: with the readiness role it creates (MODELPORT_GATEWAY_READINESS_ROLE).
    readiness = f"Role/{release}-modelport-gateway-readiness"
    operator = Operator(
        as_operator, [namespace], log, "--liveness", "off", "--gateway-readiness-role", readiness,
        binding=binding,
    ).start()  # fmt: skip
    try:
        names = []
        for name in SAMPLE_NAMES:
            body = sample(name)
            apply(cluster, namespace, body)
            names.append(body["metadata"]["name"])
        for name in names:
            wait_ready(cluster, namespace, name, timeout=120)
        operator.assert_alive()
        # Every gateway verifies ServiceAccount tokens (the default) with its own
        # ServiceAccount, which the operator bound to TokenReview, and nothing more.
        wanted = {f"{namespace}/{name}-gateway" for name in names}
        assert set(binding_subjects(cluster, binding)) == wanted
        for name in names:
            assert can_create_tokenreviews(cluster, namespace, f"{name}-gateway")
        # The fallback sample's gateway may watch its entities' EndpointSlices, there only.
        chat_gateway = f"--as=system:serviceaccount:{namespace}:chat-gateway"
        endpointslices = "endpointslices.discovery.k8s.io"
        assert can_i(cluster, "watch", endpointslices, "-n", namespace, chat_gateway)
        assert not can_i(cluster, "watch", endpointslices, "-n", "default", chat_gateway)
        for endpoint_status in json.loads(
            cluster.kubectl("-n", namespace, "get", "servingendpoints", "-o", "json").stdout
        )["items"]:
            degraded = next(
                c for c in endpoint_status["status"]["conditions"] if c["type"] == "Degraded"
            )
            assert degraded["status"] == "False", degraded

        # Helm does not render the subjects, so an upgrade leaves them as they are.
        helm(
            cluster, "upgrade", release, CHART, "--namespace", namespace, "--reuse-values",
            "--set", "operator.logLevel=DEBUG", "--wait", "--timeout", "120s",
        )  # fmt: skip
        assert set(binding_subjects(cluster, binding)) == wanted

        # Deleting the endpoints takes their subjects out again.
        cluster.kubectl("-n", namespace, "delete", "servingendpoints", "--all", "--wait=false")
        eventually(lambda: not binding_subjects(cluster, binding), timeout=90)
        operator.assert_alive()
    finally:
        operator.stop()
    text = log.read_text()
    assert "Forbidden" not in text and '"status": 403' not in text, text[-3000:]

    # Every pod Modelport created passed the restricted admission: no
    # ReplicaSet was refused one.
    events = json.loads(cluster.kubectl("-n", namespace, "get", "events", "-o", "json").stdout)[
        "items"
    ]
    refused = [e["message"] for e in events if e.get("reason") == "FailedCreate"]
    assert not refused, refused
