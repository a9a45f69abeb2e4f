"""Operator settings: what a cluster admin can tune, from flags or the environment.

Every setting has an environment variable, so that `kopf run -m modelport.controller`
(which knows none of our flags) and `modelport operator` (whose flags override the
variables of the same name; `modelport.controller.cli`) configure the operator the
same way.

Each line: environment variable, `modelport operator` flag, default.

- MODELPORT_NAMESPACES, --namespace NS (repeatable): all namespaces
- MODELPORT_GATEWAY_IMAGE, --gateway-image: modelport:<version>
- MODELPORT_VLLM_IMAGE, --vllm-image: vllm/vllm-openai:v0.11.0
- MODELPORT_SGLANG_IMAGE, --sglang-image: lmsysorg/sglang:v0.5.3-cu126
- MODELPORT_LLAMACPP_IMAGE, --llamacpp-image: ghcr.io/abetlen/llama-cpp-python:v0.3.36
- MODELPORT_MLFLOW_IMAGE, --mlflow-image: ghcr.io/mlflow/mlflow:v3.17.2
- MODELPORT_MLFLOW_TRACKING_URI, --mlflow-tracking-uri (http(s) URL): none
- MODELPORT_CATALOG, --catalog (YAML/JSON list of entries, or @file): none
- MODELPORT_STARTUP_SECONDS, --startup-seconds: 1800
- MODELPORT_GPU_PROFILES, --gpu-profiles (JSON, or @file): the built-in table
- MODELPORT_DEFAULT_WORKLOAD_TYPE, --default-workload-type: GPU_SMALL
- MODELPORT_GATEWAY_MIN_REPLICAS / _MAX_REPLICAS, --gateway-min/max-replicas: 1 / 5
- MODELPORT_GATEWAY_NODE_SELECTOR, --gateway-node-selector (JSON object): none
- MODELPORT_GATEWAY_TOLERATIONS, --gateway-tolerations (JSON list): none
- MODELPORT_GATEWAY_SERVICE_ACCOUNT_ANNOTATIONS, --gateway-service-account-annotations
  (JSON object): none
- MODELPORT_GATEWAY_RESOURCES, --gateway-resources (JSON ResourceRequirements):
  requests cpu 100m, memory 128Mi; limits memory 512Mi
- MODELPORT_GATEWAY_AUTH, --gateway-auth (JSON): callers must authenticate;
  ServiceAccount tokens with audience "modelport"; no OIDC issuer
- MODELPORT_GATEWAY_TOKENREVIEW_BINDING, --gateway-tokenreview-binding: none
- MODELPORT_GATEWAY_READINESS_ROLE, --gateway-readiness-role: none
- MODELPORT_GUARD_MODEL, --guard-model (JSON): none
- MODELPORT_RATE_LIMITING, --rate-limiting (JSON): no shared store (each gateway process
  counts on its own); fail closed; 512 completion tokens reserved without max_tokens
- MODELPORT_USAGE_DATABASE, --usage-database (JSON): none (usage is only counted)
- MODELPORT_AUTOSCALING, --autoscaling (JSON): read the gateways every 10 s; scale down
  to the largest need of the last 300 s; scale to zero after 1800 s without a request;
  gateways sized for 100 requests in flight and 70% CPU per replica; 256 requests held
  per entity and gateway pod while it starts
- MODELPORT_TRACING, --tracing (JSON): none (gateways export no spans)
- MODELPORT_GATEWAY_ACCESS_LOG, --gateway-access-log (true/false): false
- MODELPORT_PROGRESS_DEADLINE_SECONDS, --progress-deadline-seconds: 600
- MODELPORT_RESYNC_SECONDS, --resync-seconds: 300
- MODELPORT_LOG_LEVEL, --log-level: INFO
- MODELPORT_LOG_FORMAT, --log-format (json or plain): json
- MODELPORT_LIVENESS, --liveness (URL, or "off"): http://0.0.0.0:8081/healthz
- MODELPORT_METRICS_PORT, --metrics-port: 0 (no metrics server; the chart sets 8082)
- MODELPORT_RECONCILE_WORKERS, --reconcile-workers: 8

`MODELPORT_NAMESPACES` is a comma-separated list; empty means every namespace.
`MODELPORT_GPU_PROFILES` is a JSON object ``{"GPU_MEDIUM": {"gpus": 1, "cpu": "8",
"memory": "32Gi", "gpuMemoryGiB": 24, "resourceName": "nvidia.com/gpu",
"nodeSelector": {...}, "tolerations": [...]}, ...}`` whose entries replace or add to
the built-in table (see `modelport.render.profiles`); a value starting with ``@``
names a file holding that JSON. `MODELPORT_CATALOG` adds entries to the model catalog
(`modelport.runtimes.catalog`). `MODELPORT_STARTUP_SECONDS` is how long an inference
pod may take to load its weights before its startup probe gives up.
The three `MODELPORT_GATEWAY_*` pod settings go into every gateway pod as they
are: `NODE_SELECTOR` is ``{"label": "value", ...}``, `TOLERATIONS` a list of
Kubernetes tolerations (``[{"key": ..., "operator": "Exists", "effect": ...}]``) and
`RESOURCES` a container's ``{"requests": {...}, "limits": {...}}``, which replaces the
default as a whole. A cluster whose gateways must run on particular nodes (the local
cluster's real node, a system node pool) sets the first two; most leave them empty.
`MODELPORT_GATEWAY_SERVICE_ACCOUNT_ANNOTATIONS` (``{"key": "value", ...}``) annotates
every endpoint's gateway ServiceAccount, which each gateway then gets: the way to give
gateways a cloud identity, e.g. IRSA's ``{"eks.amazonaws.com/role-arn":
"arn:aws:iam::123456789012:role/modelport-{namespace}-{endpoint}"}`` for Bedrock
entities without keys; ``{namespace}`` and ``{endpoint}`` in a value become the
endpoint's namespace and name.
`MODELPORT_GATEWAY_AUTH` holds the cluster's defaults for who may call an endpoint
(each endpoint's `spec.aiGateway.auth` overrides them), the Helm value `gatewayAuth`::

    {"enabled": true,
     "serviceAccountTokens": {"enabled": true, "audiences": ["modelport"], "cacheSeconds": 10},
     "oidc": null}

`enabled: false` leaves endpoints that do not ask for authentication open to anyone
who reaches their Service. `oidc` is ``{"issuer": "https://...", "audiences": [...]}``
plus optional `jwksUri`, `userClaim`, `groupsClaim` and `algorithms`; every endpoint
without an `oidc` of its own accepts that issuer's tokens. Left-out keys keep their
defaults. `MODELPORT_GATEWAY_TOKENREVIEW_BINDING` names the ClusterRoleBinding (to a
ClusterRole that may create TokenReviews) whose subjects the operator keeps equal to
the gateways that verify ServiceAccount tokens; the chart creates both. Unset, or
when the binding does not exist, gateways cannot verify ServiceAccount tokens and
the endpoints that use them say so in their Degraded condition.
`MODELPORT_MLFLOW_TRACKING_URI` is the MLflow tracking server custom models are
loaded from when their `entityName` is a registered model (`models:/…`, `runs:/…`, or
a name with `entityVersion`); the model pods get it as `MLFLOW_TRACKING_URI` (its
credentials, if any, come from the entity's `environmentVars`, e.g.
`MLFLOW_TRACKING_TOKEN` from a Secret).
`MODELPORT_GATEWAY_READINESS_ROLE` names a role that may get, list and watch
`endpointslices` (the chart creates it): ``ClusterRole/<name>``, or ``Role/<name>`` for
a Role of that name in each watched namespace; for an endpoint with fallback on and a
self-hosted entity, the operator binds the gateway's ServiceAccount to it with a
RoleBinding in the endpoint's namespace, so that fallback skips entities with no ready
pod. Unset: no binding, and entities count as ready until a request to them fails.
`MODELPORT_GUARD_MODEL` is the guard model that `guardrails.*.safety` asks (the Helm
value `guardModel`): ``{"endpoint": "<namespace>/<name>"}`` (a ServingEndpoint serving a
guard such as Llama Guard; the gateway calls it with a ServiceAccount token for
`audience`, default "modelport") or ``{"url": "http://.../v1", "model": "<name>"}``,
plus optional ``"failOpen": false`` (when the guard cannot answer: refuse with 503, or
let the request through) and ``"timeoutSeconds": 5``. Unset, an endpoint that turns
safety on cannot be served and says so in its status.
`MODELPORT_RATE_LIMITING` says how endpoints' `spec.aiGateway.rateLimits` are enforced,
the Helm value `rateLimiting`::

    {"store": {"address": "redis://modelport-ratelimit.modelport-system:6379/0",
               "passwordSecret": {"name": "modelport-ratelimit", "key": "password"},
               "timeoutSeconds": 0.25},
     "failOpen": false, "reserveCompletionTokens": 512}

`store` is the Redis (or Valkey) server every gateway replica counts in; without it each
gateway process counts on its own, and an endpoint with limits whose gateway may run
more than one replica says so in its status. `passwordSecret` names a Secret *in each
endpoint's namespace* (a pod mounts only Secrets of its own namespace); the gateway gets
it as a file. `failOpen: true` admits requests while the store cannot be reached
(default: refuse them with 503). `reserveCompletionTokens` is what a request without
`max_tokens` reserves of a token limit until its usage is known.
`MODELPORT_TRACING` is where every gateway sends its request spans (the Helm value
``tracing``): ``{"endpoint": "http://otel-collector.monitoring:4318", "sampleRatio":
1.0}`` (OTLP over HTTP; ``serviceName`` too). Empty, or no endpoint: no spans, and
nothing on the request path. `MODELPORT_GATEWAY_ACCESS_LOG` (``true``) makes every
gateway log one line per finished request, with its request and trace ids.
`MODELPORT_USAGE_DATABASE` names the cluster's usage database, the Helm value
`usageDatabase`: ``{"secretName": "modelport-usage-db", "secretKey": "dsn",
"retentionDays": 90}``. The Secret key holds a PostgreSQL connection string; gateways
of endpoints that track usage write their rows there (and their payloads, unless the
endpoint names a database of its own), deleting rows older than `retentionDays` (0:
never). A pod mounts only Secrets of its own namespace, so every namespace with such
endpoints holds a Secret of that name (the operator never copies Secrets, and never
reads their values); an endpoint whose namespace lacks it says so in its status.
`MODELPORT_AUTOSCALING` tunes the operator's autoscaler (the Helm value
`autoscaling`), which owns the replicas of every gateway and self-hosted entity (no
HPA; see `modelport.scaling`)::

    {"intervalSeconds": 10, "scaleDownStabilizationSeconds": 300,
     "scaleToZeroIdleSeconds": 1800, "gatewayTargetInFlight": 100,
     "gatewayTargetCpuPercent": 70, "maxHeldRequests": 256}

`intervalSeconds` is how often it reads every gateway pod's requests in flight (scaling
up follows within one interval; waking an entity from zero does not wait for it: the
gateway does that at once); a scale-down goes to the largest replica count recommended
within the last `scaleDownStabilizationSeconds`; an entity with `scaleToZeroEnabled`
goes to zero replicas after `scaleToZeroIdleSeconds` without a request (its own
`scaleToZeroIdleSeconds` overrides it). A gateway replica is sized for
`gatewayTargetInFlight` requests in flight and `gatewayTargetCpuPercent` of its CPU
request (the second bound; 0 turns it off). `maxHeldRequests` is how many requests each
gateway pod holds for one entity while it starts from zero (more get 503).
`MODELPORT_RESYNC_SECONDS` is the period of the safety-net reconcile of every endpoint
(0 turns it off); watches on children and Secrets do the real work, so it can stay
long. `MODELPORT_RECONCILE_WORKERS` is how many endpoints are reconciled at once (each
endpoint by one worker at a time; see `modelport.controller.queue`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from modelport import __version__
from modelport import gatewayconfig as gc
from modelport.gpuprofiles import DEFAULT_GPU_RESOURCE, DEFAULT_PROFILES, GpuProfile
from modelport.objects import is_quantity

if TYPE_CHECKING:
    from modelport.runtimes.catalog import Catalog

ENV_PREFIX = "MODELPORT_"
DEFAULT_GATEWAY_IMAGE = f"modelport:{__version__}"
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.11.0"
# Tags chosen to match the versions the project pins; no registry is reachable from
# the build machines, so a cluster admin confirms them (or overrides them) on install.
DEFAULT_SGLANG_IMAGE = "lmsysorg/sglang:v0.5.3-cu126"
DEFAULT_LLAMACPP_IMAGE = "ghcr.io/abetlen/llama-cpp-python:v0.3.36"
# MLflow's own image: its scoring server and scikit-learn; docker/mlflow.Dockerfile builds
# one that also carries XGBoost (see modelport.runtimes.mlflow).
DEFAULT_MLFLOW_IMAGE = "ghcr.io/mlflow/mlflow:v3.17.2"
DEFAULT_LIVENESS = "http://0.0.0.0:8081/healthz"
DEFAULT_GATEWAY_RESOURCES: Mapping[str, Mapping[str, str]] = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}
# What a Kubernetes toleration may hold; anything else is a typo worth refusing.
_TOLERATION_FIELDS = frozenset({"key", "operator", "value", "effect", "tolerationSeconds"})
_TOLERATION_OPERATORS = ("Exists", "Equal")
_TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


# A Kubernetes object name (DNS-1123 subdomain).
_OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DEFAULT_TOKEN_AUDIENCE = "modelport"  # noqa: S105 - an audience name, not a secret


class SettingsError(ValueError):
    """A setting has a value the operator cannot use; the message names the variable."""


@dataclass(frozen=True)
class GatewayAuthDefaults:
    """The cluster's defaults for `spec.aiGateway.auth` (MODELPORT_GATEWAY_AUTH).

    Secure unless the admin says otherwise: callers authenticate, and pods may do so
    with their ServiceAccount tokens for the audience `modelport`.
    """

    enabled: bool = True
    service_account_tokens: bool = True
    audiences: tuple[str, ...] = (DEFAULT_TOKEN_AUDIENCE,)
    cache_seconds: float = 10.0
    oidc: gc.Oidc | None = None


@dataclass(frozen=True)
class GuardModelSetting:
    """The cluster's guard model (MODELPORT_GUARD_MODEL): a ServingEndpoint or a URL."""

    url: str
    model: str
    endpoint: tuple[str, str] | None = None
    """(namespace, name) when the guard is a ServingEndpoint (called with a token)."""
    audience: str = DEFAULT_TOKEN_AUDIENCE
    fail_open: bool = False
    timeout_seconds: float = 5.0


