"""What the watches saw, kept small, for reconciles to read instead of the API server.

Kopf watches ServingEndpoints, their children (by the `managed-by` label), their pods
and the Secrets of the watched namespaces; an index function per kind
(`modelport.controller.handlers`) reduces every object it is handed to a record
here, and Kopf keeps the records in indexes (`kopf.index`). Kopf calls no handler
before every index holds its kind's initial listing, so a reconcile never mistakes
"not listed yet" for "missing".

The records hold what a reconcile needs and nothing more:

- an endpoint: its body (without `managedFields`), compact JSON bytes parsed when a
  reconcile runs, and the names of the Secrets it refers to;
- a child: its identity, its owner, a digest of the fields our field manager owns
  (`modelport.kube.compare.owned_digest`, enough to tell whether it needs an apply)
  and, for a Deployment, its rollout state;
- a pod: where it is in its start-up and what keeps it from running;
- a Secret: the names of its keys. Kopf's watch receives whole Secrets (Kopf cannot
  ask for metadata only, and key names are not metadata), so the values pass through
  Kopf's event processing, but the index keeps key names only, and nothing here
  logs, stores or returns a value.

Records are frozen and compare by value: `modelport.controller.manager` compares a
new record with the one the last reconcile used to decide whether an event matters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from modelport.api import GROUP, KIND, ServingEndpoint
from modelport.kube import ChildKey
from modelport.kube.compare import owned_digest
from modelport.observe import PodObservation, observe_deployment, observe_pod
from modelport.render.config import secret_refs
from modelport.render.names import COMPONENT_LABEL, ENDPOINT_LABEL, ENTITY_LABEL, label_value
from modelport.settings import Settings
from modelport.status import DeploymentObservation

EndpointKey = tuple[str, str]
"""(namespace, name) of an endpoint: the work queue's key."""


@dataclass(frozen=True)
class CachedEndpoint:
    """A ServingEndpoint as last seen."""

    uid: str
    generation: int
    deleting: bool
    body: bytes
    """The body as JSON, without `metadata.managedFields` and `resourceVersion`."""
    secrets: frozenset[str] = frozenset()
    """Names of the Secrets it refers to (empty when its spec does not parse)."""
    version: str = field(default="", compare=False)
    """Its resourceVersion: which write this is (not what it holds: not compared)."""

    def raw(self) -> dict[str, Any]:
        """The body, to parse."""
        parsed: dict[str, Any] = orjson.loads(self.body)
        return parsed


@dataclass(frozen=True)
class CachedChild:
    """A child as last seen: enough to decide whether to apply it, prune it or wait."""

    kind: str
    name: str
    uid: str
    owner_uid: str
    owned: str | None
    """Digest of the fields our field manager owns; None when it owns none."""
    deployment: DeploymentObservation | None = None
    """A Deployment's rollout state (without its pods)."""

    @property
    def key(self) -> ChildKey:
        """(kind, name)."""
        return (self.kind, self.name)


@dataclass(frozen=True)
class CachedPod:
    """A pod of an endpoint's Deployment, as last seen."""

    uid: str
    labels: frozenset[tuple[str, str]]
    """The labels its Deployment's selector matches on (component, entity)."""
    observation: PodObservation

    def matches(self, selector: Mapping[str, str]) -> bool:
        """Whether `selector` (a Deployment's pod selector) selects this pod."""
        return all((k, v) in self.labels for k, v in selector.items() if k != ENDPOINT_LABEL)


def cached_endpoint(body: Mapping[str, Any], settings: Settings | None = None) -> CachedEndpoint:
    """The record of a ServingEndpoint body (a watch event's or an API answer's); the
    cluster's `settings` name Secrets an endpoint may need besides its own (the rate
    limit store's password, the usage database's connection string)."""
    meta = body.get("metadata") or {}
    trimmed = {
        **body,  # a Kopf body's items are plain dicts and lists already
        "metadata": {
            k: v for k, v in meta.items() if k not in ("managedFields", "resourceVersion")
        },
    }
    try:
        endpoint = ServingEndpoint.parse(trimmed)
        refs = (
            secret_refs(endpoint, settings.rate_limiting, settings.usage_database)
            if settings is not None
            else secret_refs(endpoint)
        )
        secrets = frozenset(r.name for r in refs)
    except ValueError:  # pydantic's ValidationError: the reconcile reports it
        secrets = frozenset()
    return CachedEndpoint(
        uid=str(meta.get("uid") or ""),
        generation=int(meta.get("generation") or 0),
        deleting=bool(meta.get("deletionTimestamp")),
        body=orjson.dumps(trimmed, option=orjson.OPT_SORT_KEYS),
        secrets=secrets,
        version=str(meta.get("resourceVersion") or ""),
    )


