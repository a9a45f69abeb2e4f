"""The reconcile procedure against an in-memory stand-in for `modelport.kube.Kube`
(the unit tier; the integration tests run the same code against a real apiserver)."""

from __future__ import annotations

import copy
from typing import Any, Literal

import pytest
import yaml

from modelport.controller.reconcile import Reconciler
from modelport.kube import KubeError, NamespaceGoneError
from modelport.kube.compare import with_applied_hash
from modelport.settings import from_env
from tests.unit.operator.helpers import SAMPLES

NS = "team-a"
BINDING = "modelport-gateways"


class FakeKube:
    """Keeps objects in dicts; counts writes like the real one."""

    def __init__(self, endpoint: dict[str, Any], secrets: dict[str, dict[str, str]]) -> None:
        self.endpoint = endpoint
        self.secrets = secrets
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[str, str, str]] = []
        self.writes = 0
        self.namespace_gone = False
        self.refuse = ""
        self.refuse_binding = False
        # The TokenReview ClusterRoleBinding the chart creates (None: not installed).
        self.binding: dict[str, Any] | None = {
            "metadata": {"name": BINDING, "resourceVersion": "1"},
            "roleRef": {"kind": "ClusterRole", "name": "tokenreview"},
        }

    def get_endpoint(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.endpoint)

    def children(self, namespace: str, endpoint: str) -> dict[tuple[str, str], dict[str, Any]]:
        return copy.deepcopy(self.objects)

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        if self.namespace_gone:
            raise NamespaceGoneError("namespace is being terminated", 403)
        if self.refuse:
            raise KubeError(f"PATCH {manifest['kind']}: 422 {self.refuse}", 422)
        self.writes += 1
        obj = with_applied_hash(manifest)
        obj["metadata"]["uid"] = f"uid-{manifest['metadata']['name']}"
        if obj["kind"] == "Deployment":
            obj["metadata"]["generation"] = 1
            obj["status"] = {
                "observedGeneration": 1,
                "replicas": 1,
                "updatedReplicas": 1,
                "availableReplicas": 1,
            }
        self.objects[(obj["kind"], obj["metadata"]["name"])] = obj
        return copy.deepcopy(obj)

    def delete(self, kind: str, namespace: str, name: str, uid: str) -> None:
        self.writes += 1
        del self.objects[(kind, name)]

    def pods(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        return []

    def secret_key_state(
        self, namespace: str, name: str, key: str
    ) -> Literal["ok", "missing-secret", "missing-key"]:
        if name not in self.secrets:
            return "missing-secret"
        return "ok" if key in self.secrets[name] else "missing-key"

    def get_cluster_role_binding(self, name: str) -> dict[str, Any] | None:
        assert name == BINDING
        return copy.deepcopy(self.binding)

    def replace_cluster_role_binding(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.refuse_binding:
            raise KubeError("PUT clusterrolebindings: 403 forbidden", 403)
        assert self.binding is not None
        assert body["metadata"]["resourceVersion"] == self.binding["metadata"]["resourceVersion"]
        self.writes += 1
        self.binding = copy.deepcopy(body)
        self.binding["metadata"]["resourceVersion"] += "1"
        return copy.deepcopy(self.binding)

    def subjects(self) -> list[str]:
        found = (self.binding or {}).get("subjects", [])
        return [f"{s['namespace']}/{s['name']}" for s in found if s["kind"] == "ServiceAccount"]

    def apply_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.writes += 1
        self.endpoint["status"] = status

    def event(
        self, namespace: str, endpoint: str, uid: str, type_: str, reason: str, message: str
    ) -> None:
        self.writes += 1
        self.events.append((type_, reason, message))


def _sample(name: str) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((SAMPLES / f"{name}.yaml").read_text())
    body["metadata"].update(namespace=NS, uid="ep-uid", generation=1)
    return body


# The samples have rate limits: a cluster that enforces them shares a store.
STORE = '{"store": {"address": "redis://modelport-ratelimit.modelport-system:6379/0"}}'


def _reconciler(kube: FakeKube, binding: str = BINDING, rate_limiting: str = STORE) -> Reconciler:
    settings = from_env(
        {
            "MODELPORT_GATEWAY_TOKENREVIEW_BINDING": binding,
            "MODELPORT_RATE_LIMITING": rate_limiting,
        }
    )
    return Reconciler(kube, settings)  # type: ignore[arg-type]


def test_rate_limits_without_a_shared_store_are_reported_not_multiplied_silently() -> None:
    kube = FakeKube(_sample("mixed-traffic-fallback"), {"llm-keys": {"openai": "x"}})
    _reconciler(kube, rate_limiting="").reconcile(NS, "chat")
    status = kube.endpoint["status"]
    assert status["state"] == {"ready": "READY", "configUpdate": "NOT_UPDATING"}
    (degraded,) = [c for c in status["conditions"] if c["type"] == "Degraded"]
    assert degraded["status"] == "True" and degraded["reason"] == "RateLimitsPerReplica"
    assert "up to 5 times each limit" in degraded["message"]
    assert "rateLimiting.store" in degraded["message"]
    assert [r for _, r, _ in kube.events] == ["Created", "RolloutComplete", "RateLimitsPerReplica"]


def test_the_stores_password_is_mounted_and_its_absence_reported() -> None:
    kube = FakeKube(_sample("mixed-traffic-fallback"), {"llm-keys": {"openai": "x"}})
    store = (
        '{"store": {"address": "redis://rl:6379/0", '
        '"passwordSecret": {"name": "modelport-ratelimit", "key": "password"}}}'
    )
    _reconciler(kube, rate_limiting=store).reconcile(NS, "chat")
    status = kube.endpoint["status"]
    (degraded,) = [c for c in status["conditions"] if c["type"] == "Degraded"]
    assert degraded["reason"] == "SecretMissing"
    assert "Secret modelport-ratelimit does not exist" in degraded["message"]
    assert "cannot reach the rate limit store" in degraded["message"]
    deployment = kube.objects[("Deployment", "chat-gateway")]
    sources = deployment["spec"]["template"]["spec"]["volumes"][1]["projected"]["sources"]
    assert {"key": "password", "path": "modelport-ratelimit/password"} in [
        item for s in sources for item in s["secret"]["items"]
    ]


def test_converges_then_writes_nothing() -> None:
    kube = FakeKube(_sample("mixed-traffic-fallback"), {"llm-keys": {"openai": "x"}})
    reconciler = _reconciler(kube)
    first = reconciler.reconcile(NS, "chat")
    assert first is not None and len(first.created) == 8 and first.status_written
    assert "ServiceAccount chat-gateway" in first.created
    assert kube.subjects() == [f"{NS}/chat-gateway"]
    assert kube.endpoint["status"]["state"] == {"ready": "READY", "configUpdate": "NOT_UPDATING"}
    assert [r for _, r, _ in kube.events] == ["Created", "RolloutComplete"]

    again = reconciler.reconcile(NS, "chat")
    assert again is not None and again.writes == 0


def test_removed_entity_is_pruned_and_reported() -> None:
    kube = FakeKube(_sample("mixed-traffic-fallback"), {"llm-keys": {"openai": "x"}})
    reconciler = _reconciler(kube)
    reconciler.reconcile(NS, "chat")
    spec = kube.endpoint["spec"]
    spec["servedEntities"] = spec["servedEntities"][1:]
    del spec["trafficConfig"]
    kube.endpoint["metadata"]["generation"] = 2
    outcome = reconciler.reconcile(NS, "chat")
    assert outcome is not None
    assert sorted(outcome.pruned) == [
        "Deployment chat-llama-8b",
        "HorizontalPodAutoscaler chat-llama-8b",
        "Service chat-llama-8b",
    ]
    assert ("Normal", "Updated") in [(t, r) for t, r, _ in kube.events]


def test_missing_secret_is_reported_once_and_recovers() -> None:
    kube = FakeKube(_sample("openai"), {})
    reconciler = _reconciler(kube)
    reconciler.reconcile(NS, "openai-chat")
    status = kube.endpoint["status"]
    assert status["state"] == {"ready": "NOT_READY", "configUpdate": "UPDATE_FAILED"}
    warnings = [(r, m) for t, r, m in kube.events if t == "Warning"]
    assert len(warnings) == 1 and warnings[0][0] == "SecretMissing"
    assert "Secret llm-keys does not exist" in warnings[0][1]

    reconciler.reconcile(NS, "openai-chat")
    assert len([e for e in kube.events if e[0] == "Warning"]) == 1  # not repeated

    kube.secrets["llm-keys"] = {"openai": "x"}
    reconciler.reconcile(NS, "openai-chat")
    assert kube.endpoint["status"]["state"] == {"ready": "READY", "configUpdate": "NOT_UPDATING"}
    assert reconciler.endpoints_using_secret(NS, "llm-keys") == ["openai-chat"]


def test_body_that_slipped_past_admission_is_reported_not_raised() -> None:
    body = _sample("mixed-traffic-fallback")
    body["spec"]["trafficConfig"]["routes"][0]["servedEntityName"] = "nope"
    kube = FakeKube(body, {})
    outcome = _reconciler(kube).reconcile(NS, "chat")
    assert outcome is not None and not outcome.created
    degraded = next(c for c in kube.endpoint["status"]["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "SpecInvalid" and "nope" in degraded["message"]
    assert kube.endpoint["status"]["state"]["configUpdate"] == "UPDATE_FAILED"
    assert [r for _, r, _ in kube.events] == ["SpecInvalid"]


def test_namespace_going_away_is_not_an_error() -> None:
    kube = FakeKube(_sample("openai"), {"llm-keys": {"openai": "x"}})
    kube.namespace_gone = True
    outcome = _reconciler(kube).reconcile(NS, "openai-chat")
    assert outcome is not None and kube.writes == 0


def test_deleted_endpoint_is_forgotten() -> None:
    kube = FakeKube(_sample("openai"), {"llm-keys": {"openai": "x"}})
    reconciler = _reconciler(kube)
    reconciler.reconcile(NS, "openai-chat")
    assert reconciler.known_endpoints() == [(NS, "openai-chat")]  # what resync revisits
    kube.endpoint["metadata"]["deletionTimestamp"] = "2026-11-22T00:00:00Z"
    assert reconciler.reconcile(NS, "openai-chat") is None
    assert reconciler.endpoints_using_secret(NS, "llm-keys") == []
    assert reconciler.known_endpoints() == []


def test_a_child_the_apiserver_refuses_is_reported_not_retried_forever() -> None:
    kube = FakeKube(_sample("openai"), {"llm-keys": {"openai": "x"}})
    kube.refuse = "spec.template.spec.containers[0].args: Invalid value"
    outcome = _reconciler(kube).reconcile(NS, "openai-chat")
    assert outcome is not None
    status = kube.endpoint["status"]
    assert status["state"]["configUpdate"] == "UPDATE_FAILED"
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert "Invalid value" in degraded["message"]


def _with_auth(body: dict[str, Any], auth: dict[str, Any]) -> dict[str, Any]:
    body["spec"].setdefault("aiGateway", {})["auth"] = auth
    return body


def test_the_binding_follows_the_endpoint() -> None:
    kube = FakeKube(_sample("openai"), {"llm-keys": {"openai": "x"}})
    kube.binding["subjects"] = [{"kind": "User", "name": "someone"}]  # type: ignore[index]
    reconciler = _reconciler(kube)
    reconciler.reconcile(NS, "openai-chat")
    assert kube.subjects() == [f"{NS}/openai-chat-gateway"]
    assert kube.binding["subjects"][0] == {"kind": "User", "name": "someone"}  # type: ignore[index]

    # ServiceAccount tokens turned off: the ServiceAccount is pruned, the subject removed.
    _with_auth(kube.endpoint, {"serviceAccountTokens": {"enabled": False}})
    kube.endpoint["metadata"]["generation"] = 2
    outcome = reconciler.reconcile(NS, "openai-chat")
    assert outcome is not None and outcome.pruned == ["ServiceAccount openai-chat-gateway"]
    assert kube.subjects() == []
    pod = kube.objects[("Deployment", "openai-chat-gateway")]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "default"

    # On again, then the endpoint deleted: added, then removed; someone else's stays.
    del kube.endpoint["spec"]["aiGateway"]["auth"]
    kube.endpoint["metadata"]["generation"] = 3
    reconciler.reconcile(NS, "openai-chat")
    assert kube.subjects() == [f"{NS}/openai-chat-gateway"]
    kube.endpoint["metadata"]["deletionTimestamp"] = "2026-11-22T00:00:00Z"
    assert reconciler.reconcile(NS, "openai-chat") is None
    assert kube.subjects() == []
    assert kube.binding["subjects"] == [{"kind": "User", "name": "someone"}]  # type: ignore[index]


@pytest.mark.parametrize("binding", ["", BINDING])
def test_no_binding_is_said_once_and_does_not_fail_the_update(binding: str) -> None:
    kube = FakeKube(_sample("openai"), {"llm-keys": {"openai": "x"}})
    kube.binding = None  # not installed; with no name, not even looked for
    reconciler = _reconciler(kube, binding)
    reconciler.reconcile(NS, "openai-chat")
    status = kube.endpoint["status"]
    assert status["state"] == {"ready": "READY", "configUpdate": "NOT_UPDATING"}
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "TokenReviewUnavailable"
    assert "openai-chat-gateway cannot verify" in degraded["message"]
    warnings = [(r, m) for t, r, m in kube.events if t == "Warning"]
    assert warnings == [("TokenReviewUnavailable", degraded["message"])]
    again = reconciler.reconcile(NS, "openai-chat")
    assert again is not None and again.writes == 0  # said once


def test_a_missing_api_key_secret_is_named_and_the_endpoint_keeps_serving() -> None:
    body = _with_auth(
        _sample("openai"),
        {"apiKeys": [{"secretKeyRef": {"name": "callers", "key": "alice"}, "user": "alice"}]},
    )
    kube = FakeKube(body, {"llm-keys": {"openai": "x"}})
    reconciler = _reconciler(kube)
    reconciler.reconcile(NS, "openai-chat")
    status = kube.endpoint["status"]
    assert status["state"] == {"ready": "READY", "configUpdate": "UPDATE_FAILED"}
    assert status["servedEntities"][0]["state"]["deployment"] == "DEPLOYMENT_READY"
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "SecretMissing"
    assert "spec.aiGateway.auth.apiKeys[0].secretKeyRef" in degraded["message"]
    assert "create secret generic callers --from-literal=alice=<value>" in degraded["message"]
    assert [r for t, r, _ in kube.events if t == "Warning"] == ["SecretMissing"]
    assert reconciler.endpoints_using_secret(NS, "callers") == ["openai-chat"]

    kube.secrets["callers"] = {"alice": "x"}
    reconciler.reconcile(NS, "openai-chat")
    assert kube.endpoint["status"]["state"] == {"ready": "READY", "configUpdate": "NOT_UPDATING"}


def test_a_refused_binding_degrades_only_endpoints_that_need_it() -> None:
    kube = FakeKube(_sample("openai"), {"llm-keys": {"openai": "x"}})
    kube.refuse_binding = True
    reconciler = _reconciler(kube)
    reconciler.reconcile(NS, "openai-chat")
    degraded = next(c for c in kube.endpoint["status"]["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "TokenReviewUnavailable" and "403" in degraded["message"]

    # Turned off, the subject it could not add is not needed: nothing to report.
    _with_auth(kube.endpoint, {"serviceAccountTokens": {"enabled": False}})
    kube.endpoint["metadata"]["generation"] = 2
    kube.binding["subjects"] = [  # type: ignore[index]
        {"kind": "ServiceAccount", "name": "openai-chat-gateway", "namespace": NS}
    ]
    reconciler.binding = type(reconciler.binding)(kube, BINDING)  # forget the cached read
    reconciler.reconcile(NS, "openai-chat")
    degraded = next(c for c in kube.endpoint["status"]["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "False"