@dataclass(frozen=True)
class RateLimitingDefaults:
    """How rate limits are enforced on every endpoint (MODELPORT_RATE_LIMITING)."""

    store_address: str = ""
    """redis:// or rediss:// URL of the shared store; empty: each gateway process counts."""
    password_secret: tuple[str, str] | None = None
    """(Secret name, key) of the store's password, in each endpoint's namespace."""
    username: str | None = None
    timeout_seconds: float = 0.25
    fail_open: bool = False
    reserve_completion_tokens: int = gc.DEFAULT_RESERVE_COMPLETION_TOKENS


@dataclass(frozen=True)
class AutoscalingSettings:
    """How the operator's autoscaler sets replicas (MODELPORT_AUTOSCALING)."""

    interval_seconds: float = 10.0
    scale_down_stabilization_seconds: float = 300.0
    scale_to_zero_idle_seconds: float = 1800.0
    gateway_target_in_flight: int = 100
    gateway_target_cpu_percent: int = 70
    """0: gateways scale on requests in flight alone."""
    max_held_requests: int = 256


@dataclass(frozen=True)
class UsageDatabase:
    """The cluster's usage database (MODELPORT_USAGE_DATABASE): where the Secret key with
    its connection string is, in each endpoint's namespace, and how long rows are kept."""

    secret_name: str
    secret_key: str = "dsn"  # noqa: S105 - the name of a key, not a value
    retention_days: int = 90


