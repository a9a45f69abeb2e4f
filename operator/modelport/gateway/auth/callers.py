"""Caller authentication: the ``authenticate`` stage of the gateway's pipeline.

A caller sends ``Authorization: Bearer <credential>`` (what the OpenAI SDKs send for
``api_key``). The credential is tried, in order:

1. as an **API key** of this endpoint (one keyed digest and a dictionary lookup);
2. when it has the shape of a JWT: as an **OIDC token** if its (unverified) ``iss`` is
   the configured issuer, otherwise as a **Kubernetes ServiceAccount token** (TokenReview).

Missing or invalid credential → 401 ``UNAUTHENTICATED`` with ``WWW-Authenticate:
Bearer``; a token-authenticated caller that ``allow`` does not name → 403
``PERMISSION_DENIED``; a verifier that cannot reach its backend (apiserver, JWKS) → 503.
An API key listed on the endpoint is its own grant. Messages never contain the
credential or anything decoded from it, only a fixed reason.
"""

from __future__ import annotations

import logging
from pathlib import Path

from modelport import gatewayconfig as gc
from modelport.gateway.auth.apikeys import ApiKeyVerifier
from modelport.gateway.auth.base import (
    AuthFailedError,
    AuthUnavailableError,
    Fingerprinter,
    Verifier,
    unverified_issuer,
)
from modelport.gateway.context import Principal, RequestContext
from modelport.gateway.errors import (
    PERMISSION_DENIED,
    TEMPORARILY_UNAVAILABLE,
    UNAUTHENTICATED,
    GatewayError,
)
from modelport.gateway.pipeline import Headers
from modelport.gatewayconfig import ConfigError

log = logging.getLogger("modelport.gateway.auth")

SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
_CHALLENGE = (b"www-authenticate", b'Bearer realm="modelport"')
_INVALID = (b"www-authenticate", b'Bearer realm="modelport", error="invalid_token"')


class CallerAuth:
    """Authenticates callers of one endpoint and checks that they may call it."""

    def __init__(
        self,
        config: gc.AuthConfig,
        api_keys: ApiKeyVerifier,
        *,
        service_accounts: Verifier | None = None,
        oidc: Verifier | None = None,
        oidc_issuer: str | None = None,
    ) -> None:
        self._api_keys = api_keys
        self._service_accounts = service_accounts
        self._oidc = oidc
        self._issuer = oidc_issuer
        allow = config.allow
        self._users = frozenset(allow.users)
        self._groups = frozenset(allow.groups)
        self._service_principals = frozenset(allow.service_principals)
        exact, namespaces = set(), set()
        for entry in allow.service_accounts:
            namespace, _, name = entry.partition("/")
            if name == "*":
                namespaces.add(namespace)
            else:
                exact.add(f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}")
        self._sa_exact = frozenset(exact)
        self._sa_namespaces = frozenset(namespaces)
        methods = [
            m
            for m, on in (
                ("API keys", api_keys),
                ("ServiceAccount tokens", service_accounts),
                ("OIDC tokens", oidc),
            )
            if on
        ]
        self._accepted = " or ".join(methods) if methods else None

    async def authenticate(self, ctx: RequestContext, headers: Headers) -> None:
        """Set ``ctx.principal`` from the request's bearer credential, or refuse."""
        credential = _bearer(headers)
        if credential is None:
            raise self._unauthenticated("no credential", _CHALLENGE)
        principal = self._api_keys.lookup(credential) if self._api_keys else None
        if principal is not None:
            ctx.principal = principal
            return
        verifier = self._token_verifier(credential)
        if verifier is None:
            raise self._unauthenticated("the credential is not valid for this endpoint", _INVALID)
        try:
            principal = await verifier.verify(credential)
        except AuthFailedError as exc:
            detail = f" ({exc.detail})" if exc.detail else ""
            raise self._unauthenticated(
                f"the token is not valid for this endpoint: {exc.reason}{detail}", _INVALID
            ) from None
        except AuthUnavailableError as exc:
            raise GatewayError(
                503,
                TEMPORARILY_UNAVAILABLE,
                f"the credential cannot be verified right now ({exc}); retry shortly",
            ) from None
        ctx.principal = principal
        if not self.allows(principal):
            raise GatewayError(
                403,
                PERMISSION_DENIED,
                f"{principal.label} may not query endpoint {ctx.endpoint!r}; ask its owner "
                "to add you to spec.aiGateway.auth.allow",
            )

    def allows(self, principal: Principal) -> bool:
        """Whether a token-authenticated ``principal`` may call (``allow``, any match)."""
        if principal.kind == "user" and principal.name in self._users:
            return True
        if principal.kind == "service_principal":
            name = principal.name
            if name in self._service_principals or name in self._sa_exact:
                return True
            if name.startswith(SERVICE_ACCOUNT_PREFIX):
                namespace = name[len(SERVICE_ACCOUNT_PREFIX) :].partition(":")[0]
                if namespace in self._sa_namespaces:
                    return True
        return not self._groups.isdisjoint(principal.groups)

    async def aclose(self) -> None:
        """Close the verifiers' connections."""
        for verifier in (self._service_accounts, self._oidc):
            if verifier is not None:
                await verifier.aclose()

    def _token_verifier(self, credential: str) -> Verifier | None:
        if credential.count(".") != 2:
            return None  # not a JWT: it was an API key or nothing
        if self._oidc is not None and unverified_issuer(credential) == self._issuer:
            return self._oidc
        return self._service_accounts

    def _unauthenticated(self, reason: str, challenge: tuple[bytes, bytes]) -> GatewayError:
        if self._accepted is None:
            hint = "this endpoint accepts no credential yet: its owner must configure "
            hint += "spec.aiGateway.auth"
        else:
            hint = f"send 'Authorization: Bearer <credential>' with one of: {self._accepted}"
        return GatewayError(401, UNAUTHENTICATED, f"{reason}; {hint}", headers=(challenge,))


def build(config: gc.AuthConfig, secrets_dir: Path, fingerprint: Fingerprinter) -> CallerAuth:
    """The authenticator that ``config`` describes (verifiers are imported when used)."""
    service_accounts: Verifier | None = None
    oidc: Verifier | None = None
    if config.service_account_tokens is not None:
        from modelport.gateway.auth.tokenreview import TokenReviewVerifier

        try:
            service_accounts = TokenReviewVerifier(
                config.service_account_tokens, fingerprint=fingerprint
            )
        except ValueError as exc:  # no apiserver to ask, outside a pod
            raise ConfigError(f"aiGateway.auth.{exc}") from None
    if config.oidc is not None:
        from modelport.gateway.auth.oidc import OidcVerifier

        oidc = OidcVerifier(config.oidc, fingerprint=fingerprint)
    return CallerAuth(
        config,
        ApiKeyVerifier(secrets_dir, config.api_keys, fingerprint=fingerprint),
        service_accounts=service_accounts,
        oidc=oidc,
        oidc_issuer=config.oidc.issuer if config.oidc else None,
    )


def _bearer(headers: Headers) -> str | None:
    """The credential of the first ``Authorization: Bearer`` header, if any."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credential = value.partition(b" ")
            if scheme.lower() != b"bearer":
                return None
            token = credential.strip()
            return token.decode("latin-1") if token else None
    return None
