"""The gateway's configuration file: the contract between the operator and the gateway.

The operator renders one file per endpoint into the ConfigMap ``<ep>-gateway`` under the
key :data:`CONFIG_FILE_NAME` (``gateway.json``) and mounts it at the gateway's
``--config`` directory. Credentials never appear in it: each credential is a *path*,
relative to the gateway's ``--secrets`` directory, of a file that a projected Secret
volume puts there. The suggested layout is ``<secretName>/<key>``, which is what
:func:`secret_file_path` returns, so that a ``secretKeyRef: {name: llm-keys, key: openai}``
becomes the file ``<secrets>/llm-keys/openai``::

    volumes:
      - name: secrets
        projected:
          sources:
            - secret:
                name: llm-keys
                items: [{key: openai, path: llm-keys/openai}]

Kubernetes updates such files in place (an atomic symlink swap), and the gateway re-reads
a file whenever its inode or mtime changes, so rotating a key needs no restart. A change
to *this* file does need one: the operator should put a hash of the rendered file in the
Deployment's pod template so that a config change rolls the pods.

Example (``gateway.json``; YAML shown for readability, the file is JSON)::

    version: 1
    endpointName: chat
    endpointNamespace: team-a
    requestTimeoutSeconds: 297
    entities:
      - name: gpt-4o
        task: llm/v1/chat
        provider: openai
        modelName: gpt-4o
        openai: {apiType: openai, organization: org-123}
        credentials: {apiKey: llm-keys/openai}
      - name: claude
        task: llm/v1/chat
        provider: anthropic
        modelName: claude-sonnet-4-5
        baseUrl: https://anthropic.internal.example.com    # optional override
        credentials: {apiKey: llm-keys/anthropic}
      - name: llama-8b
        task: llm/v1/chat
        provider: self-hosted
        modelName: llama-8b                 # the runtime's --served-model-name
        baseUrl: http://chat-llama-8b.team-a.svc.cluster.local:8000/v1
      # (a custom model's endpoint instead has entities of task ml/v1/predict, provider
      # mlflow, baseUrl http://<svc>:8000: the scoring server's /invocations)
    routes:
      - {servedEntityName: gpt-4o, trafficPercentage: 80}
      - {servedEntityName: llama-8b, trafficPercentage: 20}
    aiGateway:
      fallbackEnabled: false
      rateLimits: [{calls: 100, key: user}]
      rateLimiting:                         # where they are counted; see RateLimiting
        store: {address: "redis://modelport-ratelimit.modelport-system:6379",
                passwordFile: modelport-ratelimit/password,
                keyPrefix: "modelport:{team-a/chat}:"}
        failOpen: false
      usageTrackingEnabled: true
      usageTable: {postgresDsn: modelport-usage-db/dsn, retentionDays: 90}   # rows in PostgreSQL
      inferenceTable:                       # payload rows; see InferenceTable
        sink: postgres
        table: chat_payload
        postgresDsn: modelport-usage-db/dsn
      auth:                                 # who may call; see AuthConfig
        enabled: true
        apiKeys:
          - path: chat-callers/alice        # one key per line; only hashes are kept
            principal: {user: alice@example.com, groups: [team-a]}
        serviceAccountTokens: {audiences: [modelport], cacheSeconds: 10}
        oidc: {issuer: https://login.example.com, audiences: [modelport]}
        allow: {serviceAccounts: [team-a/*], groups: [ml-platform]}
      guardrails:                           # see modelport.gateway.guardrails
        input: {pii: MASK, invalidKeywords: [secret project], validTopics: [billing], safety: true}
        output: {pii: MASK}
        guard: {url: "http://guard.ml.svc.cluster.local/v1", model: guard, failOpen: false,
                tokenPath: modelport-guard/token}
    readiness:                              # fallback skips self-hosted entities with no ready pod
      namespace: team-a
      services: {llama-8b: chat-llama-8b}   # entity -> its Service (EndpointSlices watched)
    scaleToZero:                            # entities the gateway holds requests for and wakes
      namespace: team-a
      deployments: {llama-8b: chat-llama-8b}   # entity -> its Deployment (scale subresource)
      maxHeldRequests: 256
    tracing: {endpoint: "http://otel-collector.monitoring:4318", sampleRatio: 1.0}  # OTLP spans
    accessLog: true                         # one line per finished request, with its trace id

The file is parsed and validated here and nowhere else; this module deliberately imports
nothing from ``modelport.api`` so the gateway image and the operator can evolve the CRD
without the gateway having to load it.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CONFIG_FILE_NAME = "gateway.json"
"""The file name inside the ``--config`` directory (the ConfigMap key)."""

FORMAT_VERSION: Literal[1] = 1
DEFAULT_REQUEST_TIMEOUT_SECONDS = 297.0
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024


class Task(StrEnum):
    """What an entity does; every entity of one endpoint has the same task."""

    CHAT = "llm/v1/chat"
    COMPLETIONS = "llm/v1/completions"
    EMBEDDINGS = "llm/v1/embeddings"
    CUSTOM = "ml/v1/predict"
    """A custom (MLflow) model, queried at ``/serving-endpoints/<ep>/invocations`` with
    the reference service's input formats; token usage does not apply."""


