"""Endpoints for the operator's unit tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from modelport.api import ServingEndpoint

SAMPLES = Path(__file__).resolve().parents[3] / "manifests" / "samples"


def parse(body: dict[str, Any], namespace: str = "team-a", generation: int = 1) -> ServingEndpoint:
    body = {
        **body,
        "metadata": {
            **body["metadata"],
            "namespace": namespace,
            "uid": "uid-1",
            "generation": generation,
        },
    }
    return ServingEndpoint.parse(body)


def sample(name: str, **kw: Any) -> ServingEndpoint:
    return parse(yaml.safe_load((SAMPLES / f"{name}.yaml").read_text()), **kw)


def external(name: str = "gpt-4o", ref: str = "llm-keys", key: str = "openai") -> dict[str, Any]:
    return {
        "name": name,
        "externalModel": {
            "name": "gpt-4o",
            "provider": "openai",
            "task": "llm/v1/chat",
            "openaiConfig": {"openaiApiKey": {"secretKeyRef": {"name": ref, "key": key}}},
        },
    }


def self_hosted(name: str = "llama", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "entityName": "hf://meta-llama/Llama-3.1-8B-Instruct",
        "task": "llm/v1/chat",
        **extra,
    }


def endpoint(
    *entities: dict[str, Any],
    name: str = "chat",
    weights: list[int] | None = None,
    generation: int = 1,
) -> ServingEndpoint:
    spec: dict[str, Any] = {"servedEntities": list(entities)}
    if weights is not None:
        spec["trafficConfig"] = {
            "routes": [
                {"servedEntityName": e["name"], "trafficPercentage": w}
                for e, w in zip(entities, weights, strict=True)
            ]
        }
    return parse(
        {
            "apiVersion": "serving.modelport.io/v1alpha1",
            "kind": "ServingEndpoint",
            "metadata": {"name": name},
            "spec": spec,
        },
        generation=generation,
    )
