"""Kopf handlers: thin and typed; every one of them runs the same reconcile.

All handlers are sync on purpose: Kopf runs sync handlers in its thread pool, which
is where the blocking `kubernetes` client belongs.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import kopf

from modelport.api import GROUP, KIND, PLURAL, VERSION
from modelport.controller.reconcile import Reconciler
from modelport.kube import KubeError, connect
from modelport.kube.observe import pod_problems
from modelport.render.names import ENDPOINT_LABEL, MANAGED_BY, MANAGER
from modelport.settings import Settings, from_env

log = logging.getLogger("modelport.controller")

# Read at import, so `modelport operator` sets MODELPORT_* from its flags first.
SETTINGS: Settings = from_env()
RETRY_SECONDS = 10
_CHILDREN = {MANAGED_BY: MANAGER}
_reconciler: Reconciler | None = None
_stopping = threading.Event()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Kopf's bookkeeping in annotations under our prefix; no status storage."""
    global _reconciler
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Only a handler that needs one (on.delete, timers, daemons) makes Kopf add a
    # finalizer; we register none, so deletion is left to garbage collection.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Kopf's per-handler INFO events would be API writes on every child change.
    settings.posting.level = logging.WARNING
    settings.peering.standalone = True
    # Watching named namespaces needs no cluster-wide rights: Kopf's discovery of
    # namespaces and CRDs would list them cluster-wide, so it is off there.
    settings.scanning.disabled = not SETTINGS.clusterwide
    settings.watching.server_timeout = 300
    logging.getLogger().setLevel(SETTINGS.log_level)
    _reconciler = Reconciler(connect(), SETTINGS)
    if SETTINGS.resync_seconds > 0:
        threading.Thread(target=_resync_loop, name="modelport-resync", daemon=True).start()


@kopf.on.cleanup()
def stop_resync(**_: Any) -> None:
    """Stop the resync loop with the operator."""
    _stopping.set()


def _resync_loop() -> None:
    """The safety net: reconcile every endpoint now and then, writing only drift.

    A thread of our own rather than a Kopf timer: Kopf puts a finalizer on every
    object that has a timer, and a finalizer left behind by a stopped operator
    blocks the deletion of the endpoint and of its namespace.
    """
    while not _stopping.wait(SETTINGS.resync_seconds):
        if _reconciler is None:
            continue
        # Only endpoints Kopf has handed us: those are in the namespaces Kopf watches,
        # however it was told them (flags, MODELPORT_NAMESPACES or `kopf run -n`).
        for namespace, name in _reconciler.known_endpoints():
            try:
                _reconciler.reconcile(namespace, name, coalesce=True)
            except KubeError as exc:
                log.warning("resync of %s/%s failed: %s", namespace, name, exc)


def _run(namespace: str | None, name: str | None, *, coalesce: bool = False) -> None:
    if _reconciler is None or not namespace or not name:
        return
    try:
        _reconciler.reconcile(namespace, name, coalesce=coalesce)
    except KubeError as exc:
        raise kopf.TemporaryError(f"{exc}; retrying", delay=RETRY_SECONDS) from None


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def reconcile_endpoint(namespace: str | None, name: str | None, **_: Any) -> None:
    """Create, spec update and operator start: reconcile the endpoint."""
    _run(namespace, name)


@kopf.on.event("apps", "v1", "deployments", labels=_CHILDREN)
@kopf.on.event("autoscaling", "v2", "horizontalpodautoscalers", labels=_CHILDREN)
@kopf.on.event("v1", "services", labels=_CHILDREN)
@kopf.on.event("v1", "configmaps", labels=_CHILDREN)
@kopf.on.event("v1", "serviceaccounts", labels=_CHILDREN)
@kopf.on.event("rbac.authorization.k8s.io", "v1", "rolebindings", labels=_CHILDREN)
def child_changed(namespace: str | None, meta: kopf.Meta, **_: Any) -> None:
    """A child changed (rollout progress, a hand edit) or vanished: reconcile its owner,
    which repairs drift and recomputes status."""
    for owner in meta.get("ownerReferences") or []:
        if owner.get("kind") == KIND and owner.get("apiVersion", "").startswith(f"{GROUP}/"):
            _run(namespace, owner.get("name"), coalesce=True)


def _pod_in_trouble(body: kopf.Body, **_: Any) -> bool:
    return bool(pod_problems([dict(body)]))


@kopf.on.event("v1", "pods", labels=_CHILDREN, when=_pod_in_trouble)
def pod_in_trouble(namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
    """A pod of an endpoint is stuck (crash looping, an image that cannot be pulled,
    unschedulable): reconcile the endpoint so that its status says why now, not at the
    next resync. Nothing else about pods changes a Deployment's status, which is what
    the other watches see. Pods name their endpoint by label (an endpoint name too long
    for a label is hashed there and left to the resync)."""
    _run(namespace, labels.get(ENDPOINT_LABEL), coalesce=True)


@kopf.on.event("v1", "secrets")
def secret_changed(namespace: str | None, name: str | None, **_: Any) -> None:
    """A Secret appeared, changed or went away: re-check the endpoints that use it.
    Only its name is used here; its data is never read or logged by this handler."""
    if _reconciler is None or not namespace or not name:
        return
    for endpoint in _reconciler.endpoints_using_secret(namespace, name):
        _run(namespace, endpoint, coalesce=True)
