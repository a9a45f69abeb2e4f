"""What every credential verifier shares: its interface, its failures and its cache.

A verifier turns a presented credential into a :class:`~modelport.gateway.context.Principal`
or raises :class:`AuthFailedError` (the credential is not good: 401) or
:class:`AuthUnavailableError` (it cannot be checked now, e.g. the apiserver or the JWKS is
unreachable: 503, never cached). Failure reasons are short fixed words for metrics and
messages; they never contain the credential or anything decoded from it.
"""

from __future__ import annotations

import binascii
import hashlib
import os
import time
from base64 import urlsafe_b64decode
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import orjson

from modelport.gateway.context import Principal

Clock = Callable[[], float]
T = TypeVar("T")


class AuthFailedError(Exception):
    """The credential is missing, malformed, expired, for another audience or unknown."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        """A short fixed word (``expired``, ``audience``, ``signature``, ``unknown`` ...)."""
        self.detail = detail
        """A human-readable hint for the client, free of any credential material."""


class AuthUnavailableError(Exception):
    """The credential cannot be verified right now; the caller may retry."""


class Verifier(Protocol):
    """One kind of credential."""

    async def verify(self, token: str) -> Principal:
        """The principal the token stands for; raise AuthFailedError or AuthUnavailableError."""
        ...

    async def aclose(self) -> None:
        """Release connections (at shutdown)."""
        ...


class Fingerprinter:
    """Keyed digests of credentials, for cache keys and lookups.

    Keyed BLAKE2b (a MAC by design, RFC 7693; a third of HMAC-SHA-256's cost here) under
    a key drawn at start-up: a digest kept in memory cannot be tested against a guessed
    credential by anyone who reads the process's memory without the key, and dictionary
    lookups by digest leak nothing about stored values through their timing (an attacker
    cannot steer the digest of what they send).
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or os.urandom(32)

    def __call__(self, credential: str | bytes) -> bytes:
        """The digest of ``credential``."""
        data = credential.encode() if isinstance(credential, str) else credential
        return hashlib.blake2b(data, key=self._key, digest_size=32).digest()


class TTLCache(Generic[T]):
    """A bounded least-recently-used map whose entries expire (injectable clock)."""

    def __init__(self, max_entries: int, clock: Clock = time.monotonic) -> None:
        self._max = max_entries
        self._clock = clock
        self._items: OrderedDict[bytes, tuple[float, T]] = OrderedDict()

    def get(self, key: bytes) -> T | None:
        """The live value under ``key``, or None."""
        item = self._items.get(key)
        if item is None:
            return None
        expires, value = item
        if self._clock() >= expires:
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return value

    def put(self, key: bytes, value: T, ttl: float) -> None:
        """Keep ``value`` for ``ttl`` seconds (nothing when ``ttl`` <= 0)."""
        if ttl <= 0:
            return
        self._items[key] = (self._clock() + ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def unverified_issuer(token: str) -> str | None:
    """The ``iss`` of a JWT-shaped token, read without verification: only to pick the
    verifier that will check the token (the API server and the gateway both do)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1]
    try:
        claims: Any = orjson.loads(urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError):
        return None
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    return issuer if isinstance(issuer, str) else None