LLM_TASKS = frozenset({Task.CHAT, Task.COMPLETIONS, Task.EMBEDDINGS})
"""The OpenAI-format tasks: everything but a custom model's."""


class ProviderName(StrEnum):
    """The upstream an entity is translated to; one gateway provider module each."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    COHERE = "cohere"
    AMAZON_BEDROCK = "amazon-bedrock"
    GOOGLE_CLOUD_VERTEX_AI = "google-cloud-vertex-ai"
    AI21LABS = "ai21labs"
    DATABRICKS_MODEL_SERVING = "databricks-model-serving"
    CUSTOM = "custom"
    SELF_HOSTED = "self-hosted"
    """An in-cluster inference Service (vLLM and friends) speaking the OpenAI API."""
    MLFLOW = "mlflow"
    """An in-cluster MLflow scoring server (a custom model) answering ``/invocations``."""


class _Strict(BaseModel):
    """Unknown keys are errors: a typo in the rendered file must fail loudly at start-up."""

    # Constructed and serialised by the camelCase aliases (the file's names); Python code
    # reads the snake_case attributes.
    model_config = ConfigDict(extra="forbid", frozen=True)


RelativeSecretPath = Annotated[
    str,
    Field(
        description="A file path relative to the --secrets directory, e.g. 'llm-keys/openai'.",
        min_length=1,
    ),
]


class Credentials(_Strict):
    """Where each credential an entity needs is mounted; every value is a relative path.

    Which fields a provider needs: ``apiKey`` for openai (apiType openai/azure), anthropic,
    cohere, ai21labs, databricks-model-serving (the API token) and custom (the bearer
    token or the api-key header's value); ``clientSecret`` for openai apiType azuread;
    ``awsAccessKeyId`` + ``awsSecretAccessKey`` (+ optional ``awsSessionToken``) for
    amazon-bedrock, or none of them to sign with the pod's own AWS identity (botocore's
    credential chain: IRSA, EKS Pod Identity, the node's role); ``privateKey`` (a
    service-account JSON key file) for google-cloud-vertex-ai. Self-hosted entities need
    none.
    """

    api_key: RelativeSecretPath | None = Field(default=None, alias="apiKey")
    client_secret: RelativeSecretPath | None = Field(default=None, alias="clientSecret")
    aws_access_key_id: RelativeSecretPath | None = Field(default=None, alias="awsAccessKeyId")
    aws_secret_access_key: RelativeSecretPath | None = Field(
        default=None, alias="awsSecretAccessKey"
    )
    aws_session_token: RelativeSecretPath | None = Field(default=None, alias="awsSessionToken")
    private_key: RelativeSecretPath | None = Field(default=None, alias="privateKey")

    @field_validator("*")
    @classmethod
    def _stays_inside_secrets_dir(cls, value: str | None) -> str | None:
        if value is not None:
            _check_relative(value)
        return value


def _check_relative(value: str) -> None:
    # A path that escapes --secrets could read any file the pod can see.
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(
            f"credential path {value!r} must be relative to --secrets and must not "
            "contain '..'; use '<secretName>/<key>'"
        )


class OpenAISettings(_Strict):
    """openaiConfig without its secrets."""

    api_type: Literal["openai", "azure", "azuread"] = Field(default="openai", alias="apiType")
    api_version: str | None = Field(default=None, alias="apiVersion")
    deployment_name: str | None = Field(default=None, alias="deploymentName")
    organization: str | None = Field(default=None, alias="organization")
    tenant_id: str | None = Field(default=None, alias="tenantId")
    client_id: str | None = Field(default=None, alias="clientId")
    token_url: str | None = Field(
        default=None,
        alias="tokenUrl",
        description="Entra ID token endpoint; defaults to the public cloud's for tenantId.",
    )


class BedrockSettings(_Strict):
    """amazonBedrockConfig without its secrets."""

    region: str = Field(alias="region", min_length=1)
    bedrock_provider: Literal["anthropic", "cohere", "ai21labs", "amazon", "meta", "mistral"] = (
        Field(default="anthropic", alias="bedrockProvider")
    )


class VertexSettings(_Strict):
    """googleCloudVertexAiConfig without its secrets."""

    project_id: str = Field(alias="projectId", min_length=1)
    region: str = Field(alias="region", min_length=1)
    token_url: str | None = Field(
        default=None,
        alias="tokenUrl",
        description="OAuth token endpoint; defaults to the key file's token_uri.",
    )


class CustomSettings(_Strict):
    """customProviderConfig without its secrets: which header carries the credential."""

    api_key_header: str | None = Field(
        default=None,
        alias="apiKeyHeader",
        description="apiKeyAuth.key: the header that carries credentials.apiKey; "
        "unset means 'Authorization: Bearer <apiKey>' (bearerTokenAuth).",
    )


class EntityConfig(_Strict):
    """One served entity as the gateway sees it: where to send requests and how."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,63}$")
    task: Task
    provider: ProviderName
    model_name: str = Field(alias="modelName", min_length=1)
    base_url: str | None = Field(
        default=None,
        alias="baseUrl",
        description="Overrides the provider's public API base URL (required for custom, "
        "databricks-model-serving, self-hosted and Azure).",
    )
    openai: OpenAISettings | None = None
    bedrock: BedrockSettings | None = None
    vertex: VertexSettings | None = None
    custom: CustomSettings | None = None
    credentials: Credentials = Field(default_factory=Credentials)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"baseUrl {value!r} must start with http:// or https://")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _provider_has_what_it_needs(self) -> Self:
        problem = _missing_for_provider(self)
        if problem:
            raise ValueError(f"entity {self.name!r} ({self.provider.value}): {problem}")
        return self


