"""Guardrails, the guard model and fallback's readiness, rendered into the gateway's
config, its pod and its RoleBinding (pure)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from modelport.render import Rendered, RenderError, render
from modelport.render.config import GUARD_TOKEN_PATH
from modelport.settings import SettingsError, from_env, parse_guard_model
from tests.unit.operator.helpers import endpoint, external, parse, self_hosted

SETTINGS = from_env({"MODELPORT_GATEWAY_READINESS_ROLE": "ClusterRole/mp-gateway-readiness"})
GUARD = parse_guard_model('{"endpoint": "guards/llama-guard", "failOpen": true}')
GUARDRAILS = {
    "input": {"safety": True, "pii": {"behavior": "MASK"}, "invalidKeywords": ["falcon"]},
    "output": {"pii": {"behavior": "BLOCK"}, "validTopics": ["billing"]},
}


def _render(*entities: dict[str, Any], settings: Any = SETTINGS, **ai: Any) -> Rendered:
    weights = [50, 50] if len(entities) == 2 else None
    body = endpoint(*entities, weights=weights).to_body()
    body["spec"]["aiGateway"] = ai
    return render(parse(body), settings)


def child(rendered: Rendered, kind: str) -> dict[str, Any] | None:
    return next((c for c in rendered.children if c["kind"] == kind), None)


def test_guardrails_and_the_guard_reach_the_gateway() -> None:
    rendered = _render(
        external(), settings=replace(SETTINGS, guard_model=GUARD), guardrails=GUARDRAILS
    )
    g = rendered.config.ai_gateway.guardrails
    assert (g.input.safety, g.input.pii, g.input.invalid_keywords) == (True, "MASK", ["falcon"])
    assert (g.output.pii, g.output.valid_topics) == ("BLOCK", ["billing"])
    assert g.guard is not None
    assert g.guard.url == "http://llama-guard.guards.svc.cluster.local/v1"
    assert (g.guard.model, g.guard.fail_open, g.guard.token_path) == (
        "llama-guard",
        True,
        GUARD_TOKEN_PATH,
    )
    deployment = child(rendered, "Deployment")
    assert deployment is not None
    volume = next(
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "secrets"
    )
    assert {
        "serviceAccountToken": {
            "audience": "modelport",
            "expirationSeconds": 3600,
            "path": GUARD_TOKEN_PATH,
        }
    } in volume["projected"]["sources"]


def test_a_guard_url_needs_no_token() -> None:
    guard = parse_guard_model('{"url": "http://guard.example/v1", "model": "lg"}')
    rendered = _render(
        external(), settings=replace(SETTINGS, guard_model=guard), guardrails=GUARDRAILS
    )
    assert rendered.config.ai_gateway.guardrails.guard is not None
    assert rendered.config.ai_gateway.guardrails.guard.token_path is None
    assert "serviceAccountToken" not in str(child(rendered, "Deployment"))


def test_safety_without_a_guard_model_names_the_fix() -> None:
    with pytest.raises(RenderError, match="guardModel"):
        _render(external(), guardrails=GUARDRAILS)
    # Without safety, no guard model is needed.
    _render(external(), guardrails={"input": {"pii": {"behavior": "MASK"}}})


@pytest.mark.parametrize(
    "raw",
    [
        '{"endpoint": "no-slash"}',
        '{"url": "http://x/v1"}',
        '{"endpoint": "a/b", "url": "http://x/v1"}',
        '{"endpoint": "a/b", "timeoutSeconds": 0}',
        '{"endpoint": "a/b", "colour": "red"}',
    ],
)
def test_guard_model_setting_errors(raw: str) -> None:
    with pytest.raises(SettingsError, match="MODELPORT_GUARD_MODEL"):
        parse_guard_model(raw)


def test_readiness_for_fallback_over_a_self_hosted_entity() -> None:
    rendered = _render(self_hosted(), external(), fallbackConfig={"enabled": True})
    readiness = rendered.config.readiness
    assert readiness is not None
    assert (readiness.namespace, readiness.services) == ("team-a", {"llama": "chat-llama"})
    binding = child(rendered, "RoleBinding")
    assert binding is not None
    assert binding["metadata"]["name"] == "chat-gateway"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "mp-gateway-readiness",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "chat-gateway", "namespace": "team-a"}
    ]
    pod = child(rendered, "Deployment")["spec"]["template"]["spec"]  # type: ignore[index]
    assert pod["serviceAccountName"] == "chat-gateway"
    assert pod["automountServiceAccountToken"] is True


@pytest.mark.parametrize(
    ("entities", "fallback", "settings"),
    [
        ((self_hosted(), external()), False, SETTINGS),  # no fallback: nothing to skip to
        ((external(), external("claude")), True, SETTINGS),  # nothing self-hosted
        ((self_hosted(),), True, SETTINGS),  # no other entity
        ((self_hosted(), external()), True, from_env({})),  # the cluster has no role
    ],
)
def test_no_readiness_when_nothing_could_be_skipped(
    entities: tuple[dict[str, Any], ...], fallback: bool, settings: Any
) -> None:
    rendered = _render(*entities, settings=settings, fallbackConfig={"enabled": fallback})
    assert rendered.config.readiness is None
    assert child(rendered, "RoleBinding") is None


def test_a_role_per_namespace() -> None:
    settings = from_env({"MODELPORT_GATEWAY_READINESS_ROLE": "Role/mp-gateway-readiness"})
    rendered = _render(
        self_hosted(), external(), settings=settings, fallbackConfig={"enabled": True}
    )
    binding = child(rendered, "RoleBinding")
    assert binding is not None and binding["roleRef"]["kind"] == "Role"
    with pytest.raises(SettingsError, match="GATEWAY_READINESS_ROLE"):
        from_env({"MODELPORT_GATEWAY_READINESS_ROLE": "Group/x"})
