"""Kubernetes ServiceAccount tokens, verified by the apiserver with a TokenReview.

The gateway POSTs each token it has not seen recently to
``/apis/authentication.k8s.io/v1/tokenreviews`` with the configured audiences,
authenticated as its own ServiceAccount, and trusts the apiserver's verdict: it knows
whether the ServiceAccount (and the pod a token is bound to) still exists, which no
local signature check can.

- Verdicts are cached under the token's keyed digest: acceptances for ``cacheSeconds``
  (never past the token's own ``exp``), refusals for at most
  :data:`NEGATIVE_CACHE_SECONDS`, so a bad token repeated in a loop costs one review every
  few seconds, not one per request. "Cannot check" (apiserver unreachable, 5xx, timeout,
  the gateway's own credential refused) is never cached.
- Concurrent requests with the same token share one review; at most
  :data:`MAX_CONCURRENT_REVIEWS` reviews are in flight at once.
- The gateway's own token file is re-read when it changes (the kubelet rotates projected
  tokens); the apiserver's certificate is checked against ``caFile``.
- A review's response echoes the token under ``spec``: no response body and no
  ``status.error`` text is logged or passed to a client; refusals carry a fixed reason.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import logging
import math
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from modelport import gatewayconfig as gc
from modelport.gateway.auth.base import (
    AuthFailedError,
    AuthUnavailableError,
    Clock,
    Fingerprinter,
    TTLCache,
)
from modelport.gateway.context import Principal, PrincipalKind

log = logging.getLogger("modelport.gateway.auth")

DEFAULT_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 (a path)
DEFAULT_CA_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
HTTP_TIMEOUT_SECONDS = 5.0
"""Whole-request bound on one review (connect included)."""
CONNECT_TIMEOUT_SECONDS = 3.0
NEGATIVE_CACHE_SECONDS = 5.0
MAX_CACHED_TOKENS = 10_000
MAX_CONCURRENT_REVIEWS = 32
"""Reviews in flight at once: a burst of new callers queues here, not at the apiserver."""
MAX_TOKEN_CHARS = 16_384
MAX_RESPONSE_BYTES = 1 << 20

_REJECTED_DETAIL = "the Kubernetes API server did not accept the token (expired, revoked, "
_REJECTED_DETAIL += "for another audience, or its ServiceAccount is gone)"


@dataclass(frozen=True, slots=True)
class _Refused:
    """A cached refusal: the reason and detail to raise again, nothing from the token."""

    reason: str
    detail: str


class TokenReviewVerifier:
    """Verifies Kubernetes tokens with TokenReviews (see the module's docstring).

    ``clock`` (monotonic seconds) drives the verdict cache; ``wall`` (Unix seconds) is
    compared with a token's ``exp`` to bound how long an acceptance is cached.
    ``fingerprint`` keys the cache; by default the verifier draws its own key.

    Raises :class:`ValueError` when ``apiServer`` is not set and the pod's environment does
    not name the apiserver either (``KUBERNETES_SERVICE_HOST``/``_PORT``).
    """

    def __init__(
        self,
        config: gc.ServiceAccountTokens,
        *,
        clock: Clock = time.monotonic,
        wall: Callable[[], float] = time.time,
        fingerprint: Fingerprinter | None = None,
    ) -> None:
        self._config = config
        self._audiences = list(config.audiences)
        self._url = api_server_url(config.api_server).rstrip("/") + REVIEW_PATH
        self._token_file = Path(config.token_file or DEFAULT_TOKEN_FILE)
        self._ca_file = config.ca_file or DEFAULT_CA_FILE
        self._clock = clock
        self._wall = wall
        self._fingerprint = fingerprint or Fingerprinter()
        self._verdicts: TTLCache[Principal | _Refused] = TTLCache(MAX_CACHED_TOKENS, clock)
        self._in_flight: dict[bytes, asyncio.Task[Principal | _Refused]] = {}
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_REVIEWS)
        self._session: aiohttp.ClientSession | None = None
        self._own_token = RotatingTokenFile(self._token_file)
        self._warned: set[str] = set()
        self.reviews = 0
        """TokenReviews sent to the apiserver, for metrics and tests."""

    async def verify(self, token: str) -> Principal:
        """The ServiceAccount (or user) the apiserver says the token stands for."""
        if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise AuthFailedError("malformed", "not a Kubernetes token")
        digest = self._fingerprint(token)
        verdict = self._verdicts.get(digest)
        if verdict is None:
            task = self._in_flight.get(digest)
            if task is None:
                # A task of its own, not this request's coroutine: a caller that goes away
                # must not cancel the review the others wait for.
                task = asyncio.create_task(self._review(token, digest))
                self._in_flight[digest] = task
                task.add_done_callback(lambda t: self._settled(digest, t))
            verdict = await asyncio.shield(task)
        if isinstance(verdict, _Refused):
            raise AuthFailedError(verdict.reason, verdict.detail)
        return verdict

    async def aclose(self) -> None:
        """Stop reviews under way and close the HTTP session (at shutdown)."""
        for task in list(self._in_flight.values()):
            task.cancel()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _settled(self, digest: bytes, task: asyncio.Task[Principal | _Refused]) -> None:
        self._in_flight.pop(digest, None)
        if not task.cancelled():
            task.exception()  # retrieved, so a review nobody awaited any more is not logged

    async def _review(self, token: str, digest: bytes) -> Principal | _Refused:
        """One TokenReview and its cached verdict (raises AuthUnavailableError, uncached)."""
        async with self._slots:
            status = await self._post(token)
        if status.get("authenticated") is not True:
            refused = _Refused("rejected", _REJECTED_DETAIL)
            self._verdicts.put(
                digest, refused, min(self._config.cache_seconds, NEGATIVE_CACHE_SECONDS)
            )
            return refused
        # The apiserver answers with the audiences it checked the token against; an answer
        # without ours means it judged the token for some other audience (its own).
        audiences = status.get("audiences")
        if not isinstance(audiences, list) or not set(self._audiences) & {
            a for a in audiences if isinstance(a, str)
        }:
            refused = _Refused("audience", "the token is not for this endpoint's audience")
            self._verdicts.put(
                digest, refused, min(self._config.cache_seconds, NEGATIVE_CACHE_SECONDS)
            )
            return refused
        principal = _principal(status.get("user"))
        ttl = float(self._config.cache_seconds)
        exp = _unverified_exp(token)
        if exp is not None:
            ttl = min(ttl, exp - self._wall())
        self._verdicts.put(digest, principal, ttl)
        return principal

    async def _post(self, token: str) -> dict[str, Any]:
        """The ``status`` of a TokenReview of ``token``."""
        body = orjson.dumps(
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token, "audiences": self._audiences},
            }
        )
        headers = {
            "Authorization": f"Bearer {self._read_own_token()}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        session = self._open()
        self.reviews += 1
        try:
            async with session.post(self._url, data=body, headers=headers) as resp:
                if resp.status in (401, 403):
                    self._warn_refused(resp.status == 403)
                    raise AuthUnavailableError("the gateway may not review tokens")
                if resp.status not in (200, 201):
                    self._warn_once(
                        f"http-{resp.status}",
                        "TokenReview: the apiserver answered HTTP %d",
                        resp.status,
                    )
                    raise AuthUnavailableError("the Kubernetes API server cannot review tokens")
                raw = await _read_limited(resp, MAX_RESPONSE_BYTES)
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Only the exception's type: nothing of the request (its body holds the token).
            self._warn_once(
                type(exc).__name__,
                "TokenReview: cannot reach the apiserver at %s (%s)",
                self._url,
                type(exc).__name__,
            )
            raise AuthUnavailableError("the Kubernetes API server is unreachable") from None
        self._warned.clear()  # working again: warn again if it breaks again
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:
            document = None
        status = document.get("status") if isinstance(document, dict) else None
        if not isinstance(status, dict):
            log.warning("TokenReview: the apiserver's answer has no status")
            raise AuthUnavailableError("the Kubernetes API server cannot review tokens")
        return status

    def _warn_once(self, cause: str, message: str, *args: object) -> None:
        """Log ``message`` once per ``cause`` until a review succeeds again: a broken setup
        must be seen, not repeated for every request."""
        if cause not in self._warned:
            self._warned.add(cause)
            log.warning(message, *args)

    def _warn_refused(self, forbidden: bool) -> None:
        """Say why the gateway cannot review tokens, and the fix."""
        if forbidden:
            self._warn_once(
                "forbidden",
                "TokenReview refused (HTTP 403): the gateway's ServiceAccount may not create "
                "tokenreviews.authentication.k8s.io, so no ServiceAccount token can be "
                "verified. Fix: its ServiceAccount must be a subject of the ClusterRoleBinding "
                "to the chart's TokenReview ClusterRole (the operator adds it; see the "
                "operator's log and its MODELPORT_GATEWAY_TOKENREVIEW_BINDING), or of any "
                "ClusterRoleBinding granting 'create' on 'tokenreviews'",
            )
        else:
            self._warn_once(
                "unauthorized",
                "TokenReview refused (HTTP 401): the apiserver does not accept the gateway's "
                "own token from %s. Fix: mount the pod's ServiceAccount token there "
                "(automountServiceAccountToken) or set serviceAccountTokens.tokenFile",
                self._token_file,
            )

    def _read_own_token(self) -> str:
        """The gateway's own token, re-read when the kubelet has rotated the file."""
        try:
            return self._own_token.read()
        except OSError as exc:
            self._warn_once(
                "token-file",
                "TokenReview: cannot read the gateway's token at %s (%s); set "
                "serviceAccountTokens.tokenFile or mount the ServiceAccount token",
                self._token_file,
                exc.strerror,
            )
            raise AuthUnavailableError("the gateway has no credential to review tokens") from None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is not None and not self._session.closed:
            return self._session
        tls: ssl.SSLContext | bool = True
        if self._url.startswith("https://"):
            try:
                tls = ssl.create_default_context(cafile=self._ca_file)
            except (OSError, ssl.SSLError) as exc:
                self._warn_once(
                    "ca-file",
                    "TokenReview: cannot load the apiserver's CA from %s (%s); set "
                    "serviceAccountTokens.caFile",
                    self._ca_file,
                    getattr(exc, "strerror", None) or type(exc).__name__,
                )
                raise AuthUnavailableError(
                    "the gateway cannot trust the Kubernetes API server"
                ) from None
        # Opened here, on the loop that serves requests. No trust_env: the apiserver is
        # reached directly (as client-go does in-cluster through NO_PROXY), and aiohttp would
        # otherwise re-read the environment on every review.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls, limit=MAX_CONCURRENT_REVIEWS),
            timeout=aiohttp.ClientTimeout(
                total=HTTP_TIMEOUT_SECONDS, sock_connect=CONNECT_TIMEOUT_SECONDS
            ),
        )
        return self._session


