"""All of the gateway's network I/O towards providers, in one place.

- One pooled ``httpx.AsyncClient`` per upstream origin (scheme, host, port), created on
  first use and kept for the process lifetime, so connections and TLS sessions are reused.
- Token exchanges (Entra ID, Google service accounts) are performed here, cached per
  entity and refreshed shortly before they expire; a changed credential file invalidates
  the cached token.
- Streamed responses are always closed: the context manager closes the upstream response
  on every exit, including cancellation when the client goes away.
- Error bodies are translated by the provider, then every credential value and token is
  redacted from the message before it can reach a client or a log.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from modelport.gateway.errors import (
    DEADLINE_EXCEEDED,
    INTERNAL_ERROR,
    PERMISSION_DENIED,
    TEMPORARILY_UNAVAILABLE,
    GatewayError,
    from_upstream_status,
)
from modelport.gateway.framing import Decoder, EventStreamDecoder, SSEDecoder
from modelport.gateway.openai_format import Usage
from modelport.gateway.providers.base import (
    Auth,
    Call,
    Provider,
    StreamTranslator,
    UpstreamRequest,
)
from modelport.gateway.secrets import SecretStore
from modelport.gatewayconfig import EntityConfig

log = logging.getLogger("modelport.gateway")

REFRESH_MARGIN_SECONDS = 300.0
"""Refresh a token this long before it expires (or at half its life, if sooner)."""
CONNECT_TIMEOUT_SECONDS = 10.0


@dataclass(slots=True)
class _Token:
    value: str
    refresh_at: float
    expires_at: float
    fingerprint: str


class Upstream:
    """Sends translated requests and owns the clients, tokens and secret files they need."""

    def __init__(
        self,
        secrets: SecretStore,
        timeout_seconds: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._secrets = secrets
        self._transport = transport  # None in production; tests may route in-process
        self._timeout = httpx.Timeout(
            timeout_seconds, connect=min(CONNECT_TIMEOUT_SECONDS, timeout_seconds)
        )
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._tokens: dict[str, _Token] = {}
        self._token_locks: dict[str, asyncio.Lock] = {}

    def client(self, url: str) -> httpx.AsyncClient:
        """The pooled client of ``url``'s origin."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        client = self._clients.get(origin)
        if client is None:
            client = httpx.AsyncClient(
                timeout=self._timeout,
                limits=httpx.Limits(
                    max_connections=4096, max_keepalive_connections=256, keepalive_expiry=60
                ),
                follow_redirects=False,
                transport=self._transport,
            )
            self._clients[origin] = client
        return client

    async def aclose(self) -> None:
        """Close every pooled client (at shutdown)."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    async def complete(self, call: Call, provider: Provider) -> tuple[bytes, Usage | None]:
        """Send a non-streaming call; return the OpenAI-format body and the usage in it."""
        request, redactions = await self._prepare(call, provider)
        response = await self._send(call, provider, request, stream=False)
        body = response.content
        if response.status_code >= 400:
            raise self._error(call, provider, response.status_code, body, redactions)
        try:
            translated = provider.parse_response(call, body, response.headers)
        except GatewayError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise _malformed(provider, exc) from None
        if isinstance(translated, bytes):
            return translated, _usage_of_body(translated)
        usage = translated.get("usage") or {}
        return orjson.dumps(translated), Usage(
            int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        )

    @asynccontextmanager
    async def stream(self, call: Call, provider: Provider) -> AsyncIterator[UpstreamStream]:
        """Open a streaming call; an upstream error raises before anything is yielded."""
        request, redactions = await self._prepare(call, provider)
        response = await self._send(call, provider, request, stream=True)
        try:
            if response.status_code >= 400:
                body = await response.aread()
                raise self._error(call, provider, response.status_code, body, redactions)
            yield UpstreamStream(response, provider, call, redactions)
        finally:
            # Closing an unfinished response drops its connection: the provider sees the
            # client go away instead of generating into a pooled socket.
            await response.aclose()

    async def _prepare(self, call: Call, provider: Provider) -> tuple[UpstreamRequest, list[str]]:
        secrets = self._secrets.resolve(call.entity.credentials)
        auth = Auth(secrets)
        token_request = provider.token_request(call.entity, auth)
        if token_request is not None:
            token = await self._token(call.entity, provider, auth, token_request)
            auth = Auth(secrets, token)
        redactions = [v for v in secrets.values() if len(v) >= 4]
        if auth.token:
            redactions.append(auth.token)
        return provider.build_request(call, auth), redactions

    async def _send(
        self, call: Call, provider: Provider, request: UpstreamRequest, *, stream: bool
    ) -> httpx.Response:
        client = self.client(request.url)
        built = client.build_request(
            request.method, request.url, headers=request.headers, content=request.body
        )
        host = urlsplit(request.url).netloc
        try:
            return await client.send(built, stream=stream)
        except httpx.TimeoutException:
            raise GatewayError(
                504, DEADLINE_EXCEEDED, f"{provider.name} at {host} did not answer in time"
            ) from None
        except httpx.HTTPError as exc:
            raise GatewayError(
                503,
                TEMPORARILY_UNAVAILABLE,
                f"cannot reach {provider.name} at {host} for served entity "
                f"{call.entity.name!r}: {type(exc).__name__}",
            ) from None

    def _error(
        self, call: Call, provider: Provider, status: int, body: bytes, redactions: list[str]
    ) -> GatewayError:
        detail = redact(provider.error_message(status, body), redactions)
        error = from_upstream_status(status, provider.name, call.entity.name, detail)
        log.warning("upstream error: entity=%s status=%s: %s", call.entity.name, status, detail)
        return error

    async def _token(
        self, entity: EntityConfig, provider: Provider, auth: Auth, request: UpstreamRequest
    ) -> str:
        # The fingerprint ties a cached token to the credential it came from, so a rotated
        # client secret or key file takes effect on the next request.
        fingerprint = hashlib.sha256(
            orjson.dumps(auth.secrets, option=orjson.OPT_SORT_KEYS)
        ).hexdigest()
        cached = self._tokens.get(entity.name)
        now = time.monotonic()
        if cached and cached.fingerprint == fingerprint and now < cached.refresh_at:
            return cached.value
        lock = self._token_locks.setdefault(entity.name, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(entity.name)
            now = time.monotonic()
            if cached and cached.fingerprint == fingerprint and now < cached.refresh_at:
                return cached.value
            try:
                value, lifetime = await self._exchange(entity, provider, auth, request)
            except GatewayError:
                if cached and cached.fingerprint == fingerprint and now < cached.expires_at:
                    log.warning(
                        "token refresh failed for entity=%s; using the cached token", entity.name
                    )
                    return cached.value
                raise
            margin = min(REFRESH_MARGIN_SECONDS, lifetime / 2)
            self._tokens[entity.name] = _Token(
                value, now + lifetime - margin, now + lifetime, fingerprint
            )
            return value

    async def _exchange(
        self, entity: EntityConfig, provider: Provider, auth: Auth, request: UpstreamRequest
    ) -> tuple[str, float]:
        client = self.client(request.url)
        host = urlsplit(request.url).netloc
        try:
            response = await client.request(
                request.method, request.url, headers=request.headers, content=request.body
            )
        except httpx.HTTPError as exc:
            raise GatewayError(
                503,
                TEMPORARILY_UNAVAILABLE,
                f"cannot reach the token endpoint {host} for served entity {entity.name!r}: "
                f"{type(exc).__name__}",
            ) from None
        if response.status_code >= 400:
            redactions = [v for v in auth.secrets.values() if len(v) >= 4]
            detail = redact(_token_error(response.content), redactions)
            raise GatewayError(
                502,
                PERMISSION_DENIED,
                f"the token endpoint {host} refused the credentials of served entity "
                f"{entity.name!r} (HTTP {response.status_code}): {detail}",
            )
        try:
            return provider.parse_token(response.content)
        except (KeyError, TypeError, ValueError) as exc:
            raise _malformed(provider, exc) from None


class UpstreamStream:
    """A streamed upstream body, iterated as lists of OpenAI chunk payloads."""

    def __init__(
        self, response: httpx.Response, provider: Provider, call: Call, redactions: list[str]
    ) -> None:
        self._response = response
        self._redactions = redactions
        self._provider = provider
        self._decoder: Decoder = (
            EventStreamDecoder() if provider.framing == "eventstream" else SSEDecoder()
        )
        self.translator: StreamTranslator = provider.stream_translator(call)

    async def __aiter__(self) -> AsyncIterator[list[bytes]]:
        translator = self.translator
        decoder = self._decoder
        try:
            async for chunk in self._response.aiter_bytes():
                out: list[bytes] = []
                for event in decoder.feed(chunk):
                    out.extend(translator.feed(event))
                if out:
                    yield out
            out = []
            for event in decoder.close():
                out.extend(translator.feed(event))
            out.extend(translator.finish())
            if out:
                yield out
        except GatewayError as exc:
            # A provider's in-stream error text is relayed, minus any credential it echoed.
            exc.message = redact(exc.message, self._redactions)
            raise
        except httpx.TimeoutException:
            raise GatewayError(
                504, DEADLINE_EXCEEDED, f"{self._provider.name} stalled mid-stream"
            ) from None
        except httpx.HTTPError as exc:
            raise GatewayError(
                502,
                TEMPORARILY_UNAVAILABLE,
                f"{self._provider.name} broke the stream: {type(exc).__name__}",
            ) from None
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise _malformed(self._provider, exc) from None


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with every secret value replaced."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "[REDACTED]")
    return text


def _usage_of_body(body: bytes) -> Usage | None:
    try:
        data: Any = orjson.loads(body)
        usage = data.get("usage")
        return Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return None


def _token_error(body: bytes) -> str:
    # OAuth error bodies: {"error": "...", "error_description": "..."}.
    try:
        data: Mapping[str, Any] = orjson.loads(body)
        return str(data.get("error_description") or data.get("error") or "")[:300]
    except (orjson.JSONDecodeError, AttributeError):
        return ""


def _malformed(provider: Provider, exc: Exception) -> GatewayError:
    return GatewayError(
        502,
        INTERNAL_ERROR,
        f"{provider.name} answered with a body the gateway cannot read ({type(exc).__name__})",
    )
