"""The only module of the API server that talks to the Kubernetes API.

Async on aiohttp, not the blocking ``kubernetes`` client behind threads: every request
the server answers makes one to three apiserver calls (TokenReview, SubjectAccessReview,
the operation itself), and an SDK's waiter polls once a second, so calls are many, short
and concurrent; one pooled session on the serving loop handles them without a thread
each. aiohttp is already the gateway's client, and the gateway's TokenReview verifier
(which this server reuses) reaches the apiserver the same way, with the same in-cluster
configuration: the apiserver from ``KUBERNETES_SERVICE_HOST``/``_PORT``, its CA and the
pod's ServiceAccount token, re-read when the kubelet rotates it. Tests and out-of-cluster
runs name all three (``--api-server``, ``--ca-file``, ``--token-file``); there is
deliberately no kubeconfig path: the server always acts as one ServiceAccount, whose
rights the chart defines.

Request bodies can hold a caller's token (TokenReview) and are never logged; errors carry
the apiserver's ``message`` (it names fields, not values) and status.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from modelport.api import GROUP, PLURAL, VERSION
from modelport.gateway.auth.tokenreview import (
    DEFAULT_CA_FILE,
    DEFAULT_TOKEN_FILE,
    RotatingTokenFile,
    api_server_url,
)

log = logging.getLogger("modelport.restapi.kube")

TIMEOUT_SECONDS = 15.0
CONNECT_TIMEOUT_SECONDS = 3.0
MAX_CONNECTIONS = 64
MAX_RESPONSE_BYTES = 16 << 20
SAR_PATH = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


class KubeApiError(Exception):
    """The apiserver refused or failed a call: its HTTP status (0: unreachable), ``reason``
    (``NotFound``, ``AlreadyExists``, ``Conflict``, ``Invalid`` …) and message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Connection:
    """Where the apiserver is and how the server authenticates to it."""

    api_server: str
    token_file: Path
    ca_file: str

    @classmethod
    def from_settings(
        cls, api_server: str | None, token_file: str | None, ca_file: str | None
    ) -> Connection:
        """The given settings, else the pod's in-cluster ones (ValueError outside a pod)."""
        try:
            url = api_server_url(api_server)
        except ValueError:
            raise ValueError(
                "--api-server is not set and KUBERNETES_SERVICE_HOST is not in the environment: "
                "outside a pod, set --api-server, --token-file and --ca-file"
            ) from None
        return cls(
            url.rstrip("/"), Path(token_file or DEFAULT_TOKEN_FILE), ca_file or DEFAULT_CA_FILE
        )


