"""Rendering for the autoscaler: the bounds of every Deployment's replicas, and what a
gateway needs to hold and wake the entities that scale to zero (its config section, a
Role on exactly their scale subresources, its token, the readiness watch)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelport import gatewayconfig as gc
from modelport.render import render
from modelport.scaling import ScaleTarget
from modelport.settings import from_env
from tests.unit.operator.helpers import endpoint, external, self_hosted

SETTINGS = from_env({})
WITH_READINESS = from_env(
    {
        "MODELPORT_GATEWAY_READINESS_ROLE": "ClusterRole/modelport-gateway-readiness",
        "MODELPORT_AUTOSCALING": '{"scaleToZeroIdleSeconds": 900, "maxHeldRequests": 32}',
    }
)


def _children(rendered: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["kind"], c["metadata"]["name"]): c for c in rendered.children}


def test_every_deployment_has_bounds_and_no_hpa() -> None:
    ep = endpoint(
        external("gpt"),
        self_hosted("llama", workloadSize="Medium"),
        self_hosted("small", scaleToZeroEnabled=True, scaleToZeroIdleSeconds=120),
        weights=[50, 30, 20],
    )
    rendered = render(ep, WITH_READINESS)
    assert not [c for c in rendered.children if c["kind"] == "HorizontalPodAutoscaler"]
    assert rendered.scaling == (
        ScaleTarget("chat-gateway", None, 1, 5, 100, cpu_request=0.1, target_cpu=0.7),
        ScaleTarget("chat-llama", "llama", 1, 4, 4),
        ScaleTarget("chat-small", "small", 0, 1, 4, idle_seconds=120.0),
    )
    for child in rendered.children:
        if child["kind"] == "Deployment":
            assert "replicas" not in child["spec"]


def test_the_idle_period_defaults_to_the_clusters() -> None:
    ep = endpoint(self_hosted("llama", scaleToZeroEnabled=True))
    (_, llama) = render(ep, WITH_READINESS).scaling
    assert llama.idle_seconds == 900 and llama.scales_to_zero


def test_no_cpu_bound_without_a_cpu_request_or_target() -> None:
    no_request = from_env({"MODELPORT_GATEWAY_RESOURCES": '{"requests": {"memory": "1Gi"}}'})
    assert render(endpoint(external("gpt")), no_request).scaling[0].target_cpu is None
    off = from_env({"MODELPORT_AUTOSCALING": '{"gatewayTargetCpuPercent": 0}'})
    assert render(endpoint(external("gpt")), off).scaling[0].target_cpu is None


def test_the_gateway_may_wake_exactly_its_scale_to_zero_entities() -> None:
    ep = endpoint(
        self_hosted("warm"),
        self_hosted("cold", scaleToZeroEnabled=True),
        weights=[50, 50],
    )
    children = _children(render(ep, WITH_READINESS))
    role = children[("Role", "chat-gateway-scale")]
    assert role["rules"] == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments/scale"],
            "resourceNames": ["chat-cold"],
            "verbs": ["get", "update"],
        }
    ]
    binding = children[("RoleBinding", "chat-gateway-scale")]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "chat-gateway-scale",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "chat-gateway", "namespace": "team-a"}
    ]
    # Its token is mounted, and it watches readiness (to release held requests).
    pod = children[("Deployment", "chat-gateway")]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "chat-gateway"
    assert pod["automountServiceAccountToken"] is True
    assert ("RoleBinding", "chat-gateway") in children
    config = gc.loads(children[("ConfigMap", "chat-gateway")]["data"]["gateway.json"])
    assert config.scale_to_zero is not None
    assert config.scale_to_zero.deployments == {"cold": "chat-cold"}
    assert config.scale_to_zero.max_held_requests == 32
    assert config.readiness is not None
    assert config.readiness.services == {"warm": "chat-warm", "cold": "chat-cold"}


@pytest.mark.parametrize("settings", [SETTINGS, WITH_READINESS])
def test_nothing_to_wake_renders_nothing_for_it(settings: Any) -> None:
    children = _children(render(endpoint(self_hosted("llama")), settings))
    assert ("Role", "chat-gateway-scale") not in children
    config = json.loads(children[("ConfigMap", "chat-gateway")]["data"]["gateway.json"])
    assert "scaleToZero" not in config
    assert "readiness" not in config  # nothing to fall back to, nothing to hold


def test_waking_needs_an_identity_even_when_callers_need_none() -> None:
    """An open endpoint (no TokenReview) still wakes its entities with its own token."""
    body = endpoint(self_hosted("llama", scaleToZeroEnabled=True)).model_dump(
        by_alias=True, exclude_none=True
    )
    body["spec"]["aiGateway"] = {"auth": {"enabled": False}}
    from modelport.api import ServingEndpoint

    children = _children(render(ServingEndpoint.parse(body), SETTINGS))
    pod = children[("Deployment", "chat-gateway")]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "chat-gateway"
    assert pod["automountServiceAccountToken"] is True
    assert ("Role", "chat-gateway-scale") in children
