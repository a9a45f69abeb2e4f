"""OIDC bearer tokens: JWTs of one issuer, checked against the issuer's published keys.

- The key set (JWKS) comes from ``jwksUri``, else from the ``jwks_uri`` of the issuer's
  discovery document ``<issuer>/.well-known/openid-configuration``. It is fetched on first
  use, refreshed every :data:`JWKS_MAX_AGE_SECONDS`, and refetched early when a token
  names a ``kid`` the cached set lacks (key rotation), at most once per
  :data:`REFETCH_MIN_INTERVAL_SECONDS`: garbage ``kid`` values cannot make the gateway
  hammer the issuer. One fetch at a time, shared by every request that waits for it, so
  a burst of first requests costs one fetch. While the issuer is unreachable the last
  good set stays in use; with no set at all the token cannot be checked
  (:class:`AuthUnavailableError`, a 503).
- Signatures are checked by PyJWT with the configured asymmetric algorithms only (the
  config refuses ``HS*`` and ``none``); each JWK is bound to the algorithms its key type
  allows, so a token cannot pick an algorithm its key was not meant for. ``iss``, ``aud``
  and ``exp`` are required; ``exp``, ``nbf`` and ``iat`` are compared with the injectable
  wall clock, with :data:`LEEWAY_SECONDS` for clock skew.
- A verified token is cached under its keyed digest until its ``exp`` or for
  :data:`TOKEN_CACHE_SECONDS`, whichever is sooner: a client that repeats its token pays
  one signature check a minute, and a token of a withdrawn key is refused at most a minute
  after the key set was refreshed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import jwt
import orjson

from modelport import gatewayconfig as gc
from modelport.gateway.auth.base import (
    AuthFailedError,
    AuthUnavailableError,
    Clock,
    Fingerprinter,
    TTLCache,
)
from modelport.gateway.context import Principal

if TYPE_CHECKING:
    from jwt.types import Options

log = logging.getLogger("modelport.gateway.auth")

DISCOVERY_PATH = "/.well-known/openid-configuration"
HTTP_TIMEOUT_SECONDS = 5.0
"""Whole-request bound on each discovery or JWKS fetch (connect included)."""
CONNECT_TIMEOUT_SECONDS = 3.0
MAX_DOCUMENT_BYTES = 1 << 20
"""A discovery document or JWKS larger than this is refused (real ones are a few KiB)."""
JWKS_MAX_AGE_SECONDS = 3600.0
"""Refetch the key set this often even when every token's ``kid`` is known, so that a key
the issuer withdrew stops verifying within this long."""
REFETCH_MIN_INTERVAL_SECONDS = 10.0
"""At most one fetch per this many seconds while a key set is cached (unknown ``kid``,
periodic refresh, retries of a failed refresh)."""
RETRY_EMPTY_SECONDS = 1.0
"""With no key set at all, retry a failed fetch at most this often: every request fails
until one succeeds, so recover quickly, but not with one fetch per request."""
LEEWAY_SECONDS = 30.0
"""Clock skew tolerated between the issuer and the gateway for ``exp``, ``nbf``, ``iat``."""
TOKEN_CACHE_SECONDS = 60.0
MAX_CACHED_TOKENS = 10_000
MAX_TOKEN_CHARS = 16_384

# The key type (and curve) each algorithm needs. A JWK that names no ``alg`` serves every
# configured algorithm its key fits; one that names an ``alg`` serves only that one.
_KEY_TYPES: Mapping[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "ES256K": ("EC", "secp256k1"),
    "EdDSA": ("OKP", None),
}

# PyJWT's own checks of exp, nbf and iat read the system clock; ours read ``wall``.
_DECODE_OPTIONS: Options = {
    "require": ["exp", "iss", "aud"],
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
}


class OidcVerifier:
    """Verifies OIDC JWTs of one issuer (see the module's docstring for the policy).

    ``clock`` (monotonic seconds) drives the caches and the refetch limits; ``wall`` (Unix
    seconds) is compared with the tokens' ``exp``, ``nbf`` and ``iat``. ``fingerprint``
    keys the token cache; by default the verifier draws its own key.
    """

    def __init__(
        self,
        config: gc.Oidc,
        *,
        clock: Clock = time.monotonic,
        wall: Callable[[], float] = time.time,
        fingerprint: Fingerprinter | None = None,
    ) -> None:
        self._config = config
        self._algorithms = frozenset(config.algorithms)
        self._audiences = list(config.audiences)
        self._clock = clock
        self._wall = wall
        self._fingerprint = fingerprint or Fingerprinter()
        self._tokens: TTLCache[Principal] = TTLCache(MAX_CACHED_TOKENS, clock)
        self._jwks_uri = config.jwks_uri
        self._keys: _KeySet | None = None
        self._loaded_at = -math.inf
        self._attempted_at = -math.inf
        self._refresh: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.fetches = 0
        """Documents fetched from the issuer (discovery and JWKS), for metrics and tests."""
        self.signature_checks = 0
        """Signatures checked (token cache misses that reached a key), for metrics and tests."""

    async def verify(self, token: str) -> Principal:
        """The user the token stands for; :class:`AuthFailedError` names a fixed reason."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise AuthFailedError("malformed", "not a JWT")
        digest = self._fingerprint(token)
        cached = self._tokens.get(digest)
        if cached is not None:
            return cached
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthFailedError("malformed", "not a JWT") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self._algorithms:
            # Covers "none" and HS*: the config cannot list them, so they never get here.
            raise AuthFailedError("signature", "the token's signing algorithm is not accepted")
        if kid is not None and not isinstance(kid, str):
            raise AuthFailedError("malformed", "the token's kid is not a string")
        keys = await self._key_set(kid)
        if not keys.knows(kid):
            raise AuthFailedError("unknown_key", "the token's signing key is not the issuer's")
        claims = self._decode(token, keys.candidates(kid, alg))
        principal, expires = self._principal(claims)
        self._tokens.put(digest, principal, min(expires - self._wall(), TOKEN_CACHE_SECONDS))
        return principal

    async def aclose(self) -> None:
        """Stop a fetch under way and close the HTTP session (at shutdown)."""
        if self._refresh is not None:
            self._refresh.cancel()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # -- keys ------------------------------------------------------------------------------

    async def _key_set(self, kid: str | None) -> _KeySet:
        """The cached key set, refreshed first when it is missing, stale or lacks ``kid``
        (as often as the rate limits allow)."""
        keys, now, refresh = self._keys, self._clock(), self._refresh
        if (
            keys is not None
            and keys.knows(kid)
            and (now - self._loaded_at < JWKS_MAX_AGE_SECONDS or refresh is not None)
        ):
            # Fresh, or a refresh is already under way: this token's key is here now.
            return keys
        if refresh is None:
            interval = REFETCH_MIN_INTERVAL_SECONDS if keys is not None else RETRY_EMPTY_SECONDS
            if now - self._attempted_at >= interval:
                self._attempted_at = now
                refresh = self._refresh = asyncio.create_task(self._refresh_keys())
                refresh.add_done_callback(self._refreshed)
        if refresh is not None:
            # One fetch for every request that needs it, in a task of its own: a request
            # that goes away does not cancel the fetch the others wait for.
            await asyncio.shield(refresh)
        if self._keys is None:
            raise AuthUnavailableError("the OIDC issuer's signing keys cannot be fetched")
        return self._keys  # rate-limited or failed: an unknown kid stays unknown for now

    async def _refresh_keys(self) -> None:
        """Fetch the key set; on failure keep the previous one (and say why)."""
        try:
            fetched = await self._fetch_keys()
        except _FetchError as exc:
            log.warning(
                "OIDC issuer %s: cannot fetch its signing keys (%s)%s",
                self._config.issuer,
                exc,
                "; keeping the previous key set" if self._keys is not None else "",
            )
            return
        self._keys, self._loaded_at = fetched, self._clock()

    def _refreshed(self, task: asyncio.Task[None]) -> None:
        self._refresh = None
        if not task.cancelled():
            task.exception()  # retrieved: the waiters, if any are left, have seen it

    async def _fetch_keys(self) -> _KeySet:
        jwks_uri = self._jwks_uri or await self._discover()
        try:
            document = await self._get_json(jwks_uri)
        except _FetchError:
            if self._config.jwks_uri is None:
                self._jwks_uri = None  # discover again next time: the issuer may have moved it
            raise
        return _KeySet.parse(document, self._algorithms)

    async def _discover(self) -> str:
        url = self._config.issuer.rstrip("/") + DISCOVERY_PATH
        document = await self._get_json(url)
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise _FetchError(f"{url} has no http(s) jwks_uri")
        self._jwks_uri = jwks_uri
        return jwks_uri

    async def _get_json(self, url: str) -> dict[str, Any]:
        self.fetches += 1
        try:
            async with self._open().get(url, headers={"Accept": "application/json"}) as resp:
                if resp.status != 200:
                    raise _FetchError(f"GET {url}: HTTP {resp.status}")
                body = await _read_limited(resp, MAX_DOCUMENT_BYTES)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _FetchError(f"GET {url}: {type(exc).__name__}") from None
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _FetchError(f"GET {url}: not JSON") from None
        if not isinstance(document, dict):
            raise _FetchError(f"GET {url}: not a JSON object")
        return document

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Opened here, on the loop that serves requests. trust_env: the issuer is often
            # outside the cluster, behind the egress proxy; its few fetches an hour make
            # aiohttp's per-request reading of the environment irrelevant.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=HTTP_TIMEOUT_SECONDS, sock_connect=CONNECT_TIMEOUT_SECONDS
                ),
                trust_env=True,
            )
        return self._session

    # -- tokens ----------------------------------------------------------------------------

    def _decode(self, token: str, candidates: list[jwt.PyJWK]) -> dict[str, Any]:
        """The verified claims; the first candidate key whose signature matches wins."""
        failure = AuthFailedError("signature", "the token's signature does not verify")
        if not candidates:
            # The named key does not sign with the token's algorithm, or (no kid) none does.
            raise failure
        for key in candidates:
            self.signature_checks += 1
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key=key,
                    algorithms=[key.algorithm_name],
                    audience=self._audiences,
                    issuer=self._config.issuer,
                    options=_DECODE_OPTIONS,
                )
            except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError, jwt.InvalidKeyError):
                continue  # a token without kid is tried against each fitting key
            except jwt.PyJWTError as exc:
                raise _failure(exc) from None
            return claims
        raise failure

    def _principal(self, claims: dict[str, Any]) -> tuple[Principal, float]:
        """The principal of verified ``claims`` and the token's ``exp``; checks the times."""
        now = self._wall()
        exp = claims["exp"]  # required by the decode options
        if not _is_number(exp):
            raise AuthFailedError("claims", "exp is not a number")
        if now >= exp + LEEWAY_SECONDS:
            raise AuthFailedError("expired", "the token has expired")
        for claim in ("nbf", "iat"):
            value = claims.get(claim)
            if value is None:
                continue
            if not _is_number(value):
                raise AuthFailedError("claims", f"{claim} is not a number")
            if value > now + LEEWAY_SECONDS:
                raise AuthFailedError("not_yet_valid", "the token is not valid yet")
        user_claim, groups_claim = self._config.user_claim, self._config.groups_claim
        name = claims.get(user_claim)
        if not isinstance(name, str) or not name:
            raise AuthFailedError("claims", f"the token has no {user_claim} claim (a string)")
        groups = claims.get(groups_claim)
        if groups is None:
            groups = ()
        elif isinstance(groups, str):
            groups = (groups,)
        elif isinstance(groups, list) and all(isinstance(g, str) for g in groups):
            groups = tuple(groups)
        else:
            raise AuthFailedError("claims", f"the {groups_claim} claim is not a list of strings")
        return Principal(kind="user", name=name, groups=groups, method="oidc"), float(exp)