class Kube:
    """Async access to the API for the server (one session, opened on the serving loop)."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection
        self._session: aiohttp.ClientSession | None = None
        self._token = RotatingTokenFile(connection.token_file)

    async def aclose(self) -> None:
        """Close the session (at shutdown)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # --- endpoints ---------------------------------------------------------------------

    async def get_endpoint(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The endpoint's body, or None when there is none."""
        try:
            return await self._json("GET", _endpoint_path(namespace, name))
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list_endpoints(self, namespace: str) -> list[dict[str, Any]]:
        """Every endpoint of ``namespace``."""
        listing = await self._json("GET", _endpoints_path(namespace))
        items: list[dict[str, Any]] = listing.get("items", [])
        return items

    async def list_all_endpoints(self) -> list[dict[str, Any]]:
        """Every endpoint of every namespace (needs list rights cluster-wide)."""
        listing = await self._json("GET", f"/apis/{GROUP}/{VERSION}/{PLURAL}")
        items: list[dict[str, Any]] = listing.get("items", [])
        return items

    async def endpoint_events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """The events about endpoint ``name`` (the operator's: rollouts, problems)."""
        selector = f"involvedObject.kind=ServingEndpoint,involvedObject.name={name}"
        listing = await self._json(
            "GET",
            f"/api/v1/namespaces/{quote(namespace)}/events",
            query={"fieldSelector": selector},
        )
        items: list[dict[str, Any]] = listing.get("items", [])
        return items

    async def create_endpoint(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create an endpoint; its body as the apiserver stored it."""
        return await self._json("POST", _endpoints_path(namespace), body=body)

    async def replace_endpoint(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Replace an endpoint (PUT). ``body`` carries the ``resourceVersion`` it was read at,
        so a change in between fails with 409 instead of being overwritten."""
        path = _endpoint_path(namespace, body["metadata"]["name"])
        return await self._json("PUT", path, body=body)

    async def delete_endpoint(self, namespace: str, name: str) -> None:
        """Delete an endpoint; its children go with it (owner references)."""
        body = {"propagationPolicy": "Background"}
        await self._json("DELETE", _endpoint_path(namespace, name), body=body)

    # --- access ------------------------------------------------------------------------

    async def review_access(self, review: dict[str, Any]) -> dict[str, Any]:
        """The ``status`` of a SubjectAccessReview (``allowed``, ``denied``, ``reason``)."""
        answer = await self._json("POST", SAR_PATH, body=review)
        status: dict[str, Any] = answer.get("status") or {}
        return status

    # --- pods --------------------------------------------------------------------------

    async def pods(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        """Pods of ``namespace`` matching the label ``selector``."""
        text = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        listing = await self._json(
            "GET", f"/api/v1/namespaces/{quote(namespace)}/pods", query={"labelSelector": text}
        )
        items: list[dict[str, Any]] = listing.get("items", [])
        return items

    async def pod_log(
        self, namespace: str, pod: str, *, container: str, tail_lines: int, limit_bytes: int
    ) -> str:
        """The last ``tail_lines`` lines of a container's log (at most ``limit_bytes``)."""
        path = f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(pod)}/log"
        query = {
            "container": container,
            "tailLines": str(tail_lines),
            "limitBytes": str(limit_bytes),
        }
        raw = await self._call("GET", path, query=query, accept="text/plain")
        return raw.decode("utf-8", errors="replace")

    # --- plumbing ----------------------------------------------------------------------

    async def _json(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        raw = await self._call(method, path, body=body, query=query)
        document = orjson.loads(raw) if raw else {}
        if not isinstance(document, dict):
            raise KubeApiError(502, "BadResponse", f"{method} {path}: not a JSON object")
        return document

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
        accept: str = "application/json",
    ) -> bytes:
        headers = {"Authorization": f"Bearer {self._own_token()}", "Accept": accept}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = orjson.dumps(body)
        session = self._open()
        url = self._conn.api_server + path
        try:
            async with session.request(
                method, url, data=data, params=query, headers=headers
            ) as resp:
                raw = await _read_limited(resp)
                if resp.status >= 400:
                    raise _error(method, path, resp.status, raw)
                return raw
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Only the exception's type: the request may carry a caller's token.
            log.warning(
                "cannot reach the apiserver for %s %s (%s)", method, path, type(exc).__name__
            )
            raise KubeApiError(
                0, "Unreachable", "the Kubernetes API server is unreachable"
            ) from None

    def _own_token(self) -> str:
        """The server's ServiceAccount token, re-read when the kubelet has rotated it."""
        try:
            return self._token.read()
        except OSError as exc:
            raise KubeApiError(
                0,
                "NoCredential",
                f"cannot read the server's token at {self._conn.token_file} ({exc.strerror}); "
                "set --token-file or mount the pod's ServiceAccount token",
            ) from None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is not None and not self._session.closed:
            return self._session
        tls: ssl.SSLContext | bool = True
        if self._conn.api_server.startswith("https://"):
            try:
                tls = ssl.create_default_context(cafile=self._conn.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise KubeApiError(
                    0,
                    "NoCA",
                    f"cannot load the apiserver's CA from {self._conn.ca_file} "
                    f"({getattr(exc, 'strerror', None) or type(exc).__name__}); set --ca-file",
                ) from None
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls, limit=MAX_CONNECTIONS),
            timeout=aiohttp.ClientTimeout(
                total=TIMEOUT_SECONDS, sock_connect=CONNECT_TIMEOUT_SECONDS
            ),
        )
        return self._session


def _endpoints_path(namespace: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace)}/{PLURAL}"


def _endpoint_path(namespace: str, name: str) -> str:
    return f"{_endpoints_path(namespace)}/{quote(name)}"


def _error(method: str, path: str, status: int, raw: bytes) -> KubeApiError:
    """The apiserver's Status as a KubeApiError (its message names fields, not values)."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        document = None
    if isinstance(document, dict) and document.get("kind") == "Status":
        return KubeApiError(
            status, str(document.get("reason") or ""), str(document.get("message") or "")
        )
    return KubeApiError(status, "", f"{method} {path} answered HTTP {status}")


async def _read_limited(resp: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise KubeApiError(502, "TooLarge", "the apiserver's answer is too large")
        chunks.append(chunk)
    return b"".join(chunks)
