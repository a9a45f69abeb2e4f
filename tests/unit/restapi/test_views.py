"""An endpoint and its status as the reference service's GET and list answers."""

from __future__ import annotations

from typing import Any

import pytest

from modelport.api.v1alpha1 import ServingEndpoint
from modelport.restapi import views
from modelport.restapi.mapping import CREATOR_ANNOTATION, endpoint_from_reference

CREATED = "2026-12-01T10:00:00Z"
CREATED_MS = 1796119200000


def entity(name: str, model: str = "gpt-4o") -> dict[str, Any]:
    return {
        "name": name,
        "externalModel": {
            "name": model,
            "provider": "openai",
            "task": "llm/v1/chat",
            "openaiConfig": {"openaiApiKey": {"secretKeyRef": {"name": "keys", "key": "openai"}}},
        },
    }


def stored(
    generation: int = 2, status: dict[str, Any] | None = None, **spec: Any
) -> ServingEndpoint:
    """An endpoint as the apiserver returns it."""
    body: dict[str, Any] = {
        "apiVersion": "serving.modelport.io/v1alpha1",
        "kind": "ServingEndpoint",
        "metadata": {
            "name": "chat",
            "namespace": "team-a",
            "uid": "u-1",
            "generation": generation,
            "creationTimestamp": CREATED,
            "annotations": {CREATOR_ANNOTATION: "system:serviceaccount:team-a:alice"},
            "managedFields": [
                {"manager": "modelport-api", "operation": "Update", "time": CREATED},
                {"manager": "modelport", "time": "2026-12-01T10:05:00Z", "subresource": "status"},
            ],
        },
        "spec": {"servedEntities": [entity("gpt")], **spec},
    }
    if status is not None:
        body["status"] = status
    return ServingEndpoint.parse(body)


def live_status(generation: int, update: str = "NOT_UPDATING", **extra: Any) -> dict[str, Any]:
    return {
        "observedGeneration": generation,
        "state": {"ready": "READY", "configUpdate": update},
        "config": {
            "servedEntities": [entity("gpt")],
            "configVersion": generation,
            "startTime": "2026-12-01T10:00:00Z",
        },
        "servedEntities": [
            {"name": "gpt", "state": {"deployment": "DEPLOYMENT_READY"}},
        ],
        **extra,
    }


STATES = [
    # (generation, status, ready, config_update)
    (1, None, "NOT_READY", "IN_PROGRESS"),  # the operator has not seen it yet
    (2, live_status(2), "READY", "NOT_UPDATING"),
    (3, live_status(2), "READY", "IN_PROGRESS"),  # a new spec, not observed yet
    (2, live_status(2, "UPDATE_FAILED"), "READY", "UPDATE_FAILED"),
    (2, live_status(2, "IN_PROGRESS"), "READY", "IN_PROGRESS"),
]


@pytest.mark.parametrize(("generation", "status", "ready", "update"), STATES)
def test_state_waits_for_the_operator_to_observe_the_spec(
    generation: int, status: dict[str, Any] | None, ready: str, update: str
) -> None:
    assert views.state_of(stored(generation, status)) == (ready, update)


def test_a_new_endpoint_shows_its_spec_as_the_pending_config() -> None:
    view = views.detailed(stored(1))
    assert "config" not in view
    assert view["pending_config"]["config_version"] == 1
    assert view["pending_config"]["served_entities"][0]["state"] == {
        "deployment": "DEPLOYMENT_CREATING",
        "deployment_state_message": "",
    }
    assert view["id"] == "u-1"
    assert view["creator"] == "system:serviceaccount:team-a:alice"
    assert view["creation_timestamp"] == CREATED_MS
    assert view["last_updated_timestamp"] == CREATED_MS, "status writes are not updates"
    assert view["task"] == "llm/v1/chat"


def test_a_live_endpoint_shows_its_config_and_each_entitys_state() -> None:
    view = views.detailed(stored(2, live_status(2)))
    assert "pending_config" not in view
    served = view["config"]["served_entities"][0]
    assert served["name"] == "gpt"
    assert served["external_model"]["openai_config"]["openai_api_key"] == (
        "{{secrets/keys/openai}}"
    )
    assert served["state"]["deployment"] == "DEPLOYMENT_READY"
    assert view["config"]["config_version"] == 2
    assert view["state"] == {"ready": "READY", "config_update": "NOT_UPDATING"}


def test_while_a_new_config_rolls_out_both_show() -> None:
    pending = {
        "servedEntities": [entity("gpt"), entity("mini", "gpt-4o-mini")],
        "configVersion": 3,
        "startTime": "2026-12-01T11:00:00Z",
    }
    status = live_status(3, "IN_PROGRESS", pendingConfig=pending)
    status["config"]["configVersion"] = 2
    view = views.detailed(stored(3, status))
    assert view["config"]["config_version"] == 2
    pending_view = view["pending_config"]
    assert pending_view["config_version"] == 3
    assert pending_view["start_time"] == views.millis("2026-12-01T11:00:00Z")
    states = {e["name"]: e["state"]["deployment"] for e in pending_view["served_entities"]}
    assert states == {"gpt": "DEPLOYMENT_READY", "mini": "DEPLOYMENT_CREATING"}


def test_the_list_entry_is_brief() -> None:
    entry = views.summary(stored(2, live_status(2), tags=[{"key": "team", "value": "a"}]))
    assert entry["config"] == {
        "served_entities": [
            {
                "name": "gpt",
                "external_model": {
                    "name": "gpt-4o",
                    "provider": "openai",
                    "task": "llm/v1/chat",
                    "openai_config": {"openai_api_key": "{{secrets/keys/openai}}"},
                },
            }
        ]
    }
    assert entry["tags"] == [{"key": "team", "value": "a"}]
    assert entry["state"]["ready"] == "READY"


def test_views_of_an_imported_endpoint_carry_its_kept_fields() -> None:
    body = {
        "name": "chat",
        "config": {"served_entities": [{"name": "gpt", "external_model": {
            "name": "gpt-4o", "provider": "openai", "task": "llm/v1/chat",
            "openai_config": {"openai_api_key": "{{secrets/k/openai}}"}}}]},
        "route_optimized": False,
    }  # fmt: skip
    endpoint = endpoint_from_reference(body)
    assert views.summary(endpoint)["route_optimized"] is False