@dataclass(frozen=True, slots=True)
class _KeySet:
    """An issuer's usable public keys, each bound to the algorithms it may verify."""

    by_kid: Mapping[str, Mapping[str, jwt.PyJWK]]
    """kid -> algorithm -> key."""
    unnamed: tuple[Mapping[str, jwt.PyJWK], ...]
    """Keys published without a kid, algorithm -> key."""

    def knows(self, kid: str | None) -> bool:
        """Whether a token with this ``kid`` (or none) has a key here to be tried."""
        return kid is None or kid in self.by_kid

    def candidates(self, kid: str | None, alg: str) -> list[jwt.PyJWK]:
        """The keys to try for a token's ``kid`` and ``alg`` (each key at most once)."""
        if kid is not None:
            key = self.by_kid.get(kid, {}).get(alg)
            return [key] if key is not None else []
        every = [*self.by_kid.values(), *self.unnamed]
        return [k[alg] for k in every if alg in k]

    @classmethod
    def parse(cls, document: dict[str, Any], algorithms: frozenset[str]) -> _KeySet:
        """The keys of a JWKS document; unusable entries are skipped, none at all fails."""
        entries = document.get("keys")
        if not isinstance(entries, list):
            raise _FetchError("the JWKS has no keys list")
        by_kid: dict[str, Mapping[str, jwt.PyJWK]] = {}
        unnamed: list[Mapping[str, jwt.PyJWK]] = []
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue  # an encryption key, or not a JWK
            bound = _bind(entry, algorithms)
            if not bound:
                continue
            kid = entry.get("kid")
            if isinstance(kid, str):
                by_kid[kid] = bound
            else:
                unnamed.append(bound)
        if not by_kid and not unnamed:
            raise _FetchError("the JWKS has no key usable with the configured algorithms")
        return cls(by_kid, tuple(unnamed))


