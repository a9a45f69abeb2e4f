"""Kopf's side: what to watch, what to keep of it, whom to tell. Thin and typed.

- Index functions (`kopf.index`) reduce every watched object to the small record
  `modelport.controller.cache` defines; Kopf keeps the records and hands no event to
  a handler before every kind's initial listing is indexed.
- Event handlers (`kopf.on.event`, all `async`: nothing here blocks) only tell the
  `Manager` what changed; it decides whether to queue a reconcile.
- No change-detecting handler (`on.create`/`on.update`/`on.resume`): those make Kopf
  patch its bookkeeping annotation onto every endpoint, a write per change.

The handlers live on a registry of their own, without Kopf's fallback logins, which
would import the `kubernetes` client when it is installed; `login` reads the
in-cluster ServiceAccount, else the kubeconfig (client certificates, tokens).

Settings come from Kopf's memo (`modelport operator` puts them there) or, for
`kopf run -m modelport.controller`, from the MODELPORT_* environment; the manager,
reconciler and API client are built at start-up and kept in the memo.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from modelport import operatormetrics
from modelport.api import GROUP, PLURAL, VERSION
from modelport.controller.cache import (
    Cache,
    cached_child,
    cached_endpoint,
    cached_pod,
    owner_of,
    secret_keys,
)
from modelport.controller.manager import Manager
from modelport.controller.reconcile import Reconciler
from modelport.kube import CHILD_KINDS, Kube
from modelport.kube.binding import TokenReviewBinding
from modelport.render.names import ENDPOINT_LABEL, MANAGED_BY, MANAGER, label_value
from modelport.settings import Settings, from_env

registry = kopf.OperatorRegistry()
kopf.set_default_registry(registry)  # what `kopf run -m modelport.controller` runs

_MANAGED = {MANAGED_BY: MANAGER}
IDLE_WORKER_SECONDS = 0.5
"""How long Kopf keeps an object's worker after its last event (Kopf's default: 5 s)."""
_RESOURCES = {
    "ConfigMap": ("v1", "configmaps"),
    "ServiceAccount": ("v1", "serviceaccounts"),
    "Service": ("v1", "services"),
    "Deployment": ("apps/v1", "deployments"),
    "HorizontalPodAutoscaler": ("autoscaling/v2", "horizontalpodautoscalers"),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", "rolebindings"),
}
assert set(_RESOURCES) == set(CHILD_KINDS), "every child kind is watched"


def login(**_: Any) -> kopf.ConnectionInfo:
    """The in-cluster ServiceAccount, else the kubeconfig (KUBECONFIG or ~/.kube/config).

    Kopf's own minimal logins: no exec credential plugins, which a pod never needs."""
    settings = kopf.OperatorSettings()
    found = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
        settings=settings
    )
    if found is None:
        raise kopf.LoginError("no in-cluster ServiceAccount and no kubeconfig to log in with")
    return found


@kopf.on.login(registry=registry)
def authenticate(**kwargs: Any) -> kopf.ConnectionInfo:
    """Kopf's credentials: the same as the operator's own API client's."""
    return login(**kwargs)


@kopf.on.startup(registry=registry)
async def start(
    settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **indices: Any
) -> None:
    """Configure Kopf, build the manager from the settings, start its workers."""
    config: Settings = memo.get("settings") or from_env()
    # Kopf's bookkeeping in annotations under our prefix; no status storage. No
    # handler needs it any more, but an older operator's annotations stay readable.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Only a handler that needs one (on.delete, timers, daemons) makes Kopf add a
    # finalizer; we register none, so deletion is left to garbage collection.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Kopf's per-handler INFO events would be API writes on every change.
    settings.posting.level = logging.WARNING
    settings.peering.standalone = True
    # Watching named namespaces needs no cluster-wide rights: Kopf's discovery of
    # namespaces and CRDs would list them cluster-wide, so it is off there.
    settings.scanning.disabled = not config.clusterwide
    settings.watching.server_timeout = 300
    # Kopf keeps a worker (a task and its queue) per object for this long after the
    # object's last event; handlers here only tell the manager, so a worker is cheap to
    # start again, and a burst of thousands of objects leaves fewer of them alive.
    settings.queueing.idle_timeout = IDLE_WORKER_SECONDS
    logging.getLogger().setLevel(config.log_level)
    if config.log_level != "DEBUG":
        # "Handler 'child_event' succeeded." for every watch event is noise (and CPU).
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kube = Kube(login)
    cache = Cache(
        endpoints=indices["endpoints"],
        labels=indices["endpoint_labels"],
        children=indices["children"],
        pods=indices["pods"],
        secrets=indices["secrets"],
    )
    binding = TokenReviewBinding(kube, config.gateway_tokenreview_binding)
    manager = Manager(
        Reconciler(cache, kube, binding, config),
        cache,
        workers=config.reconcile_workers,
        resync_seconds=config.resync_seconds,
    )
    manager.start()
    if config.metrics_port and not memo.get("metrics_served"):
        operatormetrics.serve(config.metrics_port)  # a thread; lives as long as the process
        memo["metrics_served"] = True
    memo["settings"] = config
    memo["kube"] = kube
    memo["manager"] = manager
    logger.info(
        "modelport operator: %d reconcile workers, resync every %gs",
        config.reconcile_workers,
        config.resync_seconds,
    )