def owner_of(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """(name, uid) of the ServingEndpoint that controls a child, if any."""
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == KIND and str(ref.get("apiVersion", "")).startswith(f"{GROUP}/"):
            return str(ref.get("name") or ""), str(ref.get("uid") or "")
    return None


def cached_child(kind: str, body: Mapping[str, Any]) -> CachedChild | None:
    """The record of a child of kind `kind` (list items carry no kind); None when no
    endpoint owns it."""
    owner = owner_of(body)
    if owner is None:
        return None
    live = dict(body)  # a Kopf body's items are plain dicts and lists already
    meta = live.get("metadata") or {}
    return CachedChild(
        kind=kind,
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        owner_uid=owner[1],
        owned=owned_digest(live),
        deployment=observe_deployment(live, []) if kind == "Deployment" else None,
    )


def cached_pod(body: Mapping[str, Any]) -> CachedPod:
    """The record of a pod of an endpoint's Deployment."""
    live = dict(body)
    labels = (live.get("metadata") or {}).get("labels") or {}
    return CachedPod(
        uid=str((live.get("metadata") or {}).get("uid") or ""),
        labels=frozenset(
            (k, str(v)) for k, v in labels.items() if k in (COMPONENT_LABEL, ENTITY_LABEL)
        ),
        observation=observe_pod(live),
    )


def secret_keys(body: Mapping[str, Any]) -> frozenset[str]:
    """The names of a Secret's keys. Only the names: no value is read or kept."""
    return frozenset(body.get("data") or ()) | frozenset(body.get("stringData") or ())


class Cache:
    """Read access to the indexes, by endpoint.

    Each index maps a key to the records of the objects filed under it (Kopf's
    `Index` of `Store`s; plain dicts of lists in unit tests):

    - `endpoints`: (namespace, name) -> CachedEndpoint;
    - `labels`: (namespace, endpoint label value) -> endpoint name (a long name's
      label is a hashed stand-in: pods are filed by the label, reconciles ask by name);
    - `children`: (namespace, owner name) -> CachedChild;
    - `pods`: (namespace, endpoint label value) -> CachedPod;
    - `secrets`: (namespace, name) -> the key names.
    """

    def __init__(
        self,
        *,
        endpoints: Mapping[Any, Iterable[Any]],
        labels: Mapping[Any, Iterable[Any]],
        children: Mapping[Any, Iterable[Any]],
        pods: Mapping[Any, Iterable[Any]],
        secrets: Mapping[Any, Iterable[Any]],
    ) -> None:
        self._endpoints = endpoints
        self._labels = labels
        self._children = children
        self._pods = pods
        self._secrets = secrets

    def endpoint(self, key: EndpointKey) -> CachedEndpoint | None:
        """The endpoint, or None when it does not exist."""
        found: list[CachedEndpoint] = list(self._get(self._endpoints, key))
        return found[0] if found else None

    def endpoints(self) -> list[EndpointKey]:
        """Every endpoint in the watched namespaces."""
        return sorted(self._endpoints)

    def endpoints_labelled(self, namespace: str, label: str) -> list[str]:
        """Names of the endpoints whose children carry endpoint label `label`."""
        return sorted(self._get(self._labels, (namespace, label)))

    def endpoints_using_secret(self, namespace: str, secret: str) -> list[str]:
        """Names of the endpoints in `namespace` that refer to Secret `secret`."""
        return sorted(
            name
            for ns, name in self._endpoints
            if ns == namespace
            and any(secret in e.secrets for e in self._get(self._endpoints, (ns, name)))
        )

    def children(self, key: EndpointKey) -> dict[ChildKey, CachedChild]:
        """The children filed under the endpoint's name (a namesake's leftovers
        included: their owner uid tells them apart)."""
        return {c.key: c for c in self._get(self._children, key)}

    def child(self, key: EndpointKey, uid: str) -> CachedChild | None:
        """One child by uid."""
        return next((c for c in self._get(self._children, key) if c.uid == uid), None)

    def pods(self, namespace: str, endpoint: str) -> list[CachedPod]:
        """The pods of the endpoint's Deployments."""
        return list(self._get(self._pods, (namespace, label_value(endpoint))))

    def pod(self, namespace: str, label: str, uid: str) -> CachedPod | None:
        """One pod by uid, filed under endpoint label `label`."""
        return next((p for p in self._get(self._pods, (namespace, label)) if p.uid == uid), None)

    def secret(self, namespace: str, name: str) -> frozenset[str] | None:
        """The key names of a Secret, or None when it does not exist."""
        found: list[frozenset[str]] = list(self._get(self._secrets, (namespace, name)))
        return found[0] if found else None

    @staticmethod
    def _get(index: Mapping[Any, Iterable[Any]], key: Any) -> Iterable[Any]:
        return index.get(key, ())
