"""Who may call: an endpoint's `spec.aiGateway.auth` merged over the cluster's defaults
into the `auth` section of gateway.json.

Each setting the endpoint leaves unset takes the cluster's value (MODELPORT_GATEWAY_AUTH,
the Helm value `gatewayAuth`). API keys become file paths under the gateway's --secrets
directory, like provider keys; the keys themselves never reach the config file.
"""

from __future__ import annotations

from modelport import gatewayconfig as gc
from modelport.api import ServingEndpoint
from modelport.api.auth import GatewayAuth
from modelport.settings import GatewayAuthDefaults


def auth_config(endpoint: ServingEndpoint, defaults: GatewayAuthDefaults) -> gc.AuthConfig:
    """The gateway's `AuthConfig` for `endpoint` under the cluster's `defaults`."""
    ai = endpoint.spec.ai_gateway
    auth = (ai.auth if ai else None) or GatewayAuth()
    if not _enabled(auth, defaults):
        # The explicit opt-out (or the cluster's): every caller is let through, as
        # anonymous; nothing else would have an effect (the API refuses the mix).
        return gc.AuthConfig(enabled=False)
    namespace = endpoint.metadata.namespace or "default"
    return gc.AuthConfig(
        enabled=True,
        apiKeys=[
            gc.ApiKey(
                path=gc.secret_file_path(k.secret_key_ref.name, k.secret_key_ref.key),
                principal=gc.CallerPrincipal(
                    user=k.user, servicePrincipal=k.service_principal, groups=k.groups or []
                ),
            )
            for k in auth.api_keys or []
        ],
        serviceAccountTokens=_service_account_tokens(auth, defaults),
        oidc=_oidc(auth, defaults),
        allow=_allow(auth, namespace),
    )


def _enabled(auth: GatewayAuth, defaults: GatewayAuthDefaults) -> bool:
    if auth.enabled is not None:
        return auth.enabled
    # An endpoint that configures a way in wants it used, even where the cluster's
    # default is open: listing API keys on an endpoint anyone may call would mislead.
    return auth.asks_for_auth or defaults.enabled


def _service_account_tokens(
    auth: GatewayAuth, defaults: GatewayAuthDefaults
) -> gc.ServiceAccountTokens | None:
    own = auth.service_account_tokens
    enabled = own.enabled if own and own.enabled is not None else defaults.service_account_tokens
    if not enabled:
        return None
    audiences = own.audiences if own and own.audiences else list(defaults.audiences)
    return gc.ServiceAccountTokens(audiences=audiences, cacheSeconds=defaults.cache_seconds)


def _oidc(auth: GatewayAuth, defaults: GatewayAuthDefaults) -> gc.Oidc | None:
    own = auth.oidc
    if own is None:
        return defaults.oidc
    return gc.Oidc(
        issuer=own.issuer,
        audiences=own.audiences,
        jwksUri=own.jwks_uri,
        userClaim=own.user_claim,
        groupsClaim=own.groups_claim,
    )


def _allow(auth: GatewayAuth, namespace: str) -> gc.Allow:
    allow = auth.allow
    if allow is None:
        # Unset: the pods of the endpoint's own namespace, which is what a team that
        # owns both the endpoint and its clients expects; anyone else is listed.
        return gc.Allow(serviceAccounts=[f"{namespace}/*"])
    return gc.Allow(
        serviceAccounts=allow.service_accounts or [],
        users=allow.users or [],
        groups=allow.groups or [],
        servicePrincipals=allow.service_principals or [],
    )