@kopf.on.cleanup(registry=registry)
async def stop(memo: kopf.Memo, **_: Any) -> None:
    """Stop the workers, close the connections."""
    manager: Manager | None = memo.get("manager")
    if manager is not None:
        await manager.stop()
    kube: Kube | None = memo.get("kube")
    if kube is not None:
        await kube.close()


# --- what is kept of each watched object ------------------------------------------


@kopf.index(GROUP, VERSION, PLURAL, registry=registry)
async def endpoints(
    body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> dict[Any, Any]:
    """ServingEndpoints by (namespace, name)."""
    settings: Settings = memo["settings"]
    return {(namespace or "", name): cached_endpoint(body, settings)}


@kopf.index(GROUP, VERSION, PLURAL, registry=registry)
async def endpoint_labels(namespace: str | None, name: str, **_: Any) -> dict[Any, Any]:
    """Endpoint names by the endpoint label their children and pods carry."""
    return {(namespace or "", label_value(name)): name}


def _child_index(kind: str) -> Any:
    async def children(body: kopf.Body, namespace: str | None, **_: Any) -> dict[Any, Any] | None:
        """Children by (namespace, owning endpoint)."""
        record = cached_child(kind, body)
        owner = owner_of(body)
        if record is None or owner is None:
            return None
        return {(namespace or "", owner[0]): record}

    return children


def _child_handler(kind: str) -> Any:
    async def child_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        """Tell the manager."""
        manager: Manager = memo["manager"]
        manager.child_event(type, kind, body)

    return child_event


for _kind, (_api_version, _plural) in _RESOURCES.items():
    _group, _, _version = _api_version.rpartition("/")
    kopf.index(_group, _version, _plural, labels=_MANAGED, id="children", registry=registry)(
        _child_index(_kind)
    )
    kopf.on.event(_group, _version, _plural, labels=_MANAGED, id="child_event", registry=registry)(
        _child_handler(_kind)
    )


@kopf.index("", "v1", "pods", labels=_MANAGED, registry=registry)
async def pods(body: kopf.Body, namespace: str | None, **_: Any) -> dict[Any, Any] | None:
    """Pods of endpoints' Deployments by (namespace, endpoint label)."""
    label = (body.get("metadata", {}).get("labels") or {}).get(ENDPOINT_LABEL)
    return {(namespace or "", label): cached_pod(body)} if label else None


@kopf.index("", "v1", "secrets", registry=registry)
async def secrets(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> dict[Any, Any]:
    """Secrets' key names (never values) by (namespace, name)."""
    return {(namespace or "", name): secret_keys(body)}


# --- whom to tell ------------------------------------------------------------------


@kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
async def endpoint_event(
    type: str, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    """Tell the manager."""
    manager: Manager = memo["manager"]
    manager.endpoint_event(type, namespace or "", name)


@kopf.on.event("", "v1", "pods", labels=_MANAGED, registry=registry)
async def pod_event(
    type: str, namespace: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    """Tell the manager."""
    manager: Manager = memo["manager"]
    manager.pod_event(type, namespace or "", body)


@kopf.on.event("", "v1", "secrets", registry=registry)
async def secret_event(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Tell the manager (the Secret's name only: its data is never read here)."""
    manager: Manager = memo["manager"]
    manager.secret_event(namespace or "", name)