def _missing_for_provider(entity: EntityConfig) -> str | None:
    """Name what a provider needs and the entity lacks, or None when it is complete."""
    creds = entity.credentials
    p = ProviderName
    match entity.provider:
        case p.OPENAI:
            settings = entity.openai or OpenAISettings()
            if settings.api_type == "openai":
                return None if creds.api_key else "credentials.apiKey is required"
            if not (entity.base_url and settings.api_version and settings.deployment_name):
                return (
                    f"openai apiType {settings.api_type} needs baseUrl, openai.apiVersion "
                    "and openai.deploymentName"
                )
            if settings.api_type == "azure":
                return None if creds.api_key else "credentials.apiKey is required"
            if not (settings.tenant_id and settings.client_id and creds.client_secret):
                return (
                    "apiType azuread needs openai.tenantId, openai.clientId and "
                    "credentials.clientSecret"
                )
        case p.ANTHROPIC | p.COHERE | p.AI21LABS:
            return None if creds.api_key else "credentials.apiKey is required"
        case p.DATABRICKS_MODEL_SERVING | p.CUSTOM:
            if not entity.base_url:
                return "baseUrl is required"
            return None if creds.api_key else "credentials.apiKey is required"
        case p.AMAZON_BEDROCK:
            if entity.bedrock is None:
                return "bedrock.region is required"
            if (creds.aws_access_key_id is None) != (creds.aws_secret_access_key is None):
                return (
                    "credentials.awsAccessKeyId and credentials.awsSecretAccessKey go "
                    "together; set both, or neither to sign with the pod's AWS identity"
                )
        case p.GOOGLE_CLOUD_VERTEX_AI:
            if entity.vertex is None:
                return "vertex.projectId and vertex.region are required"
            if not creds.private_key:
                return "credentials.privateKey (a service-account JSON key) is required"
        case p.SELF_HOSTED:
            if not entity.base_url:
                return "baseUrl (the in-cluster Service URL, ending in /v1) is required"
        case p.MLFLOW:
            if not entity.base_url:
                return "baseUrl (the in-cluster Service URL of the scoring server) is required"
    return None


