"""All of the gateway's network I/O towards providers, in one place.

- One ``aiohttp.ClientSession`` for the app's lifetime, opened at start-up on the serving
  loop and closed at shutdown. One session rather than one per origin: its connector
  already pools per (host, port, TLS) key, so more sessions would only add objects.
- The pool is bounded and short-lived on purpose: at most :data:`MAX_IDLE_PER_ORIGIN`
  idle keep-alive connections per origin, each closed after :data:`KEEPALIVE_SECONDS`
  unused, so a burst of concurrent requests leaves little behind once it has passed.
  (Taking a connection from aiohttp's pool is O(1) however many are idle, unlike
  httpcore 1.0.9's, whose per-request scan of 250 idle connections cost ~24 ms of CPU.)
  DNS answers are cached for :data:`DNS_CACHE_SECONDS`.
- Proxies come from the environment (``HTTPS_PROXY``, ``NO_PROXY``, ...), read once at
  start-up and resolved once per origin. aiohttp's own ``trust_env`` would re-read the
  environment and ``~/.netrc`` in a worker thread on every request (35% of the samples
  at concurrency 1 and 74% at 64 in the benchmark's profile).
- Token exchanges (Entra ID, Google service accounts) are performed here, over the same
  session, cached per entity and refreshed shortly before they expire; a changed
  credential file invalidates the cached token. A Bedrock entity without keys signs
  with the pod's own AWS identity (:mod:`~modelport.gateway.awscreds`).
- Image links a provider needs as bytes (Bedrock) are fetched, fenced, by
  :mod:`~modelport.gateway.fetch` before the request is built.
- Responses are always closed: an unfinished one drops its connection on every exit,
  including cancellation when the client goes away.
- Error bodies are translated by the provider, then every credential value and token is
  redacted from the message before it can reach a client or a log. A 429's
  ``Retry-After`` goes on to the client.
- Failures are told apart: no connection is a 503 (could not reach), a body broken off
  after the headers arrived is a 502 (the upstream broke its answer).
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
from urllib.request import proxy_bypass

import aiohttp
import orjson
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ConnectionKey
from aiohttp.helpers import ProxyInfo, proxies_from_env
from yarl import URL

from modelport.gateway.awscreds import AwsIdentity
from modelport.gateway.errors import (
    DEADLINE_EXCEEDED,
    INTERNAL_ERROR,
    PERMISSION_DENIED,
    TEMPORARILY_UNAVAILABLE,
    GatewayError,
    from_upstream_status,
)
from modelport.gateway.fetch import ImageFetcher
from modelport.gateway.framing import Decoder, EventStreamDecoder, SSEDecoder
from modelport.gateway.openai_format import Usage
from modelport.gateway.providers.base import (
    Auth,
    Call,
    Provider,
    Relayed,
    StreamTranslator,
    UpstreamRequest,
)
from modelport.gateway.secrets import SecretStore
from modelport.gatewayconfig import EntityConfig

log = logging.getLogger("modelport.gateway")

REFRESH_MARGIN_SECONDS = 300.0
"""Refresh a token this long before it expires (or at half its life, if sooner)."""
CONNECT_TIMEOUT_SECONDS = 10.0
MAX_CONNECTIONS = 4096
"""Connections open at once, all origins together (busy and idle)."""
MAX_IDLE_PER_ORIGIN = 128
"""Idle keep-alive connections kept per origin; more are closed as they come back. Below
~128, 256 requests in flight to a 50-ms upstream reconnected for most requests in the
benchmark (~440 instead of ~250 µs of CPU a request)."""
KEEPALIVE_SECONDS = 5.0
"""An idle connection is closed after this long unused (checked every as often)."""
DNS_CACHE_SECONDS = 10
MAX_HEADER_BYTES = 16384
"""Longest upstream header line accepted (h11's limit, which httpx used before)."""


@dataclass(slots=True)
class _Token:
    value: str
    refresh_at: float
    expires_at: float
    fingerprint: str


class Upstream:
    """Sends translated requests and owns the session, tokens and secret files they need."""

    def __init__(
        self,
        secrets: SecretStore,
        timeout_seconds: float,
        *,
        max_idle_per_origin: int = MAX_IDLE_PER_ORIGIN,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
    ) -> None:
        self._secrets = secrets
        # Per socket operation, as before with httpx: connecting, and each read. The whole
        # request is bounded by the app's own deadline of the same length.
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=min(CONNECT_TIMEOUT_SECONDS, timeout_seconds),
            sock_read=timeout_seconds,
        )
        self._max_idle = max_idle_per_origin
        self._keepalive = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None
        self._env_proxies: dict[str, ProxyInfo] = {}
        self._proxies: dict[tuple[str, str | None], ProxyInfo | None] = {}
        self._tokens: dict[str, _Token] = {}
        self._token_locks: dict[str, asyncio.Lock] = {}
        self.aws = AwsIdentity()
        self.images = ImageFetcher()
        """Replaceable before start-up (tests on loopback loosen its policy)."""

    async def start(self) -> None:
        """Open the session on the running loop (at start-up)."""
        if self._session is None:
            self._session = self._open()

    async def aclose(self) -> None:
        """Close the session and every pooled connection (at shutdown)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        await self.images.aclose()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared session; opened on first use when the app was served without a
        lifespan (an ASGI server or test client that never sends ``lifespan.startup``)."""
        if self._session is None:
            self._session = self._open()
        return self._session

    def _open(self) -> aiohttp.ClientSession:
        self._env_proxies = proxies_from_env()
        self._proxies = {}
        connector = _IdleBoundedConnector(
            max_idle=self._max_idle,
            limit=MAX_CONNECTIONS,
            limit_per_host=0,  # bounded by the idle cap and MAX_CONNECTIONS, never queued
            keepalive_timeout=self._keepalive,
            use_dns_cache=True,
            ttl_dns_cache=DNS_CACHE_SECONDS,
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            trust_env=False,  # the environment's proxies are passed per request instead
            max_line_size=MAX_HEADER_BYTES,
            max_field_size=MAX_HEADER_BYTES,
        )

    async def complete(self, call: Call, provider: Provider) -> tuple[bytes, Usage | None]:
        """Send a non-streaming call; return the OpenAI-format body and the usage in it."""
        request, redactions = await self._prepare(call, provider)
        response = await self._send(call, provider, request)
        try:
            body = await response.read()
        except TimeoutError:
            raise _deadline(provider, request) from None
        except aiohttp.ClientError as exc:
            raise _broken(provider, exc) from None
        finally:
            response.close()  # a no-op once the body is complete: it is pooled already
        status = response.status
        if status >= 400:
            raise self._error(call, provider, response, body, redactions)
        try:
            translated = provider.parse_response(call, body, response.headers)
        except GatewayError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise _malformed(provider, exc) from None
        if isinstance(translated, Relayed):
            return translated.body, translated.usage
        usage = translated.get("usage") or {}
        return orjson.dumps(translated), Usage(
            int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        )

    @asynccontextmanager
    async def stream(self, call: Call, provider: Provider) -> AsyncIterator[UpstreamStream]:
        """Open a streaming call; an upstream error raises before anything is yielded."""
        request, redactions = await self._prepare(call, provider)
        response = await self._send(call, provider, request)
        try:
            if response.status >= 400:
                try:
                    body = await response.read()
                except (TimeoutError, aiohttp.ClientError):
                    body = b""
                raise self._error(call, provider, response, body, redactions)
            yield UpstreamStream(response, provider, call, redactions)
        finally:
            # Closing an unfinished response drops its connection: the provider sees the
            # client go away instead of generating into a pooled socket. A finished one
            # went back to the pool when its last byte arrived.
            response.close()

    async def _prepare(self, call: Call, provider: Provider) -> tuple[UpstreamRequest, list[str]]:
        secrets = self._secrets.resolve(call.entity.credentials)
        region = provider.aws_identity_region(call.entity)
        if region is not None:
            secrets = {**secrets, **await self.aws.secrets(region, call.entity.name)}
        images = provider.remote_images(call)
        if images:
            await self.images.fetch_all(images, call.fetched)
        auth = Auth(secrets)
        token_request = provider.token_request(call.entity, auth)
        if token_request is not None:
            token = await self._token(call.entity, provider, auth, token_request)
            auth = Auth(secrets, token)
        redactions = [v for v in secrets.values() if len(v) >= 4]
        if auth.token:
            redactions.append(auth.token)
        request = provider.build_request(call, auth)
        if call.traceparent is not None:
            request.headers["traceparent"] = call.traceparent
        return request, redactions

    async def _send(
        self, call: Call, provider: Provider, request: UpstreamRequest
    ) -> aiohttp.ClientResponse:
        """Send ``request``; return once the status line and headers have arrived."""
        try:
            return await self._request(request)
        except TimeoutError:
            raise _deadline(provider, request) from None
        except aiohttp.ClientError as exc:
            raise _unreachable(call, provider, request, exc) from None

    def _request(self, request: UpstreamRequest) -> aiohttp.client._RequestContextManager:
        # Already encoded by the provider: sent byte for byte (SigV4 signs the path).
        url = URL(request.url, encoded=True)
        key = (url.scheme, url.host)
        if key in self._proxies:
            proxy = self._proxies[key]
        else:
            proxy = self._proxy_for(url)
            self._proxies[key] = proxy
        return self.session.request(
            request.method,
            url,
            headers=request.headers,
            data=request.body,
            allow_redirects=False,
            proxy=proxy.proxy if proxy else None,
            proxy_auth=proxy.proxy_auth if proxy else None,
        )

    def _proxy_for(self, url: URL) -> ProxyInfo | None:
        """The environment's proxy for ``url``'s origin, as aiohttp's ``trust_env`` picks it."""
        if url.host is not None and proxy_bypass(url.host):
            return None
        return self._env_proxies.get(url.scheme)

    def _error(
        self,
        call: Call,
        provider: Provider,
        response: aiohttp.ClientResponse,
        body: bytes,
        redactions: list[str],
    ) -> GatewayError:
        status = response.status
        detail = redact(provider.error_message(status, body), redactions)
        error = from_upstream_status(
            status,
            provider.name,
            call.entity.name,
            detail,
            retry_after=response.headers.get("retry-after"),
        )
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
        try:
            async with self._request(request) as response:
                status = response.status
                body = await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            host = urlsplit(request.url).netloc
            raise GatewayError(
                503,
                TEMPORARILY_UNAVAILABLE,
                f"cannot reach the token endpoint {host} for served entity {entity.name!r}: "
                f"{type(exc).__name__}",
            ) from None
        if status >= 400:
            host = urlsplit(request.url).netloc
            redactions = [v for v in auth.secrets.values() if len(v) >= 4]
            detail = redact(_token_error(body), redactions)
            raise GatewayError(
                502,
                PERMISSION_DENIED,
                f"the token endpoint {host} refused the credentials of served entity "
                f"{entity.name!r} (HTTP {status}): {detail}",
            )
        try:
            return provider.parse_token(body)
        except (KeyError, TypeError, ValueError) as exc:
            raise _malformed(provider, exc) from None


