"""``POST /serving-endpoints/{name}/invocations``, proxied to the endpoint's gateway.

The request goes to the gateway Service the operator made for the endpoint
(``http://<service>.<namespace>.svc.cluster.local``; ``--gateway-url-template`` changes
it, for another cluster domain or for tests), on the same path, with the caller's
``Authorization`` header: the gateway authenticates the caller again and applies the
endpoint's own ``spec.aiGateway.auth`` (its allow list, its rate limits by caller). A
ServiceAccount token for the audience ``modelport`` or an OIDC token of the shared
issuer is accepted by both; a token the gateway does not accept (another audience) gets
the gateway's 401, passed through.

Bodies stream both ways (server-sent events arrive as they are produced) and nothing of
them is kept or logged. One pooled session lives for the server's lifetime.
"""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web

from modelport.render.names import service_name
from modelport.restapi.errors import TEMPORARILY_UNAVAILABLE, ApiError

log = logging.getLogger("modelport.restapi.invocations")

DEFAULT_URL_TEMPLATE = "http://{service}.{namespace}.svc.cluster.local"
CONNECT_TIMEOUT_SECONDS = 5.0
IDLE_READ_SECONDS = 600.0
"""Longest silence allowed from the gateway (a model thinking before its first token)."""
_REQUEST_HEADERS = ("authorization", "content-type", "accept", "x-request-id", "user-agent")
_RESPONSE_HEADERS = (
    "content-type",
    "served-model-name",
    "x-request-id",
    "cache-control",
    "retry-after",
    "www-authenticate",
    "x-accel-buffering",
)


class Invocations:
    """Forwards invocations to gateways."""

    def __init__(self, url_template: str = DEFAULT_URL_TEMPLATE) -> None:
        self._template = url_template
        self._session: aiohttp.ClientSession | None = None

    def url(self, namespace: str, endpoint: str) -> str:
        """The gateway URL of ``endpoint``'s invocations."""
        base = self._template.format(
            service=service_name(endpoint), namespace=namespace, endpoint=endpoint
        )
        return f"{base.rstrip('/')}/serving-endpoints/{endpoint}/invocations"

    async def forward(
        self,
        request: web.Request,
        namespace: str,
        endpoint: str,
        *,
        authorization: str | None = None,
        body: bytes | None = None,
    ) -> web.StreamResponse:
        """Send ``request`` to the gateway and stream its answer back. The console passes
        the signed-in user's ``authorization`` (its browser sends a session cookie, not
        the token) and the ``body`` it made; the REST API forwards the request as it is."""
        url = self.url(namespace, endpoint)
        headers = {h: v for h in _REQUEST_HEADERS if (v := request.headers.get(h)) is not None}
        if authorization is not None:
            headers["authorization"] = authorization
        if body is not None:
            headers["content-type"] = "application/json"
        session = self._open()
        try:
            upstream = await session.post(
                url, data=request.content if body is None else body, headers=headers
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("gateway of %s/%s unreachable: %s", namespace, endpoint, type(exc).__name__)
            raise ApiError(
                503,
                TEMPORARILY_UNAVAILABLE,
                f"the gateway of endpoint '{endpoint}' cannot be reached ({type(exc).__name__}); "
                "check that the endpoint is READY, then retry",
            ) from None
        try:
            response = web.StreamResponse(status=upstream.status)
            for name in _RESPONSE_HEADERS:
                if (value := upstream.headers.get(name)) is not None:
                    response.headers[name] = value
            await response.prepare(request)
            # From here on the status is sent: a failure can only cut the body short.
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except ConnectionResetError:
                upstream.close()  # the client went away: stop the gateway's work too
            except (aiohttp.ClientError, TimeoutError) as exc:
                upstream.close()
                log.warning(
                    "gateway of %s/%s broke off its answer: %s",
                    namespace,
                    endpoint,
                    type(exc).__name__,
                )
            return response
        finally:
            upstream.release()

    async def aclose(self) -> None:
        """Close the session (at shutdown)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=CONNECT_TIMEOUT_SECONDS, sock_read=IDLE_READ_SECONDS
            )
            # No trust_env: gateways are reached directly, never through a proxy.
            self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)
        return self._session