class Route(_Strict):
    """A share of the endpoint's traffic, as in trafficConfig.routes."""

    served_entity_name: str = Field(alias="servedEntityName")
    traffic_percentage: int = Field(alias="trafficPercentage", ge=0, le=100)


RateLimitKey = Literal["user", "user_group", "service_principal", "endpoint"]


class RateLimit(_Strict):
    """aiGateway.rateLimits[]: calls and/or tokens per minute, per key (see
    :mod:`modelport.gateway.ratelimit` for who each limit applies to)."""

    calls: int | None = Field(default=None, ge=0)
    tokens: int | None = Field(default=None, ge=0)
    key: RateLimitKey = "endpoint"
    principal: str | None = None
    renewal_period: Literal["minute"] = Field(default="minute", alias="renewalPeriod")


class RateLimitStore(_Strict):
    """The Redis (or Valkey) server that every replica of the gateway counts in.

    ``address`` is ``redis://host:port[/db]`` (``rediss://`` for TLS) and never holds the
    password: that is the file ``passwordFile`` (relative to --secrets), read at each
    (re)connection, so a rotated password needs no restart. ``keyPrefix`` keeps the
    endpoint's counters apart from other endpoints' in a shared server; the operator
    renders ``modelport:{<namespace>/<endpoint>}:`` (the braces are a Redis Cluster hash
    tag: all of an endpoint's keys hash to one slot).
    """

    address: str = Field(min_length=1)
    password_file: RelativeSecretPath | None = Field(default=None, alias="passwordFile")
    username: str | None = Field(default=None, min_length=1)
    key_prefix: str | None = Field(default=None, alias="keyPrefix", min_length=1)
    timeout_seconds: float = Field(default=0.25, alias="timeoutSeconds", gt=0, le=10)

    @field_validator("address")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        # The password belongs in a Secret, never in a ConfigMap: refuse one in the URL
        # (first, and without echoing the value).
        netloc = value.split("://", 1)[-1].split("/", 1)[0]
        if "@" in netloc:
            raise ValueError(
                "rate limit store address must not contain credentials; put the password "
                "in a Secret and the user in username"
            )
        if not value.startswith(("redis://", "rediss://")):
            raise ValueError(
                f"rate limit store address {value!r} must start with redis:// or rediss://"
            )
        return value

    @field_validator("password_file")
    @classmethod
    def _inside_secrets(cls, value: str | None) -> str | None:
        if value is not None:
            _check_relative(value)
        return value


DEFAULT_RESERVE_COMPLETION_TOKENS = 512


class RateLimiting(_Strict):
    """How ``rateLimits`` are enforced: where they are counted and what happens when
    that cannot be done. Without a ``store`` each gateway process counts on its own,
    which is exact only while the endpoint runs one replica with one worker."""

    store: RateLimitStore | None = None
    fail_open: bool = Field(
        default=False,
        alias="failOpen",
        description="Admit requests when the store cannot be reached (default: refuse "
        "them with 503).",
    )
    reserve_completion_tokens: int = Field(
        default=DEFAULT_RESERVE_COMPLETION_TOKENS,
        alias="reserveCompletionTokens",
        ge=1,
        le=1_000_000,
        description="Completion tokens reserved for a request that sets no max_tokens.",
    )


