"""The only code that talks to the Kubernetes API (besides Kopf's own watches).

Asynchronous, on one `aiohttp` session per operator process: a reconcile awaits its
requests on the event loop that runs Kopf, so no thread waits on the network and
many endpoints' requests are in flight at once. (The generated `kubernetes` client
is not used: the operator makes a handful of calls, and the client's models cost ~47 MiB of
resident memory in every operator process.)

What a reconcile reads comes from Kopf's watches (`modelport.controller.cache`);
here are the writes, and the one object no watch covers (the binding):

- `Kube.apply` is server-side apply under the one field manager `modelport`
  (`modelport.kube.compare` decides beforehand whether there is anything to write,
  and hashes what our field manager owns on the result);
- `Kube.delete` deletes a child no longer desired, only if it is still the object we
  saw (uid precondition);
- `Kube.apply_status` writes the endpoint's status (apply to the status subresource);
- `Kube.event` records an event on the endpoint;
- `Kube.get_cluster_role_binding` / `Kube.replace_cluster_role_binding` read and
  replace (with its resourceVersion: optimistic concurrency) the one
  ClusterRoleBinding the operator maintains; `modelport.kube.binding` decides what.

Every method raises `KubeError` (with the HTTP status, 0 when none came back) whose
message is the apiserver's, never the request body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import quote

import aiohttp
import orjson

from modelport.api import GROUP, PLURAL, VERSION
from modelport.kube.compare import FIELD_MANAGER, with_applied_hash
from modelport.objects import Manifest
from modelport.operatormetrics import API_REQUESTS

__all__ = [
    "CHILD_KINDS",
    "FIELD_MANAGER",
    "ChildKey",
    "Credentials",
    "Kube",
    "KubeError",
    "NamespaceGoneError",
]

log = logging.getLogger(__name__)
REQUEST_TIMEOUT_SECONDS = 30
CONNECTIONS = 32
"""Connections to the apiserver at most: more than the reconcile workers, so that
events and the binding's writes never wait for a reconcile's request."""


@dataclass(frozen=True)
class _Kind:
    api_version: str
    kind: str
    plural: str

    def collection(self, namespace: str) -> str:
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        return f"{prefix}/namespaces/{quote(namespace)}/{self.plural}"


CHILD_KINDS: dict[str, _Kind] = {
    k.kind: k
    for k in (
        _Kind("v1", "ConfigMap", "configmaps"),
        _Kind("v1", "ServiceAccount", "serviceaccounts"),
        _Kind("v1", "Service", "services"),
        _Kind("apps/v1", "Deployment", "deployments"),
        _Kind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
        # The gateway's right to watch its entities' EndpointSlices (fallback's readiness).
        _Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
    )
}
_ENDPOINTS = _Kind(f"{GROUP}/{VERSION}", "ServingEndpoint", PLURAL)
_CLUSTER_ROLE_BINDINGS = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"

ChildKey = tuple[str, str]
"""(kind, name) of a child."""


class KubeError(RuntimeError):
    """An API call failed; `status` is the HTTP status (0 when none came back)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class NamespaceGoneError(KubeError):
    """The namespace is gone or terminating: nothing can be created in it any more."""


class Credentials(Protocol):
    """Where the apiserver is and how to authenticate (`kopf.ConnectionInfo` is one)."""

    @property
    def server(self) -> str:
        """The apiserver's URL."""
        ...

    def as_ssl_context(self) -> ssl.SSLContext:
        """CA and client certificate."""
        ...

    def as_http_headers(self) -> dict[str, str]:
        """The Authorization header, if any."""
        ...


