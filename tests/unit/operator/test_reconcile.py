"""The reconcile procedure against an in-memory world (`tests.unit.operator.world`);
the integration tests run the same code against a real apiserver, through real
watches."""

from __future__ import annotations

from typing import Any

import pytest

from modelport.kube.binding import TokenReviewBinding
from tests.unit.operator.world import (
    BINDING,
    NS,
    FakeKube,
    make_reconciler,
    reconcile,
    sample_body,
)


def test_rate_limits_without_a_shared_store_are_reported_not_multiplied_silently() -> None:
    kube = FakeKube(sample_body("mixed-traffic-fallback"), {"llm-keys": {"openai": "x"}})
    reconcile(make_reconciler(kube, rate_limiting=""), NS, "chat")
    status = kube.endpoint["status"]
    assert status["state"] == {"ready": "READY", "configUpdate": "NOT_UPDATING"}
    (degraded,) = [c for c in status["conditions"] if c["type"] == "Degraded"]
    assert degraded["status"] == "True" and degraded["reason"] == "RateLimitsPerReplica"
    assert "up to 5 times each limit" in degraded["message"]
    assert "rateLimiting.store" in degraded["message"]
    assert [r for _, r, _ in kube.events] == ["Created", "RolloutComplete", "RateLimitsPerReplica"]


def test_the_stores_password_is_mounted_and_its_absence_reported() -> None:
    kube = FakeKube(sample_body("mixed-traffic-fallback"), {"llm-keys": {"openai": "x"}})
    store = (
        '{"store": {"address": "redis://rl:6379/0", '
        '"passwordSecret": {"name": "modelport-ratelimit", "key": "password"}}}'
    )
    reconcile(make_reconciler(kube, rate_limiting=store), NS, "chat")
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
    kube = FakeKube(sample_body("mixed-traffic-fallback"), {"llm-keys": {"openai": "x"}})
    reconciler = make_reconciler(kube)
    first = reconcile(reconciler, NS, "chat")
    assert first is not None and len(first.created) == 8 and first.status_written
    assert "ServiceAccount chat-gateway" in first.created
    assert kube.subjects() == [f"{NS}/chat-gateway"]
    assert kube.endpoint["status"]["state"] == {"ready": "READY", "configUpdate": "NOT_UPDATING"}
    assert [r for _, r, _ in kube.events] == ["Created", "RolloutComplete"]

    again = reconcile(reconciler, NS, "chat")
    assert again is not None and again.writes == 0


def test_removed_entity_is_pruned_and_reported() -> None:
    kube = FakeKube(sample_body("mixed-traffic-fallback"), {"llm-keys": {"openai": "x"}})
    reconciler = make_reconciler(kube)
    reconcile(reconciler, NS, "chat")
    spec = kube.endpoint["spec"]
    spec["servedEntities"] = spec["servedEntities"][1:]
    del spec["trafficConfig"]
    kube.endpoint["metadata"]["generation"] = 2
    outcome = reconcile(reconciler, NS, "chat")
    assert outcome is not None
    assert sorted(outcome.pruned) == [
        "Deployment chat-llama-8b",
        "HorizontalPodAutoscaler chat-llama-8b",
        "Service chat-llama-8b",
    ]
    assert ("Normal", "Updated") in [(t, r) for t, r, _ in kube.events]


def test_missing_secret_is_reported_once_and_recovers() -> None:
    kube = FakeKube(sample_body("openai"), {})
    reconciler = make_reconciler(kube)
    reconcile(reconciler, NS, "openai-chat")
    status = kube.endpoint["status"]
    assert status["state"] == {"ready": "NOT_READY", "configUpdate": "UPDATE_FAILED"}
    warnings = [(r, m) for t, r, m in kube.events if t == "Warning"]
    assert len(warnings) == 1 and warnings[0][0] == "SecretMissing"
    assert "Secret llm-keys does not exist" in warnings[0][1]

    reconcile(reconciler, NS, "openai-chat")
    assert len([e for e in kube.events if e[0] == "Warning"]) == 1  # not repeated

    kube.secrets["llm-keys"] = {"openai": "x"}
    reconcile(reconciler, NS, "openai-chat")
    assert kube.endpoint["status"]["state"] == {"ready": "READY", "configUpdate": "NOT_UPDATING"}
    assert reconciler.cache.endpoints_using_secret(NS, "llm-keys") == ["openai-chat"]