class CallerPrincipal(_Strict):
    """Who an API key stands for: exactly one of ``user`` / ``servicePrincipal``, plus groups."""

    user: str | None = Field(default=None, min_length=1)
    service_principal: str | None = Field(default=None, alias="servicePrincipal", min_length=1)
    groups: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_name(self) -> Self:
        if (self.user is None) == (self.service_principal is None):
            raise ValueError("set exactly one of user and servicePrincipal")
        return self


class ApiKey(_Strict):
    """An API key file (one key per line, so a rotation can overlap) and its principal."""

    path: RelativeSecretPath
    principal: CallerPrincipal

    @field_validator("path")
    @classmethod
    def _inside_secrets(cls, value: str) -> str:
        _check_relative(value)
        return value


class ServiceAccountTokens(_Strict):
    """Kubernetes ServiceAccount tokens, verified with a TokenReview.

    ``apiServer``, ``tokenFile`` and ``caFile`` default to the pod's in-cluster
    configuration (``KUBERNETES_SERVICE_HOST``/``_PORT`` and the mounted ServiceAccount
    token and CA); the operator never sets them, tests and out-of-cluster runs do.
    """

    audiences: list[str] = Field(min_length=1)
    cache_seconds: float = Field(default=10.0, alias="cacheSeconds", ge=0, le=300)
    api_server: str | None = Field(default=None, alias="apiServer")
    token_file: str | None = Field(default=None, alias="tokenFile")
    ca_file: str | None = Field(default=None, alias="caFile")


class Oidc(_Strict):
    """JWTs of one OIDC issuer: signature by its JWKS, ``iss``, ``aud``, ``exp``, ``nbf``."""

    issuer: str = Field(min_length=1)
    audiences: list[str] = Field(min_length=1)
    jwks_uri: str | None = Field(
        default=None,
        alias="jwksUri",
        description="Default: jwks_uri of <issuer>/.well-known/openid-configuration.",
    )
    user_claim: str = Field(default="sub", alias="userClaim", min_length=1)
    groups_claim: str = Field(default="groups", alias="groupsClaim", min_length=1)
    algorithms: list[str] = Field(
        default_factory=lambda: ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"],
        min_length=1,
    )

    @field_validator("issuer", "jwks_uri")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} must start with https:// (or http:// in a cluster)")
        return value

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, value: list[str]) -> list[str]:
        # A shared-secret algorithm would let anyone holding the JWKS sign tokens.
        bad = [a for a in value if a.upper().startswith("HS") or a.lower() == "none"]
        if bad:
            raise ValueError(f"algorithms {bad} are not allowed; use RS*, PS* or ES*")
        return value


class Allow(_Strict):
    """Which token-authenticated callers may call (any match allows).

    ``serviceAccounts`` entries are ``<namespace>/<name>`` or ``<namespace>/*``. A caller
    with an API key of this endpoint is always allowed: listing the key is the grant.
    """

    service_accounts: list[str] = Field(default_factory=list, alias="serviceAccounts")
    users: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    service_principals: list[str] = Field(default_factory=list, alias="servicePrincipals")

    @field_validator("service_accounts")
    @classmethod
    def _namespace_slash_name(cls, value: list[str]) -> list[str]:
        for item in value:
            namespace, slash, name = item.partition("/")
            if not (namespace and slash and name):
                raise ValueError(
                    f"serviceAccounts entry {item!r}: write '<namespace>/<name>' or '<namespace>/*'"
                )
        return value


class AuthConfig(_Strict):
    """Caller authentication. Absent from the file means *required*, with no credential
    accepted: a gateway started from a hand-written file is never an open proxy by
    accident. ``enabled: false`` lets every caller through, as anonymous."""

    enabled: bool = True
    api_keys: list[ApiKey] = Field(default_factory=list, alias="apiKeys", max_length=1000)
    service_account_tokens: ServiceAccountTokens | None = Field(
        default=None, alias="serviceAccountTokens"
    )
    oidc: Oidc | None = None
    allow: Allow = Field(default_factory=Allow)


