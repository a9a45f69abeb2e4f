"""An in-memory world for the controller's unit tests: a stand-in for the API's writes
and for the watch cache, which here sees every write at once."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import yaml

from modelport.controller.cache import Cache, cached_child, cached_endpoint, owner_of
from modelport.controller.reconcile import Outcome, Reconciler
from modelport.kube import KubeError, NamespaceGoneError
from modelport.kube.binding import TokenReviewBinding
from modelport.kube.compare import FIELD_MANAGER, with_applied_hash
from modelport.render.names import label_value
from modelport.settings import from_env
from tests.unit.operator.helpers import SAMPLES

NS = "team-a"
BINDING = "modelport-gateways"


def applied_fields(value: Any) -> dict[str, Any]:
    """The `fieldsV1` an apply of `value` gives its manager (lists owned whole)."""
    if isinstance(value, dict):
        return {f"f:{k}": applied_fields(v) for k, v in value.items()}
    return {}


class Computed(Mapping[Any, list[Any]]):
    """An index computed from the world on every read: a watch that misses nothing."""

    def __init__(self, compute: Callable[[], dict[Any, list[Any]]]) -> None:
        self._compute = compute

    def __getitem__(self, key: Any) -> list[Any]:
        return self._compute()[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._compute())

    def __len__(self) -> int:
        return len(self._compute())


class FakeKube:
    """Keeps objects in dicts; counts writes like the apiserver would see them."""

    def __init__(self, endpoint: dict[str, Any], secrets: dict[str, dict[str, str]]) -> None:
        self.endpoint = endpoint
        self.gone = False  # deleted and gone from the watch cache
        self.secrets = secrets
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[str, str, str]] = []
        self.writes = 0
        self.namespace_gone = False
        self.refuse = ""
        self.refuse_binding = False
        self.unavailable = False  # every write fails as if the apiserver were down
        self.attempts: list[float] = []  # when a reconcile tried, while unavailable
        # The TokenReview ClusterRoleBinding the chart creates (None: not installed).
        self.binding: dict[str, Any] | None = {
            "metadata": {"name": BINDING, "resourceVersion": "1"},
            "roleRef": {"kind": "ClusterRole", "name": "tokenreview"},
        }

    def cache(self) -> Cache:
        """The watch cache over this world."""

        def endpoints() -> dict[Any, list[Any]]:
            if self.gone:
                return {}
            meta = self.endpoint["metadata"]
            return {(meta["namespace"], meta["name"]): [cached_endpoint(self.endpoint)]}

        def labels() -> dict[Any, list[Any]]:
            return {(ns, label_value(name)): [name] for ns, name in endpoints()}

        def children() -> dict[Any, list[Any]]:
            found: dict[Any, list[Any]] = {}
            for (kind, _), obj in self.objects.items():
                owner = owner_of(obj)
                record = cached_child(kind, obj)
                if owner is not None and record is not None:
                    found.setdefault((NS, owner[0]), []).append(record)
            return found

        def secrets() -> dict[Any, list[Any]]:
            return {(NS, name): [frozenset(data)] for name, data in self.secrets.items()}

        return Cache(
            endpoints=Computed(endpoints),
            labels=Computed(labels),
            children=Computed(children),
            pods=Computed(dict),
            secrets=Computed(secrets),
        )

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        if self.unavailable:
            if manifest["kind"] == "ConfigMap":  # one a reconcile
                self.attempts.append(asyncio.get_running_loop().time())
            raise KubeError(f"PATCH {manifest['kind']}: 503 the server is unavailable", 503)
        if self.namespace_gone:
            raise NamespaceGoneError("namespace is being terminated", 403)
        if self.refuse:
            raise KubeError(f"PATCH {manifest['kind']}: 422 {self.refuse}", 422)
        self.writes += 1
        obj = with_applied_hash(manifest)
        key = (obj["kind"], obj["metadata"]["name"])
        old = self.objects.get(key)
        obj["metadata"]["uid"] = old["metadata"]["uid"] if old else f"uid-{key[1]}-{key[0]}"
        obj["metadata"]["managedFields"] = [
            {
                "manager": FIELD_MANAGER,
                "operation": "Apply",
                "fieldsType": "FieldsV1",
                "fieldsV1": applied_fields(
                    {k: v for k, v in with_applied_hash(manifest).items() if k != "metadata"}
                    | {
                        "metadata": {
                            k: v
                            for k, v in obj["metadata"].items()
                            if k in ("labels", "annotations", "ownerReferences")
                        }
                    }
                ),
            }
        ]
        if obj["kind"] == "Deployment":
            obj["metadata"]["generation"] = 1
            obj["status"] = {
                "observedGeneration": 1,
                "replicas": 1,
                "updatedReplicas": 1,
                "availableReplicas": 1,
            }
        self.objects[key] = obj
        return copy.deepcopy(obj)

    async def delete(self, kind: str, namespace: str, name: str, uid: str) -> None:
        self.writes += 1
        del self.objects[(kind, name)]

    async def get_cluster_role_binding(self, name: str) -> dict[str, Any] | None:
        assert name == BINDING
        return copy.deepcopy(self.binding)

    async def replace_cluster_role_binding(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.refuse_binding:
            raise KubeError("PUT clusterrolebindings: 403 forbidden", 403)
        assert self.binding is not None
        assert body["metadata"]["resourceVersion"] == self.binding["metadata"]["resourceVersion"]
        self.writes += 1
        self.binding = copy.deepcopy(body)
        self.binding["metadata"]["resourceVersion"] += "1"
        return copy.deepcopy(self.binding)

    def subjects(self) -> list[str]:
        found = (self.binding or {}).get("subjects", [])
        return [f"{s['namespace']}/{s['name']}" for s in found if s["kind"] == "ServiceAccount"]

    async def apply_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        self.writes += 1
        self.endpoint["status"] = status
        return copy.deepcopy(self.endpoint)

    async def event(
        self,
        namespace: str,
        endpoint: str,
        uid: str,
        type_: Literal["Normal", "Warning"],
        reason: str,
        message: str,
    ) -> bool:
        self.writes += 1
        self.events.append((type_, reason, message))
        return True


def sample_body(name: str) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((SAMPLES / f"{name}.yaml").read_text())
    body["metadata"].update(namespace=NS, uid="ep-uid", generation=1)
    return body


# The samples have rate limits: a cluster that enforces them shares a store.
STORE = '{"store": {"address": "redis://modelport-ratelimit.modelport-system:6379/0"}}'


def make_reconciler(
    kube: FakeKube, binding: str = BINDING, rate_limiting: str = STORE
) -> Reconciler:
    settings = from_env(
        {
            "MODELPORT_GATEWAY_TOKENREVIEW_BINDING": binding,
            "MODELPORT_RATE_LIMITING": rate_limiting,
        }
    )
    # window=0: in these tests one reconcile runs at a time, alone in its group
    return Reconciler(kube.cache(), kube, TokenReviewBinding(kube, binding, window=0), settings)


def reconcile(reconciler: Reconciler, namespace: str, name: str) -> Outcome | None:
    """One reconcile, on a loop of its own; what it did (None: the endpoint is gone)."""

    async def once() -> Outcome | None:
        outcome = (await reconciler.reconcile(namespace, name)).outcome
        await reconciler.binding.drain()  # the binding's group is committed meanwhile
        return outcome

    return asyncio.run(once())
