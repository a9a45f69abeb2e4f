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


# The operator's only RBAC rights: the subjects of one binding, naming one role.
TOKENREVIEW_RULES = [
    {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterrolebindings"],
     "resourceNames": ["mp-modelport-gateways"], "verbs": ["get", "patch", "update"]},
    {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"],
     "resourceNames": ["mp-modelport-gateway-tokenreview"], "verbs": ["bind"]},
]  # fmt: skip


# The operator's rights over gateways' own Roles and RoleBindings: a Role to wake their
# entities that scale to zero, and the bindings to it and to the readiness role. Creating
# them grants only what the operator holds itself (the apiserver's escalation check).
GATEWAY_BINDING_RULES = [
    {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"],
     "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]},
]  # fmt: skip


def readiness_rules(kind: str) -> list[dict[str, Any]]:
    """The operator's rights over gateways' readiness and wakes: their Roles and
    RoleBindings, and binding the one role that may read EndpointSlices (a ClusterRole,
    or a Role per namespace)."""
    return [
        *GATEWAY_BINDING_RULES,
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": [kind],
         "resourceNames": ["mp-modelport-gateway-readiness"], "verbs": ["bind"]},
    ]  # fmt: skip


READINESS_ROLE_RULES = [
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
     "verbs": ["get", "list", "watch"]},
]  # fmt: skip


def by_name(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def operator_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}


def assert_tokenreview_objects(docs: list[dict[str, Any]]) -> None:
    """The gateways' ClusterRole may create TokenReviews and nothing else; its binding
    has no subjects (the operator keeps them) and the operator is told its name."""
    role = by_name(docs, "ClusterRole")["mp-modelport-gateway-tokenreview"]
    assert role["rules"] == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}
    ]
    binding = by_name(docs, "ClusterRoleBinding")["mp-modelport-gateways"]
    assert binding["roleRef"]["name"] == "mp-modelport-gateway-tokenreview"
    assert "subjects" not in binding  # Helm must not own (and reset) them
    assert operator_env(docs)["MODELPORT_GATEWAY_TOKENREVIEW_BINDING"] == "mp-modelport-gateways"


def test_cluster_wide_by_default() -> None:
    docs = template()
    assert kinds(docs) == [
        "ClusterRole", "ClusterRole", "ClusterRole", "ClusterRoleBinding", "ClusterRoleBinding",
        "ConfigMap", "Deployment", "Service", "ServiceAccount",
    ]  # fmt: skip
    role = by_name(docs, "ClusterRole")["mp-modelport"]
    rbac = [r for r in role["rules"] if "rbac.authorization.k8s.io" in r["apiGroups"]]
    # It can grant nothing else, to no one.
    assert rbac == readiness_rules("clusterroles") + TOKENREVIEW_RULES
    readiness = by_name(docs, "ClusterRole")["mp-modelport-gateway-readiness"]
    assert readiness["rules"] == READINESS_ROLE_RULES
    assert operator_env(docs)["MODELPORT_GATEWAY_READINESS_ROLE"] == (
        "ClusterRole/mp-modelport-gateway-readiness"
    )
    assert_tokenreview_objects(docs)
    # With ServiceAccount tokens off by default, endpoints may still turn them on.
    assert_tokenreview_objects(template("gatewayAuth.serviceAccountTokens.enabled=false"))


def test_watching_namespaces_needs_one_cluster_wide_right_for_token_review() -> None:
    docs = template("watchNamespaces={team-a,team-b}")
    assert_tokenreview_objects(docs)
    binder = by_name(docs, "ClusterRole")["mp-modelport-tokenreview-binder"]
    assert binder["rules"] == TOKENREVIEW_RULES
    binding = by_name(docs, "ClusterRoleBinding")["mp-modelport-tokenreview-binder"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "mp-modelport", "namespace": "modelport-system"}
    ]
    assert sorted(by_name(docs, "ClusterRole")) == [
        "mp-modelport-gateway-tokenreview", "mp-modelport-tokenreview-binder",
    ]  # fmt: skip


