"""The REST API as the chart installs it (``api.enabled``), on the real node: the
databricks-sdk on this host, pointed at the API's Service, creates an endpoint, waits
for it with its own waiter, queries it — the API pod forwards the caller's token to the
endpoint's gateway pod, which verifies it with a TokenReview of its own — reads its
metrics from the gateway pods, and deletes it. The server acts with the chart's RBAC for
it and no more."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import NotFound, PermissionDenied
from databricks.sdk.service.serving import (
    BearerTokenAuth,
    ChatMessage,
    ChatMessageRole,
    CustomProviderConfig,
    EndpointCoreConfigInput,
    EndpointStateReady,
    ExternalModel,
    ExternalModelProvider,
    ServedEntityInput,
)

from tests.conftest import Cluster
from tests.e2e.realnode import (
    AUDIENCE,
    ON_REAL_NODE,
    SECRET,
    SECRET_KEY,
    UPSTREAM_MODEL,
    Upstream,
    installed,
    secret,
)
from tests.integration.gateway.kubeauth import mint
from tests.integration.operator.support import install_crd
from tests.integration.restapi.support import bind

pytestmark = pytest.mark.cluster
ENDPOINT = "sdk-chat"


def test_the_sdk_against_the_installed_api(
    cluster: Cluster,
    namespace: str,
    real_node: str,
    image: str,
    upstream: Upstream,
    tmp_path: Path,
) -> None:
    provider_key = f"test-key-not-real-{uuid.uuid4().hex[:8]}"
    upstream.accepted.add(provider_key)
    secret(cluster, namespace, provider_key)
    for account in ("editor", "stranger"):
        cluster.kubectl("-n", namespace, "create", "serviceaccount", account)

    # The chart's CRD, as this checkout generates it, before helm applies it again: on a
    # cluster shared with other checkouts, helm refuses to take over a different one.
    install_crd(cluster)
    api = {"enabled": True, **ON_REAL_NODE}
    with installed(cluster, namespace, image, tmp_path, api=api) as release:
        full = f"{release}-modelport"
        bind(cluster, namespace, "editor", f"{full}-endpoint-editor")
        cluster.kubectl(
            "-n", namespace, "rollout", "status", f"deployment/{full}-api", "--timeout=120s"
        )
        service = json.loads(
            cluster.kubectl("-n", namespace, "get", "service", f"{full}-api", "-o", "json").stdout
        )
        host = f"http://{service['spec']['clusterIP']}/workspaces/{namespace}"
        w = WorkspaceClient(host=host, token=mint(cluster, namespace, "editor", AUDIENCE))

        entity = ServedEntityInput(
            name="in-house",
            external_model=ExternalModel(
                provider=ExternalModelProvider.CUSTOM,
                name=UPSTREAM_MODEL,
                task="llm/v1/chat",
                custom_provider_config=CustomProviderConfig(
                    custom_provider_url=upstream.base_url,
                    bearer_token_auth=BearerTokenAuth(
                        token=f"{{{{secrets/{SECRET}/{SECRET_KEY}}}}}"
                    ),
                ),
            ),
        )
        chat = w.serving_endpoints.create_and_wait(
            name=ENDPOINT,
            config=EndpointCoreConfigInput(name=ENDPOINT, served_entities=[entity]),
            timeout=timedelta(minutes=4),
        )
        assert chat.state is not None and chat.state.ready == EndpointStateReady.READY

        answer = w.serving_endpoints.query(
            ENDPOINT, messages=[ChatMessage(role=ChatMessageRole.USER, content="hi")]
        )
        assert answer.choices is not None and answer.choices[0].message is not None
        assert answer.choices[0].message.content == "Hello from upstream"
        assert upstream.tokens[-1] == provider_key

        metrics = w.serving_endpoints.export_metrics(ENDPOINT).contents
        assert metrics is not None
        text = metrics.read().decode()
        assert "modelport_restapi_scraped_pods 1.0" in text
        assert f'principal="service_principal:system:serviceaccount:{namespace}:editor"' in text

        stranger = WorkspaceClient(host=host, token=mint(cluster, namespace, "stranger", AUDIENCE))
        with pytest.raises(PermissionDenied):
            stranger.serving_endpoints.get(ENDPOINT)

        w.serving_endpoints.delete(ENDPOINT)
        with pytest.raises(NotFound):
            w.serving_endpoints.get(ENDPOINT)

        # No credential in the API server's log.
        logs = cluster.kubectl(
            "-n", namespace, "logs", f"deployment/{full}-api", "--tail=-1"
        ).stdout
        assert "created servingendpoint" in logs
        assert provider_key not in logs and "eyJ" not in logs