def test_body_that_slipped_past_admission_is_reported_not_raised() -> None:
    body = sample_body("mixed-traffic-fallback")
    body["spec"]["trafficConfig"]["routes"][0]["servedEntityName"] = "nope"
    kube = FakeKube(body, {})
    outcome = reconcile(make_reconciler(kube), NS, "chat")
    assert outcome is not None and not outcome.created
    degraded = next(c for c in kube.endpoint["status"]["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "SpecInvalid" and "nope" in degraded["message"]
    assert kube.endpoint["status"]["state"]["configUpdate"] == "UPDATE_FAILED"
    assert [r for _, r, _ in kube.events] == ["SpecInvalid"]


def test_namespace_going_away_is_not_an_error() -> None:
    kube = FakeKube(sample_body("openai"), {"llm-keys": {"openai": "x"}})
    kube.namespace_gone = True
    outcome = reconcile(make_reconciler(kube), NS, "openai-chat")
    assert outcome is not None and kube.writes == 0


def test_deleted_endpoint_is_forgotten() -> None:
    kube = FakeKube(sample_body("openai"), {"llm-keys": {"openai": "x"}})
    reconciler = make_reconciler(kube)
    reconcile(reconciler, NS, "openai-chat")
    assert reconciler.cache.endpoints() == [(NS, "openai-chat")]  # what resync revisits
    kube.endpoint["metadata"]["deletionTimestamp"] = "2026-11-22T00:00:00Z"
    assert reconcile(reconciler, NS, "openai-chat") is None
    assert len(reconciler.expectations) == 0  # nothing kept about it
    kube.gone = True  # the watch sees it go
    assert reconciler.cache.endpoints_using_secret(NS, "llm-keys") == []
    assert reconciler.cache.endpoints() == []


def test_a_child_the_apiserver_refuses_is_reported_not_retried_forever() -> None:
    kube = FakeKube(sample_body("openai"), {"llm-keys": {"openai": "x"}})
    kube.refuse = "spec.template.spec.containers[0].args: Invalid value"
    outcome = reconcile(make_reconciler(kube), NS, "openai-chat")
    assert outcome is not None
    status = kube.endpoint["status"]
    assert status["state"]["configUpdate"] == "UPDATE_FAILED"
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert "Invalid value" in degraded["message"]


def _with_auth(body: dict[str, Any], auth: dict[str, Any]) -> dict[str, Any]:
    body["spec"].setdefault("aiGateway", {})["auth"] = auth
    return body


def test_the_binding_follows_the_endpoint() -> None:
    kube = FakeKube(sample_body("openai"), {"llm-keys": {"openai": "x"}})
    kube.binding["subjects"] = [{"kind": "User", "name": "someone"}]  # type: ignore[index]
    reconciler = make_reconciler(kube)
    reconcile(reconciler, NS, "openai-chat")
    assert kube.subjects() == [f"{NS}/openai-chat-gateway"]
    assert kube.binding["subjects"][0] == {"kind": "User", "name": "someone"}  # type: ignore[index]

    # ServiceAccount tokens turned off: the ServiceAccount is pruned, the subject removed.
    _with_auth(kube.endpoint, {"serviceAccountTokens": {"enabled": False}})
    kube.endpoint["metadata"]["generation"] = 2
    outcome = reconcile(reconciler, NS, "openai-chat")
    assert outcome is not None and outcome.pruned == ["ServiceAccount openai-chat-gateway"]
    assert kube.subjects() == []
    pod = kube.objects[("Deployment", "openai-chat-gateway")]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "default"

    # On again, then the endpoint deleted: added, then removed; someone else's stays.
    del kube.endpoint["spec"]["aiGateway"]["auth"]
    kube.endpoint["metadata"]["generation"] = 3
    reconcile(reconciler, NS, "openai-chat")
    assert kube.subjects() == [f"{NS}/openai-chat-gateway"]
    kube.endpoint["metadata"]["deletionTimestamp"] = "2026-11-22T00:00:00Z"
    assert reconcile(reconciler, NS, "openai-chat") is None
    assert kube.subjects() == []
    assert kube.binding["subjects"] == [{"kind": "User", "name": "someone"}]  # type: ignore[index]


@pytest.mark.parametrize("binding", ["", BINDING])
def test_no_binding_is_said_once_and_does_not_fail_the_update(binding: str) -> None:
    kube = FakeKube(sample_body("openai"), {"llm-keys": {"openai": "x"}})
    kube.binding = None  # not installed; with no name, not even looked for
    reconciler = make_reconciler(kube, binding)
    reconcile(reconciler, NS, "openai-chat")
    status = kube.endpoint["status"]
    assert status["state"] == {"ready": "READY", "configUpdate": "NOT_UPDATING"}
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "TokenReviewUnavailable"
    assert "openai-chat-gateway cannot verify" in degraded["message"]
    warnings = [(r, m) for t, r, m in kube.events if t == "Warning"]
    assert warnings == [("TokenReviewUnavailable", degraded["message"])]
    again = reconcile(reconciler, NS, "openai-chat")
    assert again is not None and again.writes == 0  # said once


def test_a_missing_api_key_secret_is_named_and_the_endpoint_keeps_serving() -> None:
    body = _with_auth(
        sample_body("openai"),
        {"apiKeys": [{"secretKeyRef": {"name": "callers", "key": "alice"}, "user": "alice"}]},
    )
    kube = FakeKube(body, {"llm-keys": {"openai": "x"}})
    reconciler = make_reconciler(kube)
    reconcile(reconciler, NS, "openai-chat")
    status = kube.endpoint["status"]
    assert status["state"] == {"ready": "READY", "configUpdate": "UPDATE_FAILED"}
    assert status["servedEntities"][0]["state"]["deployment"] == "DEPLOYMENT_READY"
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "SecretMissing"
    assert "spec.aiGateway.auth.apiKeys[0].secretKeyRef" in degraded["message"]
    assert "create secret generic callers --from-literal=alice=<value>" in degraded["message"]
    assert [r for t, r, _ in kube.events if t == "Warning"] == ["SecretMissing"]
    assert reconciler.cache.endpoints_using_secret(NS, "callers") == ["openai-chat"]

    kube.secrets["callers"] = {"alice": "x"}
    reconcile(reconciler, NS, "openai-chat")
    assert kube.endpoint["status"]["state"] == {"ready": "READY", "configUpdate": "NOT_UPDATING"}


def test_a_refused_binding_degrades_only_endpoints_that_need_it() -> None:
    kube = FakeKube(sample_body("openai"), {"llm-keys": {"openai": "x"}})
    kube.refuse_binding = True
    reconciler = make_reconciler(kube)
    reconcile(reconciler, NS, "openai-chat")
    degraded = next(c for c in kube.endpoint["status"]["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "TokenReviewUnavailable" and "403" in degraded["message"]

    # Turned off, the subject it could not add is not needed: nothing to report.
    _with_auth(kube.endpoint, {"serviceAccountTokens": {"enabled": False}})
    kube.endpoint["metadata"]["generation"] = 2
    kube.binding["subjects"] = [  # type: ignore[index]
        {"kind": "ServiceAccount", "name": "openai-chat-gateway", "namespace": NS}
    ]
    reconciler.binding = TokenReviewBinding(kube, BINDING, window=0)  # forget the cached read
    reconcile(reconciler, NS, "openai-chat")
    degraded = next(c for c in kube.endpoint["status"]["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "False"
