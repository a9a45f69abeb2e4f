"""The reconcile procedure against an in-memory stand-in for `modelport.kube.Kube`
(the unit tier; the integration tests run the same code against a real apiserver)."""

from __future__ import annotations

import copy
from typing import Any, Literal

import yaml

from modelport.controller.reconcile import Reconciler
from modelport.kube import KubeError, NamespaceGoneError
from modelport.kube.compare import with_applied_hash
from modelport.settings import from_env
from tests.unit.operator.helpers import SAMPLES

NS = "team-a"


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


def _reconciler(kube: FakeKube) -> Reconciler:
    return Reconciler(kube, from_env({}))  # type: ignore[arg-type]


def test_converges_then_writes_nothing() -> None:
    kube = FakeKube(_sample("mixed-traffic-fallback"), {"llm-keys": {"openai": "x"}})
    reconciler = _reconciler(kube)
    first = reconciler.reconcile(NS, "chat")
    assert first is not None and len(first.created) == 7 and first.status_written
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
