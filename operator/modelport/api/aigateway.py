"""The AI gateway settings of an endpoint: usage tracking, payload logging, rate
limits, guardrails and fallback. Names follow the reference service's `ai_gateway`;
`auth` (who may call, `modelport.api.auth`) is a Modelport extension."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from modelport.api.auth import GatewayAuth
from modelport.api.meta import NAME, SHORT, TEXT, ApiModel, CelRule, SecretValue, cel_rules

RateLimitKey = Literal["user", "user_group", "service_principal", "endpoint"]
PiiBehavior = Literal["NONE", "BLOCK", "MASK"]
SinkType = Literal["log", "postgres"]
SQL_NAME = r"^[a-z_][a-z0-9_-]*$"
"""A PostgreSQL name the gateway creates (``-`` becomes ``_``)."""
MAX_PREFIX = SHORT - len("_payload")


class UsageTrackingConfig(ApiModel):
    """Count requests and tokens per caller and entity: Prometheus counters and, when the
    cluster has a usage database (Helm value usageDatabase), one row per request in its
    table modelport_usage (caller, entity, status, tokens, characters, timings, the
    body's client_request_id and usage_context)."""

    enabled: bool = Field(default=False, description="Track usage.")


class InferenceTableSink(ApiModel):
    """Modelport extension: where payload rows go (the reference service writes to a
    table of its own catalog; a cluster has none)."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                "self.type != 'postgres' || has(self.postgresDsn)",
                "inferenceTableConfig.sink.postgresDsn is required when type is postgres; "
                "set it to a {secretKeyRef} holding the connection string",
                ".postgresDsn",
            )
        )
    )

    type: SinkType = Field(
        default="log",
        description="log (one JSON line per request on the gateway's stdout, the default "
        "of a sink without a type) or postgres.",
    )
    postgres_dsn: SecretValue | None = Field(
        default=None,
        description="Secret key holding the PostgreSQL connection string "
        "(postgresql://user:password@host:5432/database), required with type postgres; it "
        "overrides the cluster's usage database for this endpoint's payloads.",
    )

    @model_validator(mode="after")
    def _check_dsn(self) -> Self:
        if self.type == "postgres" and self.postgres_dsn is None:
            raise ValueError(
                "inferenceTableConfig.sink.postgresDsn is required when type is postgres; "
                "set it to a {secretKeyRef} holding the connection string"
            )
        return self


class InferenceTableConfig(ApiModel):
    """Log request and response payloads ("inference table"): one row per request with
    both payloads (a stream aggregated into the response it amounts to), status,
    timings, caller and entity; payloads over 1 MiB are marked, not stored."""

    enabled: bool = Field(default=False, description="Log payloads.")
    catalog_name: Annotated[str, Field(max_length=NAME)] | None = Field(
        default=None,
        description="Catalog of the table (reference-service field; accepted and unused: "
        "the database is the connection string's).",
    )
    schema_name: Annotated[str, Field(max_length=SHORT, pattern=SQL_NAME)] | None = Field(
        default=None,
        description="PostgreSQL schema of the table (lower-case letters, digits, _ and -, "
        "which becomes _; created when missing); default: the connection's search path "
        "(public).",
    )
    table_name_prefix: Annotated[str, Field(max_length=MAX_PREFIX, pattern=SQL_NAME)] | None = (
        Field(
            default=None,
            description="The table is <prefix>_payload (lower-case letters, digits, _ and -, "
            "which becomes _); default: the endpoint's name.",
        )
    )
    sink: InferenceTableSink | None = Field(
        default=None,
        description="Modelport extension: where the rows go; default: the cluster's usage "
        "database when it has one (Helm value usageDatabase), else log.",
    )
    sampling_fraction: Annotated[float, Field(ge=0, le=1)] | None = Field(
        default=None,
        description="Modelport extension: the fraction of requests whose payloads are "
        "logged, from 0 to 1 (default 1: every request); recorded in each row.",
    )


class RateLimit(ApiModel):
    """A limit on calls and/or tokens per minute (a sliding 60 s window), per key. Every
    limit that applies to a request must admit it: endpoint limits always; the limits of
    the caller's own kind (those naming the caller, else those naming no one); and only
    when there are none of those (per calls/tokens), the limits of each of its groups.
    Over a limit: 429 REQUEST_LIMIT_EXCEEDED with Retry-After, never retried by
    fallback."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                "has(self.calls) || has(self.tokens)",
                "rateLimits[]: set calls, tokens or both",
            ),
            CelRule(
                "self.key != 'endpoint' || !has(self.principal)",
                "rateLimits[].principal needs key user, user_group or service_principal; "
                "remove it for an endpoint-wide limit",
                ".principal",
            ),
        )
    )

    calls: Annotated[int, Field(ge=0, le=1000000000)] | None = Field(
        default=None, description="Requests allowed per renewalPeriod."
    )
    tokens: Annotated[int, Field(ge=0, le=1000000000000)] | None = Field(
        default=None,
        description="Tokens (input + output) allowed per renewalPeriod. A request reserves "
        "its prompt and max_tokens (or the cluster's default) at admission and is charged "
        "the provider's reported usage when it finishes; a stream that runs out is stopped.",
    )
    key: RateLimitKey = Field(
        default="endpoint",
        description="What the limit is counted per: user, user_group (shared by the group's "
        "members), service_principal or endpoint (the default: one budget for all callers). "
        "A user or service principal limit overrides group limits for that caller.",
    )
    principal: Annotated[str, Field(min_length=1, max_length=NAME)] | None = Field(
        default=None,
        description="Limit only this user, group or service principal (overriding the "
        "limits of the same key that name no one); default: each one gets its own budget.",
    )
    renewal_period: Literal["minute"] = Field(
        default="minute", description="Window the limit is counted over; only minute."
    )

    @model_validator(mode="after")
    def _check_limit(self) -> Self:
        if self.calls is None and self.tokens is None:
            raise ValueError("rateLimits[]: set calls, tokens or both")
        if self.key == "endpoint" and self.principal is not None:
            raise ValueError(
                "rateLimits[].principal needs key user, user_group or service_principal; "
                "remove it for an endpoint-wide limit"
            )
        return self


