"""The pydantic models: samples parse, invalid endpoints fail naming the field,
helpers answer what the operator will ask."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest
from api_cases import CASES, Case, load_sample, sample_names
from pydantic import BaseModel, ValidationError

from modelport.api import ServingEndpoint, ServingEndpointSpec, format_errors
from modelport.api.providers import PROVIDER_CONFIG_FIELDS
from modelport.api.v1alpha1 import ServingEndpointStatus

PROVIDER_SAMPLES = {
    "openai": "openai",
    "azure-openai": "openai",
    "azure-openai-entra": "openai",
    "anthropic": "anthropic",
    "cohere": "cohere",
    "amazon-bedrock": "amazon-bedrock",
    "google-cloud-vertex-ai": "google-cloud-vertex-ai",
    "ai21labs": "ai21labs",
    "databricks-model-serving": "databricks-model-serving",
    "custom": "custom",
}


@pytest.mark.parametrize("name", sample_names())
def test_every_sample_parses_and_round_trips(name: str) -> None:
    endpoint = ServingEndpoint.parse(load_sample(name))
    again = ServingEndpoint.parse(endpoint.to_body())
    assert again == endpoint


@pytest.mark.parametrize(("sample", "provider"), sorted(PROVIDER_SAMPLES.items()))
def test_one_sample_per_provider(sample: str, provider: str) -> None:
    spec = ServingEndpoint.parse(load_sample(sample)).spec
    model = spec.served_entities[0].external_model
    assert model is not None
    assert model.provider == provider
    assert model.config is model.block(PROVIDER_CONFIG_FIELDS[provider])
    assert set(PROVIDER_SAMPLES.values()) == set(PROVIDER_CONFIG_FIELDS)


def test_parse_accepts_read_only_mapping_views() -> None:
    # Kopf hands handlers a read-only Body view, not a dict.
    body = load_sample("openai")
    body["spec"] = MappingProxyType(body["spec"])
    assert ServingEndpoint.parse(MappingProxyType(body)).metadata.name == "openai-chat"


def test_the_other_samples_exist() -> None:
    names = set(sample_names())
    assert {"self-hosted-gpu", "mixed-traffic-fallback", "embeddings"} <= names
    mixed = ServingEndpoint.parse(load_sample("mixed-traffic-fallback")).spec
    assert {e.is_self_hosted for e in mixed.served_entities} == {True, False}
    assert mixed.ai_gateway and mixed.ai_gateway.fallback_config
    assert mixed.ai_gateway.fallback_config.enabled
    assert ServingEndpoint.parse(load_sample("embeddings")).spec.task == "llm/v1/embeddings"


def test_enough_invalid_cases_with_unique_ids() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_invalid_endpoint_is_rejected_naming_the_field(case: Case) -> None:
    with pytest.raises(ValidationError) as caught:
        ServingEndpoint.parse(case.body())
    text = "\n".join(format_errors(caught.value))
    assert case.field in text, text


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({}, [("llama-8b", 80), ("gpt-4o", 20)]),
        ({"single": True}, [("gpt-4o", 100)]),
    ],
)
def test_routes(edit: dict[str, Any], expected: list[tuple[str, int]]) -> None:
    body = load_sample("openai" if edit else "mixed-traffic-fallback")
    spec = ServingEndpointSpec.model_validate(body["spec"])
    assert [(r.served_entity_name, r.traffic_percentage) for r in spec.routes()] == expected


def test_task_of_self_hosted_entity_without_task_is_compatible() -> None:
    spec = ServingEndpoint.parse(load_sample("mixed-traffic-fallback")).spec
    assert spec.entity("llama-8b").effective_task is None
    assert spec.task == "llm/v1/chat"
    with pytest.raises(KeyError):
        spec.entity("nope")


def test_defaults_match_the_crd_defaults() -> None:
    spec = ServingEndpoint.parse(load_sample("azure-openai")).spec.to_body()
    assert "openaiApiType" in spec["servedEntities"][0]["externalModel"]["openaiConfig"]
    limits = ServingEndpoint.parse(load_sample("mixed-traffic-fallback")).spec.ai_gateway
    assert limits and limits.rate_limits
    assert all(r.renewal_period == "minute" for r in limits.rate_limits)


def test_strict_types_like_the_apiserver() -> None:
    body = load_sample("openai")
    body["spec"]["aiGateway"]["rateLimits"][0]["calls"] = "100"
    with pytest.raises(ValidationError, match="calls"):
        ServingEndpoint.parse(body)


def test_format_errors_names_the_path_and_never_the_value() -> None:
    body = load_sample("anthropic")
    body["spec"]["servedEntities"][0]["externalModel"]["anthropicConfig"]["anthropicApiKey"] = (
        "value-that-looks-secret"
    )
    with pytest.raises(ValidationError) as caught:
        ServingEndpoint.parse(body)
    lines = format_errors(caught.value)
    assert lines[0].startswith(
        "spec.servedEntities[0].externalModel.anthropicConfig.anthropicApiKey: "
    )
    assert "value-that-looks-secret" not in "\n".join(lines)


def test_status_parses_a_written_status() -> None:
    status = ServingEndpointStatus.model_validate(
        {
            "observedGeneration": 3,
            "url": "http://chat.team-a.svc.cluster.local",
            "state": {"ready": "READY", "configUpdate": "NOT_UPDATING"},
            "servedEntities": [
                {"name": "gpt-4o", "state": {"deployment": "DEPLOYMENT_READY"}},
            ],
            "traffic": [{"servedEntityName": "gpt-4o", "trafficPercentage": 100}],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "AllEntitiesReady",
                    "observedGeneration": 3,
                    "lastTransitionTime": "2026-11-22T00:00:00Z",
                }
            ],
        }
    )
    assert status.state and status.state.ready == "READY"
    assert status.to_body()["conditions"][0]["lastTransitionTime"] == "2026-11-22T00:00:00Z"


def _models(root: type[BaseModel]) -> set[type[BaseModel]]:
    seen: set[type[BaseModel]] = set()
    todo = [root]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for field in model.model_fields.values():
            todo.extend(_nested_models(field.annotation))
    return seen


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _nested_models(arg)]


@pytest.mark.parametrize(
    "model",
    sorted(_models(ServingEndpoint), key=lambda m: m.__name__),
    ids=lambda m: m.__name__,
)
def test_every_field_and_model_has_a_description(model: type[BaseModel]) -> None:
    assert (model.__doc__ or "").strip(), f"{model.__name__} has no docstring"
    missing = [name for name, info in model.model_fields.items() if not info.description]
    assert not missing, f"{model.__name__}: fields without description: {missing}"