class _FetchError(Exception):
    """A discovery or JWKS fetch failed; the message names the URL and the cause only."""


def _bind(entry: dict[str, Any], algorithms: frozenset[str]) -> dict[str, jwt.PyJWK]:
    """The configured algorithms ``entry`` can verify, each with its key object."""
    kty, crv, named = entry.get("kty"), entry.get("crv"), entry.get("alg")
    out: dict[str, jwt.PyJWK] = {}
    for alg in algorithms:
        fits = _KEY_TYPES.get(alg)
        if fits is None or fits[0] != kty or (fits[1] is not None and fits[1] != crv):
            continue
        if named is not None and named != alg:
            continue
        try:
            out[alg] = jwt.PyJWK(entry, algorithm=alg)
        except jwt.PyJWTError:
            continue  # a malformed key: the rest of the set stays usable
    return out


def _failure(exc: jwt.PyJWTError) -> AuthFailedError:
    """Our fixed reason for one of PyJWT's verdicts (never its message, which may quote)."""
    if isinstance(exc, jwt.InvalidAudienceError):
        return AuthFailedError("audience", "the token is for another audience")
    if isinstance(exc, jwt.InvalidIssuerError):
        return AuthFailedError("issuer", "the token is from another issuer")
    if isinstance(exc, jwt.MissingRequiredClaimError):
        if exc.claim == "aud":
            return AuthFailedError("audience", "the token has no aud claim")
        if exc.claim == "iss":
            return AuthFailedError("issuer", "the token has no iss claim")
        return AuthFailedError("claims", f"the token has no {exc.claim} claim")
    if isinstance(exc, jwt.DecodeError):
        return AuthFailedError("malformed", "not a JWT")
    return AuthFailedError("claims", "the token's claims are not valid")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, or :class:`_FetchError` once it passes ``limit`` bytes."""
    if resp.content_length is not None and resp.content_length > limit:
        raise _FetchError(f"{resp.url}: larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise _FetchError(f"{resp.url}: larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
