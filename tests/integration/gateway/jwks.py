"""An OIDC issuer on loopback for tests: a discovery document, a JWKS the test edits,
and signing keys that mint tokens.

Used by the OIDC verifier's tests (and any test that needs an issuer a gateway can
fetch keys from). It runs on the test's own event loop::

    async with Issuer() as issuer:
        key = issuer.add(rsa_key("k1"))
        token = issuer.token(key, sub="alice", groups=["team-a"])
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

AUDIENCE = "modelport"
DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/keys"

_CURVES: dict[str, ec.EllipticCurve] = {
    "ES256": ec.SECP256R1(),
    "ES384": ec.SECP384R1(),
    "ES512": ec.SECP521R1(),
}


@dataclass(frozen=True)
class SigningKey:
    """A private key with the ``kid`` and ``alg`` it signs under."""

    kid: str
    alg: str
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    def jwk(self, *, with_alg: bool = True) -> dict[str, Any]:
        """The public half as a JWK (what a JWKS publishes)."""
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            data: dict[str, Any] = RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            data = ECAlgorithm.to_jwk(public, as_dict=True)
        data.update(kid=self.kid, use="sig")
        if with_alg:
            data["alg"] = self.alg
        return data

    def public_pem(self) -> bytes:
        """The public key in PEM (what an HS256 forger would use as the shared secret)."""
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: dict[str, Any], *, kid: str | bool = True) -> str:
        """A JWT of ``claims``; ``kid=False`` leaves the header's kid out, a string
        overrides it."""
        headers: dict[str, Any] = {}
        if kid is True:
            headers["kid"] = self.kid
        elif isinstance(kid, str):
            headers["kid"] = kid
        return jwt.encode(claims, self.private, algorithm=self.alg, headers=headers)


def rsa_key(kid: str, alg: str = "RS256") -> SigningKey:
    """A fresh 2048-bit RSA key (RS* or PS*)."""
    return SigningKey(kid, alg, rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_key(kid: str, alg: str = "ES256") -> SigningKey:
    """A fresh EC key on the curve ``alg`` needs."""
    return SigningKey(kid, alg, ec.generate_private_key(_CURVES[alg]))


def forge(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    """A token PyJWT would refuse to make: HS256 under ``secret``, or unsigned (None)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if secret is None:
        return signing_input + "."
    digest = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(digest)}"


class Issuer:
    """Discovery and JWKS on 127.0.0.1 (random port), counting what is fetched.

    ``keys`` is what the JWKS publishes (edit it to rotate); ``up = False`` makes both
    documents answer 503; ``delay`` holds each answer that long (to overlap requests).
    ``now`` is the clock :meth:`token` mints ``iat``/``exp`` from (default: real time).
    """

    def __init__(self, *, audience: str = AUDIENCE) -> None:
        self.audience = audience
        self.keys: list[SigningKey] = []
        self.hits: Counter[str] = Counter()
        self.up = True
        self.delay = 0.0
        self.jwks_without_alg = False
        self.now = time.time
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> Issuer:
        app = web.Application()
        app.router.add_get(DISCOVERY_PATH, self._discovery)
        app.router.add_get(JWKS_PATH, self._jwks)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def jwks_uri(self) -> str:
        """Where the key set is served."""
        return self.url + JWKS_PATH

    def add(self, key: SigningKey) -> SigningKey:
        """Publish ``key`` in the JWKS."""
        self.keys.append(key)
        return key

    def remove(self, key: SigningKey) -> None:
        """Withdraw ``key`` from the JWKS."""
        self.keys.remove(key)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Valid claims for this issuer (overrides win; a None value removes the claim)."""
        now = int(self.now())
        claims: dict[str, Any] = {
            "iss": self.url,
            "aud": self.audience,
            "sub": "alice@example.com",
            "iat": now,
            "exp": now + 600,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, key: SigningKey, *, kid: str | bool = True, **overrides: Any) -> str:
        """A token signed by ``key`` with :meth:`claims`."""
        return key.sign(self.claims(**overrides), kid=kid)

    async def _discovery(self, request: web.Request) -> web.Response:
        self.hits["discovery"] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if not self.up:
            return web.Response(status=503)
        return web.json_response({"issuer": self.url, "jwks_uri": self.jwks_uri})

    async def _jwks(self, request: web.Request) -> web.Response:
        self.hits["jwks"] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if not self.up:
            return web.Response(status=503)
        keys = [k.jwk(with_alg=not self.jwks_without_alg) for k in self.keys]
        return web.json_response({"keys": keys})
