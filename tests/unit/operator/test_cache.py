"""What the watch cache keeps of each object, and how our own writes are read through
it until the watches show them."""

from __future__ import annotations

import copy
from typing import Any

from modelport.controller.cache import (
    cached_child,
    cached_endpoint,
    cached_pod,
    secret_keys,
)
from modelport.controller.expectations import Expectations
from modelport.kube.compare import FIELD_MANAGER, desired_digest, owned_digest, with_applied_hash

OWNER = {
    "apiVersion": "serving.modelport.io/v1alpha1",
    "kind": "ServingEndpoint",
    "name": "chat",
    "uid": "ep-uid",
    "controller": True,
}
MANIFEST: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "chat-gateway",
        "namespace": "team-a",
        "labels": {"app.kubernetes.io/managed-by": "modelport"},
        "ownerReferences": [OWNER],
    },
    "spec": {
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "gateway",
                        "image": "gw:1",
                        "args": ["--a", "--b"],
                        "resources": {"requests": {"cpu": "0.5"}},
                    }
                ],
                "tolerations": [],
            }
        }
    },
}


def _live(manifest: dict[str, Any] = MANIFEST) -> dict[str, Any]:
    """`manifest` as the apiserver answers an apply of it: defaults and status added,
    quantities canonical, empty lists left out, our fields in managedFields."""
    live = with_applied_hash(manifest)
    meta = live["metadata"]
    meta.update(uid="child-uid", resourceVersion="7", generation=2)
    spec = live["spec"]
    spec["replicas"] = 1
    pod = spec["template"]["spec"]
    del pod["tolerations"]
    pod["containers"][0]["resources"]["requests"]["cpu"] = "500m"
    pod["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    live["status"] = {"replicas": 1, "availableReplicas": 1, "updatedReplicas": 1}
    meta["managedFields"] = [
        {
            "manager": FIELD_MANAGER,
            "operation": "Apply",
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {
                    "f:annotations": {"f:serving.modelport.io/applied-hash": {}},
                    "f:labels": {"f:app.kubernetes.io/managed-by": {}},
                    "f:ownerReferences": {'k:{"uid":"ep-uid"}': {}},
                },
                "f:spec": {
                    "f:template": {
                        "f:spec": {
                            "f:containers": {
                                'k:{"name":"gateway"}': {
                                    ".": {},
                                    "f:name": {},
                                    "f:image": {},
                                    "f:args": {},
                                    "f:resources": {"f:requests": {"f:cpu": {}}},
                                }
                            },
                            "f:tolerations": {},
                        }
                    }
                },
            },
        },
        {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status"},
    ]
    return live


def test_a_child_as_applied_needs_no_apply() -> None:
    child = cached_child("Deployment", _live())
    assert child is not None
    assert (child.name, child.uid, child.owner_uid) == ("chat-gateway", "child-uid", "ep-uid")
    assert child.owned == desired_digest(with_applied_hash(MANIFEST))
    assert child.deployment is not None and child.deployment.available_replicas == 1


def test_a_field_edited_by_hand_leaves_our_set_and_is_noticed() -> None:
    live = _live()
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:1"
    fields = live["metadata"]["managedFields"][0]["fieldsV1"]
    del fields["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"gateway"}']["f:image"]
    assert owned_digest(live) != desired_digest(with_applied_hash(MANIFEST))


def test_a_field_we_stopped_rendering_is_noticed() -> None:
    smaller = copy.deepcopy(MANIFEST)
    del smaller["spec"]["template"]["spec"]["containers"][0]["args"]
    # Still ours on the live object (the last apply set it): the digests differ.
    assert owned_digest(_live()) != desired_digest(with_applied_hash(smaller))


def test_a_changed_manifest_is_noticed() -> None:
    changed = copy.deepcopy(MANIFEST)
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "gw:2"
    assert owned_digest(_live()) != desired_digest(with_applied_hash(changed))


def test_an_object_we_never_applied_owns_nothing() -> None:
    live = _live()
    live["metadata"]["managedFields"] = live["metadata"]["managedFields"][1:]
    assert owned_digest(live) is None


def test_an_object_no_endpoint_owns_is_not_a_child() -> None:
    live = _live()
    live["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": "x", "uid": "u"}]
    assert cached_child("Deployment", live) is None


def test_a_secret_is_kept_as_its_key_names_only() -> None:
    secret = {
        "metadata": {"name": "keys", "namespace": "team-a"},
        "data": {"openai": "c2VjcmV0LXZhbHVl"},
        "stringData": {"other": "another-secret-value"},
    }
    kept = secret_keys(secret)
    assert kept == {"openai", "other"}
    assert "c2VjcmV0LXZhbHVl" not in repr(kept) and "another-secret-value" not in repr(kept)


def test_an_endpoint_is_kept_without_managed_fields_and_with_its_secrets() -> None:
    body = {
        "apiVersion": "serving.modelport.io/v1alpha1",
        "kind": "ServingEndpoint",
        "metadata": {
            "name": "chat",
            "namespace": "team-a",
            "uid": "ep-uid",
            "generation": 3,
            "resourceVersion": "99",
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {
            "servedEntities": [
                {
                    "name": "gpt",
                    "externalModel": {
                        "name": "gpt-4o",
                        "provider": "openai",
                        "task": "llm/v1/chat",
                        "openaiConfig": {
                            "openaiApiKey": {"secretKeyRef": {"name": "keys", "key": "openai"}}
                        },
                    },
                }
            ]
        },
    }
    record = cached_endpoint(body)
    assert (record.uid, record.generation, record.deleting) == ("ep-uid", 3, False)
    assert record.secrets == {"keys"}
    assert "managedFields" not in record.raw()["metadata"]
    # A new resourceVersion alone (nothing we read changed) gives an equal record.
    assert cached_endpoint(
        {**body, "metadata": {**body["metadata"], "resourceVersion": "100"}}
    ) == (record)


def test_a_pod_is_kept_as_its_stage() -> None:
    pod = {
        "metadata": {
            "name": "chat-gateway-1",
            "uid": "pod-uid",
            "labels": {
                "serving.modelport.io/endpoint": "chat",
                "serving.modelport.io/component": "gateway",
                "pod-template-hash": "abc",
            },
        },
        "spec": {},
        "status": {"phase": "Pending"},
    }
    record = cached_pod(pod)
    assert record.observation.stage == "waiting for a node"
    assert record.matches(
        {"serving.modelport.io/endpoint": "chat", "serving.modelport.io/component": "gateway"}
    )
    assert not record.matches({"serving.modelport.io/component": "inference"})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


KEY = ("team-a", "chat")


def test_an_applied_child_stands_in_until_the_watch_shows_it() -> None:
    clock = Clock()
    expectations = Expectations(ttl=30, clock=clock)
    child = cached_child("Deployment", _live())
    assert child is not None
    expectations.applied(KEY, child)
    # The watch has not shown it yet: the answer stands in, and a rerun is asked for
    # in case the watch never shows it.
    assert expectations.children(KEY, {}) == {child.key: child}
    assert expectations.pending_until(KEY) == 30
    # The watch shows it (with a newer status): the cache is read again, and nothing
    # is kept.
    newer = cached_child("Deployment", {**_live(), "status": {"replicas": 2}})
    assert newer is not None
    assert expectations.children(KEY, {child.key: newer}) == {child.key: newer}
    assert len(expectations) == 0


def test_an_expectation_lapses() -> None:
    clock = Clock()
    expectations = Expectations(ttl=30, clock=clock)
    child = cached_child("Deployment", _live())
    assert child is not None
    expectations.applied(KEY, child)
    clock.now = 31
    assert expectations.children(KEY, {}) == {}
    assert len(expectations) == 0


def test_a_deleted_child_is_hidden_until_it_is_gone() -> None:
    expectations = Expectations(clock=Clock())
    child = cached_child("Deployment", _live())
    assert child is not None
    expectations.deleted(KEY, child.uid)
    assert expectations.children(KEY, {child.key: child}) == {}
    assert expectations.children(KEY, {}) == {}
    assert len(expectations) == 0


def test_the_written_status_stands_in_until_the_watch_shows_it() -> None:
    expectations = Expectations(clock=Clock())
    body = {"metadata": {"name": "chat", "uid": "u", "generation": 1}, "spec": {}}
    before = cached_endpoint(body)
    written = cached_endpoint({**body, "status": {"observedGeneration": 1}})
    expectations.status_written(KEY, written)
    assert expectations.endpoint(KEY, before) == written
    expectations.observe_endpoint(KEY, written)
    assert len(expectations) == 0
    # A newer generation from the watch always wins.
    expectations.status_written(KEY, written)
    newer = cached_endpoint({**body, "metadata": {**body["metadata"], "generation": 2}})
    assert expectations.endpoint(KEY, newer) == newer