class _IdleBoundedConnector(aiohttp.TCPConnector):
    """A ``TCPConnector`` that keeps at most ``max_idle`` idle connections per origin.

    aiohttp bounds idle connections only by time; its ``limit_per_host`` counts busy ones
    too and would queue requests past it. Closing the surplus as connections come back
    means a burst of N concurrent requests leaves ``max_idle`` sockets, not N, for the
    keep-alive expiry to reap.
    """

    def __init__(self, *, max_idle: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._max_idle = max_idle

    def _release(
        self, key: ConnectionKey, protocol: ResponseHandler, *, should_close: bool = False
    ) -> None:
        super()._release(key, protocol, should_close=should_close)
        # Private state of aiohttp 3.14: looked up defensively, so that a release that
        # renamed it leaves the cap off (test_upstream_pool fails) rather than every request.
        conns = getattr(self, "_conns", None)
        idle = conns.get(key) if isinstance(conns, dict) else None
        # The pool hands out its oldest idle connection first, so the oldest go.
        while idle is not None and len(idle) > self._max_idle:
            surplus, _ = idle.popleft()
            surplus.close()


class UpstreamStream:
    """A streamed upstream body, iterated as lists of OpenAI chunk payloads."""

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        provider: Provider,
        call: Call,
        redactions: list[str],
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
            # Whatever has arrived, as soon as it has: nothing waits for a full buffer.
            async for chunk in self._response.content.iter_any():
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
        except TimeoutError:
            raise GatewayError(
                504, DEADLINE_EXCEEDED, f"{self._provider.name} stalled mid-stream"
            ) from None
        except aiohttp.ClientError as exc:
            raise _broken(self._provider, exc) from None
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise _malformed(self._provider, exc) from None


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with every secret value replaced."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "[REDACTED]")
    return text


def _token_error(body: bytes) -> str:
    # OAuth error bodies: {"error": "...", "error_description": "..."}.
    try:
        data: Mapping[str, Any] = orjson.loads(body)
        return str(data.get("error_description") or data.get("error") or "")[:300]
    except (orjson.JSONDecodeError, AttributeError):
        return ""


def _deadline(provider: Provider, request: UpstreamRequest) -> GatewayError:
    host = urlsplit(request.url).netloc
    return GatewayError(504, DEADLINE_EXCEEDED, f"{provider.name} at {host} did not answer in time")


def _unreachable(
    call: Call, provider: Provider, request: UpstreamRequest, exc: Exception
) -> GatewayError:
    host = urlsplit(request.url).netloc
    return GatewayError(
        503,
        TEMPORARILY_UNAVAILABLE,
        f"cannot reach {provider.name} at {host} for served entity "
        f"{call.entity.name!r}: {type(exc).__name__}",
    )


def _broken(provider: Provider, exc: Exception) -> GatewayError:
    # The status line and headers arrived: the upstream was reached, then broke off.
    return GatewayError(
        502,
        TEMPORARILY_UNAVAILABLE,
        f"{provider.name} broke off its answer mid-way ({type(exc).__name__}); retry the request",
    )


def _malformed(provider: Provider, exc: Exception) -> GatewayError:
    return GatewayError(
        502,
        INTERNAL_ERROR,
        f"{provider.name} answered with a body the gateway cannot read ({type(exc).__name__})",
    )
