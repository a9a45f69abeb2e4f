"""Who may call an endpoint: `spec.aiGateway.auth`, a Modelport extension.

The reference service authenticates callers with its own identities; a cluster has
three kinds of its own, and the gateway accepts all of them as
`Authorization: Bearer <credential>`:

- **ServiceAccount tokens** of pods, verified by the apiserver (TokenReview);
- **API keys** kept in Secrets, each standing for a user or a service principal;
- **OIDC tokens** of one issuer (the company's identity provider).

Authentication is on by default (the cluster's default, Helm value `gatewayAuth`);
`enabled: false` is the explicit way to let anyone who reaches the Service call.
"""

from __future__ import annotations

import re
from typing import Annotated, Self

from pydantic import ConfigDict, Field, field_validator, model_validator

from modelport.api.meta import (
    HTTP_URL,
    NAME,
    URL,
    ApiModel,
    CelRule,
    SecretKeySelector,
    cel_rules,
)

MAX_API_KEYS = 100
MAX_ALLOW = 100
MAX_AUDIENCES = 10
MAX_GROUPS = 20

# `<namespace>/<name>` or `<namespace>/*`: a namespace is a DNS label, a
# ServiceAccount name a DNS subdomain. No backslashes: the CEL rule embeds it in a
# string literal, where `\*` and `\.` are not valid escapes.
SERVICE_ACCOUNT_ENTRY = (
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?/"
    "([*]|[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*)$"
)
_SERVICE_ACCOUNT_ENTRY = re.compile(SERVICE_ACCOUNT_ENTRY)
# 63 (namespace) + 1 + 253 (name).
SERVICE_ACCOUNT_ENTRY_MAX = 317

Principal = Annotated[str, Field(min_length=1, max_length=NAME)]
Audience = Annotated[str, Field(min_length=1, max_length=NAME)]

# Messages start with the field relative to where the error is reported (pydantic and
# the apiserver both put the full path in front), as the other rules of the API do.
_ONE_PRINCIPAL = (
    "apiKeys[]: set exactly one of user and servicePrincipal (who callers presenting this key are)"
)
_SERVICE_ACCOUNT_FORMAT = (
    "allow.serviceAccounts[] entries are '<namespace>/<name>' or "
    "'<namespace>/*' (every ServiceAccount of the namespace), e.g. 'team-a/chat-client'"
)
_UNIQUE_KEYS = (
    "auth.apiKeys[].secretKeyRef must be unique; list each Secret key once (one key "
    "may hold several API keys, one per line)"
)
_DISABLED_WITH_SETTINGS = (
    "auth.enabled is false, so apiKeys, oidc, allow and serviceAccountTokens would "
    "have no effect; remove them, or set enabled: true"
)


class ServiceAccountTokenAuth(ApiModel):
    """Kubernetes ServiceAccount tokens, verified by the apiserver (TokenReview).

    A pod calls with its token: a projected ServiceAccount token whose audience is one
    of `audiences` (e.g. `kubectl create token <sa> --audience modelport`, or a
    `serviceAccountToken` volume source with that audience)."""

    enabled: bool | None = Field(
        default=None,
        description="Accept ServiceAccount tokens. Unset: the cluster default (Helm value "
        "gatewayAuth.serviceAccountTokens.enabled, true unless changed).",
    )
    audiences: list[Audience] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_AUDIENCES,
        description="A token must be issued for one of these audiences. Unset: the cluster "
        "default (Helm value gatewayAuth.serviceAccountTokens.audiences, [modelport]).",
    )