class PiiGuardrail(ApiModel):
    """What to do with personally identifiable information: e-mail addresses, phone
    numbers, credit card numbers (Luhn-checked), IBANs (checksum-checked), IP addresses
    and US SSNs."""

    behavior: PiiBehavior = Field(
        default="NONE",
        description="NONE, BLOCK (refuse with 400 and a reason naming the kinds found, "
        "e.g. pii:EMAIL) or MASK (replace each finding with [EMAIL], [PHONE], "
        "[CREDIT_CARD], [IBAN], [IP_ADDRESS] or [US_SSN] before it goes on).",
    )


class GuardrailParameters(ApiModel):
    """Checks applied to one direction of traffic (input: requests; output: answers,
    streamed ones included)."""

    safety: bool | None = Field(
        default=None,
        description="Ask the cluster's guard model (Helm value guardModel, e.g. Llama "
        "Guard) whether the text is safe; refuse what it calls unsafe. On output, a stream "
        "is held until the whole answer is judged.",
    )
    pii: PiiGuardrail | None = Field(default=None, description="PII detection.")
    invalid_keywords: list[Annotated[str, Field(max_length=TEXT)]] | None = Field(
        default=None,
        max_length=100,
        description="Refuse text containing any of these (whole words, case-insensitive, "
        "Unicode-normalised).",
    )
    valid_topics: list[Annotated[str, Field(max_length=TEXT)]] | None = Field(
        default=None,
        max_length=100,
        description="Refuse text about none of these topics (input: the last user message). "
        "A lexical match of content words, no synonyms: list the words callers use. On "
        "output, a stream is held until the whole answer is judged.",
    )


class Guardrails(ApiModel):
    """Guardrails on requests (input) and responses (output)."""

    input: GuardrailParameters | None = Field(default=None, description="On requests.")
    output: GuardrailParameters | None = Field(default=None, description="On responses.")


class FallbackConfig(ApiModel):
    """On a provider error (429 or 5xx, a timeout, a refused connection), try the other
    entities, heaviest route first, within one request timeout and only before the
    answer has started: a short Retry-After (2 s at most) retries the same entity once;
    an entity failing 5 times in a row is skipped for 30 s (circuit breaker); a
    self-hosted entity with no ready pod is skipped at once."""

    enabled: bool = Field(default=False, description="Fall back to the next entity.")


class AiGatewayConfig(ApiModel):
    """Gateway features of the endpoint."""

    usage_tracking_config: UsageTrackingConfig | None = Field(
        default=None, description="Usage tracking."
    )
    inference_table_config: InferenceTableConfig | None = Field(
        default=None, description="Payload logging."
    )
    rate_limits: list[RateLimit] | None = Field(
        default=None, max_length=20, description="Rate limits; at most 20."
    )
    guardrails: Guardrails | None = Field(default=None, description="Guardrails.")
    fallback_config: FallbackConfig | None = Field(
        default=None, description="Fallback to other entities on errors."
    )
    auth: GatewayAuth | None = Field(
        default=None,
        description="Modelport extension: who may call the endpoint (ServiceAccount tokens, "
        "API keys, OIDC). Unset: the cluster default, which authenticates callers and "
        "admits the ServiceAccounts of the endpoint's namespace.",
    )
