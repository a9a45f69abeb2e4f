"""The reference service's endpoint JSON <-> ServingEndpoint: table-driven, both ways."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import pytest

from modelport.api.providers import Provider
from modelport.api.v1alpha1 import ServingEndpoint, ServingEndpointSpec
from modelport.restapi import mapping
from modelport.restapi.mapping import (
    READ_ONLY_FIELDS,
    REFERENCE_FIELDS_ANNOTATION,
    MappingError,
    endpoint_from_reference,
    endpoint_to_reference,
)
from tests.conftest import ROOT

SAMPLES = sorted((ROOT / "manifests" / "reference").glob("*.json"))
PASTED_KEY = "sk-proj-0123456789abcdefNOTREAL"


def openai_entity(**config: Any) -> dict[str, Any]:
    return {
        "name": "gpt",
        "external_model": {
            "name": "gpt-4o",
            "provider": "openai",
            "task": "llm/v1/chat",
            "openai_config": config or {"openai_api_key": "{{secrets/llm-keys/openai}}"},
        },
    }


def create(*entities: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "chat", "config": {"served_entities": list(entities)}, **extra}


def errors_of(body: Any) -> list[str]:
    with pytest.raises(MappingError) as caught:
        endpoint_from_reference(body)
    return caught.value.errors


def create_part(exported: dict[str, Any]) -> dict[str, Any]:
    """What an export of an imported GET answer gives back: the create request."""
    body = {k: v for k, v in exported.items() if k not in READ_ONLY_FIELDS}
    config = dict(body["config"])
    config.pop("config_version", None)
    config["served_entities"] = [
        {k: v for k, v in e.items() if k not in ("state", "creator", "creation_timestamp")}
        for e in config["served_entities"]
    ]
    body["config"] = config
    return body


# --- samples: one per provider and self-hosted ---------------------------------------


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_exported_samples_import_and_round_trip(path: Path) -> None:
    exported = json.loads(path.read_text())
    endpoint = endpoint_from_reference(exported, namespace="team-a")
    assert endpoint.metadata.namespace == "team-a"
    body = endpoint_to_reference(endpoint)
    again = endpoint_from_reference(body, namespace="team-a")
    assert again == endpoint
    expected = create_part(exported)
    if path.stem == "mixed-fallback":  # scope Team_Keys: the Secret team-keys
        key = expected["config"]["served_entities"][1]["external_model"]["openai_config"]
        assert key["openai_api_key"] == "{{secrets/Team_Keys/openai}}"
        key["openai_api_key"] = "{{secrets/team-keys/openai}}"
    assert body == expected


def test_samples_cover_every_provider_and_a_self_hosted_model() -> None:
    providers = set()
    self_hosted = False
    for path in SAMPLES:
        for entity in json.loads(path.read_text())["config"]["served_entities"]:
            if "external_model" in entity:
                providers.add(entity["external_model"]["provider"])
            else:
                self_hosted = True
    assert providers == set(get_args(Provider))
    assert self_hosted


# --- secrets -------------------------------------------------------------------------------

SECRET_CASES = [
    # (reference value, Secret name, key)
    ("{{secrets/llm-keys/openai}}", "llm-keys", "openai"),
    ("{{secrets/My_Scope/OPENAI_KEY}}", "my-scope", "OPENAI_KEY"),
    ("{{ secrets/team.keys/openai.v2 }}", "team.keys", "openai.v2"),
]


@pytest.mark.parametrize(("value", "name", "key"), SECRET_CASES)
def test_secret_references_name_a_secret_and_key(value: str, name: str, key: str) -> None:
    endpoint = endpoint_from_reference(create(openai_entity(openai_api_key=value)))
    config = endpoint.spec.served_entities[0].external_model.openai_config  # type: ignore[union-attr]
    assert config is not None and config.openai_api_key is not None
    ref = config.openai_api_key.secret_key_ref
    assert (ref.name, ref.key) == (name, key)
    exported = endpoint_to_reference(endpoint)["config"]["served_entities"][0]
    assert exported["external_model"]["openai_config"]["openai_api_key"] == (
        f"{{{{secrets/{name}/{key}}}}}"
    )


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"openai_api_key_plaintext": PASTED_KEY}, "openai_config.openai_api_key_plaintext"),
        ({"openai_api_key": PASTED_KEY}, "openai_config.openai_api_key"),
        (
            {"openai_api_key": "{{secrets/llm-keys/openai}}", "openai_organization": "org"}
            | {"microsoft_entra_client_secret_plaintext": PASTED_KEY},
            "openai_config.microsoft_entra_client_secret_plaintext",
        ),
    ],
)
def test_plaintext_keys_are_refused_with_the_fix_and_never_echoed(
    config: dict[str, Any], field: str
) -> None:
    errors = errors_of(create(openai_entity(**config)))
    mine = [e for e in errors if field + ":" in e]
    assert mine, errors
    assert "kubectl -n <namespace> create secret generic" in mine[0]
    assert "{{secrets/<scope>/<key>}}" in mine[0]
    assert PASTED_KEY not in " ".join(errors)


def test_plaintext_in_every_provider_and_env_vars_is_refused() -> None:
    bodies = [
        {"anthropic_config": {"anthropic_api_key_plaintext": PASTED_KEY}},
        {"cohere_config": {"cohere_api_key": PASTED_KEY}},
        {"ai21labs_config": {"ai21labs_api_key_plaintext": PASTED_KEY}},
    ]
    for provider, block in zip(("anthropic", "cohere", "ai21labs"), bodies, strict=True):
        entity = {
            "name": "e",
            "external_model": {"name": "m", "provider": provider, "task": "llm/v1/chat", **block},
        }
        errors = errors_of(create(entity))
        assert any("secrets/<scope>/<key>" in e for e in errors), errors
        assert PASTED_KEY not in " ".join(errors)
    env = {"name": "m", "entity_name": "hf://org/model", "environment_vars": {"K": "{{oops}}"}}
    errors = errors_of(create(env))
    assert any("environment_vars.K" in e for e in errors), errors


# --- served entities -----------------------------------------------------------------

DEFAULT_NAMES = [
    ({"external_model": {"name": "claude-3.5:sonnet"}}, "claude-3-5-sonnet"),
    ({"entity_name": "system.ai.meta_llama_v3_1_8b_instruct", "entity_version": "2"},
     "meta_llama_v3_1_8b_instruct-2"),
    ({"entity_name": "hf://meta-llama/Llama-3.1-8B"}, "Llama-3-1-8B"),
    ({"entity_name": "main.models.chat", "entity_version": 3}, "chat-3"),
]  # fmt: skip


@pytest.mark.parametrize(("entity", "name"), DEFAULT_NAMES)
def test_an_unnamed_entity_gets_the_services_default_name(
    entity: dict[str, Any], name: str
) -> None:
    assert mapping.default_entity_name(entity) == name


def test_environment_vars_map_to_values_and_secret_refs() -> None:
    entity = {
        "entity_name": "hf://org/model",
        "environment_vars": {"LEVEL": "INFO", "HF_TOKEN": "{{secrets/hf/token}}"},
    }
    endpoint = endpoint_from_reference(create(entity))
    env = endpoint.spec.served_entities[0].environment_vars or []
    assert [(v.name, v.value) for v in env if v.value] == [("LEVEL", "INFO")]
    secret = next(v for v in env if v.secret_key_ref)
    assert secret.secret_key_ref is not None
    assert (secret.name, secret.secret_key_ref.name, secret.secret_key_ref.key) == (
        "HF_TOKEN",
        "hf",
        "token",
    )
    back = endpoint_to_reference(endpoint)["config"]["served_entities"][0]
    assert back["environment_vars"] == entity["environment_vars"]
    assert back["name"] == "model"


def test_legacy_served_models_and_routes_become_entities() -> None:
    body = {
        "name": "legacy",
        "config": {
            "served_models": [
                {"name": "a", "model_name": "main.m.chat", "model_version": "1",
                 "workload_size": "Small", "scale_to_zero_enabled": True},
                {"name": "b", "model_name": "main.m.chat", "model_version": "2",
                 "workload_size": "Small", "scale_to_zero_enabled": True},
            ],
            "traffic_config": {"routes": [
                {"served_model_name": "a", "traffic_percentage": 90},
                {"served_model_name": "b", "traffic_percentage": 10},
            ]},
        },
    }  # fmt: skip
    spec = endpoint_from_reference(body).spec
    assert [(e.name, e.entity_name, e.entity_version) for e in spec.served_entities] == [
        ("a", "main.m.chat", "1"),
        ("b", "main.m.chat", "2"),
    ]
    assert [(r.served_entity_name, r.traffic_percentage) for r in spec.routes()] == [
        ("a", 90),
        ("b", 10),
    ]


def test_legacy_rate_limits_and_auto_capture_become_the_ai_gateway() -> None:
    body = create(
        openai_entity(),
        rate_limits=[{"calls": 10, "key": "user", "renewal_period": "minute"}],
    )
    body["config"]["auto_capture_config"] = {
        "catalog_name": "main", "schema_name": "logs", "table_name_prefix": "chat", "enabled": True,
        "state": {"payload_table": {"name": "chat_payload"}},
    }  # fmt: skip
    gateway = endpoint_from_reference(body).spec.ai_gateway
    assert gateway is not None and gateway.rate_limits is not None
    assert [(r.calls, r.key) for r in gateway.rate_limits] == [(10, "user")]
    assert gateway.inference_table_config is not None
    assert gateway.inference_table_config.table_name_prefix == "chat"
    both = create(openai_entity(), rate_limits=[], ai_gateway={"rate_limits": []})
    assert any("not both" in e for e in errors_of(both))


REFUSED = [
    ({"instance_profile_arn": "arn:aws:iam::1:instance-profile/x"}, "instance_profile_arn"),
    ({"provisioned_model_units": 50}, "provisioned_model_units"),
]


@pytest.mark.parametrize(("extra", "field"), REFUSED)
def test_what_kubernetes_cannot_do_is_refused_by_name(extra: dict[str, Any], field: str) -> None:
    entity = {"name": "m", "entity_name": "hf://org/model", **extra}
    errors = errors_of(create(entity))
    assert any(e.startswith(f"config.served_entities[0].{field}:") for e in errors), errors


def test_read_only_fields_of_an_export_are_ignored_and_unknown_ones_refused() -> None:
    entity = openai_entity() | {"state": {"deployment": "DEPLOYMENT_READY"}, "creator": "x"}
    endpoint = endpoint_from_reference(create(entity, id="1", state={}, permission_level="X"))
    assert endpoint.spec.served_entities[0].name == "gpt"
    errors = errors_of(create(openai_entity(), colour="blue"))
    assert errors == ["colour: unknown field; remove it"]
    errors = errors_of(create(openai_entity() | {"colour": "blue"}))
    assert any("served_entities[0].colour" in e for e in errors), errors


def test_kept_fields_ride_along_in_an_annotation() -> None:
    body = create(openai_entity(), route_optimized=True, budget_policy_id="b-1")
    endpoint = endpoint_from_reference(body)
    kept = json.loads(endpoint.metadata.annotations[REFERENCE_FIELDS_ANNOTATION])
    assert kept == {"route_optimized": True, "budget_policy_id": "b-1"}
    assert endpoint_to_reference(endpoint) == body


# --- names and messages -------------------------------------------------------------------

NAMES = [("chat", "chat"), ("My_Chat", "my-chat"), ("a" * 63, "a" * 63)]
BAD_NAMES: list[Any] = [None, "", "-chat", "chat.v1", "a" * 64, 7]


@pytest.mark.parametrize(("given", "name"), NAMES)
def test_endpoint_names_are_normalised(given: str, name: str) -> None:
    assert endpoint_from_reference(create(openai_entity()) | {"name": given}).metadata.name == name


@pytest.mark.parametrize("given", BAD_NAMES)
def test_invalid_endpoint_names_say_what_a_name_may_hold(given: Any) -> None:
    errors = errors_of(create(openai_entity()) | {"name": given})
    assert errors[0].startswith("name:"), errors


def test_model_errors_are_in_the_services_words() -> None:
    twice = {"name": "chat", "config": {"served_entities": [openai_entity(), openai_entity()]}}
    routes = {"routes": [{"served_entity_name": "gpt", "traffic_percentage": 50}]}
    short = create(openai_entity()) | {
        "config": {"served_entities": [openai_entity()], "traffic_config": routes}
    }
    text = " ".join(errors_of(twice) + errors_of(short))
    assert "config.served_entities[].name must be unique" in text
    assert "config.traffic_config: traffic_config.routes[].traffic_percentage must add up" in text
    assert "servedEntities" not in text and "trafficPercentage" not in text


# --- the update bodies -----------------------------------------------------------------


def spec() -> ServingEndpointSpec:
    body = create(
        openai_entity(),
        tags=[{"key": "team", "value": "a"}, {"key": "tier", "value": "1"}],
        ai_gateway={
            "rate_limits": [{"calls": 5, "key": "endpoint", "renewal_period": "minute"}],
            "auth": {"allow": {"service_accounts": ["team-a/*"]}},
        },
    )
    return endpoint_from_reference(body).spec


def test_put_config_replaces_the_whole_config() -> None:
    new = mapping.spec_with_config(
        spec(),
        {
            "served_entities": [openai_entity(), {**openai_entity(), "name": "gpt-2"}],
            "traffic_config": {
                "routes": [
                    {"served_entity_name": "gpt", "traffic_percentage": 70},
                    {"served_entity_name": "gpt-2", "traffic_percentage": 30},
                ]
            },
        },
    )
    assert [e.name for e in new.served_entities] == ["gpt", "gpt-2"]
    assert new.tags == spec().tags and new.ai_gateway == spec().ai_gateway
    with pytest.raises(MappingError) as caught:
        mapping.spec_with_config(spec(), {"served_entities": [], "auto_capture_config": {}})
    assert any("ai-gateway" in e for e in caught.value.errors)


def test_put_ai_gateway_keeps_auth_unless_it_sets_it() -> None:
    new = mapping.spec_with_ai_gateway(spec(), {"usage_tracking_config": {"enabled": True}})
    assert new.ai_gateway is not None
    assert new.ai_gateway.rate_limits is None, "the body replaces the service's fields"
    assert new.ai_gateway.auth == spec().ai_gateway.auth  # type: ignore[union-attr]


def test_put_rate_limits_and_patch_tags() -> None:
    limited = mapping.spec_with_rate_limits(
        spec(), {"rate_limits": [{"calls": 7, "key": "user", "renewal_period": "minute"}]}
    )
    assert [(r.calls, r.key) for r in limited.ai_gateway.rate_limits or []] == [(7, "user")]  # type: ignore[union-attr]
    cleared = mapping.spec_with_rate_limits(spec(), {"rate_limits": []})
    assert cleared.ai_gateway is not None and cleared.ai_gateway.rate_limits is None
    change = {"add_tags": [{"key": "tier", "value": "2"}, {"key": "new"}], "delete_tags": ["team"]}
    tagged = mapping.spec_with_tags(spec(), change)
    assert [(t.key, t.value) for t in tagged.tags or []] == [("tier", "2"), ("new", None)]


def test_export_writes_what_the_apiserver_stored() -> None:
    """An object read back from the apiserver carries the CRD's defaults: the export keeps
    them (they are what the endpoint does) and import takes them back unchanged."""
    stored = endpoint_from_reference(create(openai_entity())).to_body()
    stored["spec"]["servedEntities"][0]["externalModel"]["openaiConfig"]["openaiApiType"] = "openai"
    endpoint = ServingEndpoint.parse(stored)
    body = endpoint_to_reference(endpoint)
    assert body["config"]["served_entities"][0]["external_model"]["openai_config"] == {
        "openai_api_key": "{{secrets/llm-keys/openai}}",
        "openai_api_type": "openai",
    }
    assert endpoint_from_reference(body).spec == endpoint.spec