def test_readiness_and_the_guard_model_reach_the_operator() -> None:
    import json

    off = template("gateway.readiness.enabled=false")
    assert "MODELPORT_GATEWAY_READINESS_ROLE" not in operator_env(off)
    assert "mp-modelport-gateway-readiness" not in by_name(off, "ClusterRole")
    role = by_name(off, "ClusterRole")["mp-modelport"]
    rbac = [r for r in role["rules"] if "rbac.authorization.k8s.io" in r["apiGroups"]]
    assert rbac == GATEWAY_BINDING_RULES + TOKENREVIEW_RULES  # wakes still need theirs
    env = operator_env(
        template("guardModel.endpoint=guards/llama-guard", "guardModel.failOpen=true")
    )
    assert json.loads(env["MODELPORT_GUARD_MODEL"]) == {
        "endpoint": "guards/llama-guard",
        "failOpen": True,
    }
    from modelport.settings import from_env

    settings = from_env({k: v for k, v in env.items() if k in ("MODELPORT_GUARD_MODEL",)})
    assert settings.guard_model is not None
    assert settings.guard_model.url == "http://llama-guard.guards.svc.cluster.local/v1"


def test_custom_models_image_and_tracking_server_reach_the_operator() -> None:
    from modelport.settings import from_env

    env = operator_env(template())
    assert "MODELPORT_MLFLOW_IMAGE" not in env and "MODELPORT_MLFLOW_TRACKING_URI" not in env
    env = operator_env(
        template(
            "inference.mlflowImage=registry.example.com/mlflow:3",
            "mlflow.trackingUri=http://mlflow.mlflow.svc:5000",
        )
    )
    settings = from_env({k: v for k, v in env.items() if "MLFLOW" in k})
    assert settings.mlflow_image == "registry.example.com/mlflow:3"
    assert settings.mlflow_tracking_uri == "http://mlflow.mlflow.svc:5000"


def test_watching_namespaces_without_token_review_needs_no_cluster_wide_rights() -> None:
    docs = template(
        "watchNamespaces={team-a,team-b}", "gatewayAuth.serviceAccountTokens.enabled=false"
    )
    assert not [d for d in docs if d["kind"].startswith("Cluster")]
    assert "MODELPORT_GATEWAY_TOKENREVIEW_BINDING" not in operator_env(docs)
    roles = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "mp-modelport"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    rbac = [r for r in roles[0]["rules"] if "rbac.authorization.k8s.io" in r["apiGroups"]]
    assert rbac == readiness_rules("roles")
    # The gateways' readiness role: a Role in each namespace, not a ClusterRole.
    readiness = [d for d in docs if d["metadata"]["name"] == "mp-modelport-gateway-readiness"]
    assert [(d["kind"], d["metadata"]["namespace"]) for d in readiness] == [
        ("Role", "team-a"),
        ("Role", "team-b"),
    ]
    assert readiness[0]["rules"] == READINESS_ROLE_RULES
    assert operator_env(docs)["MODELPORT_GATEWAY_READINESS_ROLE"] == (
        "Role/mp-modelport-gateway-readiness"
    )
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MODELPORT_NAMESPACES"] == "team-a,team-b"


def test_the_operator_owns_replicas_and_no_hpa_is_made() -> None:
    import json

    docs = template("autoscaling.intervalSeconds=2", "autoscaling.scaleToZeroIdleSeconds=60")
    role = by_name(docs, "ClusterRole")["mp-modelport"]
    apps = [r for r in role["rules"] if r["apiGroups"] == ["apps"]]
    assert {"apiGroups": ["apps"], "resources": ["deployments/scale"],
            "verbs": ["get", "patch", "update"]} in apps  # fmt: skip
    # An older operator's HPAs are pruned; none is created.
    (hpa,) = [r for r in role["rules"] if r["apiGroups"] == ["autoscaling"]]
    assert hpa["verbs"] == ["get", "list", "watch", "delete"]
    value = json.loads(operator_env(docs)["MODELPORT_AUTOSCALING"])
    assert value["intervalSeconds"] == 2 and value["scaleToZeroIdleSeconds"] == 60
    # What the chart renders, the operator accepts.
    from modelport.settings import from_env

    settings = from_env({"MODELPORT_AUTOSCALING": operator_env(docs)["MODELPORT_AUTOSCALING"]})
    assert settings.autoscaling.interval_seconds == 2
    assert settings.autoscaling.scale_to_zero_idle_seconds == 60
    assert settings.autoscaling.max_held_requests == 256


