"""Who may call, against the real apiserver: an endpoint's gateway gets its own
ServiceAccount, which the operator puts into (and takes out of) the TokenReview
ClusterRoleBinding, so that it may create TokenReviews and nothing else; API-key
Secrets are mounted like provider keys, and a missing one is named in status; a
missing binding is said, without failing the update."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cluster
from tests.integration.operator.conftest import make_namespace
from tests.integration.operator.support import (
    FAKE_SECRET_PREFIX,
    Operator,
    apply,
    binding_subjects,
    can_create_tokenreviews,
    children,
    create_secret,
    endpoint,
    kubectl_json,
    state,
    wait_ready,
)
from tests.support import eventually
from tests.unit.operator.helpers import external

pytestmark = pytest.mark.cluster

KEY = f"{FAKE_SECRET_PREFIX}-{uuid.uuid4().hex[:12]}"
API_KEY = f"{FAKE_SECRET_PREFIX}-caller-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def keys(crd: Cluster, op_namespace: str) -> str:
    create_secret(crd, op_namespace, "llm-keys", {"openai": KEY})
    return op_namespace


def _endpoint(name: str, auth: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"servedEntities": [external("gpt")]}
    if auth is not None:
        spec["aiGateway"] = {"auth": auth}
    return {
        "apiVersion": "serving.modelport.io/v1alpha1",
        "kind": "ServingEndpoint",
        "metadata": {"name": name},
        "spec": spec,
    }


def _pod(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    deployment = children(cluster, ns, name)[("Deployment", f"{name}-gateway")]
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def _auth(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    cm = kubectl_json(cluster, "-n", ns, "get", "configmap", f"{name}-gateway")
    section: dict[str, Any] = json.loads(cm["data"]["gateway.json"])["aiGateway"]["auth"]
    return section


def _degraded(cluster: Cluster, ns: str, name: str) -> dict[str, Any] | None:
    live = endpoint(cluster, ns, name) or {}
    status = live.get("status") or {}
    if status.get("observedGeneration") != live.get("metadata", {}).get("generation"):
        return None
    return next((c for c in status.get("conditions") or [] if c["type"] == "Degraded"), None)


def test_the_gateway_service_account_follows_the_endpoint(
    crd: Cluster, keys: str, tokenreview_binding: str, operator: Operator
) -> None:
    ns, name = keys, "sa-tokens"
    account = f"{name}-gateway"
    subject = f"{ns}/{account}"
    apply(crd, ns, _endpoint(name))
    wait_ready(crd, ns, name)

    live = endpoint(crd, ns, name)
    assert live is not None
    sa = children(crd, ns, name)[("ServiceAccount", account)]
    assert sa["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "modelport"
    assert sa["metadata"]["ownerReferences"][0]["uid"] == live["metadata"]["uid"]
    pod = _pod(crd, ns, name)
    assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == (account, True)
    assert subject in binding_subjects(crd, tokenreview_binding)
    # Exactly the TokenReview right: not even reading the Secrets next to it.
    assert can_create_tokenreviews(crd, ns, account)
    for verb, resource in [("get", "secrets"), ("list", "pods"), ("create", "serviceaccounts")]:
        done = crd.kubectl(
            "auth", "can-i", verb, resource, "-n", ns,
            f"--as=system:serviceaccount:{ns}:{account}", check=False,
        )  # fmt: skip
        assert done.stdout.strip() == "no", (verb, resource)
    assert _auth(crd, ns, name)["allow"]["serviceAccounts"] == [f"{ns}/*"]

    # Drift: a hand-deleted ServiceAccount comes back.
    crd.kubectl("-n", ns, "delete", "serviceaccount", account)
    eventually(lambda: ("ServiceAccount", account) in children(crd, ns, name), timeout=30)

    # ServiceAccount tokens off: no ServiceAccount, no token, no TokenReview right.
    apply(crd, ns, _endpoint(name, {"serviceAccountTokens": {"enabled": False}}))
    eventually(lambda: ("ServiceAccount", account) not in children(crd, ns, name), timeout=30)
    eventually(lambda: subject not in binding_subjects(crd, tokenreview_binding), timeout=30)
    eventually(lambda: _pod(crd, ns, name)["automountServiceAccountToken"] is False, timeout=30)
    # Spelled out: the deprecated serviceAccount field would otherwise keep the old
    # name, and new pods would name the pruned ServiceAccount.
    pod = _pod(crd, ns, name)
    assert (pod["serviceAccountName"], pod["serviceAccount"]) == ("default", "default")
    assert not can_create_tokenreviews(crd, ns, account)
    wait_ready(crd, ns, name)

    # On again, then the endpoint deleted: the subject goes with it.
    apply(crd, ns, _endpoint(name))
    eventually(lambda: subject in binding_subjects(crd, tokenreview_binding), timeout=30)
    wait_ready(crd, ns, name)
    crd.kubectl("-n", ns, "delete", "servingendpoint", name, "--wait=false")
    eventually(lambda: subject not in binding_subjects(crd, tokenreview_binding), timeout=60)
    eventually(lambda: ("ServiceAccount", account) not in children(crd, ns, name), timeout=60)
    operator.assert_alive()


def test_a_subject_removed_by_hand_is_put_back(
    crd: Cluster, keys: str, tokenreview_binding: str, operator: Operator
) -> None:
    ns, name = keys, "binding-drift"
    subject = f"{ns}/{name}-gateway"
    apply(crd, ns, _endpoint(name))
    wait_ready(crd, ns, name)
    assert subject in binding_subjects(crd, tokenreview_binding)
    binding = kubectl_json(crd, "get", "clusterrolebinding", tokenreview_binding)
    kept = [s for s in binding["subjects"] if f"{s.get('namespace')}/{s['name']}" != subject]
    binding["subjects"] = kept
    crd.kubectl("replace", "-f", "-", input=json.dumps(binding))
    assert subject not in binding_subjects(crd, tokenreview_binding)
    # The safety-net resync (3 s here) notices; the binding has no watch of its own.
    eventually(lambda: subject in binding_subjects(crd, tokenreview_binding), timeout=30)


def test_a_missing_api_key_secret_is_named_then_recovers(
    crd: Cluster, keys: str, operator: Operator
) -> None:
    ns, name = keys, "api-keys"
    auth = {
        "apiKeys": [
            {"secretKeyRef": {"name": "late-callers", "key": "alice"}, "user": "alice"},
            {
                "secretKeyRef": {"name": "late-callers", "key": "nightly"},
                "servicePrincipal": "nightly",
                "groups": ["eval"],
            },
        ]
    }
    apply(crd, ns, _endpoint(name, auth))

    def failed() -> dict[str, Any] | None:
        degraded = _degraded(crd, ns, name)
        return degraded if degraded and degraded["status"] == "True" else None

    degraded = eventually(failed, timeout=60)
    assert degraded["reason"] == "SecretMissing"
    message = degraded["message"]
    assert "spec.aiGateway.auth.apiKeys[0].secretKeyRef" in message
    assert "late-callers" in message and "kubectl -n" in message
    # The gateway serves (it only refuses those keys); the update is what failed.
    eventually(lambda: state(crd, ns, name) == ("READY", "UPDATE_FAILED"), timeout=60)
    events = kubectl_json(
        crd, "-n", ns, "get", "events", "--field-selector", f"involvedObject.name={name}"
    )["items"]
    assert any(e["reason"] == "SecretMissing" for e in events)
    # The keys are files of the gateway's projected volume, paths in the config.
    volume = next(v for v in _pod(crd, ns, name)["volumes"] if v["name"] == "secrets")
    items = {
        (s["secret"]["name"], i["key"], i["path"])
        for s in volume["projected"]["sources"]
        for i in s["secret"]["items"]
    }
    assert ("late-callers", "alice", "late-callers/alice") in items
    assert [k["path"] for k in _auth(crd, ns, name)["apiKeys"]] == [
        "late-callers/alice",
        "late-callers/nightly",
    ]

    create_secret(crd, ns, "late-callers", {"alice": API_KEY, "nightly": API_KEY + "-2"})
    wait_ready(crd, ns, name, timeout=30)
    degraded = _degraded(crd, ns, name)
    assert degraded is not None and degraded["status"] == "False"
    # No key value anywhere the operator writes.
    places = [
        json.dumps(kubectl_json(crd, "-n", ns, "get", "configmaps")),
        json.dumps(kubectl_json(crd, "-n", ns, "get", "servingendpoints")),
        json.dumps(kubectl_json(crd, "-n", ns, "get", "events")),
        operator.log(),
    ]
    assert not [p for p in places if API_KEY in p]


@pytest.fixture(scope="module")
def unbound_namespace(crd: Cluster) -> Iterator[str]:
    name = make_namespace(crd, "unbound")
    create_secret(crd, name, "llm-keys", {"openai": KEY})
    yield name
    crd.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_without_the_binding_the_endpoint_says_so_and_serves(
    crd: Cluster, unbound_namespace: str, tmp_path: Path
) -> None:
    ns, name = unbound_namespace, "unbound"
    missing = f"modelport-test-{uuid.uuid4().hex[:8]}-absent"
    op = Operator(crd, [ns], tmp_path / "operator.log", binding=missing).start()
    try:
        apply(crd, ns, _endpoint(name))
        wait_ready(crd, ns, name)

        def said() -> dict[str, Any] | None:
            degraded = _degraded(crd, ns, name)
            return degraded if degraded and degraded["status"] == "True" else None

        degraded = eventually(said, timeout=30)
        assert degraded["reason"] == "TokenReviewUnavailable"
        assert f"ClusterRoleBinding {missing}" in degraded["message"]
        assert "serviceAccountTokens.enabled: false" in degraded["message"]
        assert state(crd, ns, name) == ("READY", "NOT_UPDATING")
        # Everything else is rendered as usual.
        assert ("ServiceAccount", f"{name}-gateway") in children(crd, ns, name)
        op.assert_alive()
    finally:
        op.stop()