class GuardrailChecks(_Strict):
    """The checks of one direction (aiGateway.guardrails.input / .output)."""

    safety: bool = False
    pii: Literal["NONE", "BLOCK", "MASK"] = "NONE"
    invalid_keywords: list[str] = Field(
        default_factory=list, alias="invalidKeywords", max_length=100
    )
    valid_topics: list[str] = Field(default_factory=list, alias="validTopics", max_length=100)

    @property
    def active(self) -> bool:
        """Whether any check is on."""
        return bool(self.safety or self.pii != "NONE" or self.invalid_keywords or self.valid_topics)


class GuardModel(_Strict):
    """The guard model that judges safety: an OpenAI-compatible chat API (a Llama Guard
    entity of another ServingEndpoint, or any URL), and what to do when it cannot answer."""

    url: str = Field(
        description="Base URL ending in /v1, e.g. http://guard.ns.svc.cluster.local/v1."
    )
    model: str = Field(min_length=1)
    token_path: RelativeSecretPath | None = Field(
        default=None,
        alias="tokenPath",
        description="A file under --secrets holding the bearer token to send (a projected "
        "ServiceAccount token, re-read when it rotates); unset: no Authorization header.",
    )
    fail_open: bool = Field(default=False, alias="failOpen")
    timeout_seconds: float = Field(default=5.0, alias="timeoutSeconds", gt=0, le=60)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"guard url {value!r} must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("token_path")
    @classmethod
    def _inside_secrets(cls, value: str | None) -> str | None:
        if value is not None:
            _check_relative(value)
        return value


class GuardrailsConfig(_Strict):
    """aiGateway.guardrails, plus the cluster's guard model when ``safety`` is on."""

    input: GuardrailChecks = Field(default_factory=GuardrailChecks)
    output: GuardrailChecks = Field(default_factory=GuardrailChecks)
    guard: GuardModel | None = None

    @model_validator(mode="after")
    def _guard_for_safety(self) -> Self:
        if (self.input.safety or self.output.safety) and self.guard is None:
            raise ValueError(
                "guardrails: safety is on but no guard model is configured; set the cluster's "
                "guard model (Helm value guardModel) or turn safety off"
            )
        return self


class Readiness(_Strict):
    """Which Services' EndpointSlices tell whether a self-hosted entity has a ready pod.

    ``apiServer``, ``tokenFile`` and ``caFile`` default to the pod's in-cluster
    configuration, as for :class:`ServiceAccountTokens`.
    """

    namespace: str = Field(min_length=1)
    services: dict[str, str] = Field(
        min_length=1, description="Entity name -> the name of its inference Service."
    )
    api_server: str | None = Field(default=None, alias="apiServer")
    token_file: str | None = Field(default=None, alias="tokenFile")
    ca_file: str | None = Field(default=None, alias="caFile")


class ScaleToZero(_Strict):
    """Self-hosted entities that scale to zero replicas when idle.

    A request for one of them while it has no ready pod is held (at most
    ``maxHeldRequests`` at a time per entity, each until the request's deadline) rather
    than failed, and the gateway wakes the entity: it sets its Deployment from 0 to 1
    replica through the ``scale`` subresource, with its own ServiceAccount's token (the
    operator grants exactly that, for these Deployments). ``apiServer``, ``tokenFile``
    and ``caFile`` default to the pod's in-cluster configuration, as for
    :class:`ServiceAccountTokens`.
    """

    namespace: str = Field(min_length=1)
    deployments: dict[str, str] = Field(
        min_length=1, description="Entity name -> the name of its Deployment."
    )
    max_held_requests: int = Field(default=256, alias="maxHeldRequests", ge=0)
    api_server: str | None = Field(default=None, alias="apiServer")
    token_file: str | None = Field(default=None, alias="tokenFile")
    ca_file: str | None = Field(default=None, alias="caFile")


DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
"""Payloads larger than this are not stored in an inference table (as the reference
service: 1 MiB), only counted and marked."""
DEFAULT_RETENTION_DAYS = 90
# A PostgreSQL identifier we create tables with: unquoted-safe, at most 63 bytes.
_PG_IDENTIFIER = r"^[a-z_][a-z0-9_]{0,62}$"


class UsageTable(_Strict):
    """Usage rows in PostgreSQL: one row per request in the table ``modelport_usage``."""

    postgres_dsn: RelativeSecretPath = Field(
        alias="postgresDsn",
        description="The file (under --secrets) holding the PostgreSQL connection string.",
    )
    retention_days: int = Field(
        default=DEFAULT_RETENTION_DAYS,
        alias="retentionDays",
        ge=0,
        description="Rows older than this are deleted; 0 keeps them forever.",
    )

    @field_validator("postgres_dsn")
    @classmethod
    def _inside_secrets(cls, value: str) -> str:
        _check_relative(value)
        return value


class InferenceTable(_Strict):
    """Request and response payloads, one row per (sampled) request."""

    sink: Literal["log", "postgres"] = "log"
    schema_name: str | None = Field(
        default=None,
        alias="schema",
        pattern=_PG_IDENTIFIER,
        description="The PostgreSQL schema of the table; default: the connection's.",
    )
    table: str = Field(pattern=_PG_IDENTIFIER, description="The table's name, e.g. 'chat_payload'.")
    postgres_dsn: RelativeSecretPath | None = Field(default=None, alias="postgresDsn")
    sampling_fraction: float = Field(default=1.0, alias="samplingFraction", ge=0, le=1)
    max_payload_bytes: int = Field(default=DEFAULT_MAX_PAYLOAD_BYTES, alias="maxPayloadBytes", gt=0)
    retention_days: int = Field(default=DEFAULT_RETENTION_DAYS, alias="retentionDays", ge=0)

    @model_validator(mode="after")
    def _postgres_has_a_dsn(self) -> Self:
        if self.postgres_dsn is not None:
            _check_relative(self.postgres_dsn)
        if self.sink == "postgres" and self.postgres_dsn is None:
            raise ValueError("inferenceTable.postgresDsn is required when sink is postgres")
        return self


class Tracing(_Strict):
    """Where the gateway sends its request spans (OTLP over HTTP), the cluster's setting
    ``MODELPORT_TRACING`` (Helm value ``tracing``). Absent: no spans, and no cost."""

    endpoint: str = Field(
        description="The collector's OTLP/HTTP base URL, e.g. http://otel-collector:4318 "
        "(spans go to <endpoint>/v1/traces)."
    )
    sample_ratio: float = Field(
        default=1.0,
        alias="sampleRatio",
        ge=0,
        le=1,
        description="Share of new traces kept; a request that arrives with a W3C traceparent "
        "follows its sampled flag.",
    )
    service_name: str = Field(default="modelport-gateway", alias="serviceName", min_length=1)

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"tracing endpoint {value!r} must start with http:// or https://")
        return value.rstrip("/")


class AiGatewayConfig(_Strict):
    """The seam for the AI-gateway features; the gateway reads these through one policy hook."""

    fallback_enabled: bool = Field(default=False, alias="fallbackEnabled")
    usage_tracking_enabled: bool = Field(default=False, alias="usageTrackingEnabled")
    usage_table: UsageTable | None = Field(
        default=None,
        alias="usageTable",
        description="Where usage rows go; unset, usage tracking only counts (Prometheus).",
    )
    inference_table: InferenceTable | None = Field(default=None, alias="inferenceTable")
    rate_limits: list[RateLimit] = Field(default_factory=list, alias="rateLimits", max_length=20)
    rate_limiting: RateLimiting = Field(default_factory=RateLimiting, alias="rateLimiting")
    auth: AuthConfig = Field(default_factory=AuthConfig)
    guardrails: GuardrailsConfig = Field(default_factory=GuardrailsConfig)