def test_gateway_auth_reaches_the_operator() -> None:
    import json

    assert json.loads(operator_env(template())["MODELPORT_GATEWAY_AUTH"]) == {
        "enabled": True,
        "serviceAccountTokens": {"enabled": True, "audiences": ["modelport"], "cacheSeconds": 10},
        "oidc": None,
    }
    custom = operator_env(
        template(
            "gatewayAuth.enabled=false",
            "gatewayAuth.oidc.issuer=https://login.example.com",
            "gatewayAuth.oidc.audiences={modelport}",
        )
    )
    value = json.loads(custom["MODELPORT_GATEWAY_AUTH"])
    assert value["enabled"] is False
    assert value["oidc"] == {"issuer": "https://login.example.com", "audiences": ["modelport"]}
    # What the chart renders, the operator accepts.
    from modelport.settings import from_env

    settings = from_env({k: v for k, v in custom.items() if k.startswith("MODELPORT_GATEWAY_")})
    assert settings.gateway_auth.oidc is not None
    assert settings.gateway_tokenreview_binding == "mp-modelport-gateways"


def test_the_usage_database_reaches_the_operator() -> None:
    import json

    from modelport.settings import UsageDatabase, from_env

    default = operator_env(template())["MODELPORT_USAGE_DATABASE"]
    assert from_env({"MODELPORT_USAGE_DATABASE": default}).usage_database is None
    custom = operator_env(
        template("usageDatabase.secretName=usage-db", "usageDatabase.retentionDays=30")
    )["MODELPORT_USAGE_DATABASE"]
    assert json.loads(custom) == {"secretName": "usage-db", "secretKey": "dsn", "retentionDays": 30}
    settings = from_env({"MODELPORT_USAGE_DATABASE": custom})
    assert settings.usage_database == UsageDatabase("usage-db", "dsn", 30)


def test_the_operator_may_manage_gateway_service_accounts() -> None:
    role = by_name(template(), "ClusterRole")["mp-modelport"]
    rule = next(r for r in role["rules"] if "serviceaccounts" in r["resources"])
    assert rule["apiGroups"] == [""]
    assert set(rule["verbs"]) == {"get", "list", "watch", "create", "patch", "update", "delete"}


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
        ("gatewayAuth.enabled=maybe", "/gatewayAuth/enabled"),
        ("gatewayAuth.serviceAccountTokens.cacheSeconds=900", "cacheSeconds"),
        ("gatewayAuth.serviceAccountTokens.audience=x", "audience"),
        ("gatewayAuth.oidc.issuer=login.example.com", "/gatewayAuth/oidc"),
        ("usageDatabase.secretName=Usage_DB", "/usageDatabase/secretName"),
        ("usageDatabase.retentionDays=-1", "/usageDatabase/retentionDays"),
        ("mlflow.trackingUri=mlflow.mlflow.svc:5000", "/mlflow/trackingUri"),
        ("mlflow.trackingUri=https://admin:pw@mlflow.example.com", "/mlflow/trackingUri"),
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


def test_rate_limiting_reaches_the_operator() -> None:
    import json

    from modelport.settings import from_env

    default = json.loads(operator_env(template())["MODELPORT_RATE_LIMITING"])
    assert default == {
        "store": {"timeoutSeconds": 0.25},
        "failOpen": False,
        "reserveCompletionTokens": 512,
    }
    assert (
        from_env({"MODELPORT_RATE_LIMITING": json.dumps(default)}).rate_limiting.store_address == ""
    )
    docs = template(
        "rateLimiting.store.address=redis://redis.infra:6379/0",
        "rateLimiting.store.passwordSecret.name=redis-auth",
        "rateLimiting.failOpen=true",
    )
    assert "Service" not in {d["kind"] for d in docs if "ratelimit" in d["metadata"]["name"]}
    settings = from_env(
        {"MODELPORT_RATE_LIMITING": operator_env(docs)["MODELPORT_RATE_LIMITING"]}
    ).rate_limiting
    assert settings.store_address == "redis://redis.infra:6379/0"
    assert settings.password_secret == ("redis-auth", "password")
    assert settings.fail_open is True


