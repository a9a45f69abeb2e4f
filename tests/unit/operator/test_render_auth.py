"""Who may call: spec.aiGateway.auth over the cluster's defaults, rendered into the
gateway's config, its ServiceAccount, its pod and its Secret files (pure, table-driven)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from modelport import gatewayconfig as gc
from modelport.render import Rendered, render
from modelport.settings import GatewayAuthDefaults, Settings, from_env
from tests.unit.operator.helpers import endpoint, external, parse, sample

SETTINGS = from_env({})
OPEN = GatewayAuthDefaults(enabled=False)
NO_SA_TOKENS = GatewayAuthDefaults(service_account_tokens=False)
ISSUER = gc.Oidc(issuer="https://login.example.com", audiences=["cluster"])
WITH_ISSUER = GatewayAuthDefaults(oidc=ISSUER)

DEFAULT_ALLOW = {
    "serviceAccounts": ["team-a/*"],
    "users": [],
    "groups": [],
    "servicePrincipals": [],
}
SA_TOKENS = {"audiences": ["modelport"], "cacheSeconds": 10.0}
KEY = {"secretKeyRef": {"name": "callers", "key": "alice"}, "user": "alice"}
ALICE = {"path": "callers/alice", "principal": {"user": "alice", "groups": []}}
DISABLED = {"enabled": False, "apiKeys": [], "allow": {k: [] for k in DEFAULT_ALLOW}}


def _render(auth: dict[str, Any] | None, defaults: GatewayAuthDefaults | None = None) -> Rendered:
    ep = endpoint(external())
    body = ep.to_body()
    if auth is not None:
        body["spec"]["aiGateway"] = {"auth": auth}
    settings = SETTINGS if defaults is None else replace(SETTINGS, gateway_auth=defaults)
    return render(parse(body), settings)


def _auth_section(rendered: Rendered) -> dict[str, Any]:
    config = json.loads(rendered.children[0]["data"][gc.CONFIG_FILE_NAME])
    section: dict[str, Any] = config["aiGateway"]["auth"]
    return section


def _pod(rendered: Rendered) -> dict[str, Any]:
    deployment = next(c for c in rendered.children if c["kind"] == "Deployment")
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


# (id, the endpoint's auth, the cluster's defaults, the gateway's auth section)
# fmt: off
CASES: list[tuple[str, dict[str, Any] | None, GatewayAuthDefaults | None, dict[str, Any]]] = [
    ("unset: the built-in defaults", None, None,
     {"enabled": True, "apiKeys": [], "serviceAccountTokens": SA_TOKENS, "allow": DEFAULT_ALLOW}),
    ("explicit opt-out", {"enabled": False}, None, DISABLED),
    ("the cluster's default is open", None, OPEN, DISABLED),
    ("API keys turn auth on where the cluster is open", {"apiKeys": [KEY]}, OPEN,
     {"enabled": True, "apiKeys": [ALICE], "serviceAccountTokens": SA_TOKENS,
      "allow": DEFAULT_ALLOW}),
    ("an explicit enabled wins over the cluster", {"enabled": True}, OPEN,
     {"enabled": True, "apiKeys": [], "serviceAccountTokens": SA_TOKENS, "allow": DEFAULT_ALLOW}),
    ("ServiceAccount tokens off for this endpoint",
     {"serviceAccountTokens": {"enabled": False}, "apiKeys": [KEY]}, None,
     {"enabled": True, "apiKeys": [ALICE], "allow": DEFAULT_ALLOW}),
    ("ServiceAccount tokens on where the cluster has them off",
     {"serviceAccountTokens": {"enabled": True}}, NO_SA_TOKENS,
     {"enabled": True, "apiKeys": [], "serviceAccountTokens": SA_TOKENS, "allow": DEFAULT_ALLOW}),
    ("the cluster's default without ServiceAccount tokens", None, NO_SA_TOKENS,
     {"enabled": True, "apiKeys": [], "allow": DEFAULT_ALLOW}),
    ("own audiences, the cluster's cache time",
     {"serviceAccountTokens": {"audiences": ["chat", "modelport"]}},
     GatewayAuthDefaults(cache_seconds=30),
     {"enabled": True, "apiKeys": [],
      "serviceAccountTokens": {"audiences": ["chat", "modelport"], "cacheSeconds": 30.0},
      "allow": DEFAULT_ALLOW}),
    ("the cluster's OIDC issuer", None, WITH_ISSUER,
     {"enabled": True, "apiKeys": [], "serviceAccountTokens": SA_TOKENS,
      "oidc": ISSUER.model_dump(mode="json", by_alias=True, exclude_none=True),
      "allow": DEFAULT_ALLOW}),
    ("the endpoint's own OIDC issuer",
     {"oidc": {"issuer": "https://idp.team-a.example", "audiences": ["chat"],
               "jwksUri": "https://idp.team-a.example/keys", "groupsClaim": "roles"}},
     WITH_ISSUER,
     {"enabled": True, "apiKeys": [], "serviceAccountTokens": SA_TOKENS,
      "oidc": {"issuer": "https://idp.team-a.example", "audiences": ["chat"],
               "jwksUri": "https://idp.team-a.example/keys", "userClaim": "sub",
               "groupsClaim": "roles",
               "algorithms": ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]},
      "allow": DEFAULT_ALLOW}),
    ("allow replaces the default",
     {"allow": {"serviceAccounts": ["team-b/chat-client", "team-c/*"], "users": ["bob"],
                "groups": ["ml"], "servicePrincipals": ["nightly"]}}, None,
     {"enabled": True, "apiKeys": [], "serviceAccountTokens": SA_TOKENS,
      "allow": {"serviceAccounts": ["team-b/chat-client", "team-c/*"], "users": ["bob"],
                "groups": ["ml"], "servicePrincipals": ["nightly"]}}),
    ("an empty allow admits no token: API keys only", {"allow": {}, "apiKeys": [KEY]}, None,
     {"enabled": True, "apiKeys": [ALICE], "serviceAccountTokens": SA_TOKENS,
      "allow": {k: [] for k in DEFAULT_ALLOW}}),
    ("API keys with service principals and groups",
     {"apiKeys": [KEY, {"secretKeyRef": {"name": "callers", "key": "job"},
                        "servicePrincipal": "nightly", "groups": ["eval", "ml"]}]}, None,
     {"enabled": True, "serviceAccountTokens": SA_TOKENS, "allow": DEFAULT_ALLOW,
      "apiKeys": [ALICE, {"path": "callers/job", "principal": {"servicePrincipal": "nightly",
                                                                "groups": ["eval", "ml"]}}]}),
]
# fmt: on


@pytest.mark.parametrize(
    ("auth", "defaults", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_auth_section(
    auth: dict[str, Any] | None, defaults: GatewayAuthDefaults | None, expected: dict[str, Any]
) -> None:
    rendered = _render(auth, defaults)
    assert _auth_section(rendered) == expected
    # The gateway parses what the operator writes, and rendering is deterministic.
    assert gc.loads(rendered.children[0]["data"][gc.CONFIG_FILE_NAME]).ai_gateway.auth
    assert _render(auth, defaults).children == rendered.children

    # A gateway that verifies ServiceAccount tokens runs as its own ServiceAccount with
    # its token mounted; any other runs as the default one, without a token.
    verifies = "serviceAccountTokens" in expected
    kinds = [(c["kind"], c["metadata"]["name"]) for c in rendered.children]
    pod = _pod(rendered)
    if verifies:
        assert rendered.service_account == "chat-gateway"
        assert kinds.index(("ServiceAccount", "chat-gateway")) < kinds.index(
            ("Deployment", "chat-gateway")
        )
        assert pod["serviceAccountName"] == "chat-gateway"
        assert pod["automountServiceAccountToken"] is True
    else:
        assert rendered.service_account is None
        assert "ServiceAccount" not in {kind for kind, _ in kinds}
        assert pod["serviceAccountName"] == "default"
        assert pod["automountServiceAccountToken"] is False


def test_the_service_account_is_a_child_like_the_others() -> None:
    rendered = _render(None)
    account = next(c for c in rendered.children if c["kind"] == "ServiceAccount")
    deployment = next(c for c in rendered.children if c["kind"] == "Deployment")
    assert account["metadata"]["labels"] == deployment["metadata"]["labels"]
    assert account["metadata"]["ownerReferences"] == deployment["metadata"]["ownerReferences"]
    assert account["metadata"]["namespace"] == "team-a"
    # Only the gateway pods use it, and they ask for its token explicitly.
    assert account["automountServiceAccountToken"] is False


def test_a_long_endpoint_name_gets_a_valid_service_account_name() -> None:
    ep = endpoint(external(), name="a" * 60)
    rendered = render(ep, SETTINGS)
    account = next(c for c in rendered.children if c["kind"] == "ServiceAccount")
    assert account["metadata"]["name"] == rendered.service_account
    assert len(account["metadata"]["name"]) <= 63
    assert _pod(rendered)["serviceAccountName"] == rendered.service_account


def test_api_keys_are_files_of_the_projected_volume_and_named_for_status() -> None:
    rendered = render(sample("callers"), SETTINGS)
    auth_refs = [r for r in rendered.secret_refs if r.field.startswith("spec.aiGateway.auth")]
    assert [(r.name, r.key, r.field, r.entity, r.mounted) for r in auth_refs] == [
        ("chat-callers", "alice", "spec.aiGateway.auth.apiKeys[0].secretKeyRef", "", True),
        ("chat-callers", "nightly-eval", "spec.aiGateway.auth.apiKeys[1].secretKeyRef", "", True),
    ]
    volume = next(v for v in _pod(rendered)["volumes"] if v["name"] == "secrets")
    assert {"secret": {
        "name": "chat-callers",
        "optional": True,  # a missing key is refused by the gateway, not a stuck pod
        "items": [
            {"key": "alice", "path": "chat-callers/alice"},
            {"key": "nightly-eval", "path": "chat-callers/nightly-eval"},
        ],
    }} in volume["projected"]["sources"]  # fmt: skip
    paths = [k["path"] for k in _auth_section(rendered)["apiKeys"]]
    assert paths == ["chat-callers/alice", "chat-callers/nightly-eval"]


def test_changing_who_may_call_rolls_the_gateway() -> None:
    before = _render(None)
    after = _render({"allow": {"serviceAccounts": ["team-b/*"]}})
    assert before.config_hash != after.config_hash


def test_settings_default_is_secure() -> None:
    defaults = Settings().gateway_auth
    assert defaults.enabled and defaults.service_account_tokens
    assert defaults.audiences == ("modelport",) and defaults.oidc is None


def _bedrock(**config: Any) -> dict[str, Any]:
    return {
        "name": "claude",
        "externalModel": {
            "name": "anthropic.claude-3-5-sonnet-20240620-v1:0",
            "provider": "amazon-bedrock",
            "task": "llm/v1/chat",
            "amazonBedrockConfig": {
                "awsRegion": "us-east-1",
                "bedrockProvider": "anthropic",
                **config,
            },
        },
    }


KEYS = {
    "awsAccessKeyId": {"secretKeyRef": {"name": "aws", "key": "id"}},
    "awsSecretAccessKey": {"secretKeyRef": {"name": "aws", "key": "secret"}},
}
IRSA = {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/mp-{namespace}-{endpoint}"}


# (id, Bedrock config, gateway ServiceAccount annotations, ServiceAccount rendered,
#  its annotations)
# fmt: off
IDENTITY_CASES: list[tuple[str, dict[str, Any], dict[str, str], bool, dict[str, str] | None]] = [
    ("keys: no pod identity needed", KEYS, {}, False, None),
    ("no keys: its own ServiceAccount, for EKS Pod Identity", {}, {}, True, None),
    ("no keys, IRSA annotation with placeholders", {}, IRSA, True,
     {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/mp-team-a-chat"}),
    ("keys, and annotations for every gateway anyway", KEYS, IRSA, True,
     {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/mp-team-a-chat"}),
]
# fmt: on


@pytest.mark.parametrize(
    ("config", "annotations", "has_account", "expected"),
    [c[1:] for c in IDENTITY_CASES],
    ids=[c[0] for c in IDENTITY_CASES],
)
def test_the_gateway_service_account_carries_its_cloud_identity(
    config: dict[str, Any],
    annotations: dict[str, str],
    has_account: bool,
    expected: dict[str, str] | None,
) -> None:
    """A Bedrock entity without keys signs with the pod's AWS identity: the gateway runs
    as its own ServiceAccount (which IRSA annotations or a Pod Identity association give
    a role), and its Kubernetes token stays unmounted (TokenReview is off here)."""
    settings = replace(
        SETTINGS, gateway_auth=NO_SA_TOKENS, gateway_service_account_annotations=annotations
    )
    rendered = render(endpoint(_bedrock(**config)), settings)
    accounts = [c for c in rendered.children if c["kind"] == "ServiceAccount"]
    pod = _pod(rendered)
    assert rendered.service_account is None, "no TokenReview binding for a cloud identity"
    assert pod["automountServiceAccountToken"] is False
    if not has_account:
        assert accounts == [] and pod["serviceAccountName"] == "default"
        return
    (account,) = accounts
    assert account["metadata"]["name"] == pod["serviceAccountName"] == "chat-gateway"
    assert account["metadata"].get("annotations") == expected
    # The gateway accepts what the operator writes for it.
    assert gc.loads(rendered.children[0]["data"][gc.CONFIG_FILE_NAME]).entities


def test_gateway_service_account_annotations_setting() -> None:
    env = {"MODELPORT_GATEWAY_SERVICE_ACCOUNT_ANNOTATIONS": json.dumps(IRSA)}
    assert from_env(env).gateway_service_account_annotations == IRSA
    with pytest.raises(ValueError, match="GATEWAY_SERVICE_ACCOUNT_ANNOTATIONS"):
        from_env({"MODELPORT_GATEWAY_SERVICE_ACCOUNT_ANNOTATIONS": '{"a": 1}'})
