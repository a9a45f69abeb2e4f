"""The Helm chart rendered by the pinned helm: lint, schema, RBAC scope, security, drift."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import HACK, ROOT

CHART = ROOT / "charts" / "modelport"


@cache
def helm() -> str:
    out = subprocess.run([str(HACK / "install-tools")], capture_output=True, text=True, check=True)
    return str(Path(out.stdout.strip()) / "helm")


def template(*sets: str) -> list[dict[str, Any]]:
    args = [helm(), "template", "mp", str(CHART), "--namespace", "modelport-system"]
    for s in sets:
        args += ["--set", s]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def test_helm_lint_passes() -> None:
    lint = subprocess.run([helm(), "lint", "--strict", str(CHART)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_cluster_wide_by_default() -> None:
    docs = template()
    assert kinds(docs) == [
        "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Service", "ServiceAccount",
    ]  # fmt: skip
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    groups = {g for rule in role["rules"] for g in rule["apiGroups"]}
    assert "rbac.authorization.k8s.io" not in groups  # it never grants itself more


def test_watching_namespaces_needs_no_cluster_wide_rights() -> None:
    docs = template("watchNamespaces={team-a,team-b}")
    assert not [d for d in docs if d["kind"].startswith("Cluster")]
    roles = [d for d in docs if d["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MODELPORT_NAMESPACES"] == "team-a,team-b"


def test_secrets_are_read_only() -> None:
    role = next(d for d in template() if d["kind"] == "ClusterRole")
    for rule in role["rules"]:
        if "secrets" in rule["resources"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}


def test_operator_pod_meets_the_restricted_pod_security_standard() -> None:
    deployment = next(d for d in template() if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]["securityContext"]
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"]["drop"] == ["ALL"]


def test_gateway_image_follows_the_operator_image_unless_set() -> None:
    def env(docs: list[dict[str, Any]]) -> dict[str, str]:
        deployment = next(d for d in docs if d["kind"] == "Deployment")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e["value"] for e in container["env"]}

    assert (
        env(template("image.tag=1.2.3"))["MODELPORT_GATEWAY_IMAGE"] == "modelport/modelport:1.2.3"
    )
    custom = env(template("gateway.image.repository=registry.example/gw", "gateway.image.tag=v9"))
    assert custom["MODELPORT_GATEWAY_IMAGE"] == "registry.example/gw:v9"


def test_gateway_placement_and_resources_reach_the_operator() -> None:
    import json

    def env(docs: list[dict[str, Any]]) -> dict[str, str]:
        deployment = next(d for d in docs if d["kind"] == "Deployment")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e["value"] for e in container["env"]}

    defaults = env(template())
    assert json.loads(defaults["MODELPORT_GATEWAY_NODE_SELECTOR"]) == {}
    assert json.loads(defaults["MODELPORT_GATEWAY_TOLERATIONS"]) == []
    assert json.loads(defaults["MODELPORT_GATEWAY_RESOURCES"]) == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"memory": "512Mi"},
    }
    custom = env(
        template(
            r"gateway.nodeSelector.modelport\.io/node-kind=real",
            r"gateway.tolerations[0].key=modelport.io/real-node",
            "gateway.tolerations[0].operator=Exists",
            "gateway.tolerations[0].effect=NoSchedule",
            "gateway.resources.requests.cpu=50m",
        )
    )
    assert json.loads(custom["MODELPORT_GATEWAY_NODE_SELECTOR"]) == {
        "modelport.io/node-kind": "real"
    }
    assert json.loads(custom["MODELPORT_GATEWAY_TOLERATIONS"]) == [
        {"key": "modelport.io/real-node", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert json.loads(custom["MODELPORT_GATEWAY_RESOURCES"])["requests"]["cpu"] == "50m"


def test_service_monitor_scrapes_the_gateways_when_enabled() -> None:
    docs = template("metrics.serviceMonitor.enabled=true")
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"]["serving.modelport.io/component"] == "gateway"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("operator.logFormat=xml", "/operator/logFormat"),
        ("watchNamespaces={Team_A}", "/watchNamespaces/0"),
        ("gpuProfiles.gpu_small.gpus=1", "gpu_small"),
        ("nonsense=1", "nonsense"),
        ("gateway.resources.limits.memory=512MB", "/gateway/resources/limits/memory"),
        ("gateway.tolerations[0].operator=In", "/gateway/tolerations/0/operator"),
    ],
)
def test_values_schema_refuses_bad_values(value: str, complaint: str) -> None:
    args = [helm(), "template", "mp", str(CHART), "--set", value]
    out = subprocess.run(args, capture_output=True, text=True)
    assert out.returncode != 0
    assert complaint in out.stderr


def test_install_yaml_is_rendered_from_the_chart() -> None:
    rendered = subprocess.run(
        [str(HACK / "render-manifests"), "--stdout"], capture_output=True, text=True, check=True
    ).stdout
    committed = (ROOT / "manifests" / "install.yaml").read_text()
    assert committed == rendered, "manifests/install.yaml is stale; run hack/render-manifests"
