"""The only code that talks to the Kubernetes API.

Everything here is blocking (the official `kubernetes` client): call it from sync
Kopf handlers (they run in Kopf's thread pool), never from `async def`.

- `Kube.apply` is server-side apply under the one field manager `modelport`;
  `needs_apply` (in `modelport.kube.compare`) decides beforehand whether there is
  anything to write, so an unchanged endpoint costs reads only.
- `Kube.children` lists an endpoint's children by label; `Kube.prune` deletes the
  ones no longer desired.
- `Kube.secret_key_state` reads a Secret only to say whether a key exists; the
  value never leaves this function.
- `Kube.get_cluster_role_binding` / `Kube.replace_cluster_role_binding` read and
  replace (with its resourceVersion: optimistic concurrency) the one
  ClusterRoleBinding the operator maintains; `modelport.kube.binding` decides what.
- `Kube.writes` counts every write request made (apply, delete, status, event), so
  tests and logs can show that an unchanged endpoint costs none.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from modelport.api import GROUP, PLURAL, VERSION
from modelport.kube.compare import APPLIED_HASH_ANNOTATION, needs_apply, with_applied_hash
from modelport.render import Manifest
from modelport.render.names import ENDPOINT_LABEL, MANAGED_BY, MANAGER, label_value

__all__ = [
    "APPLIED_HASH_ANNOTATION",
    "CHILD_KINDS",
    "FIELD_MANAGER",
    "ChildKey",
    "Kube",
    "KubeError",
    "NamespaceGoneError",
    "connect",
    "needs_apply",
]

FIELD_MANAGER = "modelport"
log = logging.getLogger(__name__)


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


def connect() -> Kube:
    """A `Kube` from the in-cluster service account, else from the kubeconfig."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return Kube(client.ApiClient())