def _builtin_catalog() -> Catalog:
    from modelport.runtimes.catalog import load

    return load("")


@dataclass(frozen=True)
class Settings:
    """Everything rendering and the controller need to know about the cluster."""

    namespaces: tuple[str, ...] = ()
    gateway_image: str = DEFAULT_GATEWAY_IMAGE
    vllm_image: str = DEFAULT_VLLM_IMAGE
    sglang_image: str = DEFAULT_SGLANG_IMAGE
    llamacpp_image: str = DEFAULT_LLAMACPP_IMAGE
    mlflow_image: str = DEFAULT_MLFLOW_IMAGE
    mlflow_tracking_uri: str = ""
    gpu_profiles: Mapping[str, GpuProfile] = field(default_factory=dict)
    catalog: Catalog = field(default_factory=_builtin_catalog, compare=False)
    startup_seconds: int = 1800
    default_workload_type: str = "GPU_SMALL"
    gateway_min_replicas: int = 1
    gateway_max_replicas: int = 5
    gateway_node_selector: Mapping[str, str] = field(default_factory=dict)
    gateway_tolerations: tuple[Mapping[str, Any], ...] = ()
    gateway_service_account_annotations: Mapping[str, str] = field(default_factory=dict)
    gateway_resources: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: DEFAULT_GATEWAY_RESOURCES
    )
    gateway_auth: GatewayAuthDefaults = field(default_factory=GatewayAuthDefaults)
    gateway_tokenreview_binding: str = ""
    gateway_readiness_role: str = ""
    guard_model: GuardModelSetting | None = None
    rate_limiting: RateLimitingDefaults = field(default_factory=RateLimitingDefaults)
    usage_database: UsageDatabase | None = None
    autoscaling: AutoscalingSettings = field(default_factory=AutoscalingSettings)
    tracing: gc.Tracing | None = None
    gateway_access_log: bool = False
    progress_deadline_seconds: int = 600
    resync_seconds: float = 300.0
    log_level: str = "INFO"
    log_format: str = "json"
    liveness: str = DEFAULT_LIVENESS
    metrics_port: int = 0
    """Port of the operator's Prometheus metrics (``modelport.operatormetrics``); 0: off."""
    reconcile_workers: int = 8

    @property
    def clusterwide(self) -> bool:
        """True when no namespace is named: the operator watches them all."""
        return not self.namespaces


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from `env` (default: the process environment)."""
    from modelport.runtimes.catalog import CatalogError, load

    env = os.environ if env is None else env

    def get(name: str, default: str) -> str:
        return env.get(ENV_PREFIX + name, "").strip() or default

    def integer(name: str, default: int, minimum: int) -> int:
        raw = get(name, str(default))
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(
                f"{ENV_PREFIX}{name}={raw!r} is not an integer; set a whole number"
            ) from None
        if value < minimum:
            raise SettingsError(f"{ENV_PREFIX}{name}={value} must be at least {minimum}")
        return value

    log_format = get("LOG_FORMAT", "json").lower()
    if log_format not in ("json", "plain"):
        raise SettingsError(f"{ENV_PREFIX}LOG_FORMAT={log_format!r}: use 'json' or 'plain'")
    profiles = dict(DEFAULT_PROFILES)
    profiles.update(_parse_profiles(get("GPU_PROFILES", "")))
    try:
        catalog = load(get("CATALOG", ""))
    except CatalogError as exc:
        raise SettingsError(f"{ENV_PREFIX}CATALOG: {exc}") from None
    settings = Settings(
        namespaces=tuple(n.strip() for n in get("NAMESPACES", "").split(",") if n.strip()),
        gateway_image=get("GATEWAY_IMAGE", DEFAULT_GATEWAY_IMAGE),
        vllm_image=get("VLLM_IMAGE", DEFAULT_VLLM_IMAGE),
        sglang_image=get("SGLANG_IMAGE", DEFAULT_SGLANG_IMAGE),
        llamacpp_image=get("LLAMACPP_IMAGE", DEFAULT_LLAMACPP_IMAGE),
        mlflow_image=get("MLFLOW_IMAGE", DEFAULT_MLFLOW_IMAGE),
        mlflow_tracking_uri=_parse_tracking_uri(get("MLFLOW_TRACKING_URI", "")),
        gpu_profiles=profiles,
        catalog=catalog,
        startup_seconds=integer("STARTUP_SECONDS", 1800, 10),
        default_workload_type=get("DEFAULT_WORKLOAD_TYPE", "GPU_SMALL"),
        gateway_min_replicas=integer("GATEWAY_MIN_REPLICAS", 1, 1),
        gateway_max_replicas=integer("GATEWAY_MAX_REPLICAS", 5, 1),
        gateway_node_selector=_parse_node_selector(get("GATEWAY_NODE_SELECTOR", "")),
        gateway_tolerations=_parse_tolerations(get("GATEWAY_TOLERATIONS", "")),
        gateway_service_account_annotations=_parse_string_map(
            "GATEWAY_SERVICE_ACCOUNT_ANNOTATIONS",
            get("GATEWAY_SERVICE_ACCOUNT_ANNOTATIONS", ""),
            'a JSON object of annotations, e.g. {"eks.amazonaws.com/role-arn": "arn:..."}',
        ),
        gateway_resources=_parse_resources(get("GATEWAY_RESOURCES", "")),
        gateway_auth=_parse_gateway_auth(get("GATEWAY_AUTH", "")),
        gateway_tokenreview_binding=_parse_object_name(
            "GATEWAY_TOKENREVIEW_BINDING", get("GATEWAY_TOKENREVIEW_BINDING", "")
        ),
        gateway_readiness_role=_parse_role_ref(get("GATEWAY_READINESS_ROLE", "")),
        guard_model=parse_guard_model(get("GUARD_MODEL", "")),
        rate_limiting=_parse_rate_limiting(get("RATE_LIMITING", "")),
        usage_database=_parse_usage_database(get("USAGE_DATABASE", "")),
        autoscaling=_parse_autoscaling(get("AUTOSCALING", "")),
        tracing=_parse_tracing(get("TRACING", "")),
        gateway_access_log=_parse_flag("GATEWAY_ACCESS_LOG", get("GATEWAY_ACCESS_LOG", "false")),
        progress_deadline_seconds=integer("PROGRESS_DEADLINE_SECONDS", 600, 10),
        resync_seconds=float(integer("RESYNC_SECONDS", 300, 0)),
        log_level=get("LOG_LEVEL", "INFO").upper(),
        log_format=log_format,
        liveness=get("LIVENESS", DEFAULT_LIVENESS),
        metrics_port=integer("METRICS_PORT", 0, 0),
        reconcile_workers=integer("RECONCILE_WORKERS", 8, 1),
    )
    if settings.gateway_max_replicas < settings.gateway_min_replicas:
        raise SettingsError(
            f"{ENV_PREFIX}GATEWAY_MAX_REPLICAS ({settings.gateway_max_replicas}) is below "
            f"{ENV_PREFIX}GATEWAY_MIN_REPLICAS ({settings.gateway_min_replicas}); raise it"
        )
    if settings.default_workload_type not in profiles:
        raise SettingsError(
            f"{ENV_PREFIX}DEFAULT_WORKLOAD_TYPE={settings.default_workload_type!r} is not a "
            f"GPU profile; choose one of {sorted(profiles)}"
        )
    return settings


def _parse_role_ref(raw: str) -> str:
    """MODELPORT_GATEWAY_READINESS_ROLE: ``ClusterRole/<name>``, ``Role/<name>`` (a Role of
    that name in each namespace) or ``<name>`` (a ClusterRole); normalised to kind/name."""
    if not raw:
        return ""
    kind, slash, name = raw.partition("/")
    if not slash:
        kind, name = "ClusterRole", raw
    if kind not in ("ClusterRole", "Role"):
        raise SettingsError(
            f"{ENV_PREFIX}GATEWAY_READINESS_ROLE={raw!r}: write ClusterRole/<name> or Role/<name>"
        )
    return f"{kind}/{_parse_object_name('GATEWAY_READINESS_ROLE', name)}"


def parse_guard_model(raw: str) -> GuardModelSetting | None:
    """Parse MODELPORT_GUARD_MODEL (see the module's docstring)."""
    if not raw:
        return None
    where = f"{ENV_PREFIX}GUARD_MODEL"
    shape = '{"endpoint": "<namespace>/<name>"} or {"url": "http://.../v1", "model": "<name>"}'
    data = _json_object("GUARD_MODEL", raw, shape)
    _known(where, data, {"endpoint", "url", "model", "audience", "failOpen", "timeoutSeconds"})
    fail_open = _boolean(f"{where}.failOpen", data.get("failOpen", False))
    timeout = data.get("timeoutSeconds", 5.0)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 < timeout <= 60:
        raise SettingsError(
            f"{where}.timeoutSeconds={timeout!r}: give seconds, above 0, at most 60"
        )
    audience = data.get("audience", DEFAULT_TOKEN_AUDIENCE)
    if not isinstance(audience, str) or not audience:
        raise SettingsError(f"{where}.audience={audience!r}: give an audience name")
    endpoint, url = data.get("endpoint"), data.get("url")
    if (endpoint is None) == (url is None):
        raise SettingsError(f"{where}: set exactly one of endpoint and url; give {shape}")
    if endpoint is not None:
        namespace, _, name = str(endpoint).partition("/")
        if not (_OBJECT_NAME.match(namespace) and _OBJECT_NAME.match(name)):
            raise SettingsError(f"{where}.endpoint={endpoint!r}: write '<namespace>/<name>'")
        return GuardModelSetting(
            url=f"http://{name}.{namespace}.svc.cluster.local/v1",
            model=str(data.get("model") or name),
            endpoint=(namespace, name),
            audience=audience,
            fail_open=fail_open,
            timeout_seconds=float(timeout),
        )
    model = data.get("model")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise SettingsError(f"{where}.url={url!r}: give an http(s) URL ending in /v1")
    if not isinstance(model, str) or not model:
        raise SettingsError(f"{where}: url needs model, the name the guard serves")
    return GuardModelSetting(
        url=url.rstrip("/"), model=model, fail_open=fail_open, timeout_seconds=float(timeout)
    )


def _json_setting(name: str, raw: str, shape: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsError(
            f"{ENV_PREFIX}{name}: not JSON ({exc.msg} at character {exc.pos}); give {shape}"
        ) from None


def _parse_node_selector(raw: str) -> dict[str, str]:
    """Parse MODELPORT_GATEWAY_NODE_SELECTOR: a JSON object of label -> value."""
    shape = 'a JSON object of node labels, e.g. {"kubernetes.io/os": "linux"}'
    return _parse_string_map("GATEWAY_NODE_SELECTOR", raw, shape)


def _parse_string_map(name: str, raw: str, shape: str) -> dict[str, str]:
    """Parse a setting that is a JSON object of non-empty string keys to string values."""
    if not raw:
        return {}
    data = _json_setting(name, raw, shape)
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in data.items()
    ):
        raise SettingsError(
            f"{ENV_PREFIX}{name}={raw!r}: give {shape} (string values: quote true and numbers)"
        )
    return dict(sorted(data.items()))


def _parse_tolerations(raw: str) -> tuple[dict[str, Any], ...]:
    """Parse MODELPORT_GATEWAY_TOLERATIONS: a JSON list of Kubernetes tolerations."""
    if not raw:
        return ()
    where = f"{ENV_PREFIX}GATEWAY_TOLERATIONS"
    shape = (
        'a JSON list such as [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]'
    )
    data = _json_setting("GATEWAY_TOLERATIONS", raw, shape)
    if not isinstance(data, list):
        raise SettingsError(f"{where}={raw!r}: give {shape}")
    for i, toleration in enumerate(data):
        if not isinstance(toleration, dict):
            raise SettingsError(f"{where}[{i}]={toleration!r}: each toleration is an object")
        unknown = sorted(set(toleration) - _TOLERATION_FIELDS)
        if unknown:
            raise SettingsError(
                f"{where}[{i}]: unknown field(s) {unknown}; a toleration has "
                f"{sorted(_TOLERATION_FIELDS)}"
            )
        operator = toleration.get("operator", "Equal")
        if operator not in _TOLERATION_OPERATORS:
            raise SettingsError(
                f"{where}[{i}].operator={operator!r}: use one of {list(_TOLERATION_OPERATORS)}"
            )
        effect = toleration.get("effect")
        if effect not in (None, "", *_TOLERATION_EFFECTS):
            raise SettingsError(
                f"{where}[{i}].effect={effect!r}: use one of {list(_TOLERATION_EFFECTS)} "
                "(or leave it out for every effect)"
            )
        if operator == "Exists" and toleration.get("value"):
            raise SettingsError(f"{where}[{i}]: operator Exists takes no value; remove it")
        if operator == "Equal" and not toleration.get("key"):
            raise SettingsError(f"{where}[{i}]: operator Equal needs a key; add one")
        seconds = toleration.get("tolerationSeconds")
        if seconds is not None and (not isinstance(seconds, int) or isinstance(seconds, bool)):
            raise SettingsError(f"{where}[{i}].tolerationSeconds={seconds!r}: give an integer")
    return tuple(data)


def _parse_resources(raw: str) -> Mapping[str, Mapping[str, str]]:
    """Parse MODELPORT_GATEWAY_RESOURCES: {"requests": {...}, "limits": {...}}."""
    if not raw:
        return DEFAULT_GATEWAY_RESOURCES
    where = f"{ENV_PREFIX}GATEWAY_RESOURCES"
    shape = 'a JSON object such as {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {}}'
    data = _json_setting("GATEWAY_RESOURCES", raw, shape)
    if not isinstance(data, dict):
        raise SettingsError(f"{where}={raw!r}: give {shape}")
    unknown = sorted(set(data) - {"requests", "limits"})
    if unknown:
        raise SettingsError(f"{where}: unknown field(s) {unknown}; use requests and limits")
    resources: dict[str, dict[str, str]] = {}
    for part in ("requests", "limits"):
        values = data.get(part) or {}
        if not isinstance(values, dict):
            raise SettingsError(f"{where}.{part}: give an object of resource -> quantity")
        for resource, quantity in values.items():
            # Kubernetes takes numbers too (cpu: 1); strings keep the manifest exact.
            if isinstance(quantity, bool) or not isinstance(quantity, (str, int, float)):
                raise SettingsError(
                    f"{where}.{part}.{resource}={quantity!r}: give a quantity such as "
                    '"500m" or "256Mi"'
                )
            text = str(quantity)
            if not is_quantity(text):
                raise SettingsError(
                    f"{where}.{part}.{resource}={text!r} is not a Kubernetes quantity; "
                    'write e.g. "500m", "2" or "256Mi"'
                )
        if values:
            resources[part] = {str(k): str(v) for k, v in sorted(values.items())}
    return resources


def _parse_gateway_auth(raw: str) -> GatewayAuthDefaults:
    """Parse MODELPORT_GATEWAY_AUTH (the Helm value gatewayAuth as JSON)."""
    if not raw:
        return GatewayAuthDefaults()
    where = f"{ENV_PREFIX}GATEWAY_AUTH"
    shape = (
        'a JSON object such as {"enabled": true, "serviceAccountTokens": {"enabled": true, '
        '"audiences": ["modelport"], "cacheSeconds": 10}, "oidc": null}'
    )
    data = _json_object("GATEWAY_AUTH", raw, shape)
    _known(where, data, {"enabled", "serviceAccountTokens", "oidc"})
    defaults = GatewayAuthDefaults()
    enabled = _boolean(f"{where}.enabled", data.get("enabled", defaults.enabled))
    tokens = data.get("serviceAccountTokens") or {}
    if not isinstance(tokens, dict):
        raise SettingsError(
            f"{where}.serviceAccountTokens={tokens!r}: give an object with enabled, "
            "audiences and cacheSeconds"
        )
    _known(f"{where}.serviceAccountTokens", tokens, {"enabled", "audiences", "cacheSeconds"})
    sa_enabled = _boolean(
        f"{where}.serviceAccountTokens.enabled",
        tokens.get("enabled", defaults.service_account_tokens),
    )
    audiences = tokens.get("audiences", list(defaults.audiences))
    if (
        not isinstance(audiences, list)
        or not audiences
        or not all(isinstance(a, str) and a for a in audiences)
    ):
        raise SettingsError(
            f"{where}.serviceAccountTokens.audiences={audiences!r}: give a non-empty list of "
            f'audience strings, e.g. ["{DEFAULT_TOKEN_AUDIENCE}"]'
        )
    cache = tokens.get("cacheSeconds", defaults.cache_seconds)
    if isinstance(cache, bool) or not isinstance(cache, int | float) or not 0 <= cache <= 300:
        raise SettingsError(
            f"{where}.serviceAccountTokens.cacheSeconds={cache!r}: give a number of seconds "
            "from 0 (no cache) to 300"
        )
    oidc = None
    if data.get("oidc") is not None:
        try:
            oidc = gc.Oidc.model_validate(data["oidc"])
        except ValidationError as exc:
            problems = _problems(exc, "oidc")
            raise SettingsError(
                f'{where}.oidc: {problems}; give {{"issuer": "https://...", '
                '"audiences": [...]} and optionally jwksUri, userClaim, groupsClaim, '
                "algorithms"
            ) from None
    return GatewayAuthDefaults(
        enabled=enabled,
        service_account_tokens=sa_enabled,
        audiences=tuple(audiences),
        cache_seconds=float(cache),
        oidc=oidc,
    )


def _parse_rate_limiting(raw: str) -> RateLimitingDefaults:
    """Parse MODELPORT_RATE_LIMITING (the Helm value rateLimiting as JSON)."""
    if not raw:
        return RateLimitingDefaults()
    where = f"{ENV_PREFIX}RATE_LIMITING"
    shape = (
        'a JSON object such as {"store": {"address": "redis://host:6379/0", '
        '"passwordSecret": {"name": "...", "key": "password"}, "timeoutSeconds": 0.25}, '
        '"failOpen": false, "reserveCompletionTokens": 512}'
    )
    data = _json_object("RATE_LIMITING", raw, shape)
    _known(where, data, {"store", "failOpen", "reserveCompletionTokens"})
    defaults = RateLimitingDefaults()
    fail_open = _boolean(f"{where}.failOpen", data.get("failOpen", defaults.fail_open))
    reserve = data.get("reserveCompletionTokens", defaults.reserve_completion_tokens)
    if isinstance(reserve, bool) or not isinstance(reserve, int) or not 1 <= reserve <= 1_000_000:
        raise SettingsError(
            f"{where}.reserveCompletionTokens={reserve!r}: give a whole number of tokens "
            "from 1 to 1000000"
        )
    store = data.get("store") or {}
    if not isinstance(store, dict):
        raise SettingsError(f"{where}.store={store!r}: give an object with address")
    _known(f"{where}.store", store, {"address", "passwordSecret", "username", "timeoutSeconds"})
    address = store.get("address") or ""
    secret: tuple[str, str] | None = None
    username = store.get("username") or None
    timeout = store.get("timeoutSeconds", defaults.timeout_seconds)
    if address:
        try:
            checked = gc.RateLimitStore(address=address, username=username, timeoutSeconds=timeout)
        except ValidationError as exc:
            raise SettingsError(f"{where}.store: {_problems(exc, 'store')}") from None
        timeout = checked.timeout_seconds
        ref = store.get("passwordSecret")
        if ref is not None:
            if not isinstance(ref, dict) or not ref.get("name") or not ref.get("key"):
                raise SettingsError(
                    f'{where}.store.passwordSecret={ref!r}: give {{"name": "<Secret>", '
                    '"key": "<key>"}, a Secret in each endpoint\'s namespace'
                )
            name = _parse_object_name("RATE_LIMITING.store.passwordSecret.name", str(ref["name"]))
            secret = (name, str(ref["key"]))
    elif store.get("passwordSecret"):
        raise SettingsError(
            f"{where}.store.passwordSecret is set but store.address is not; set the address "
            "of the Redis server"
        )
    return RateLimitingDefaults(
        store_address=address,
        password_secret=secret,
        username=username if address else None,
        timeout_seconds=float(timeout),
        fail_open=fail_open,
        reserve_completion_tokens=reserve,
    )


def _json_object(name: str, raw: str, shape: str) -> dict[str, Any]:
    """A setting that holds a JSON object (the Helm value of that name)."""
    data = _json_setting(name, raw, shape)
    if not isinstance(data, dict):
        raise SettingsError(f"{ENV_PREFIX}{name}={raw!r}: give {shape}")
    return data


def _problems(exc: ValidationError, whole: str) -> str:
    """A model's validation errors as `field: problem; ...`, never echoing a value."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or whole}: {e['msg'].removeprefix('Value error, ')}"
        for e in exc.errors(include_input=False, include_url=False)
    )


def _parse_usage_database(raw: str) -> UsageDatabase | None:
    """Parse MODELPORT_USAGE_DATABASE (the Helm value usageDatabase as JSON); an empty
    secretName means none."""
    if not raw:
        return None
    where = f"{ENV_PREFIX}USAGE_DATABASE"
    shape = '{"secretName": "modelport-usage-db", "secretKey": "dsn", "retentionDays": 90}'
    data = _json_object("USAGE_DATABASE", raw, f"a JSON object such as {shape}")
    _known(where, data, {"secretName", "secretKey", "retentionDays"})
    name = _parse_object_name("USAGE_DATABASE.secretName", str(data.get("secretName") or ""))
    if not name:
        return None
    key = data.get("secretKey", "dsn")
    if not isinstance(key, str) or not re.match(r"^[-._a-zA-Z0-9]+$", key):
        raise SettingsError(
            f"{where}.secretKey={key!r} is not a Secret key; use letters, digits, '-', '_', '.'"
        )
    days = data.get("retentionDays", 90)
    if isinstance(days, bool) or not isinstance(days, int) or days < 0:
        raise SettingsError(
            f"{where}.retentionDays={days!r}: give a whole number of days (0 keeps rows forever)"
        )
    return UsageDatabase(secret_name=name, secret_key=key, retention_days=days)


def _parse_autoscaling(raw: str) -> AutoscalingSettings:
    """Parse MODELPORT_AUTOSCALING (the Helm value autoscaling as JSON)."""
    if not raw:
        return AutoscalingSettings()
    where = f"{ENV_PREFIX}AUTOSCALING"
    shape = (
        'a JSON object such as {"intervalSeconds": 10, "scaleDownStabilizationSeconds": 300, '
        '"scaleToZeroIdleSeconds": 1800, "gatewayTargetInFlight": 100, '
        '"gatewayTargetCpuPercent": 70, "maxHeldRequests": 256}'
    )
    data = _json_object("AUTOSCALING", raw, shape)
    # (field, lowest, highest, whole number only)
    bounds: dict[str, tuple[float, float, bool]] = {
        "intervalSeconds": (0.5, 300, False),
        "scaleDownStabilizationSeconds": (0, 3600, False),
        "scaleToZeroIdleSeconds": (10, 604800, False),
        "gatewayTargetInFlight": (1, 100000, True),
        "gatewayTargetCpuPercent": (0, 100, True),
        "maxHeldRequests": (0, 100000, True),
    }
    _known(where, data, set(bounds))
    defaults = AutoscalingSettings()
    values: dict[str, float] = {}
    for name, (low, high, whole) in bounds.items():
        value = data.get(name)
        if value is None:
            continue
        number = isinstance(value, int) or (isinstance(value, float) and not whole)
        if isinstance(value, bool) or not number or not low <= value <= high:
            kind = "a whole number" if whole else "a number"
            raise SettingsError(f"{where}.{name}={value!r}: give {kind} from {low:g} to {high:g}")
        values[name] = value
    return AutoscalingSettings(
        interval_seconds=float(values.get("intervalSeconds", defaults.interval_seconds)),
        scale_down_stabilization_seconds=float(
            values.get("scaleDownStabilizationSeconds", defaults.scale_down_stabilization_seconds)
        ),
        scale_to_zero_idle_seconds=float(
            values.get("scaleToZeroIdleSeconds", defaults.scale_to_zero_idle_seconds)
        ),
        gateway_target_in_flight=int(
            values.get("gatewayTargetInFlight", defaults.gateway_target_in_flight)
        ),
        gateway_target_cpu_percent=int(
            values.get("gatewayTargetCpuPercent", defaults.gateway_target_cpu_percent)
        ),
        max_held_requests=int(values.get("maxHeldRequests", defaults.max_held_requests)),
    )


def _parse_tracing(raw: str) -> gc.Tracing | None:
    """Parse MODELPORT_TRACING (the Helm value ``tracing`` as JSON); no endpoint: none."""
    if not raw:
        return None
    shape = '{"endpoint": "http://otel-collector.monitoring:4318", "sampleRatio": 1.0}'
    data = _json_object("TRACING", raw, f"a JSON object such as {shape}")
    if not data.get("endpoint"):
        return None
    try:
        return gc.Tracing.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(f"{ENV_PREFIX}TRACING: {_problems(exc, 'tracing')}") from None


def _parse_flag(name: str, raw: str) -> bool:
    """A true/false setting."""
    value = raw.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise SettingsError(f"{ENV_PREFIX}{name}={raw!r}: give true or false")
    return value in ("true", "1", "yes")


def _known(where: str, data: Mapping[str, Any], fields: set[str]) -> None:
    if unknown := sorted(set(data) - fields):
        raise SettingsError(f"{where}: unknown field(s) {unknown}; use {sorted(fields)}")


def _boolean(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SettingsError(f"{where}={value!r}: give true or false")
    return value


def _parse_tracking_uri(raw: str) -> str:
    """MODELPORT_MLFLOW_TRACKING_URI: an http(s) URL of the tracking server, or empty.

    The URL reaches every custom model's pod spec as plain text, so it must not hold
    credentials (`https://user:password@host`); and an error about it must not repeat
    them in the operator's log either."""
    authority = raw.split("://", 1)[-1].split("/", 1)[0]
    if "@" in authority:
        raise SettingsError(
            f"{ENV_PREFIX}MLFLOW_TRACKING_URI holds credentials (user:password@host), which "
            "would be written into every model pod's spec; give the address alone, and the "
            "credentials to the model as environmentVars MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) from a Secret"
        )
    if raw and not re.match(r"^https?://[^\s/]+", raw):
        raise SettingsError(
            f"{ENV_PREFIX}MLFLOW_TRACKING_URI={raw!r} is not an http(s) URL; give the tracking "
            "server's address as pods reach it, e.g. http://mlflow.mlflow.svc:5000"
        )
    return raw.rstrip("/")


def _parse_object_name(name: str, raw: str) -> str:
    """An optional Kubernetes object name (empty: unset)."""
    if raw and (len(raw) > 253 or not _OBJECT_NAME.match(raw)):
        raise SettingsError(
            f"{ENV_PREFIX}{name}={raw!r} is not a Kubernetes object name; use lower-case "
            "letters, digits, '-' and '.'"
        )
    return raw


def _parse_profiles(raw: str) -> dict[str, GpuProfile]:
    """Parse MODELPORT_GPU_PROFILES (JSON, or @file holding JSON)."""
    if not raw:
        return {}
    where = f"{ENV_PREFIX}GPU_PROFILES"
    if raw.startswith("@"):
        where = raw[1:]
        raw = Path(raw[1:]).read_text(encoding="utf-8")
    try:
        data: Any = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{where}: not JSON ({exc.msg}); give an object of profiles") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{where}: give a JSON object {{name: {{gpus, cpu, memory}}}}")
    profiles: dict[str, GpuProfile] = {}
    for name, spec in data.items():
        try:
            tolerations = spec.get("tolerations")
            if tolerations is not None and not all(isinstance(t, dict) for t in tolerations):
                raise TypeError("tolerations")
            profiles[str(name)] = GpuProfile(
                gpus=int(spec["gpus"]),
                cpu=str(spec["cpu"]),
                memory=str(spec["memory"]),
                node_selector={str(k): str(v) for k, v in spec.get("nodeSelector", {}).items()},
                gpu_memory_gib=int(spec.get("gpuMemoryGiB", 0)),
                resource_name=str(spec.get("resourceName", DEFAULT_GPU_RESOURCE)),
                tolerations=None if tolerations is None else tuple(tolerations),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise SettingsError(
                f"{where}: profile {name!r} needs gpus (int), cpu and memory "
                "(quantities) and optionally gpuMemoryGiB (int), resourceName (string), "
                "nodeSelector (object) and tolerations (list of objects)"
            ) from None
    return profiles
