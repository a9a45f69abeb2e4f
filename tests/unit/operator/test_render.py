"""Rendering: endpoint + settings -> the exact desired children (pure, deterministic)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelport import gatewayconfig as gc
from modelport.render import RenderError, render
from modelport.render.inference import replica_bounds
from modelport.render.names import CONFIG_HASH_ANNOTATION
from modelport.settings import Settings, from_env
from tests.unit.operator.helpers import SAMPLES, endpoint, external, sample, self_hosted

SETTINGS = from_env({})
ALL_SAMPLES = sorted(p.stem for p in SAMPLES.glob("*.yaml"))


def _by_key(children: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["kind"], c["metadata"]["name"]): c for c in children}


@pytest.mark.parametrize(
    ("sample_name", "entities", "wakes"),
    [
        ("openai", [], False),
        ("anthropic", [], False),
        ("embeddings", ["bge-large"], False),
        ("mixed-traffic-fallback", ["llama-8b"], False),
        ("self-hosted-gpu", ["llama-8b"], True),
        ("custom-model", ["sklearn", "xgboost"], False),
    ],
)
def test_children_of_samples(sample_name: str, entities: list[str], wakes: bool) -> None:
    ep = sample(sample_name)
    name = ep.metadata.name
    keys = [(c["kind"], c["metadata"]["name"]) for c in render(ep, SETTINGS).children]
    expected = [
        ("ConfigMap", f"{name}-gateway"),
        # Callers authenticate by default, with ServiceAccount tokens: the gateway needs
        # an identity of its own for TokenReview, created before the pods name it.
        ("ServiceAccount", f"{name}-gateway"),
    ]
    if wakes:
        # scaleToZeroEnabled: the gateway may wake the entity (its scale subresource).
        expected += [("Role", f"{name}-gateway-scale"), ("RoleBinding", f"{name}-gateway-scale")]
    expected += [
        ("Service", name),
        ("Deployment", f"{name}-gateway"),
    ]
    for entity in entities:
        expected += [("Service", f"{name}-{entity}"), ("Deployment", f"{name}-{entity}")]
    # No HPA: the operator's autoscaler owns every Deployment's replicas.
    assert keys == expected


@pytest.mark.parametrize("sample_name", ALL_SAMPLES)
def test_every_sample_renders_deterministically_with_labels_and_owner(sample_name: str) -> None:
    ep = sample(sample_name)
    first, second = render(ep, SETTINGS), render(ep, SETTINGS)
    assert first.children == second.children
    for child in first.children:
        meta = child["metadata"]
        assert meta["namespace"] == "team-a"
        assert len(meta["name"]) <= 63
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "modelport"
        assert meta["labels"]["serving.modelport.io/endpoint"] == ep.metadata.name
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "serving.modelport.io/v1alpha1",
                "kind": "ServingEndpoint",
                "name": ep.metadata.name,
                "uid": "uid-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    # The config file is valid for the gateway and holds paths, not values.
    config = _by_key(first.children)[("ConfigMap", f"{ep.metadata.name}-gateway")]
    parsed = gc.loads(config["data"]["gateway.json"])
    assert parsed.endpoint_name == ep.metadata.name


def test_gateway_deployment() -> None:
    ep = endpoint(
        external("gpt", "llm-keys", "openai"),
        external("b", "llm-keys", "other"),
        external("c", "more", "k"),
        weights=[50, 25, 25],
    )
    rendered = render(ep, SETTINGS)
    children = _by_key(rendered.children)
    deployment = children[("Deployment", "chat-gateway")]
    template = deployment["spec"]["template"]
    pod = template["spec"]
    (container,) = pod["containers"]

    assert "replicas" not in deployment["spec"]  # the HPA owns it
    assert template["metadata"]["annotations"][CONFIG_HASH_ANNOTATION] == rendered.config_hash
    assert container["command"] == [
        "modelport",
        "gateway",
        "--config",
        "/etc/modelport/config",
        "--secrets",
        "/var/run/modelport/secrets",
    ]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert "env" not in container and "envFrom" not in container
    # Its own ServiceAccount's token, for TokenReview (auth is on by default).
    assert pod["serviceAccountName"] == "chat-gateway"
    assert pod["automountServiceAccountToken"] is True
    # Restricted Pod Security.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    # Each Secret key as a file <secret>/<key> of one projected volume, 0400, read-only.
    volume = next(v for v in pod["volumes"] if v["name"] == "secrets")
    assert volume["projected"]["defaultMode"] == 0o400
    assert volume["projected"]["sources"] == [
        {
            "secret": {
                "name": "llm-keys",
                "optional": True,
                "items": [
                    {"key": "openai", "path": "llm-keys/openai"},
                    {"key": "other", "path": "llm-keys/other"},
                ],
            }
        },
        {"secret": {"name": "more", "optional": True, "items": [{"key": "k", "path": "more/k"}]}},
    ]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "secrets")
    assert mount["readOnly"] is True
    config = json.loads(children[("ConfigMap", "chat-gateway")]["data"]["gateway.json"])
    assert [e["credentials"] for e in config["entities"]] == [
        {"apiKey": "llm-keys/openai"},
        {"apiKey": "llm-keys/other"},
        {"apiKey": "more/k"},
    ]

    service = children[("Service", "chat")]
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert "replicas" not in deployment["spec"]  # the autoscaler's, never applied


def test_config_change_changes_the_pod_template_hash() -> None:
    a = render(endpoint(external("a"), external("b"), weights=[80, 20]), SETTINGS)
    b = render(endpoint(external("a"), external("b"), weights=[70, 30]), SETTINGS)
    assert a.config_hash != b.config_hash
    assert a.children[0]["data"] != b.children[0]["data"]


@pytest.mark.parametrize(
    ("entity", "gpus", "cpu", "memory"),
    [
        (self_hosted(), "1", "4", "16Gi"),  # default GPU_SMALL
        (self_hosted(workloadType="GPU_MEDIUM"), "1", "8", "32Gi"),
        (self_hosted(workloadType="GPU_LARGE"), "1", "10", "120Gi"),
        (self_hosted(workloadType="GPU_LARGE_2"), "2", "20", "240Gi"),
        (self_hosted(workloadType="GPU_MEDIUM_4"), "4", "32", "128Gi"),
        (self_hosted(workloadType="MULTIGPU_MEDIUM"), "4", "32", "128Gi"),
        (
            self_hosted(runtime={"resources": {"limits": {"nvidia.com/gpu": 2, "memory": "40Gi"}}}),
            "2",
            "4",
            "40Gi",
        ),
        (self_hosted(workloadType="CPU"), None, "4", "16Gi"),
    ],
)
def test_gpu_profiles(entity: dict[str, Any], gpus: str | None, cpu: str, memory: str) -> None:
    children = _by_key(render(endpoint(entity), SETTINGS).children)
    pod = children[("Deployment", "chat-llama")]["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["requests"].get("nvidia.com/gpu") == gpus
    assert resources["limits"].get("nvidia.com/gpu") == gpus
    assert resources["requests"]["cpu"] == cpu
    assert resources["limits"]["memory"] == memory
    if gpus:
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
            "tolerations"
        ]
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    else:
        assert "tolerations" not in pod


def test_inference_pod() -> None:
    ep = endpoint(
        self_hosted(
            hfTokenSecretRef={"name": "hf", "key": "token"},
            environmentVars=[{"name": "A", "value": "1"}],
            modelCache={"claimName": "cache"},
        )
    )
    children = _by_key(render(ep, SETTINGS).children)
    container = children[("Deployment", "chat-llama")]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct"]
    assert container["args"][:2] == ["--served-model-name", "llama"]
    env = {e["name"]: e for e in container["env"]}
    # The token is a Secret-backed file that huggingface_hub reads, never a variable.
    assert "HF_TOKEN" not in env
    assert env["HF_TOKEN_PATH"]["value"] == "/var/run/secrets/modelport/hf/token"
    pod = children[("Deployment", "chat-llama")]["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "hf-token")
    assert volume["secret"]["secretName"] == "hf"
    assert volume["secret"]["items"] == [{"key": "token", "path": "token"}]
    assert env["A"]["value"] == "1"
    assert env["HF_HOME"]["value"] == "/cache"
    service = children[("Service", "chat-llama")]
    assert service["spec"]["ports"][0]["port"] == 8000
    config = json.loads(children[("ConfigMap", "chat-gateway")]["data"]["gateway.json"])
    assert config["entities"][0]["baseUrl"] == "http://chat-llama.team-a.svc.cluster.local:8000/v1"
    assert config["entities"][0]["provider"] == "self-hosted"


def test_unknown_workload_type_names_the_field_and_the_choices() -> None:
    with pytest.raises(RenderError) as err:
        render(endpoint(self_hosted(workloadType="GPU_HUGE")), SETTINGS)
    assert "spec.servedEntities[0].workloadType 'GPU_HUGE'" in str(err.value)
    assert "GPU_SMALL" in str(err.value)


def test_admin_profiles_replace_the_defaults() -> None:
    settings = from_env(
        {
            "MODELPORT_GPU_PROFILES": json.dumps(
                {
                    "GPU_SMALL": {
                        "gpus": 1,
                        "cpu": "2",
                        "memory": "8Gi",
                        "nodeSelector": {"gpu": "l4"},
                    }
                }
            )
        }
    )
    pod = _by_key(render(endpoint(self_hosted()), settings).children)[("Deployment", "chat-llama")][
        "spec"
    ]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "l4"}
    assert pod["containers"][0]["resources"]["requests"]["memory"] == "8Gi"


@pytest.mark.parametrize(
    ("extra", "bounds"),
    [
        ({}, (1, 1)),
        ({"workloadSize": "Small"}, (1, 1)),
        ({"workloadSize": "Medium"}, (1, 4)),
        ({"workloadSize": "Large"}, (1, 16)),
        ({"minProvisionedConcurrency": 8, "maxProvisionedConcurrency": 16}, (2, 4)),
        (
            {
                "minProvisionedConcurrency": 0,
                "maxProvisionedConcurrency": 16,
                "scaleToZeroEnabled": True,
            },
            (0, 4),
        ),
        ({"scaleToZeroEnabled": True}, (0, 1)),
        ({"scaleToZeroEnabled": False, "workloadSize": "Medium"}, (1, 4)),
    ],
)
def test_replica_bounds(extra: dict[str, Any], bounds: tuple[int, int]) -> None:
    ep = endpoint(self_hosted(**extra))
    assert replica_bounds(ep.spec.served_entities[0]) == bounds


@pytest.mark.parametrize(
    ("sample_name", "expected"),
    [
        ("openai", {"provider": "openai", "credentials": {"apiKey": "llm-keys/openai"}}),
        (
            "azure-openai",
            {
                "provider": "openai",
                "baseUrl": "https://example-resource.openai.azure.com",
                "openai": {
                    "apiType": "azure",
                    "apiVersion": "2024-06-01",
                    "deploymentName": "gpt-4o-prod",
                },
                "credentials": {"apiKey": "azure-openai/api-key"},
            },
        ),
        (
            "azure-openai-entra",
            {
                "openai": {
                    "apiType": "azuread",
                    "apiVersion": "2024-06-01",
                    "deploymentName": "gpt-4o-prod",
                    "tenantId": "00000000-0000-0000-0000-000000000000",
                    "clientId": "11111111-1111-1111-1111-111111111111",
                },
                "credentials": {"clientSecret": "azure-entra/client-secret"},
            },
        ),
        (
            "amazon-bedrock",
            {
                "bedrock": {"region": "us-east-1", "bedrockProvider": "anthropic"},
                "credentials": {
                    "awsAccessKeyId": "aws-bedrock/access-key-id",
                    "awsSecretAccessKey": "aws-bedrock/secret-access-key",
                },
            },
        ),
        (
            "google-cloud-vertex-ai",
            {
                "vertex": {"projectId": "example-project", "region": "us-central1"},
                "credentials": {"privateKey": "gcp-vertex/service-account.json"},
            },
        ),
        (
            "custom",
            {
                "baseUrl": "http://llm-proxy.ml-platform.svc:8000/v1",
                "custom": {},
                "credentials": {"apiKey": "llm-proxy/token"},
            },
        ),
        (
            "databricks-model-serving",
            {
                "baseUrl": "https://example.cloud.databricks.com",
                "credentials": {"apiKey": "databricks/token"},
            },
        ),
        ("ai21labs", {"provider": "ai21labs", "credentials": {"apiKey": "llm-keys/ai21labs"}}),
        ("cohere", {"provider": "cohere", "credentials": {"apiKey": "llm-keys/cohere"}}),
    ],
)
def test_provider_settings_in_the_gateway_config(
    sample_name: str, expected: dict[str, Any]
) -> None:
    config = json.loads(render(sample(sample_name), SETTINGS).children[0]["data"]["gateway.json"])
    entity = config["entities"][0]
    assert {k: entity.get(k) for k in expected} == expected


def test_routes_and_gateway_features() -> None:
    config = json.loads(
        render(sample("mixed-traffic-fallback"), SETTINGS).children[0]["data"]["gateway.json"]
    )
    assert config["routes"] == [
        {"servedEntityName": "llama-8b", "trafficPercentage": 80},
        {"servedEntityName": "gpt-4o", "trafficPercentage": 20},
    ]
    assert config["aiGateway"]["fallbackEnabled"] is True
    assert config["aiGateway"]["usageTrackingEnabled"] is True
    assert len(config["aiGateway"]["rateLimits"]) == 2


def test_rate_limiting_follows_the_clusters_store() -> None:
    store = from_env(
        {
            "MODELPORT_RATE_LIMITING": json.dumps(
                {
                    "store": {
                        "address": "redis://rl.modelport-system:6379/0",
                        "passwordSecret": {"name": "rl-auth", "key": "password"},
                        "timeoutSeconds": 0.5,
                    },
                    "failOpen": True,
                    "reserveCompletionTokens": 256,
                }
            )
        }
    )
    limited = sample("mixed-traffic-fallback")
    rendered = render(limited, store)
    config = json.loads(rendered.children[0]["data"]["gateway.json"])
    assert config["aiGateway"]["rateLimiting"] == {
        "store": {
            "address": "redis://rl.modelport-system:6379/0",
            "passwordFile": "rl-auth/password",
            "keyPrefix": f"modelport:{{{limited.metadata.namespace}/chat}}:",
            "timeoutSeconds": 0.5,
        },
        "failOpen": True,
        "reserveCompletionTokens": 256,
    }
    assert rendered.rate_limit_warning is None
    assert ("rl-auth", "password") in {(r.name, r.key) for r in rendered.secret_refs}
    # Without a store: counted per process, and the status will say it multiplies.
    alone = render(limited, SETTINGS)
    config = json.loads(alone.children[0]["data"]["gateway.json"])
    assert "store" not in config["aiGateway"]["rateLimiting"]
    assert alone.rate_limit_warning is not None and "5 times" in alone.rate_limit_warning
    one = from_env({"MODELPORT_GATEWAY_MAX_REPLICAS": "1"})
    assert render(limited, one).rate_limit_warning is None
    # An endpoint without limits is untouched by the setting (no roll when it changes).
    plain = sample("embeddings")
    assert render(plain, store).config_hash == render(plain, SETTINGS).config_hash
    assert not any(r.name == "rl-auth" for r in render(plain, store).secret_refs)


def test_custom_api_key_header() -> None:
    body = {
        "name": "x",
        "externalModel": {
            "name": "m",
            "provider": "custom",
            "task": "llm/v1/chat",
            "customProviderConfig": {
                "customProviderUrl": "http://h/v1",
                "apiKeyAuth": {
                    "key": "X-Api-Key",
                    "value": {"secretKeyRef": {"name": "s", "key": "k"}},
                },
            },
        },
    }
    config = json.loads(render(endpoint(body), SETTINGS).children[0]["data"]["gateway.json"])
    assert config["entities"][0]["custom"] == {"apiKeyHeader": "X-Api-Key"}
    assert config["entities"][0]["credentials"] == {"apiKey": "s/k"}


def test_settings_flow_into_the_pods() -> None:
    settings = Settings(
        gateway_image="reg/gw:1",
        vllm_image="reg/vllm:2",
        gpu_profiles=SETTINGS.gpu_profiles,
        progress_deadline_seconds=42,
    )
    children = _by_key(
        render(endpoint(external("a"), self_hosted(), weights=[50, 50]), settings).children
    )
    gateway = children[("Deployment", "chat-gateway")]["spec"]
    assert gateway["template"]["spec"]["containers"][0]["image"] == "reg/gw:1"
    assert gateway["progressDeadlineSeconds"] == 42
    llama = children[("Deployment", "chat-llama")]["spec"]["template"]["spec"]
    assert llama["containers"][0]["image"] == "reg/vllm:2"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        # Nothing set: no placement keys, today's resources.
        (
            {},
            {
                "nodeSelector": None,
                "tolerations": None,
                "resources": {
                    "requests": {"cpu": "100m", "memory": "128Mi"},
                    "limits": {"memory": "512Mi"},
                },
            },
        ),
        (
            {
                "MODELPORT_GATEWAY_NODE_SELECTOR": '{"modelport.io/node-kind": "real"}',
                "MODELPORT_GATEWAY_TOLERATIONS": (
                    '[{"key": "modelport.io/real-node", "operator": "Exists",'
                    ' "effect": "NoSchedule"}]'
                ),
                "MODELPORT_GATEWAY_RESOURCES": (
                    '{"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"memory": "256Mi"}}'
                ),
            },
            {
                "nodeSelector": {"modelport.io/node-kind": "real"},
                "tolerations": [
                    {"key": "modelport.io/real-node", "operator": "Exists", "effect": "NoSchedule"}
                ],
                "resources": {
                    "requests": {"cpu": "50m", "memory": "96Mi"},
                    "limits": {"memory": "256Mi"},
                },
            },
        ),
        (
            {"MODELPORT_GATEWAY_RESOURCES": '{"requests": {"cpu": "1"}}'},
            {"nodeSelector": None, "tolerations": None, "resources": {"requests": {"cpu": "1"}}},
        ),
    ],
)
def test_gateway_placement_and_resources_from_settings(
    env: dict[str, str], expected: dict[str, Any]
) -> None:
    settings = from_env(env)
    children = _by_key(
        render(endpoint(external("a"), self_hosted(), weights=[50, 50]), settings).children
    )
    pod = children[("Deployment", "chat-gateway")]["spec"]["template"]["spec"]
    assert pod.get("nodeSelector") == expected["nodeSelector"]
    assert pod.get("tolerations") == expected["tolerations"]
    assert pod["containers"][0]["resources"] == expected["resources"]
    # Only the gateway: inference pods keep their GPU profile's placement.
    llama = children[("Deployment", "chat-llama")]["spec"]["template"]["spec"]
    assert llama["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    # Rendering twice gives the same manifests (no shared mutable state leaks).
    again = _by_key(
        render(endpoint(external("a"), self_hosted(), weights=[50, 50]), settings).children
    )
    assert again[("Deployment", "chat-gateway")] == children[("Deployment", "chat-gateway")]
