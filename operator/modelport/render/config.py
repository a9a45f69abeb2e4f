"""The gateway's config file, rendered from an endpoint: entities, routes, features.

Credentials (provider keys, callers' API keys, database connection strings) become file paths
(`<secretName>/<key>` under the gateway's --secrets directory); the values themselves
are never read here. `secret_refs` lists every Secret key an endpoint needs, with the
field that names it, so that the pod spec can mount exactly those keys and status can
say which one is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from modelport import gatewayconfig as gc
from modelport.api import ServingEndpoint
from modelport.api.aigateway import GuardrailParameters
from modelport.api.entities import ServedEntity
from modelport.api.meta import SecretKeySelector, SecretValue
from modelport.api.providers import PROVIDER_CONFIG_FIELDS, ExternalModel
from modelport.render.auth import auth_config
from modelport.render.names import entity_name
from modelport.render.tables import inference_table, table_secrets, usage_table
from modelport.runtimes.catalog import (
    SOURCE_SCHEMES,
    SYSTEM_PREFIX,
    Catalog,
    CatalogEntry,
    CatalogError,
)
from modelport.settings import (
    GatewayAuthDefaults,
    GuardModelSetting,
    RateLimitingDefaults,
    UsageDatabase,
)

INFERENCE_PORT = 8000
DEFAULT_TASK = gc.Task.CHAT
GUARD_TOKEN_PATH = "modelport-guard/token"  # noqa: S105 - a file path under --secrets
"""Where the gateway's token for a guard ServingEndpoint is projected (in the secrets
volume, so the gateway re-reads it when the kubelet rotates it)."""


class RenderError(ValueError):
    """The endpoint cannot be rendered; the message names the field and the fix.

    `entity` is the served entity it is about (None: the endpoint as a whole), so that
    status can fail that entity and no other without reading the message.
    """

    def __init__(self, message: str, entity: str | None = None) -> None:
        super().__init__(message)
        self.entity = entity

    def about(self, entity: str) -> RenderError:
        """This error, said of `entity` unless it already names one."""
        if self.entity is None:
            self.entity = entity
        return self


@dataclass(frozen=True, order=True)
class SecretRef:
    """One Secret key the endpoint refers to.

    `field` is where in the spec it is named (for messages); `entity` is the served
    entity that needs it, or "" for the endpoint as a whole (callers' API keys, the rate
    limit store's password); `mounted` is True for the keys the gateway reads as files,
    False for those the inference pods get as environment variables; `consequence` says
    what an endpoint-wide Secret's absence does (for status).
    """

    name: str
    key: str
    field: str
    entity: str
    mounted: bool = True
    consequence: str = ""


API_KEY_MISSING = "until then the gateway refuses this API key"
UNREACHABLE_STORE = (
    "until then the gateway cannot reach the rate limit store: it refuses requests "
    "under a limit with 503 (or admits them uncounted with failOpen)"
)
STORE_LOGIN_FIELD = "MODELPORT_RATE_LIMITING.store.passwordSecret (Helm: rateLimiting)"
NO_ROWS_WRITTEN = (
    "until then the gateway serves requests but writes no usage or payload rows (it keeps "
    "them in memory up to a bound, then drops and counts them)"
)


def render_gateway_config(
    endpoint: ServingEndpoint,
    catalog: Catalog | None = None,
    auth: GatewayAuthDefaults | None = None,
    rate_limiting: RateLimitingDefaults | None = None,
    *,
    guard: GuardModelSetting | None = None,
    readiness: bool = False,
    database: UsageDatabase | None = None,
    max_held_requests: int | None = None,
    tracing: gc.Tracing | None = None,
    access_log: bool = False,
) -> gc.GatewayConfig:
    """The `GatewayConfig` of `endpoint` (raises `RenderError` when it is not valid);
    `catalog` gives a self-hosted catalog model its task when the entity names none,
    `auth` holds the cluster's defaults for who may call (default: the built-in ones),
    `rate_limiting` how limits are enforced (default: in each gateway process), `guard`
    the cluster's guard model for safety checks, `readiness` whether the gateway may
    watch its self-hosted entities' EndpointSlices (see `needs_readiness`),
    `database` the cluster's usage database (default: none), `max_held_requests` how
    many requests the gateway holds per entity that scales to zero (default: the
    gateway's), `tracing` the collector the gateway sends its spans to, and `access_log`
    whether it logs each request."""
    spec = endpoint.spec
    namespace = endpoint.metadata.namespace or "default"
    entities = [
        _entity_config(endpoint.metadata.name, namespace, e, spec.task, catalog)
        for e in spec.served_entities
    ]
    if len({e.task for e in entities}) > 1:
        tasks = ", ".join(f"{e.name}: {e.task.value}" for e in entities)
        raise RenderError(
            f"spec.servedEntities serve different tasks ({tasks}); an endpoint serves one "
            "task: split them into separate endpoints (a custom model, ml/v1/predict, cannot "
            "share an endpoint with an LLM)"
        )
    ai = spec.ai_gateway
    rate_limits = [
        gc.RateLimit(
            calls=r.calls,
            tokens=r.tokens,
            key=r.key,
            principal=r.principal,
            renewalPeriod=r.renewal_period,
        )
        for r in (ai.rate_limits or [] if ai else [])
    ]
    try:
        return gc.GatewayConfig(
            endpointName=endpoint.metadata.name,
            endpointNamespace=namespace,
            entities=entities,
            routes=[
                gc.Route(
                    servedEntityName=r.served_entity_name, trafficPercentage=r.traffic_percentage
                )
                for r in spec.routes()
            ],
            aiGateway=gc.AiGatewayConfig(
                fallbackEnabled=bool(ai and ai.fallback_config and ai.fallback_config.enabled),
                usageTrackingEnabled=bool(
                    ai and ai.usage_tracking_config and ai.usage_tracking_config.enabled
                ),
                usageTable=usage_table(endpoint, database),
                inferenceTable=inference_table(endpoint, database),
                rateLimits=rate_limits,
                rateLimiting=_rate_limiting(
                    endpoint, rate_limiting or RateLimitingDefaults(), bool(rate_limits)
                ),
                auth=auth_config(endpoint, auth or GatewayAuthDefaults()),
                guardrails=_guardrails(endpoint, guard),
            ),
            readiness=_readiness(endpoint, namespace) if readiness else None,
            scaleToZero=_scale_to_zero(endpoint, namespace, max_held_requests),
            tracing=tracing,
            accessLog=access_log,
        )
    except ValidationError as exc:
        raise RenderError(f"spec cannot be served by the gateway: {_describe(exc)}") from None


def needs_readiness(endpoint: ServingEndpoint) -> bool:
    """Whether the gateway needs to know which self-hosted entities have a ready pod:
    fallback could skip one (fallback is on, and there is a self-hosted entity and another
    entity to go to), or it holds requests for one that scales to zero until a pod is
    ready."""
    spec = endpoint.spec
    ai = spec.ai_gateway
    fallback = bool(ai and ai.fallback_config and ai.fallback_config.enabled)
    entities = spec.served_entities
    skips = fallback and len(entities) > 1 and any(e.is_self_hosted for e in entities)
    return skips or bool(wakes(endpoint))


def wakes(endpoint: ServingEndpoint) -> dict[str, str]:
    """The entities that scale to zero (which the gateway wakes), and their Deployments."""
    name = endpoint.metadata.name
    return {
        e.name: entity_name(name, e.name)
        for e in endpoint.spec.served_entities
        if e.is_self_hosted and e.scale_to_zero_enabled
    }


def uses_guard(endpoint: ServingEndpoint) -> bool:
    """Whether a guardrail of the endpoint asks the guard model (``safety``)."""
    ai = endpoint.spec.ai_gateway
    g = ai.guardrails if ai else None
    return bool(g and ((g.input and g.input.safety) or (g.output and g.output.safety)))


def _guardrails(endpoint: ServingEndpoint, guard: GuardModelSetting | None) -> gc.GuardrailsConfig:
    ai = endpoint.spec.ai_gateway
    g = ai.guardrails if ai else None
    if g is None:
        return gc.GuardrailsConfig()
    model = None
    if uses_guard(endpoint):
        if guard is None:
            raise RenderError(
                "spec.aiGateway.guardrails: safety is on but this cluster has no guard model; "
                "set the chart value guardModel (MODELPORT_GUARD_MODEL) or turn safety off"
            )
        model = gc.GuardModel(
            url=guard.url,
            model=guard.model,
            tokenPath=GUARD_TOKEN_PATH if guard.endpoint else None,
            failOpen=guard.fail_open,
            timeoutSeconds=guard.timeout_seconds,
        )
    return gc.GuardrailsConfig(input=_checks(g.input), output=_checks(g.output), guard=model)


def _checks(params: GuardrailParameters | None) -> gc.GuardrailChecks:
    if params is None:
        return gc.GuardrailChecks()
    return gc.GuardrailChecks(
        safety=bool(params.safety),
        pii=params.pii.behavior if params.pii else "NONE",
        invalidKeywords=list(params.invalid_keywords or []),
        validTopics=list(params.valid_topics or []),
    )


def _readiness(endpoint: ServingEndpoint, namespace: str) -> gc.Readiness:
    name = endpoint.metadata.name
    services = {
        e.name: entity_name(name, e.name) for e in endpoint.spec.served_entities if e.is_self_hosted
    }
    return gc.Readiness(namespace=namespace, services=services)


def _scale_to_zero(
    endpoint: ServingEndpoint, namespace: str, max_held: int | None
) -> gc.ScaleToZero | None:
    deployments = wakes(endpoint)
    if not deployments:
        return None
    if max_held is None:
        return gc.ScaleToZero(namespace=namespace, deployments=deployments)
    return gc.ScaleToZero(namespace=namespace, deployments=deployments, maxHeldRequests=max_held)


def _rate_limiting(
    endpoint: ServingEndpoint, defaults: RateLimitingDefaults, limited: bool
) -> gc.RateLimiting:
    """The cluster's way of enforcing limits; the default section for an endpoint without
    limits, so that the cluster's setting never changes (and rolls) its gateway."""
    if not limited:
        return gc.RateLimiting()
    store = None
    if defaults.store_address:
        secret = defaults.password_secret
        store = gc.RateLimitStore(
            address=defaults.store_address,
            passwordFile=gc.secret_file_path(*secret) if secret else None,
            username=defaults.username,
            # One shared server: the namespace keeps namesakes' counters apart; the braces
            # are a hash tag (one slot per endpoint, should the server be a cluster proxy).
            keyPrefix=f"modelport:{{{endpoint.metadata.namespace or 'default'}/"
            f"{endpoint.metadata.name}}}:",
            timeoutSeconds=defaults.timeout_seconds,
        )
    return gc.RateLimiting(
        store=store,
        failOpen=defaults.fail_open,
        reserveCompletionTokens=defaults.reserve_completion_tokens,
    )


def rate_limits_per_replica(
    endpoint: ServingEndpoint, defaults: RateLimitingDefaults, max_replicas: int
) -> str | None:
    """Why the endpoint's limits cannot hold as written (a status message), or None: each
    replica counts on its own when no store is shared and more than one may run."""
    ai = endpoint.spec.ai_gateway
    if not (ai and ai.rate_limits) or defaults.store_address or max_replicas <= 1:
        return None
    return (
        "spec.aiGateway.rateLimits are counted by each gateway replica on its own: no shared "
        f"rate limit store is configured and the gateway may run up to {max_replicas} "
        f"replicas, so a caller may get up to {max_replicas} times each limit; configure the "
        "store (Helm: rateLimiting.store, MODELPORT_RATE_LIMITING) or set the gateway's "
        "maximum replicas to 1 (gateway.maxReplicas)"
    )


def secret_refs(
    endpoint: ServingEndpoint,
    rate_limiting: RateLimitingDefaults | None = None,
    database: UsageDatabase | None = None,
) -> list[SecretRef]:
    """Every Secret key the endpoint refers to, sorted, without duplicates; with the
    cluster's `rate_limiting`, the store's password too when the endpoint has limits;
    with the cluster's usage `database`, its connection string when the endpoint writes
    rows there."""
    refs: set[SecretRef] = set()
    for i, entity in enumerate(endpoint.spec.served_entities):
        where = f"spec.servedEntities[{i}]"
        if entity.external_model is not None:
            for path, value in _credentials(entity.external_model):
                ref = value.secret_key_ref
                refs.add(SecretRef(ref.name, ref.key, f"{where}.externalModel.{path}", entity.name))
        if entity.hf_token_secret_ref is not None:
            ref = entity.hf_token_secret_ref
            refs.add(SecretRef(ref.name, ref.key, f"{where}.hfTokenSecretRef", entity.name, False))
        for j, var in enumerate(entity.environment_vars or []):
            if var.secret_key_ref is not None:
                ref = var.secret_key_ref
                field = f"{where}.environmentVars[{j}].secretKeyRef"
                refs.add(SecretRef(ref.name, ref.key, field, entity.name, False))
    ai = endpoint.spec.ai_gateway
    for i, api_key in enumerate((ai.auth.api_keys if ai and ai.auth else None) or []):
        ref = api_key.secret_key_ref
        field = f"spec.aiGateway.auth.apiKeys[{i}].secretKeyRef"
        refs.add(SecretRef(ref.name, ref.key, field, "", consequence=API_KEY_MISSING))
    password = rate_limiting.password_secret if rate_limiting else None
    if password and rate_limiting and rate_limiting.store_address and ai and ai.rate_limits:
        refs.add(SecretRef(*password, STORE_LOGIN_FIELD, "", consequence=UNREACHABLE_STORE))
    for name, key, field in table_secrets(endpoint, database):
        refs.add(SecretRef(name, key, field, "", consequence=NO_ROWS_WRITTEN))
    return sorted(refs)


def _credentials(model: ExternalModel) -> list[tuple[str, SecretValue]]:
    """(camelCase path under externalModel, value) of each credential of `model`."""
    block_alias = PROVIDER_CONFIG_FIELDS[model.provider]
    found: list[tuple[str, SecretValue]] = []

    def walk(path: str, obj: object) -> None:
        if isinstance(obj, SecretValue):
            found.append((path, obj))
            return
        fields = getattr(type(obj), "model_fields", None)
        if fields is None:
            return
        for attr, info in fields.items():
            value = getattr(obj, attr)
            if value is not None:
                walk(f"{path}.{info.alias or attr}", value)

    walk(block_alias, model.config)
    return found


def _path(ref: SecretValue | SecretKeySelector | None) -> str | None:
    if ref is None:
        return None
    selector = ref.secret_key_ref if isinstance(ref, SecretValue) else ref
    return gc.secret_file_path(selector.name, selector.key)


def entity_task(
    entity: ServedEntity,
    entry: CatalogEntry | None,
    endpoint_task: str | None,
    mlflow: bool = False,
) -> str:
    """A self-hosted entity's task: its own, a custom model's, the catalog's, the
    endpoint's, or chat."""
    if mlflow and entity.task is None:
        return gc.Task.CUSTOM
    return entity.task or (entry.task if entry else None) or endpoint_task or DEFAULT_TASK


def is_mlflow_entity(entity: ServedEntity, catalog: Catalog | None) -> bool:
    """Whether a self-hosted entity is a custom MLflow model: it says so (task, engine,
    models:/ or runs:/), or it names a version of a model the catalog does not know,
    which is a model registered in the cluster's MLflow tracking server (as on the
    reference service: `entityName: main.default.churn`, `entityVersion: "3"`)."""
    if entity.is_mlflow_model:
        return True
    name = entity.entity_name or ""
    if entity.entity_version is None or name.startswith((*SOURCE_SCHEMES, SYSTEM_PREFIX)):
        return False
    if catalog is None:
        return False
    try:
        catalog.resolve(name)
    except CatalogError:
        return True
    return False


def _entity_config(
    endpoint: str,
    namespace: str,
    entity: ServedEntity,
    endpoint_task: str | None,
    catalog: Catalog | None,
) -> gc.EntityConfig:
    """One entity as the gateway sees it."""
    try:
        if entity.external_model is None:
            host = f"{entity_name(endpoint, entity.name)}.{namespace}.svc.cluster.local"
            if is_mlflow_entity(entity, catalog):
                # A custom model: its scoring server's /invocations, not the OpenAI API.
                return gc.EntityConfig(
                    name=entity.name,
                    task=gc.Task(entity_task(entity, None, endpoint_task, mlflow=True)),
                    provider=gc.ProviderName.MLFLOW,
                    modelName=entity.name,
                    baseUrl=f"http://{host}:{INFERENCE_PORT}",
                )
            entry = None
            if catalog is not None:
                try:
                    entry = catalog.resolve(entity.entity_name or "")
                except CatalogError:
                    entry = None  # reported by the entity's own rendering
            task = entity_task(entity, entry, endpoint_task)
            return gc.EntityConfig(
                name=entity.name,
                task=gc.Task(task),
                provider=gc.ProviderName.SELF_HOSTED,
                modelName=entity.name,
                baseUrl=f"http://{host}:{INFERENCE_PORT}/v1",
            )
        return _external_config(entity.name, entity.external_model)
    except ValidationError as exc:
        raise RenderError(
            f"spec.servedEntities[{entity.name}]: {_describe(exc)}", entity.name
        ) from None


def _external_config(name: str, model: ExternalModel) -> gc.EntityConfig:
    """Translate an external model's config block into the gateway's terms."""
    common: dict[str, Any] = {"name": name, "task": gc.Task(model.task), "modelName": model.name}
    provider = gc.ProviderName(model.provider)
    if (c := model.openai_config) is not None:
        return gc.EntityConfig(
            **common,
            provider=provider,
            baseUrl=c.openai_api_base,
            openai=gc.OpenAISettings(
                apiType=c.openai_api_type,
                apiVersion=c.openai_api_version,
                deploymentName=c.openai_deployment_name,
                organization=c.openai_organization,
                tenantId=c.microsoft_entra_tenant_id,
                clientId=c.microsoft_entra_client_id,
            ),
            credentials=gc.Credentials(
                apiKey=_path(c.openai_api_key),
                clientSecret=_path(c.microsoft_entra_client_secret),
            ),
        )
    if (a := model.anthropic_config) is not None:
        return gc.EntityConfig(
            **common,
            provider=provider,
            baseUrl=a.anthropic_api_base,
            credentials=gc.Credentials(apiKey=_path(a.anthropic_api_key)),
        )
    if (co := model.cohere_config) is not None:
        return gc.EntityConfig(
            **common,
            provider=provider,
            baseUrl=co.cohere_api_base,
            credentials=gc.Credentials(apiKey=_path(co.cohere_api_key)),
        )
    if (ai21 := model.ai21labs_config) is not None:
        return gc.EntityConfig(
            **common,
            provider=provider,
            baseUrl=ai21.ai21labs_api_base,
            credentials=gc.Credentials(apiKey=_path(ai21.ai21labs_api_key)),
        )
    if (b := model.amazon_bedrock_config) is not None:
        return gc.EntityConfig(
            **common,
            provider=provider,
            baseUrl=b.endpoint_url,
            bedrock=gc.BedrockSettings(region=b.aws_region, bedrockProvider=b.bedrock_provider),
            credentials=gc.Credentials(
                awsAccessKeyId=_path(b.aws_access_key_id),
                awsSecretAccessKey=_path(b.aws_secret_access_key),
            ),
        )
    if (v := model.google_cloud_vertex_ai_config) is not None:
        return gc.EntityConfig(
            **common,
            provider=provider,
            baseUrl=v.api_base,
            vertex=gc.VertexSettings(projectId=v.project_id, region=v.region),
            credentials=gc.Credentials(privateKey=_path(v.private_key)),
        )
    if (d := model.databricks_model_serving_config) is not None:
        return gc.EntityConfig(
            **common,
            provider=provider,
            baseUrl=d.databricks_workspace_url,
            credentials=gc.Credentials(apiKey=_path(d.databricks_api_token)),
        )
    if (cu := model.custom_provider_config) is not None:
        header = cu.api_key_auth.key if cu.api_key_auth else None
        secret = cu.api_key_auth.value if cu.api_key_auth else None
        if cu.bearer_token_auth is not None:
            secret = cu.bearer_token_auth.token
        return gc.EntityConfig(
            **common,
            provider=provider,
            baseUrl=cu.custom_provider_url,
            custom=gc.CustomSettings(apiKeyHeader=header),
            credentials=gc.Credentials(apiKey=_path(secret)),
        )
    # The API model guarantees exactly one block; this names a new provider's gap.
    raise RenderError(
        f"spec.servedEntities[{name}].externalModel.provider {model.provider!r} is not "
        "supported by this operator version; upgrade the operator",
        name,
    )


def _describe(exc: ValidationError) -> str:
    # include_input=False: an error must never echo a value (it could be a pasted key).
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(parts)
