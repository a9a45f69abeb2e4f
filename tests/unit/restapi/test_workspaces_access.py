"""Which namespace a request is for, and what it asks RBAC."""

from __future__ import annotations

import pytest

from modelport.gateway.context import Principal
from modelport.restapi import workspaces
from modelport.restapi.access import Operation, review
from modelport.restapi.errors import ApiError

SERVED = frozenset({"team-a", "team-b"})

RESOLVED = [
    # (path, headers, default, served, namespace)
    ("team-a", {}, None, SERVED, "team-a"),
    (None, {"x-databricks-workspace-id": "team-b"}, "team-a", SERVED, "team-b"),
    (None, {"x-databricks-org-id": "team-b"}, None, SERVED, "team-b"),
    ("team-a", {"x-databricks-workspace-id": "team-a"}, None, SERVED, "team-a"),
    (None, {}, "team-a", SERVED, "team-a"),
    ("anything", {}, None, frozenset(), "anything"),  # the operator watches every namespace
]
REFUSED = [
    # (path, headers, default, served, status, words)
    (None, {}, None, SERVED, 400, "no workspace named"),
    ("team-a", {"x-databricks-workspace-id": "team-b"}, None, SERVED, 400, "make them agree"),
    ("team-c", {}, None, SERVED, 404, "not served here"),
    ("Team_A", {}, None, frozenset(), 400, "not a Kubernetes namespace"),
]


@pytest.mark.parametrize(("path", "headers", "default", "served", "namespace"), RESOLVED)
def test_workspace_comes_from_the_path_a_header_or_the_default(
    path: str | None,
    headers: dict[str, str],
    default: str | None,
    served: frozenset[str],
    namespace: str,
) -> None:
    assert workspaces.resolve(path, headers, default=default, served=served) == namespace


@pytest.mark.parametrize(("path", "headers", "default", "served", "status", "words"), REFUSED)
def test_workspace_errors_say_how_to_name_one(
    path: str | None,
    headers: dict[str, str],
    default: str | None,
    served: frozenset[str],
    status: int,
    words: str,
) -> None:
    with pytest.raises(ApiError) as caught:
        workspaces.resolve(path, headers, default=default, served=served)
    assert caught.value.status == status
    assert words in caught.value.message
    assert "team-b" not in caught.value.message or "team-b" in str(headers), "no other workspaces"


ACCESS = [
    (Operation.LIST, "list", "servingendpoints", "", ""),
    (Operation.GET, "get", "servingendpoints", "", "chat"),
    (Operation.CREATE, "create", "servingendpoints", "", ""),  # RBAC cannot limit create by name
    (Operation.UPDATE, "update", "servingendpoints", "", "chat"),
    (Operation.DELETE, "delete", "servingendpoints", "", "chat"),
    (Operation.INVOKE, "create", "servingendpoints", "invocations", "chat"),
]


@pytest.mark.parametrize(("operation", "verb", "resource", "subresource", "name"), ACCESS)
def test_each_operation_is_one_rbac_question(
    operation: Operation, verb: str, resource: str, subresource: str, name: str
) -> None:
    principal = Principal(kind="user", name="alice", groups=("team", "system:authenticated"))
    body = review(principal, "team-a", operation.access("chat"))
    assert body["kind"] == "SubjectAccessReview"
    assert body["spec"]["user"] == "alice"
    assert body["spec"]["groups"] == ["team", "system:authenticated"]
    attributes = body["spec"]["resourceAttributes"]
    assert attributes["namespace"] == "team-a"
    assert attributes["verb"] == verb
    assert attributes["group"] == "serving.modelport.io"
    assert attributes["resource"] == resource
    assert attributes.get("subresource", "") == subresource
    assert attributes.get("name", "") == name


def test_log_reading_is_the_pods_log_right() -> None:
    access = Operation.READ_LOGS.access("chat")
    assert (access.verb, access.group, access.resource, access.subresource) == (
        "get",
        "",
        "pods",
        "log",
    )
    assert access.describe("team-a") == "get pods/log in namespace team-a"
