"""The table of invalid ServingEndpoints, shared by two tiers.

Each case starts from a sample in manifests/samples/, applies a few edits and
names the field the error must mention. `test_api_models.py` runs it against the
pydantic models and `tests/integration/test_api_admission.py` against the real
apiserver (the CRD's OpenAPI constraints and CEL rules), so the Python rules and
the admission rules cannot drift apart unnoticed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = ROOT / "manifests" / "samples"

_DELETE = object()

# Short paths to the parts most cases edit.
E0 = "spec.servedEntities.0"
E1 = "spec.servedEntities.1"
EM = f"{E0}.externalModel"
OAI = f"{EM}.openaiConfig"
ROUTES = "spec.trafficConfig.routes"
LIMITS = "spec.aiGateway.rateLimits"
AUTH = "spec.aiGateway.auth"


@dataclass(frozen=True)
class Case:
    """An invalid endpoint: `sample` with `edits` applied; errors must name `field`."""

    id: str
    sample: str
    edits: tuple[tuple[str, Any], ...]
    field: str

    def body(self) -> dict[str, Any]:
        """The edited body, a fresh copy."""
        body = load_sample(self.sample)
        for path, value in self.edits:
            _apply(body, path, value)
        return body


def load_sample(name: str) -> dict[str, Any]:
    """A sample by file stem, parsed."""
    data: dict[str, Any] = yaml.safe_load((SAMPLES / f"{name}.yaml").read_text())
    return copy.deepcopy(data)


def sample_names() -> list[str]:
    """Every sample's file stem, sorted."""
    return sorted(p.stem for p in SAMPLES.glob("*.yaml"))


