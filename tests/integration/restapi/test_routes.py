"""The REST API's answers where no SDK method leads: workspaces named by header, errors in
the service's shape, what is not implemented, logs and metrics of an endpoint without
pods, and the query right apart from the manage right."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport import gatewayconfig
from tests.conftest import Cluster
from tests.integration.gateway.jwks import Issuer, rsa_key
from tests.integration.gateway.test_auth_tokens import LoopThread
from tests.integration.restapi.conftest import Workspace
from tests.integration.restapi.support import AUDIENCE, RunningApi, start_api
from tests.support import eventually

pytestmark = pytest.mark.cluster

CHAT = {
    "name": "routes",
    "config": {
        "served_entities": [
            {
                "name": "gpt",
                "external_model": {
                    "name": "gpt-4o",
                    "provider": "openai",
                    "task": "llm/v1/chat",
                    "openai_config": {"openai_api_key": "{{secrets/llm-keys/openai}}"},
                },
            }
        ]
    },
}


def call(
    api: RunningApi, method: str, path: str, token: str | None, **kwargs: Any
) -> httpx.Response:
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.request(method, api.url + path, headers=headers, timeout=20, **kwargs)


def test_errors_are_in_the_services_shape(workspace: Workspace, api: RunningApi) -> None:
    editor = workspace.tokens["editor"]
    ns = workspace.namespace
    base = "/api/2.0/serving-endpoints"

    # The server's default workspace, or one named by header.
    assert call(api, "GET", base, editor).status_code == 200
    named = call(api, "GET", base, editor, headers={"X-Databricks-Workspace-Id": ns})
    assert named.status_code == 200
    other = call(api, "GET", base, editor, headers={"X-Databricks-Workspace-Id": "kube-system"})
    assert (other.status_code, other.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
    well_known = call(api, "GET", f"/workspaces/{ns}/.well-known/databricks-config", None)
    assert well_known.json() == {"workspace_id": ns}

    missing = call(api, "GET", f"{base}/nope", editor)
    assert missing.status_code == 404
    assert missing.json() == {
        "error_code": "RESOURCE_DOES_NOT_EXIST",
        "message": f"Endpoint with name 'nope' does not exist in workspace (namespace) '{ns}'; "
        "list the workspace's endpoints with GET /api/2.0/serving-endpoints",
    }
    assert call(api, "DELETE", f"{base}/nope", editor).status_code == 404
    bad_json = call(api, "POST", base, editor, content=b"{not json")
    assert (bad_json.status_code, bad_json.json()["error_code"]) == (400, "MALFORMED_REQUEST")
    permissions = call(api, "GET", "/api/2.0/permissions/serving-endpoints/x", editor)
    assert permissions.status_code == 501 and "Kubernetes RBAC" in permissions.json()["message"]
    unknown = call(api, "GET", "/api/2.1/clusters/list", editor)
    assert (unknown.status_code, unknown.json()["error_code"]) == (404, "ENDPOINT_NOT_FOUND")

    created = call(api, "POST", base, editor, json=CHAT)
    assert created.status_code == 200, created.text
    again = call(api, "POST", base, editor, json=CHAT)
    assert (again.status_code, again.json()["error_code"]) == (409, "RESOURCE_ALREADY_EXISTS")

    # An external model has no server logs; the gateway's metrics need its pods.
    logs = call(api, "GET", f"{base}/routes/served-models/gpt/logs", editor)
    assert logs.status_code == 400 and "external model" in logs.json()["message"]
    entity = call(api, "GET", f"{base}/routes/served-models/nope/logs", editor)
    assert entity.status_code == 404 and "its entities: gpt" in entity.json()["message"]
    metrics = call(api, "GET", f"{base}/routes/metrics", editor)
    assert metrics.status_code == 200
    assert "modelport_restapi_scraped_pods" in metrics.text

    # Querying is its own right: the querier may call but not change.
    querier = workspace.tokens["querier"]
    assert call(api, "GET", f"{base}/routes", querier).status_code == 200
    change = call(api, "PATCH", f"{base}/routes/tags", querier, json={"add_tags": []})
    assert change.status_code == 403 and "may not update" in change.json()["message"]
    viewer = call(
        api, "POST", "/serving-endpoints/routes/invocations", workspace.tokens["viewer"], json={}
    )
    assert viewer.status_code == 403
    assert "create servingendpoints/invocations 'routes'" in viewer.json()["message"]
    assert call(api, "DELETE", f"{base}/routes", editor).status_code == 200


def test_oidc_callers_are_named_as_the_apiserver_names_them(
    crd: Cluster, workspace: Workspace, tmp_path: Path
) -> None:
    """An OIDC user's RBAC is the RoleBindings that name ``oidc:<user>`` or ``oidc:<group>``
    (the apiserver's own OIDC prefixes), checked by a real SubjectAccessReview."""
    loop = LoopThread()
    issuer = loop.run(Issuer().__aenter__())
    key = issuer.add(rsa_key("k1"))
    ns = workspace.namespace
    crd.kubectl(
        "-n", ns, "create", "rolebinding", "ml-team-viewer",
        f"--clusterrole={workspace.release}-endpoint-viewer", "--group=oidc:ml-team",
    )  # fmt: skip
    eventually(
        lambda: crd.kubectl(
            "-n", ns, "auth", "can-i", "list", "servingendpoints.serving.modelport.io",
            "--as=oidc:anyone", "--as-group=oidc:ml-team", check=False,
        ).stdout.strip() == "yes",
        timeout=30,
    )  # fmt: skip
    oidc = gatewayconfig.Oidc.model_validate({"issuer": issuer.url, "audiences": [AUDIENCE]})
    api = start_api(
        crd, ns, f"{workspace.release}-api", tmp_path,
        oidc=oidc, oidc_username_prefix="oidc:", oidc_groups_prefix="oidc:",
    )  # fmt: skip
    try:
        base = "/api/2.0/serving-endpoints"
        member = issuer.token(key, sub="alice@example.com", groups=["ml-team"])
        assert call(api, "GET", base, member).status_code == 200
        outsider = issuer.token(key, sub="bob@example.com", groups=["finance"])
        denied = call(api, "GET", base, outsider)
        assert denied.status_code == 403
        assert denied.json()["message"].startswith("oidc:bob@example.com may not list")
        expired = issuer.token(key, groups=["ml-team"], exp=int(issuer.now()) - 120)
        refused = call(api, "GET", base, expired)
        assert refused.status_code == 401 and "expired" in refused.json()["message"]
        # ServiceAccount tokens keep working beside OIDC.
        assert call(api, "GET", base, workspace.tokens["viewer"]).status_code == 200
    finally:
        api.stop()
        loop.run(issuer.__aexit__())
        loop.stop()
