"""Callers of the API: a bearer token becomes a Kubernetes identity, and Kubernetes RBAC
decides what that identity may do (a SubjectAccessReview per operation).

**Who.** Clients send ``Authorization: Bearer <token>`` (the SDKs' ``token``), one of:

- a **ServiceAccount token** for one of the server's audiences (``modelport`` by
  default: ``kubectl create token <sa> --audience modelport``), verified by the apiserver
  with a TokenReview (the gateway's verifier, reused: its cache, its bounds). Tokens for
  the apiserver's own audience are refused on purpose: a server that accepted them could
  replay them against the apiserver.
- an **OIDC token** of the configured issuer (the gateway's verifier too); the user and
  groups get ``--oidc-username-prefix``/``--oidc-groups-prefix``, and the group
  ``system:authenticated``, as the apiserver's own OIDC authenticator does, so the
  RoleBindings written for ``kubectl`` users apply here unchanged.

The same token works at the endpoints' gateways (same audience, same issuer), which is
why the invocations proxy can forward it.

**What.** The server asks the apiserver (SubjectAccessReview) whether the caller may do
the operation (``modelport.restapi.access``), then does it with its own ServiceAccount's
rights, which the chart limits to endpoints and their pods' logs. Impersonating callers
instead would need the ``impersonate`` verb on users, groups and ServiceAccounts — the
right to act as anyone, cluster-admin included — to do what a review answers with a
narrow right. The price: the apiserver's audit log names the server for writes; the
server logs each write with the caller's name, and records the creator of an endpoint.

Decisions are cached briefly (:data:`ALLOWED_SECONDS`, :data:`DENIED_SECONDS`) under a
keyed digest, so an SDK waiter polling every second costs a review every few seconds, and
a revoked right stops working within seconds. Nothing of a token is ever logged or put
in an error.
"""

from __future__ import annotations

import logging
import time

from modelport.gateway.auth.base import (
    AuthFailedError,
    AuthUnavailableError,
    Clock,
    Fingerprinter,
    TTLCache,
    Verifier,
    unverified_issuer,
)
from modelport.gateway.context import Principal
from modelport.restapi.access import Access, review
from modelport.restapi.errors import (
    PERMISSION_DENIED,
    TEMPORARILY_UNAVAILABLE,
    UNAUTHENTICATED,
    ApiError,
)
from modelport.restapi.kube import Kube, KubeApiError

log = logging.getLogger("modelport.restapi.auth")

ALLOWED_SECONDS = 10.0
DENIED_SECONDS = 5.0
MAX_CACHED_DECISIONS = 10_000
AUTHENTICATED = "system:authenticated"


class Callers:
    """Authenticates callers and checks each operation against RBAC."""

    def __init__(
        self,
        kube: Kube,
        *,
        service_accounts: Verifier | None,
        audiences: tuple[str, ...] = (),
        oidc: Verifier | None = None,
        oidc_issuer: str | None = None,
        username_prefix: str = "",
        groups_prefix: str = "",
        clock: Clock = time.monotonic,
        fingerprint: Fingerprinter | None = None,
    ) -> None:
        self._kube = kube
        self._service_accounts = service_accounts
        self._oidc = oidc
        self._issuer = oidc_issuer
        self._username_prefix = username_prefix
        self._groups_prefix = groups_prefix
        self._fingerprint = fingerprint or Fingerprinter()
        self._decisions: TTLCache[bool] = TTLCache(MAX_CACHED_DECISIONS, clock)
        accepted = []
        if service_accounts is not None:
            audience = " or ".join(audiences) or "the server's audience"
            accepted.append(
                f"a ServiceAccount token for audience {audience} (kubectl create token <sa> "
                f"--audience {audiences[0] if audiences else '<audience>'})"
            )
        if oidc is not None:
            accepted.append(f"an OIDC token of {oidc_issuer}")
        self._accepted = " or ".join(accepted) or "nothing: the server has no verifier"
        self.reviews = 0
        """SubjectAccessReviews sent, for tests."""

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller of a request with this ``Authorization`` header; raises ApiError."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise self._unauthenticated("no bearer token")
        verifier, is_oidc = self._verifier(token)
        if verifier is None:
            raise self._unauthenticated("the token is not a Kubernetes or OIDC token (a JWT)")
        try:
            principal = await verifier.verify(token)
        except AuthFailedError as exc:
            detail = f" ({exc.detail})" if exc.detail else ""
            raise self._unauthenticated(
                f"the token is not valid here: {exc.reason}{detail}"
            ) from None
        except AuthUnavailableError as exc:
            raise ApiError(
                503,
                TEMPORARILY_UNAVAILABLE,
                f"the token cannot be verified right now ({exc}); retry shortly",
            ) from None
        if not is_oidc:
            return principal
        groups = [f"{self._groups_prefix}{g}" for g in principal.groups]
        return Principal(
            kind="user",
            name=f"{self._username_prefix}{principal.name}",
            groups=(*groups, AUTHENTICATED),
            method="oidc",
        )

    async def authorize(self, principal: Principal, namespace: str, access: Access) -> None:
        """Raise a 403 ApiError unless RBAC lets ``principal`` do ``access`` in ``namespace``."""
        key = self._fingerprint(
            "\x00".join(
                (
                    principal.name,
                    "\x01".join(principal.groups),
                    namespace,
                    access.verb,
                    access.group,
                    access.resource,
                    access.subresource,
                    access.name,
                )
            )
        )
        allowed = self._decisions.get(key)
        if allowed is None:
            allowed = await self._review(principal, namespace, access)
            self._decisions.put(key, allowed, ALLOWED_SECONDS if allowed else DENIED_SECONDS)
        if not allowed:
            raise ApiError(
                403,
                PERMISSION_DENIED,
                f"{principal.name} may not {access.describe(namespace)}; ask an administrator "
                "of the namespace for a Role granting it (the chart's ClusterRoles "
                "<release>-endpoint-viewer, -querier and -editor, bound with a RoleBinding)",
            )

    async def aclose(self) -> None:
        """Close the verifiers' connections."""
        for verifier in (self._service_accounts, self._oidc):
            if verifier is not None:
                await verifier.aclose()

    async def _review(self, principal: Principal, namespace: str, access: Access) -> bool:
        self.reviews += 1
        try:
            status = await self._kube.review_access(review(principal, namespace, access))
        except KubeApiError as exc:
            log.warning(
                "SubjectAccessReview failed (%s %s): %s; the server's ServiceAccount needs "
                "'create subjectaccessreviews.authorization.k8s.io'",
                exc.status,
                exc.reason,
                exc.message,
            )
            raise ApiError(
                503,
                TEMPORARILY_UNAVAILABLE,
                "the caller's permissions cannot be checked right now; retry shortly",
            ) from None
        return status.get("allowed") is True and status.get("denied") is not True

    def _verifier(self, token: str) -> tuple[Verifier | None, bool]:
        if token.count(".") != 2:
            return None, False
        if self._oidc is not None and unverified_issuer(token) == self._issuer:
            return self._oidc, True
        return self._service_accounts, False

    def _unauthenticated(self, reason: str) -> ApiError:
        return ApiError(
            401,
            UNAUTHENTICATED,
            f"{reason}; send 'Authorization: Bearer <token>' with {self._accepted}",
            headers={"WWW-Authenticate": 'Bearer realm="modelport"'},
        )