def _apply(body: Any, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = body
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if value is _DELETE:
        del node[key]
    else:
        node[key] = copy.deepcopy(value)


def d(path: str) -> tuple[str, Any]:
    """Edit: delete `path`."""
    return (path, _DELETE)


def s(path: str, value: Any) -> tuple[str, Any]:
    """Edit: set `path` to `value`."""
    return (path, value)


def secret(name: str = "llm-keys", key: str = "k") -> dict[str, Any]:
    return {"secretKeyRef": {"name": name, "key": key}}


def _entity(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "externalModel": {
            "name": "gpt-4o",
            "provider": "openai",
            "task": "llm/v1/chat",
            "openaiConfig": {"openaiApiKey": secret()},
        },
    }


def _many(n: int) -> list[dict[str, Any]]:
    return [_entity(f"e{i}") for i in range(n)]


# A table reads best one case per line or two; the formatter would make it 500 lines.
# fmt: off
CASES: list[Case] = [
    # --- traffic -------------------------------------------------------------------
    Case("traffic-sum-not-100", "mixed-traffic-fallback",
         (s(f"{ROUTES}.1.trafficPercentage", 30),), "trafficPercentage"),
    Case("traffic-over-100-percent", "mixed-traffic-fallback",
         (s(f"{ROUTES}.0.trafficPercentage", 101),), "trafficPercentage"),
    Case("traffic-negative-percent", "mixed-traffic-fallback",
         (s(f"{ROUTES}.0.trafficPercentage", -1),), "trafficPercentage"),
    Case("route-unknown-entity", "mixed-traffic-fallback",
         (s(f"{ROUTES}.1.servedEntityName", "gpt-5"),), "servedEntityName"),
    Case("route-entity-twice", "mixed-traffic-fallback",
         (s(f"{ROUTES}.1.servedEntityName", "llama-8b"),), "servedEntityName"),
    Case("entity-without-route", "mixed-traffic-fallback",
         (s(ROUTES, [{"servedEntityName": "llama-8b", "trafficPercentage": 100}]),),
         "trafficConfig"),
    Case("several-entities-no-traffic-config", "mixed-traffic-fallback",
         (d("spec.trafficConfig"),), "trafficConfig"),
    Case("routes-empty", "openai", (s("spec.trafficConfig", {"routes": []}),), "routes"),
    # --- served entities --------------------------------------------------------------
    Case("entity-name-twice", "embeddings",
         (s(f"{E1}.name", "text-embedding-3-small"),), "servedEntities"),
    Case("no-entities", "openai", (s("spec.servedEntities", []),), "servedEntities"),
    Case("eleven-entities", "openai", (s("spec.servedEntities", _many(11)),),
         "servedEntities"),
    Case("entity-name-with-space", "openai", (s(f"{E0}.name", "gpt 4o"),),
         "servedEntities[0].name"),
    Case("entity-name-too-long", "openai", (s(f"{E0}.name", "a" * 64),),
         "servedEntities[0].name"),
    Case("external-and-entity-name", "openai",
         (s(f"{E0}.entityName", "system.ai.llama"),), "entityName"),
    Case("neither-external-nor-entity-name", "openai", (d(f"{E0}.externalModel"),),
         "externalModel"),
    Case("self-hosted-field-on-external", "openai", (s(f"{E0}.workloadSize", "Small"),),
         "workloadSize"),
    Case("runtime-on-external", "anthropic", (s(f"{E0}.runtime", {"engine": "vllm"}),),
         "runtime"),
    Case("bad-entity-name-uri", "self-hosted-gpu",
         (s(f"{E0}.entityName", "ftp://host/model"),), "entityName"),
    # --- tasks -----------------------------------------------------------------------
    Case("unknown-task", "openai", (s(f"{EM}.task", "llm/v2/chat"),), "task"),
    Case("mixed-tasks-external", "embeddings", (s(f"{EM}.task", "llm/v1/chat"),), "task"),
    Case("mixed-tasks-self-hosted", "embeddings", (s(f"{E1}.task", "llm/v1/chat"),), "task"),
    # --- providers -------------------------------------------------------------------
    Case("unknown-provider", "openai", (s(f"{EM}.provider", "mistral"),), "provider"),
    Case("block-does-not-match-provider", "openai", (s(f"{EM}.provider", "anthropic"),),
         "anthropicConfig"),
    Case("second-config-block", "openai",
         (s(f"{EM}.anthropicConfig", {"anthropicApiKey": secret()}),), "anthropicConfig"),
    Case("openai-missing-key", "openai", (d(f"{OAI}.openaiApiKey"),), "openaiApiKey"),
    Case("plaintext-key-field", "openai", (s(f"{OAI}.openaiApiKeyPlaintext", "x"),),
         "openaiApiKeyPlaintext"),
    Case("credential-as-string", "anthropic",
         (s(f"{EM}.anthropicConfig.anthropicApiKey", "not-a-ref"),), "anthropicApiKey"),
    Case("secret-ref-missing-key", "anthropic",
         (d(f"{EM}.anthropicConfig.anthropicApiKey.secretKeyRef.key"),), "secretKeyRef.key"),
    Case("secret-ref-bad-name", "cohere",
         (s(f"{EM}.cohereConfig.cohereApiKey.secretKeyRef.name", "Bad_Name"),),
         "secretKeyRef.name"),
    Case("openai-api-base-not-url", "openai", (s(f"{OAI}.openaiApiBase", "api.openai.com"),),
         "openaiApiBase"),
    Case("openai-bad-api-type", "openai", (s(f"{OAI}.openaiApiType", "aws"),),
         "openaiApiType"),
    Case("openai-with-entra-tenant", "openai",
         (s(f"{OAI}.microsoftEntraTenantId", "t"),), "microsoftEntraTenantId"),
    Case("azure-missing-api-base", "azure-openai", (d(f"{OAI}.openaiApiBase"),),
         "openaiApiBase"),
    Case("azure-missing-api-version", "azure-openai", (d(f"{OAI}.openaiApiVersion"),),
         "openaiApiVersion"),
    Case("azure-missing-deployment", "azure-openai", (d(f"{OAI}.openaiDeploymentName"),),
         "openaiDeploymentName"),
    Case("azure-missing-key", "azure-openai", (d(f"{OAI}.openaiApiKey"),), "openaiApiKey"),
    Case("azuread-missing-tenant", "azure-openai-entra",
         (d(f"{OAI}.microsoftEntraTenantId"),), "microsoftEntraTenantId"),
    Case("azuread-missing-client-id", "azure-openai-entra",
         (d(f"{OAI}.microsoftEntraClientId"),), "microsoftEntraClientId"),
    Case("azuread-missing-client-secret", "azure-openai-entra",
         (d(f"{OAI}.microsoftEntraClientSecret"),), "microsoftEntraClientSecret"),
    Case("azuread-with-api-key", "azure-openai-entra",
         (s(f"{OAI}.openaiApiKey", secret()),), "openaiApiKey"),
    Case("azuread-missing-deployment", "azure-openai-entra",
         (d(f"{OAI}.openaiDeploymentName"),), "openaiDeploymentName"),
    Case("anthropic-missing-key", "anthropic", (d(f"{EM}.anthropicConfig.anthropicApiKey"),),
         "anthropicApiKey"),
    Case("cohere-missing-config", "cohere", (d(f"{EM}.cohereConfig"),), "cohereConfig"),
    Case("bedrock-missing-region", "amazon-bedrock",
         (d(f"{EM}.amazonBedrockConfig.awsRegion"),), "awsRegion"),
    Case("bedrock-unknown-model-family", "amazon-bedrock",
         (s(f"{EM}.amazonBedrockConfig.bedrockProvider", "meta"),), "bedrockProvider"),
    Case("bedrock-key-id-without-secret", "amazon-bedrock",
         (d(f"{EM}.amazonBedrockConfig.awsSecretAccessKey"),), "awsSecretAccessKey"),
    Case("vertex-missing-project", "google-cloud-vertex-ai",
         (d(f"{EM}.googleCloudVertexAiConfig.projectId"),), "projectId"),
    Case("vertex-missing-private-key", "google-cloud-vertex-ai",
         (d(f"{EM}.googleCloudVertexAiConfig.privateKey"),), "privateKey"),
    Case("ai21labs-missing-key", "ai21labs", (d(f"{EM}.ai21labsConfig.ai21labsApiKey"),),
         "ai21labsApiKey"),
    Case("databricks-missing-token", "databricks-model-serving",
         (d(f"{EM}.databricksModelServingConfig.databricksApiToken"),), "databricksApiToken"),
    Case("databricks-url-not-http", "databricks-model-serving",
         (s(f"{EM}.databricksModelServingConfig.databricksWorkspaceUrl", "example.com"),),
         "databricksWorkspaceUrl"),
    Case("custom-both-auths", "custom",
         (s(f"{EM}.customProviderConfig.apiKeyAuth", {"key": "X-Key", "value": secret()}),),
         "apiKeyAuth"),
    Case("custom-no-auth", "custom", (d(f"{EM}.customProviderConfig.bearerTokenAuth"),),
         "bearerTokenAuth"),
    Case("custom-url-not-http", "custom",
         (s(f"{EM}.customProviderConfig.customProviderUrl", "ftp://llm/v1"),),
         "customProviderUrl"),
    Case("custom-api-key-header-with-space", "custom",
         (d(f"{EM}.customProviderConfig.bearerTokenAuth"),
          s(f"{EM}.customProviderConfig.apiKeyAuth", {"key": "X Key", "value": secret()})),
         "apiKeyAuth.key"),
    # --- self-hosted sizing -------------------------------------------------------------
    Case("workload-size-and-concurrency", "self-hosted-gpu", (s(f"{E0}.workloadSize", "Small"),),
         "workloadSize"),
    Case("unknown-workload-size", "mixed-traffic-fallback", (s(f"{E0}.workloadSize", "Huge"),),
         "workloadSize"),
    Case("lower-case-workload-type", "self-hosted-gpu",
         (s(f"{E0}.workloadType", "gpu-medium"),), "workloadType"),
    Case("min-concurrency-above-max", "self-hosted-gpu",
         (s(f"{E0}.scaleToZeroEnabled", False), s(f"{E0}.minProvisionedConcurrency", 32)),
         "minProvisionedConcurrency"),
    Case("negative-max-concurrency", "self-hosted-gpu",
         (s(f"{E0}.maxProvisionedConcurrency", -4),), "maxProvisionedConcurrency"),
    Case("min-throughput-above-max", "self-hosted-gpu",
         (s(f"{E0}.minProvisionedThroughput", 2000), s(f"{E0}.maxProvisionedThroughput", 1000)),
         "minProvisionedThroughput"),
    Case("scale-to-zero-with-min-concurrency", "self-hosted-gpu",
         (s(f"{E0}.minProvisionedConcurrency", 4),), "minProvisionedConcurrency"),
    Case("env-var-value-and-secret", "self-hosted-gpu",
         (s(f"{E0}.environmentVars.0.secretKeyRef", {"name": "x", "key": "y"}),),
         "environmentVars"),
    Case("env-var-bad-name", "self-hosted-gpu", (s(f"{E0}.environmentVars.0.name", "1BAD"),),
         "environmentVars[0].name"),
    Case("unknown-engine", "self-hosted-gpu", (s(f"{E0}.runtime.engine", "tgi"),), "engine"),
    Case("unknown-toleration-effect", "self-hosted-gpu",
         (s(f"{E0}.runtime.tolerations.0.effect", "Never"),), "effect"),
    # --- AI gateway ------------------------------------------------------------------
    Case("renewal-period-hour", "openai", (s(f"{LIMITS}.0.renewalPeriod", "hour"),),
         "renewalPeriod"),
    Case("rate-limit-without-calls-or-tokens", "openai", (d(f"{LIMITS}.0.calls"),),
         "rateLimits"),
    Case("twenty-one-rate-limits", "openai",
         (s(LIMITS, [{"calls": i + 1, "key": "user"} for i in range(21)]),), "rateLimits"),
    Case("unknown-rate-limit-key", "openai", (s(f"{LIMITS}.0.key", "tenant"),), "key"),
    Case("principal-on-endpoint-limit", "mixed-traffic-fallback",
         (s(f"{LIMITS}.0.principal", "alice"),), "principal"),
    Case("negative-calls", "openai", (s(f"{LIMITS}.0.calls", -1),), "calls"),
    Case("unknown-pii-behavior", "mixed-traffic-fallback",
         (s("spec.aiGateway.guardrails.input.pii.behavior", "REDACT"),), "behavior"),
    Case("postgres-sink-without-dsn", "mixed-traffic-fallback",
         (s("spec.aiGateway.inferenceTableConfig.sink", {"type": "postgres"}),), "postgresDsn"),
    Case("table-prefix-not-a-sql-name", "mixed-traffic-fallback",
         (s("spec.aiGateway.inferenceTableConfig.tableNamePrefix", "Chat Logs"),),
         "tableNamePrefix"),
    Case("sampling-fraction-above-one", "mixed-traffic-fallback",
         (s("spec.aiGateway.inferenceTableConfig.samplingFraction", 1.5),), "samplingFraction"),
    Case("fallback-enabled-not-bool", "openai",
         (s("spec.aiGateway.fallbackConfig", {"enabled": "yes"}),), "enabled"),
    # --- callers (auth) ---------------------------------------------------------------
    Case("api-key-user-and-service-principal", "callers",
         (s(f"{AUTH}.apiKeys.0.servicePrincipal", "nightly"),), "apiKeys[0]"),
    Case("api-key-without-principal", "callers", (d(f"{AUTH}.apiKeys.0.user"),), "apiKeys[0]"),
    Case("api-key-listed-twice", "callers",
         (s(f"{AUTH}.apiKeys.1.secretKeyRef", {"name": "chat-callers", "key": "alice"}),),
         "apiKeys"),
    Case("api-key-plaintext", "callers", (s(f"{AUTH}.apiKeys.0.value", "sk-123"),),
         "apiKeys[0].value"),
    Case("api-key-secret-name-invalid", "callers",
         (s(f"{AUTH}.apiKeys.0.secretKeyRef.name", "Chat_Callers"),), "secretKeyRef.name"),
    Case("a-hundred-and-one-api-keys", "callers",
         (s(f"{AUTH}.apiKeys", [{"secretKeyRef": {"name": "k", "key": f"k{i}"}, "user": "u"}
                                for i in range(101)]),), "apiKeys"),
    Case("auth-disabled-with-api-keys", "callers", (s(f"{AUTH}.enabled", False),),
         "auth.enabled"),
    Case("auth-enabled-not-bool", "openai", (s(f"{AUTH}", {"enabled": "yes"}),), "enabled"),
    Case("allow-service-account-without-namespace", "callers",
         (s(f"{AUTH}.allow.serviceAccounts.0", "chat-client"),), "serviceAccounts"),
    Case("allow-service-accounts-of-every-namespace", "callers",
         (s(f"{AUTH}.allow.serviceAccounts.0", "*/*"),), "serviceAccounts"),
    Case("oidc-issuer-not-a-url", "callers",
         (s(f"{AUTH}.oidc", {"issuer": "login.example.com", "audiences": ["modelport"]}),),
         "issuer"),
    Case("oidc-without-audiences", "callers",
         (s(f"{AUTH}.oidc", {"issuer": "https://login.example.com"}),), "audiences"),
    Case("service-account-audiences-empty", "callers",
         (s(f"{AUTH}.serviceAccountTokens", {"audiences": []}),), "audiences"),
    # --- top level -------------------------------------------------------------------
    Case("no-spec", "openai", (d("spec"),), "spec"),
]
# fmt: on
