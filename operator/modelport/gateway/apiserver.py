"""The gateway's own connection to the Kubernetes API, for the few calls it makes with its
ServiceAccount's token: watching its entities' EndpointSlices (readiness) and waking its
entities that scale to zero (coldstart).

In a pod everything defaults to the in-cluster configuration: the apiserver from
``KUBERNETES_SERVICE_HOST``/``_PORT``, the mounted token and CA. The token file is read
again for every request, since the kubelet rotates it. (The TokenReview verifier keeps a
connection of its own, sized for the callers it checks.)
"""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp

from modelport.gateway.auth.tokenreview import DEFAULT_CA_FILE, DEFAULT_TOKEN_FILE, api_server_url


class ApiServer:
    """One apiserver, one small connection pool, opened on first use."""

    def __init__(
        self,
        api_server: str | None,
        token_file: str | None,
        ca_file: str | None,
        *,
        section: str,
        connections: int = 2,
    ) -> None:
        try:
            self.url = api_server_url(api_server).rstrip("/")
        except ValueError:
            raise ValueError(
                f"{section}.apiServer is not set and KUBERNETES_SERVICE_HOST is not in the "
                "environment: set apiServer when the gateway runs outside a pod"
            ) from None
        self._token_file = Path(token_file or DEFAULT_TOKEN_FILE)
        self._ca_file = ca_file or DEFAULT_CA_FILE
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    def headers(self) -> dict[str, str]:
        """The Authorization header with the token as the kubelet last wrote it."""
        token = self._token_file.read_text(encoding="utf-8").strip()
        return {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def session(self) -> aiohttp.ClientSession:
        """The session (made on the running loop at first use)."""
        if self._session is None or self._session.closed:
            tls: ssl.SSLContext | bool = True
            if self.url.startswith("https://"):
                tls = ssl.create_default_context(cafile=self._ca_file)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=tls, limit=self._connections),
                timeout=aiohttp.ClientTimeout(total=30, sock_connect=5),
            )
        return self._session

    async def aclose(self) -> None:
        """Close the connections (at shutdown)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