def test_the_optional_redis_is_private_and_restricted() -> None:
    import json

    from modelport.settings import from_env

    docs = template("rateLimiting.redis.enabled=true", "watchNamespaces={team-a,team-b}")
    operator = by_name(docs, "Deployment")["mp-modelport"]
    env = {
        e["name"]: e["value"] for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    settings = from_env({"MODELPORT_RATE_LIMITING": env["MODELPORT_RATE_LIMITING"]}).rate_limiting
    assert settings.store_address == "redis://mp-modelport-ratelimit.modelport-system.svc:6379/0"
    assert settings.password_secret == ("mp-modelport-ratelimit", "password")
    # The password Secret where the store runs and where gateways mount it.
    secrets = [
        d
        for d in docs
        if d["kind"] == "Secret" and d["metadata"]["name"] == "mp-modelport-ratelimit"
    ]
    assert sorted(s["metadata"]["namespace"] for s in secrets) == [
        "modelport-system",
        "team-a",
        "team-b",
    ]
    assert len({s["data"]["password"] for s in secrets}) == 1
    redis = by_name(docs, "Deployment")["mp-modelport-ratelimit"]
    pod = redis["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # Never in the environment or on the command line: read from the mounted file.
    assert "env" not in container
    password = secrets[0]["data"]["password"]
    assert password not in json.dumps(redis)
    assert "/etc/redis-auth/password" in " ".join(container["command"])


# --- the REST API (api.enabled) ------------------------------------------------------

API_REVIEW_RULES = [
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
    {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"],
     "verbs": ["create"]},
]  # fmt: skip
API_NAMESPACED_RULES = [
    {"apiGroups": ["serving.modelport.io"], "resources": ["servingendpoints"],
     "verbs": ["get", "list", "create", "update", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
]  # fmt: skip


def api_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    deployment = by_name(docs, "Deployment")["mp-modelport-api"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["api"]
    return {e["name"]: e["value"] for e in container["env"]}


def test_the_rest_api_is_off_by_default() -> None:
    assert not [d for d in template() if "-api" in d["metadata"]["name"]]


def test_the_rest_api_has_exactly_the_rights_it_needs() -> None:
    docs = template("api.enabled=true")
    roles = by_name(docs, "ClusterRole")
    assert roles["mp-modelport-api-reviews"]["rules"] == API_REVIEW_RULES
    assert roles["mp-modelport-api"]["rules"] == API_NAMESPACED_RULES
    for name in ("mp-modelport-api-reviews", "mp-modelport-api"):
        binding = by_name(docs, "ClusterRoleBinding")[name]
        assert binding["roleRef"]["name"] == name
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "mp-modelport-api", "namespace": "modelport-system"}
        ]
    # No impersonation, no secrets, no writes beyond endpoints.
    for rules in (API_REVIEW_RULES, API_NAMESPACED_RULES):
        for rule in rules:
            assert "impersonate" not in rule["verbs"] and "secrets" not in rule["resources"]
    querier = roles["mp-modelport-endpoint-querier"]["rules"]
    assert {"apiGroups": ["serving.modelport.io"], "resources": ["servingendpoints/invocations"],
            "verbs": ["create"]} in querier  # fmt: skip
    assert "mp-modelport-endpoint-viewer" in roles and "mp-modelport-endpoint-editor" in roles
    env = api_env(docs)
    assert env["MODELPORT_API_WORKSPACES"] == ""
    assert env["MODELPORT_API_AUDIENCES"] == "modelport"
    assert "MODELPORT_API_OIDC" not in env
    service = by_name(docs, "Service")["mp-modelport-api"]
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "api"


def test_the_rest_api_in_watched_namespaces_gets_roles_there() -> None:
    docs = template("api.enabled=true", "watchNamespaces={team-a,team-b}")
    roles = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "mp-modelport-api"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert all(r["rules"] == API_NAMESPACED_RULES for r in roles)
    assert "mp-modelport-api" not in by_name(docs, "ClusterRole"), "nothing cluster-wide"
    assert api_env(docs)["MODELPORT_API_WORKSPACES"] == "team-a,team-b"


def test_the_rest_api_takes_the_gateways_oidc_issuer_unless_given_one() -> None:
    import json

    shared = api_env(
        template(
            "api.enabled=true",
            "gatewayAuth.oidc.issuer=https://login.example.com",
            "gatewayAuth.oidc.audiences={modelport}",
        )
    )
    assert json.loads(shared["MODELPORT_API_OIDC"])["issuer"] == "https://login.example.com"
    own = api_env(
        template(
            "api.enabled=true",
            "api.oidc.issuer=https://sso.example.com",
            "api.oidc.audiences={api}",
            "api.oidcUsernamePrefix=oidc:",
        )
    )
    assert json.loads(own["MODELPORT_API_OIDC"])["issuer"] == "https://sso.example.com"
    assert own["MODELPORT_API_OIDC_USERNAME_PREFIX"] == "oidc:"
    # What the chart renders, the server accepts.
    import argparse

    from modelport.restapi.command import add_parsers
    from modelport.restapi.server import Settings

    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers())
    flags = [
        f"--{k.removeprefix('MODELPORT_API_').lower().replace('_', '-')}={v}"
        for k, v in own.items()
    ]
    settings = Settings.from_args(parser.parse_args(["api", *flags]))
    assert settings.oidc is not None and settings.oidc_username_prefix == "oidc:"


def test_the_rest_api_pod_meets_the_restricted_pod_security_standard() -> None:
    deployment = by_name(template("api.enabled=true"), "Deployment")["mp-modelport-api"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]["securityContext"]
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"]["drop"] == ["ALL"]
    assert pod["serviceAccountName"] == "mp-modelport-api"


def test_the_console_is_off_by_default_and_reads_only_when_on() -> None:
    assert not [d for d in template() if "-console" in d["metadata"]["name"]]
    docs = [d for d in template("console.enabled=true") if "-console" in d["metadata"]["name"]]
    assert {d["kind"] for d in docs} == {
        "ServiceAccount", "Deployment", "Service", "ClusterRole", "ClusterRoleBinding",
    }  # fmt: skip
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["console"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    rules = [r for d in docs if d["kind"] == "ClusterRole" for r in d["rules"]]
    for rule in rules:
        resources = set(rule["resources"])
        if resources <= {"tokenreviews", "subjectaccessreviews"}:
            assert rule["verbs"] == ["create"]
        else:
            assert set(rule["verbs"]) <= {"get", "list"}, rule
            assert "secrets" not in resources
    # Watching named namespaces: Roles there, no cluster-wide read.
    scoped = template("console.enabled=true", "watchNamespaces={team-a}")
    roles = [d for d in scoped if "-console" in d["metadata"]["name"] and d["kind"] == "Role"]
    assert [r["metadata"]["namespace"] for r in roles] == ["team-a"]


def test_tracing_and_operator_metrics_reach_the_operator() -> None:
    docs = template("tracing.endpoint=http://otel.monitoring:4318", "gateway.accessLog=true")
    (operator,) = [d for d in docs if d["kind"] == "Deployment"]
    env = {
        e["name"]: e.get("value")
        for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert '"endpoint":"http://otel.monitoring:4318"' in env["MODELPORT_TRACING"]
    assert env["MODELPORT_GATEWAY_ACCESS_LOG"] == "true"
    assert env["MODELPORT_METRICS_PORT"] == "8082"
    plain = next(d for d in template() if d["kind"] == "Deployment")
    names = {e["name"] for e in plain["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "MODELPORT_TRACING" not in names
