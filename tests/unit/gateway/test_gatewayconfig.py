"""The config file contract between the operator and the gateway."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from modelport import gatewayconfig as gc

OPENAI = {
    "name": "gpt",
    "task": "llm/v1/chat",
    "provider": "openai",
    "modelName": "gpt-4o",
    "credentials": {"apiKey": "llm-keys/openai"},
}
VLLM = {
    "name": "llama",
    "task": "llm/v1/chat",
    "provider": "self-hosted",
    "modelName": "llama",
    "baseUrl": "http://ep-llama.ns.svc.cluster.local:8000/v1/",
}


def doc(*entities: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"version": 1, "endpointName": "chat", "entities": list(entities), **extra}


def test_defaults_and_round_trip() -> None:
    config = gc.loads(
        json.dumps(
            doc(
                OPENAI,
                VLLM,
                routes=[
                    {"servedEntityName": "gpt", "trafficPercentage": 80},
                    {"servedEntityName": "llama", "trafficPercentage": 20},
                ],
            )
        )
    )
    assert config.request_timeout_seconds == 297
    assert config.task is gc.Task.CHAT
    assert config.entities[1].base_url == "http://ep-llama.ns.svc.cluster.local:8000/v1"
    assert config.weights() == [("gpt", 80), ("llama", 20)]
    text = gc.dumps(config)
    assert gc.dumps(gc.loads(text)) == text, "dumps must be stable for no-op reconciles"
    assert '"apiKey": "llm-keys/openai"' in text


def test_single_entity_needs_no_routes() -> None:
    assert gc.loads(json.dumps(doc(OPENAI))).weights() == [("gpt", 100)]


def test_secret_file_path_layout() -> None:
    assert gc.secret_file_path("llm-keys", "openai") == "llm-keys/openai"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (doc(OPENAI, typo=1), "typo"),
        (doc({**OPENAI, "credentials": {}}), "credentials.apiKey is required"),
        (doc({**OPENAI, "credentials": {"apiKey": "/etc/passwd"}}), "must be relative"),
        (doc({**OPENAI, "credentials": {"apiKey": "../x/y"}}), "must be relative"),
        (doc({**OPENAI, "openai": {"apiType": "azure"}}), "needs baseUrl, openai.apiVersion"),
        (
            doc(
                {
                    **OPENAI,
                    "baseUrl": "https://x",
                    "openai": {"apiType": "azuread", "apiVersion": "v", "deploymentName": "d"},
                }
            ),
            "apiType azuread needs",
        ),
        (doc({**VLLM, "baseUrl": None}), "baseUrl (the in-cluster Service URL"),
        (doc({**VLLM, "baseUrl": "ftp://x"}), "must start with http"),
        (
            doc(
                {
                    "name": "b",
                    "task": "llm/v1/chat",
                    "provider": "amazon-bedrock",
                    "modelName": "m",
                    "credentials": {"awsAccessKeyId": "a/b", "awsSecretAccessKey": "a/c"},
                }
            ),
            "bedrock.region is required",
        ),
        (
            doc(
                {
                    "name": "v",
                    "task": "llm/v1/chat",
                    "provider": "google-cloud-vertex-ai",
                    "modelName": "m",
                    "vertex": {"projectId": "p", "region": "r"},
                }
            ),
            "credentials.privateKey",
        ),
        (doc(OPENAI, VLLM), "routes are required"),
        (doc(OPENAI, {**VLLM, "name": "gpt"}), "unique"),
        (doc(OPENAI, {**VLLM, "task": "llm/v1/embeddings"}), "share one task"),
        (
            doc(
                OPENAI,
                VLLM,
                routes=[
                    {"servedEntityName": "gpt", "trafficPercentage": 50},
                    {"servedEntityName": "llama", "trafficPercentage": 40},
                ],
            ),
            "sum to 100",
        ),
        (
            doc(OPENAI, routes=[{"servedEntityName": "nope", "trafficPercentage": 100}]),
            "'nope' is not an entity",
        ),
        (doc({**OPENAI, "name": "bad name!"}), "entities.0.name"),
        (doc(OPENAI, requestTimeoutSeconds=0), "requestTimeoutSeconds"),
        ({"endpointName": "x", "entities": [], "version": 1}, "entities"),
    ],
)
def test_invalid_files_name_the_problem(document: dict[str, Any], message: str) -> None:
    with pytest.raises(gc.ConfigError) as caught:
        gc.loads(json.dumps(document))
    assert message in str(caught.value)


def test_load_names_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(gc.ConfigError, match=r"mount the endpoint's ConfigMap"):
        gc.load(tmp_path)
    (tmp_path / gc.CONFIG_FILE_NAME).write_text("{}")
    with pytest.raises(gc.ConfigError, match=r"gateway\.json: endpointName"):
        gc.load(tmp_path)


def test_config_module_does_not_import_the_api() -> None:
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(gc))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m and m.startswith("modelport") for m in imported)


def test_guardrails_and_readiness_sections() -> None:
    guard = {"url": "http://guard.ns.svc.cluster.local/v1/", "model": "lg"}
    config = gc.GatewayConfig.model_validate(
        doc(
            OPENAI,
            aiGateway={"guardrails": {"input": {"safety": True, "pii": "MASK"}, "guard": guard}},
            readiness={"namespace": "team-a", "services": {"gpt": "chat-gpt"}},
        )
    )
    g = config.ai_gateway.guardrails
    assert g.input.active and not g.output.active
    assert g.guard is not None and g.guard.url == "http://guard.ns.svc.cluster.local/v1"
    assert gc.loads(gc.dumps(config)) == config
    with pytest.raises(gc.ConfigError, match="no guard model is configured"):
        gc.loads(json.dumps(doc(OPENAI, aiGateway={"guardrails": {"output": {"safety": True}}})))
    with pytest.raises(gc.ConfigError, match="unknown entities"):
        gc.loads(json.dumps(doc(OPENAI, readiness={"namespace": "a", "services": {"x": "y"}})))
    with pytest.raises(gc.ConfigError, match="tokenPath"):
        gc.loads(
            json.dumps(
                doc(
                    OPENAI,
                    aiGateway={"guardrails": {"guard": {**guard, "tokenPath": "../etc/passwd"}}},
                )
            )
        )
