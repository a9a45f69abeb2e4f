"""The real clients of the reference service against the REST API on the test cluster:
databricks-sdk's ``WorkspaceClient`` and MLflow's deployments client create, list, read,
update, wait for, query and delete endpoints; the real operator makes them READY (kwok
nodes), and invocations reach a real gateway that verifies the caller's token again."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import NotFound, PermissionDenied, ResourceConflict
from databricks.sdk.service.serving import (
    AiGatewayRateLimit,
    AiGatewayRateLimitKey,
    AiGatewayRateLimitRenewalPeriod,
    AiGatewayUsageTrackingConfig,
    ChatMessage,
    ChatMessageRole,
    EndpointCoreConfigInput,
    EndpointStateConfigUpdate,
    EndpointStateReady,
    EndpointTag,
    ExternalModel,
    ExternalModelProvider,
    OpenAiConfig,
    RateLimit,
    RateLimitKey,
    RateLimitRenewalPeriod,
    Route,
    ServedEntityInput,
    ServingModelWorkloadType,
    TrafficConfig,
)

from tests.conftest import Cluster
from tests.integration.gateway.fakes import FakeProvider, RunningGateway
from tests.integration.gateway.kubeauth import mint
from tests.integration.operator.support import Operator, endpoint
from tests.integration.restapi.conftest import QUERIED, Workspace
from tests.integration.restapi.support import RunningApi

pytestmark = pytest.mark.cluster
WAIT = timedelta(minutes=3)


def client(api: RunningApi, workspace: Workspace, who: str = "editor") -> WorkspaceClient:
    return WorkspaceClient(
        host=f"{api.url}/workspaces/{workspace.namespace}", token=workspace.tokens[who]
    )


def openai_entity(name: str, model: str = "gpt-4o") -> ServedEntityInput:
    return ServedEntityInput(
        name=name,
        external_model=ExternalModel(
            provider=ExternalModelProvider.OPENAI,
            name=model,
            task="llm/v1/chat",
            openai_config=OpenAiConfig(openai_api_key="{{secrets/llm_keys/openai}}"),
        ),
    )


def test_the_databricks_sdk_manages_and_queries_endpoints(
    crd: Cluster,
    workspace: Workspace,
    operator: Operator,
    api: RunningApi,
    gateway: RunningGateway,
    upstream: FakeProvider,
) -> None:
    w = client(api, workspace)
    assert w.config.workspace_id == workspace.namespace, "from /.well-known/databricks-config"

    # An external model, waited for with the SDK's own waiter.
    chat = w.serving_endpoints.create_and_wait(
        name=QUERIED,
        config=EndpointCoreConfigInput(name=QUERIED, served_entities=[openai_entity("gpt")]),
        tags=[EndpointTag(key="team", value="a")],
        timeout=WAIT,
    )
    assert chat.state is not None
    assert chat.state.ready == EndpointStateReady.READY
    assert chat.state.config_update == EndpointStateConfigUpdate.NOT_UPDATING
    assert chat.creator == f"system:serviceaccount:{workspace.namespace}:editor"
    stored = endpoint(crd, workspace.namespace, QUERIED)
    assert stored is not None
    key = stored["spec"]["servedEntities"][0]["externalModel"]["openaiConfig"]["openaiApiKey"]
    assert key == {"secretKeyRef": {"name": "llm-keys", "key": "openai"}}

    # A self-hosted catalog model on the GPU nodes.
    waiter = w.serving_endpoints.create(
        name="llama",
        config=EndpointCoreConfigInput(
            name="llama",
            served_entities=[
                ServedEntityInput(
                    entity_name="system.ai.meta_llama_v3_1_8b_instruct",
                    entity_version="1",
                    workload_type=ServingModelWorkloadType.GPU_MEDIUM,
                    workload_size="Small",
                    scale_to_zero_enabled=False,
                )
            ],
        ),
    )
    # While it rolls out, its config may not change: as the service, 409.
    with pytest.raises(ResourceConflict) as busy:
        w.serving_endpoints.update_config(name="llama", served_entities=[openai_entity("gpt")])
    assert "currently updating" in str(busy.value)
    llama = waiter.result(timeout=WAIT)
    assert llama.config is not None and llama.config.served_entities
    served = llama.config.served_entities[0]
    assert served.name == "meta_llama_v3_1_8b_instruct-1", "the service's default name"
    assert served.state is not None and served.state.deployment is not None
    assert served.state.deployment.value == "DEPLOYMENT_READY"

    assert sorted(e.name or "" for e in w.serving_endpoints.list()) == ["chat", "llama"]
    got = w.serving_endpoints.get(QUERIED)
    assert got.tags == [EndpointTag(key="team", value="a")]
    assert got.task == "llm/v1/chat"

    # A new config: two entities and a split, rolled out and waited for.
    updated = w.serving_endpoints.update_config_and_wait(
        name=QUERIED,
        served_entities=[openai_entity("gpt"), openai_entity("mini", "gpt-4o-mini")],
        traffic_config=TrafficConfig(
            routes=[
                Route(served_entity_name="gpt", traffic_percentage=100),
                Route(served_entity_name="mini", traffic_percentage=0),
            ]
        ),
        timeout=WAIT,
    )
    assert updated.config is not None and updated.config.served_entities is not None
    assert [e.name for e in updated.config.served_entities] == ["gpt", "mini"]
    assert updated.config.config_version == 2

    # Rate limits (the legacy API and the AI gateway's), tags, the OpenAPI document.
    minute = RateLimitRenewalPeriod.MINUTE
    limits = w.serving_endpoints.put(
        QUERIED, rate_limits=[RateLimit(calls=100, key=RateLimitKey.USER, renewal_period=minute)]
    )
    assert limits.rate_limits is not None and limits.rate_limits[0].calls == 100
    gateway_config = w.serving_endpoints.put_ai_gateway(
        QUERIED,
        usage_tracking_config=AiGatewayUsageTrackingConfig(enabled=True),
        rate_limits=[
            AiGatewayRateLimit(
                calls=50,
                key=AiGatewayRateLimitKey.USER_GROUP,
                renewal_period=AiGatewayRateLimitRenewalPeriod.MINUTE,
            )
        ],
    )
    assert gateway_config.usage_tracking_config is not None
    assert gateway_config.usage_tracking_config.enabled is True
    tags = w.serving_endpoints.patch(
        QUERIED, add_tags=[EndpointTag(key="tier", value="gold")], delete_tags=["team"]
    )
    assert tags.tags == [EndpointTag(key="tier", value="gold")]
    stored = endpoint(crd, workspace.namespace, QUERIED)
    assert stored is not None
    assert stored["spec"]["aiGateway"]["rateLimits"] == [
        {"calls": 50, "key": "user_group", "renewalPeriod": "minute"}
    ]
    document = w.serving_endpoints.get_open_api(QUERIED).contents
    assert document is not None and b"/serving-endpoints/chat/invocations" in document.read()

    # A query, proxied to the gateway with the caller's own token.
    answer = w.serving_endpoints.query(
        QUERIED, messages=[ChatMessage(role=ChatMessageRole.USER, content="hi")], max_tokens=5
    )
    assert answer.choices is not None
    assert answer.choices[0].message is not None
    assert answer.choices[0].message.content == "Hello from upstream"
    assert upstream.last().headers["authorization"] == "Bearer test-key-not-real-api"
    metrics = httpx.get(gateway.url + "/metrics", timeout=5).text
    assert f"system:serviceaccount:{workspace.namespace}:editor" in metrics

    w.serving_endpoints.delete(QUERIED)
    w.serving_endpoints.delete("llama")
    with pytest.raises(NotFound):
        w.serving_endpoints.get(QUERIED)


def test_rbac_decides_and_credentials_are_required(
    crd: Cluster, workspace: Workspace, api: RunningApi
) -> None:
    viewer = client(api, workspace, "viewer")
    list(viewer.serving_endpoints.list())  # may list
    with pytest.raises(PermissionDenied) as denied:
        viewer.serving_endpoints.create(
            name="nope",
            config=EndpointCoreConfigInput(name="nope", served_entities=[openai_entity("gpt")]),
        )
    assert "may not create servingendpoints" in str(denied.value)
    with pytest.raises(PermissionDenied):
        list(client(api, workspace, "nobody").serving_endpoints.list())

    url = f"{api.url}/workspaces/{workspace.namespace}/api/2.0/serving-endpoints"
    anonymous = httpx.get(url, timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.json()["error_code"] == "UNAUTHENTICATED"
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    # Nor is a token for the apiserver's own audience, nor a damaged one.
    apiserver_audience = mint(crd, workspace.namespace, "editor")
    damaged = workspace.tokens["editor"][:-4] + "AAAA"
    for token in ("not-a-token", apiserver_audience, damaged):
        refused = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert refused.status_code == 401, refused.text
        assert token not in refused.text