class Kube:
    """The API calls of one operator process, on one connection pool.

    `login` gives fresh credentials; it is called at the first request and again
    after a 401 (a rotated ServiceAccount token), once per failed request.
    """

    def __init__(
        self,
        login: Callable[[], Credentials],
        *,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
        connections: int = CONNECTIONS,
    ) -> None:
        self._login = login
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._server = ""
        self._auth: dict[str, str] = {}
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        """Close the connections (at the operator's shutdown)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- children --------------------------------------------------------------

    async def apply(self, manifest: Manifest) -> dict[str, Any]:
        """Server-side apply one child (with its applied-hash annotation); the result."""
        kind = CHILD_KINDS[manifest["kind"]]
        meta = manifest["metadata"]
        path = f"{kind.collection(meta['namespace'])}/{quote(meta['name'])}"
        return await self._write("PATCH", path, with_applied_hash(manifest), apply=True) or {}

    async def delete(self, kind: str, namespace: str, name: str, uid: str) -> None:
        """Delete a child, only if it is still the object we saw (uid precondition)."""
        path = f"{CHILD_KINDS[kind].collection(namespace)}/{quote(name)}"
        body = {"preconditions": {"uid": uid}, "propagationPolicy": "Background"}
        try:
            await self._write("DELETE", path, body)
        except KubeError as exc:
            if exc.status not in (404, 409):  # gone already, or replaced meanwhile
                raise

    # --- endpoints -------------------------------------------------------------

    async def apply_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Server-side apply `status` to the status subresource; the endpoint after it.

        Apply (not merge) so that fields we set before and no longer set (a finished
        pendingConfig) are removed without writing nulls.
        """
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ServingEndpoint",
            "metadata": {"name": name, "namespace": namespace},
            "status": status,
        }
        path = f"{_ENDPOINTS.collection(namespace)}/{quote(name)}/status"
        return await self._write("PATCH", path, body, apply=True) or {}

    async def event(
        self,
        namespace: str,
        endpoint: str,
        uid: str,
        type_: Literal["Normal", "Warning"],
        reason: str,
        message: str,
    ) -> bool:
        """Record an event on the endpoint (what `kubectl describe` shows); whether it
        was recorded (an event is a courtesy: losing one fails nothing)."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{endpoint}.{time.time_ns():x}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ServingEndpoint",
                "name": endpoint,
                "namespace": namespace,
                "uid": uid,
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": FIELD_MANAGER,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._write("POST", f"/api/v1/namespaces/{quote(namespace)}/events", body)
        except KubeError as exc:
            log.warning("could not record event %s on %s/%s: %s", reason, namespace, endpoint, exc)
            return False
        return True

    # --- the TokenReview ClusterRoleBinding -------------------------------------

    async def get_cluster_role_binding(self, name: str) -> dict[str, Any] | None:
        """The ClusterRoleBinding `name`, or None when it does not exist."""
        return await self._get(f"{_CLUSTER_ROLE_BINDINGS}/{quote(name)}")

    async def replace_cluster_role_binding(self, body: dict[str, Any]) -> dict[str, Any]:
        """Replace a ClusterRoleBinding (PUT). `body` carries the resourceVersion it was
        read at, so a concurrent change makes this fail with 409 instead of being lost."""
        path = f"{_CLUSTER_ROLE_BINDINGS}/{quote(body['metadata']['name'])}"
        return await self._write("PUT", path, body) or {}

    # --- plumbing --------------------------------------------------------------

    async def _get(self, path: str, query: dict[str, str] | None = None) -> dict[str, Any] | None:
        try:
            return await self._call("GET", path, query=query)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def _write(
        self, method: str, path: str, body: dict[str, Any], *, apply: bool = False
    ) -> dict[str, Any] | None:
        query = {"fieldManager": FIELD_MANAGER}
        if apply:
            query["force"] = "true"  # we are the only manager of what we render
        content = "application/apply-patch+yaml" if apply else "application/json"
        return await self._call(method, path, query=query, body=body, content_type=content)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any] | None:
        data = orjson.dumps(body) if body is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in (1, 2):
            session = await self._connect(renew=attempt == 2)
            try:
                async with session.request(
                    method,
                    self._server + path,
                    params=query,
                    data=data,
                    headers={**headers, **self._auth},
                ) as response:
                    payload = await response.read()
                    status = response.status
                    reason = response.reason or ""
            except (aiohttp.ClientError, TimeoutError) as exc:
                API_REQUESTS.labels(method, "0").inc()
                raise KubeError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
            API_REQUESTS.labels(method, str(status)).inc()
            if status == 401 and attempt == 1:
                continue  # a rotated token: log in again, once
            if status >= 400:
                raise _error(method, path, status, reason, payload)
            if not payload:
                return None
            parsed: dict[str, Any] = orjson.loads(payload)
            return parsed
        raise AssertionError("unreachable")  # pragma: no cover

    async def _connect(self, *, renew: bool) -> aiohttp.ClientSession:
        """The session; with `renew`, fresh credentials first (the headers only: the
        connections in use stay open)."""
        async with self._lock:
            if self._session is not None and not renew:
                return self._session
            credentials = await asyncio.to_thread(self._login)  # it reads files
            self._auth = credentials.as_http_headers()
            if self._session is None:
                self._server = credentials.server.rstrip("/")
                self._session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(
                        ssl=credentials.as_ssl_context(), limit=self._connections
                    ),
                    timeout=self._timeout,
                )
            return self._session


def _error(method: str, path: str, status: int, reason: str, payload: bytes) -> KubeError:
    """A KubeError with the apiserver's message (never the request body)."""
    message = reason
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        message = orjson.loads(payload or b"{}").get("message") or message
    text = f"{method} {path}: {status} {message}"
    if status == 404 and "namespaces" in message and "not found" in message:
        return NamespaceGoneError(text, status)
    if status == 403 and "being terminated" in message:
        return NamespaceGoneError(text, status)
    return KubeError(text, status)