class CallerApiKey(ApiModel):
    """An API key callers send as `Authorization: Bearer <key>` (the OpenAI SDKs'
    `api_key`), and who they are when they do. Listing a key is its grant: a caller
    with a listed key may call whatever `allow` says."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule("has(self.user) != has(self.servicePrincipal)", _ONE_PRINCIPAL),
        )
    )

    secret_key_ref: SecretKeySelector = Field(
        description="The Secret key holding the API key. It may hold several keys, one per "
        "line, so that a rotation can overlap: add the new key, move callers over, "
        "remove the old one. The gateway re-reads it when the Secret changes."
    )
    user: Principal | None = Field(
        default=None,
        description="The user callers with this key are (for usage, rate limits and logs); "
        "set this or servicePrincipal.",
    )
    service_principal: Principal | None = Field(
        default=None,
        description="The service principal callers with this key are (a job or an "
        "application); set this or user.",
    )
    groups: list[Principal] | None = Field(
        default=None, max_length=MAX_GROUPS, description="Groups the caller is a member of."
    )

    @model_validator(mode="after")
    def _check_principal(self) -> Self:
        if (self.user is None) == (self.service_principal is None):
            raise ValueError(_ONE_PRINCIPAL)
        return self


class OidcAuth(ApiModel):
    """JWTs of one OpenID Connect issuer, checked against its published keys (JWKS):
    signature, issuer, audience and expiry."""

    issuer: Annotated[str, Field(max_length=URL, pattern=HTTP_URL)] = Field(
        description="The issuer URL (the token's iss), e.g. https://login.example.com; its "
        "/.well-known/openid-configuration names the JWKS."
    )
    audiences: list[Audience] = Field(
        min_length=1,
        max_length=MAX_AUDIENCES,
        description="A token must be issued for one of these audiences (its aud).",
    )
    jwks_uri: Annotated[str, Field(max_length=URL, pattern=HTTP_URL)] | None = Field(
        default=None, description="Where the issuer's keys are; default: from its discovery."
    )
    user_claim: Annotated[str, Field(min_length=1, max_length=NAME)] = Field(
        default="sub", description="The claim holding the user's name."
    )
    groups_claim: Annotated[str, Field(min_length=1, max_length=NAME)] = Field(
        default="groups", description="The claim holding the user's groups."
    )


class CallerAllow(ApiModel):
    """Which token-authenticated callers (ServiceAccount or OIDC) may call; any match
    allows. Callers with a listed API key need no entry here."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                f"!has(self.serviceAccounts) || self.serviceAccounts.all(s, "
                f"s.matches('{SERVICE_ACCOUNT_ENTRY}'))",
                _SERVICE_ACCOUNT_FORMAT,
                ".serviceAccounts",
            ),
        )
    )

    service_accounts: (
        list[Annotated[str, Field(min_length=3, max_length=SERVICE_ACCOUNT_ENTRY_MAX)]] | None
    ) = Field(
        default=None,
        max_length=MAX_ALLOW,
        description="ServiceAccounts, as '<namespace>/<name>' or '<namespace>/*'.",
    )
    users: list[Principal] | None = Field(
        default=None, max_length=MAX_ALLOW, description="Users (OIDC), by name."
    )
    groups: list[Principal] | None = Field(
        default=None,
        max_length=MAX_ALLOW,
        description="Groups, e.g. an OIDC group, or system:serviceaccounts:<namespace> for "
        "every ServiceAccount of a namespace.",
    )
    service_principals: list[Principal] | None = Field(
        default=None,
        max_length=MAX_ALLOW,
        description="Service principals, by name (for a ServiceAccount: "
        "system:serviceaccount:<namespace>:<name>).",
    )

    @field_validator("service_accounts")
    @classmethod
    def _check_service_accounts(cls, value: list[str] | None) -> list[str] | None:
        for entry in value or []:
            if not _SERVICE_ACCOUNT_ENTRY.match(entry):
                raise ValueError(f"{_SERVICE_ACCOUNT_FORMAT}; got {entry!r}")
        return value


class GatewayAuth(ApiModel):
    """Who may call the endpoint. On by default: callers send
    `Authorization: Bearer <credential>`, a ServiceAccount token, an API key or an OIDC
    token; unknown or missing credentials get 401, callers `allow` does not name 403."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                "!has(self.enabled) || self.enabled || !(has(self.apiKeys) || has(self.oidc) "
                "|| has(self.allow) || has(self.serviceAccountTokens))",
                _DISABLED_WITH_SETTINGS,
                ".enabled",
            ),
            CelRule(
                "!has(self.apiKeys) || self.apiKeys.all(a, self.apiKeys.exists_one(b, "
                "b.secretKeyRef.name == a.secretKeyRef.name && "
                "b.secretKeyRef.key == a.secretKeyRef.key))",
                _UNIQUE_KEYS,
                ".apiKeys",
            ),
        )
    )

    enabled: bool | None = Field(
        default=None,
        description="Authenticate callers. false: anyone who reaches the endpoint's Service "
        "may call, as anonymous. Unset: on when this endpoint sets apiKeys, oidc, allow or "
        "serviceAccountTokens.enabled: true, else the cluster default (Helm value "
        "gatewayAuth.enabled, true unless changed).",
    )
    service_account_tokens: ServiceAccountTokenAuth | None = Field(
        default=None,
        description="Kubernetes ServiceAccount tokens; unset: the cluster default.",
    )
    api_keys: list[CallerApiKey] | None = Field(
        default=None,
        max_length=MAX_API_KEYS,
        description=f"API keys kept in Secrets, at most {MAX_API_KEYS}.",
    )
    oidc: OidcAuth | None = Field(
        default=None,
        description="OIDC tokens of one issuer; unset: the cluster's issuer (Helm value "
        "gatewayAuth.oidc), if any.",
    )
    allow: CallerAllow | None = Field(
        default=None,
        description="Which token-authenticated callers may call. Unset: the ServiceAccounts "
        "of the endpoint's own namespace. Set, exactly those it lists ({} admits no token: "
        "API keys only).",
    )

    @model_validator(mode="after")
    def _check_auth(self) -> Self:
        configured = (self.api_keys, self.oidc, self.allow, self.service_account_tokens)
        if self.enabled is False and any(v is not None for v in configured):
            raise ValueError(_DISABLED_WITH_SETTINGS)
        refs = [(k.secret_key_ref.name, k.secret_key_ref.key) for k in self.api_keys or []]
        if dupes := sorted({f"{n}/{k}" for n, k in refs if refs.count((n, k)) > 1}):
            raise ValueError(f"{_UNIQUE_KEYS} ({', '.join(dupes)} repeated)")
        return self

    @property
    def asks_for_auth(self) -> bool:
        """Whether the endpoint configures a way in, which turns auth on when `enabled`
        is unset (listing API keys on an endpoint that stays open would mislead)."""
        sa = self.service_account_tokens
        return (
            bool(self.api_keys)
            or self.oidc is not None
            or self.allow is not None
            or (sa is not None and sa.enabled is True)
        )
