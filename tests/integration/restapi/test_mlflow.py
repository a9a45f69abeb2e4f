"""MLflow's deployments client (``get_deploy_client("databricks")``, configured by
``DATABRICKS_HOST``/``DATABRICKS_TOKEN``) against the REST API: everything it can do with
serving endpoints, including a streamed prediction through the invocations proxy."""

from __future__ import annotations

from typing import Any

import pytest
from mlflow.deployments import get_deploy_client

from tests.conftest import Cluster
from tests.integration.gateway.fakes import RunningGateway
from tests.integration.operator.support import Operator, endpoint
from tests.integration.restapi.conftest import QUERIED, Workspace
from tests.integration.restapi.support import RunningApi
from tests.support import eventually

pytestmark = pytest.mark.cluster


def served(name: str, model: str = "gpt-4o") -> dict[str, Any]:
    return {
        "name": name,
        "external_model": {
            "name": model,
            "provider": "openai",
            "task": "llm/v1/chat",
            "openai_config": {"openai_api_key": "{{secrets/llm-keys/openai}}"},
        },
    }


def test_mlflow_deployments_client_manages_and_queries_an_endpoint(
    crd: Cluster,
    workspace: Workspace,
    operator: Operator,
    api: RunningApi,
    gateway: RunningGateway,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABRICKS_HOST", f"{api.url}/workspaces/{workspace.namespace}")
    monkeypatch.setenv("DATABRICKS_TOKEN", workspace.tokens["editor"])
    client = get_deploy_client("databricks")
    eventually(lambda: endpoint(crd, workspace.namespace, QUERIED) is None, timeout=60)

    created = client.create_endpoint(
        config={
            "name": QUERIED,
            "config": {"served_entities": [served("gpt")], "route_optimized": False},
            "tags": [{"key": "team", "value": "a"}],
        }
    )
    assert created["name"] == QUERIED
    assert created["state"]["config_update"] == "IN_PROGRESS"

    def ready() -> bool:
        state = client.get_endpoint(QUERIED)["state"]
        return state == {"ready": "READY", "config_update": "NOT_UPDATING"}

    eventually(ready, timeout=120, interval=1)
    assert [e["name"] for e in client.list_endpoints()] == [QUERIED]

    client.update_endpoint_config(
        QUERIED, config={"served_entities": [served("gpt", "gpt-4o-mini")]}
    )
    eventually(ready, timeout=120, interval=1)
    got = client.get_endpoint(QUERIED)
    assert got["config"]["served_entities"][0]["external_model"]["name"] == "gpt-4o-mini"
    assert got["config"]["config_version"] == 2

    limits = {"rate_limits": [{"calls": 20, "key": "endpoint", "renewal_period": "minute"}]}
    assert client.update_endpoint_rate_limits(QUERIED, config=limits) == limits
    gateway_config = {"guardrails": {"input": {"invalid_keywords": ["password"]}}}
    assert client.update_endpoint_ai_gateway(QUERIED, config=gateway_config) == gateway_config
    tier = {"add_tags": [{"key": "tier", "value": "1"}]}
    tags = client.update_endpoint_tags(QUERIED, config=tier)
    assert tags["tags"] == [{"key": "team", "value": "a"}, {"key": "tier", "value": "1"}]

    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    answer = client.predict(endpoint=QUERIED, inputs=chat)
    assert answer["choices"][0]["message"]["content"] == "Hello from upstream"
    chunks = list(client.predict_stream(endpoint=QUERIED, inputs=chat))
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text, chunks

    client.delete_endpoint(QUERIED)
    assert client.list_endpoints() == []