class Kube:
    """Typed-enough access to the API for one operator process (thread-safe)."""

    def __init__(self, api: Any) -> None:
        self._api = api
        self._lock = threading.Lock()
        self.writes = 0

    # --- endpoints -------------------------------------------------------------

    def get_endpoint(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The endpoint's raw body, or None when it does not exist."""
        return self._get(f"{_ENDPOINTS.collection(namespace)}/{quote(name)}")

    def apply_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Server-side apply `status` to the status subresource.

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
        self._write("PATCH", path, body, apply=True)

    # --- children --------------------------------------------------------------

    def children(self, namespace: str, endpoint: str) -> dict[ChildKey, dict[str, Any]]:
        """Every child of `endpoint` (by label), keyed by (kind, name)."""
        selector = f"{MANAGED_BY}={MANAGER},{ENDPOINT_LABEL}={label_value(endpoint)}"
        found: dict[ChildKey, dict[str, Any]] = {}
        for kind in CHILD_KINDS.values():
            listing = self._get(kind.collection(namespace), {"labelSelector": selector})
            for item in (listing or {}).get("items", []):
                # Items of a list come without apiVersion and kind; put them back so
                # that a child compares equal to its rendered manifest.
                item.update(apiVersion=kind.api_version, kind=kind.kind)
                found[(kind.kind, item["metadata"]["name"])] = item
        return found

    def apply(self, manifest: Manifest) -> dict[str, Any]:
        """Server-side apply one child (with its applied-hash annotation); the result."""
        kind = CHILD_KINDS[manifest["kind"]]
        meta = manifest["metadata"]
        path = f"{kind.collection(meta['namespace'])}/{quote(meta['name'])}"
        result = self._write("PATCH", path, with_applied_hash(manifest), apply=True)
        return result or {}

    def delete(self, kind: str, namespace: str, name: str, uid: str) -> None:
        """Delete a child, only if it is still the object we saw (uid precondition)."""
        path = f"{CHILD_KINDS[kind].collection(namespace)}/{quote(name)}"
        body = {"preconditions": {"uid": uid}, "propagationPolicy": "Background"}
        try:
            self._write("DELETE", path, body)
        except KubeError as exc:
            if exc.status not in (404, 409):  # gone already, or replaced meanwhile
                raise

    def pods(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        """Pods matching `selector` (to explain why a Deployment is not ready)."""
        text = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        listing = self._get(f"/api/v1/namespaces/{quote(namespace)}/pods", {"labelSelector": text})
        items: list[dict[str, Any]] = (listing or {}).get("items", [])
        return items

    # --- secrets ---------------------------------------------------------------

    def secret_key_state(
        self, namespace: str, name: str, key: str
    ) -> Literal["ok", "missing-secret", "missing-key"]:
        """Whether Secret `name` exists and holds `key`. The value is never returned,
        logged or kept: only the key's presence leaves this function."""
        secret = self._get(f"/api/v1/namespaces/{quote(namespace)}/secrets/{quote(name)}")
        if secret is None:
            return "missing-secret"
        present = key in (secret.get("data") or {}) or key in (secret.get("stringData") or {})
        del secret
        return "ok" if present else "missing-key"

    # --- the TokenReview ClusterRoleBinding -------------------------------------

    def get_cluster_role_binding(self, name: str) -> dict[str, Any] | None:
        """The ClusterRoleBinding `name`, or None when it does not exist."""
        return self._get(f"{_CLUSTER_ROLE_BINDINGS}/{quote(name)}")

    def replace_cluster_role_binding(self, body: dict[str, Any]) -> dict[str, Any]:
        """Replace a ClusterRoleBinding (PUT). `body` carries the resourceVersion it was
        read at, so a concurrent change makes this fail with 409 instead of being lost."""
        path = f"{_CLUSTER_ROLE_BINDINGS}/{quote(body['metadata']['name'])}"
        return self._write("PUT", path, body) or {}

    # --- events ----------------------------------------------------------------

    def event(
        self,
        namespace: str,
        endpoint: str,
        uid: str,
        type_: Literal["Normal", "Warning"],
        reason: str,
        message: str,
    ) -> None:
        """Record an event on the endpoint (what `kubectl describe` shows)."""
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
            self._write("POST", f"/api/v1/namespaces/{quote(namespace)}/events", body)
        except KubeError as exc:
            # An event is a courtesy; losing one must not fail the reconcile.
            log.warning("could not record event %s on %s/%s: %s", reason, namespace, endpoint, exc)

    # --- plumbing --------------------------------------------------------------

    def _get(self, path: str, query: dict[str, str] | None = None) -> dict[str, Any] | None:
        try:
            return self._call("GET", path, query=query)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def _write(
        self, method: str, path: str, body: dict[str, Any], *, apply: bool = False
    ) -> dict[str, Any] | None:
        with self._lock:
            self.writes += 1
        query = {"fieldManager": FIELD_MANAGER}
        if apply:
            query["force"] = "true"  # we are the only manager of what we render
        headers = {"Content-Type": "application/apply-patch+yaml"} if apply else None
        return self._call(method, path, query=query, body=body, headers=headers)

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | None:
        header_params = {"Accept": "application/json", **(headers or {})}
        if body is not None and "Content-Type" not in header_params:
            header_params["Content-Type"] = "application/json"
        try:
            response = self._api.call_api(
                path,
                method,
                query_params=list((query or {}).items()),
                header_params=header_params,
                body=body,
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _preload_content=False,
                _request_timeout=30,
            )
        except ApiException as exc:
            raise _error(method, path, exc) from None
        data = response.data
        if not data:
            return None
        parsed: dict[str, Any] = json.loads(data)
        return parsed


def _error(method: str, path: str, exc: ApiException) -> KubeError:
    """A KubeError with the apiserver's message (never the request body)."""
    message = exc.reason or ""
    with contextlib.suppress(ValueError, AttributeError):
        message = json.loads(exc.body or "{}").get("message") or message
    text = f"{method} {path}: {exc.status} {message}"
    status = int(exc.status or 0)
    if status == 404 and "namespaces" in message and "not found" in message:
        return NamespaceGoneError(text, status)
    if status == 403 and "being terminated" in message:
        return NamespaceGoneError(text, status)
    return KubeError(text, status)