class RotatingTokenFile:
    """A projected ServiceAccount token that the kubelet rotates: re-read when the file has
    changed (inode, mtime, size), and while it is being swapped (missing, unreadable or
    empty for a moment) the last token read, which stays valid for a while yet. The
    gateway's verifier and the REST API server both authenticate with one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cached: tuple[tuple[int, int, int], str] | None = None

    def read(self) -> str:
        """The token; OSError (its ``strerror`` says why) when there has never been one."""
        cached = self._cached
        try:
            st = self.path.stat()
            identity = (st.st_ino, st.st_mtime_ns, st.st_size)
            if cached is not None and cached[0] == identity:
                return cached[1]
            value = self.path.read_text(encoding="utf-8").strip()
        except OSError:
            if cached is not None:
                return cached[1]  # mid-swap
            raise
        if not value:
            if cached is not None:
                return cached[1]  # caught mid-write
            raise OSError(errno.ENODATA, "the file is empty")
        self._cached = (identity, value)
        return value


def api_server_url(configured: str | None, environ: dict[str, str] | None = None) -> str:
    """``configured``, else the in-cluster apiserver from ``KUBERNETES_SERVICE_HOST``/``_PORT``.

    An IPv6 host is bracketed (``https://[fd00::1]:443``).
    """
    if configured:
        return configured
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise ValueError(
            "serviceAccountTokens.apiServer is not set and KUBERNETES_SERVICE_HOST is not in "
            "the environment: set apiServer (e.g. https://kubernetes.default.svc) when the "
            "gateway runs outside a pod"
        )
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"https://{host}:{port}"


def _principal(user: object) -> Principal:
    """The principal of a TokenReview's ``status.user``."""
    if not isinstance(user, dict):
        user = {}
    name = user.get("username")
    if not isinstance(name, str) or not name:
        log.warning("TokenReview: the apiserver accepted a token but named no user")
        raise AuthUnavailableError("the Kubernetes API server cannot review tokens")
    raw_groups = user.get("groups")
    groups = (
        tuple(g for g in raw_groups if isinstance(g, str)) if isinstance(raw_groups, list) else ()
    )
    namespace, _, sa = name.removeprefix(SERVICE_ACCOUNT_PREFIX).partition(":")
    is_sa = name.startswith(SERVICE_ACCOUNT_PREFIX) and bool(namespace) and bool(sa)
    kind: PrincipalKind = "service_principal" if is_sa else "user"
    return Principal(kind=kind, name=name, groups=groups, method="service_account")


def _unverified_exp(token: str) -> float | None:
    """The ``exp`` of a JWT-shaped token, read without verification, only to bound a cache
    entry (the apiserver has verified the token); None when there is none to read."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1]
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, int | float) and not isinstance(exp, bool) and math.isfinite(exp):
        return float(exp)
    return None


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, or :class:`AuthUnavailableError` once it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            log.warning("TokenReview: the apiserver's answer is larger than %d bytes", limit)
            raise AuthUnavailableError("the Kubernetes API server cannot review tokens")
        chunks.append(chunk)
    return b"".join(chunks)