class GatewayConfig(_Strict):
    """The whole file: one endpoint, its entities and its traffic split."""

    version: Literal[1] = FORMAT_VERSION
    endpoint_name: str = Field(alias="endpointName", min_length=1)
    endpoint_namespace: str = Field(
        default="",
        alias="endpointNamespace",
        description="The endpoint's namespace, for usage and payload rows (which several "
        "endpoints share); empty for a gateway run by hand.",
    )
    request_timeout_seconds: float = Field(
        default=DEFAULT_REQUEST_TIMEOUT_SECONDS, alias="requestTimeoutSeconds", gt=0
    )
    max_request_bytes: int = Field(default=DEFAULT_MAX_REQUEST_BYTES, alias="maxRequestBytes", gt=0)
    entities: list[EntityConfig] = Field(min_length=1)
    routes: list[Route] = Field(default_factory=list)
    ai_gateway: AiGatewayConfig = Field(default_factory=AiGatewayConfig, alias="aiGateway")
    readiness: Readiness | None = Field(
        default=None,
        description="Where the gateway learns which self-hosted entities have a ready pod "
        "(fallback skips those that have none); unset: every entity counts as ready.",
    )
    scale_to_zero: ScaleToZero | None = Field(
        default=None,
        alias="scaleToZero",
        description="The self-hosted entities that scale to zero: their requests are held "
        "while they start; unset: none does.",
    )
    tracing: Tracing | None = None
    access_log: bool = Field(
        default=False,
        alias="accessLog",
        description="One log line per finished request (request and trace id, caller, "
        "entity, status, timings, tokens), written off the request path.",
    )

    @model_validator(mode="after")
    def _routes_are_consistent(self) -> Self:
        names = [e.name for e in self.entities]
        if len(set(names)) != len(names):
            raise ValueError(f"entity names must be unique, got {names}")
        if len({e.task for e in self.entities}) != 1:
            raise ValueError("all entities of one endpoint must share one task")
        if self.readiness is not None:
            unknown = sorted(set(self.readiness.services) - set(names))
            if unknown:
                raise ValueError(f"readiness.services names unknown entities {unknown}")
        if self.scale_to_zero is not None:
            hosted = {e.name for e in self.entities if e.provider is ProviderName.SELF_HOSTED}
            unknown = sorted(set(self.scale_to_zero.deployments) - hosted)
            if unknown:
                raise ValueError(
                    f"scaleToZero.deployments names {unknown}, which are not self-hosted "
                    "entities; only those run Deployments"
                )
        if not self.routes:
            if len(self.entities) != 1:
                raise ValueError("routes are required when there is more than one entity")
            return self
        for route in self.routes:
            if route.served_entity_name not in names:
                raise ValueError(
                    f"routes: servedEntityName {route.served_entity_name!r} is not an "
                    f"entity; choose one of {names}"
                )
        total = sum(r.traffic_percentage for r in self.routes)
        if total != 100:
            raise ValueError(f"routes: trafficPercentage must sum to 100, got {total}")
        return self

    @property
    def task(self) -> Task:
        """The endpoint's task (the validator ensures every entity has it)."""
        return self.entities[0].task

    def weights(self) -> list[tuple[str, int]]:
        """(entity name, percentage) pairs; a lone entity without routes gets 100."""
        if not self.routes:
            return [(self.entities[0].name, 100)]
        return [(r.served_entity_name, r.traffic_percentage) for r in self.routes]


class ConfigError(ValueError):
    """The config file is missing or invalid; the message says where and how to fix it."""


def secret_file_path(secret_name: str, key: str) -> str:
    """The relative path the operator should mount ``secretKeyRef{name, key}`` at."""
    return f"{secret_name}/{key}"


def dumps(config: GatewayConfig) -> str:
    """Serialise deterministically (stable key order), so rendering twice writes nothing."""
    data = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def loads(text: str | bytes) -> GatewayConfig:
    """Parse and validate a config file's content."""
    try:
        return GatewayConfig.model_validate_json(text)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def load(config_dir: Path) -> GatewayConfig:
    """Read ``<config_dir>/gateway.json``."""
    path = config_dir / CONFIG_FILE_NAME
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read {path}: {exc.strerror}; mount the endpoint's ConfigMap there"
        ) from None
    try:
        return loads(text)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(file)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
