"""The operator's runtime: watch events in, keys through the work queue, reconciles out.

Kopf's handlers (`modelport.controller.handlers`) only tell the manager what
changed; the manager decides whether the change matters and queues the endpoint's
key. A bounded number of workers (MODELPORT_RECONCILE_WORKERS) take keys from the
queue and reconcile them, one reconcile per key at a time; a failed reconcile comes
back with per-key exponential backoff (`modelport.controller.queue`).

Whether an event matters: each reconcile leaves a `Seen` — the records it went by,
as they will be once the watches show its own writes. An event whose record equals
the one in `Seen` brings nothing new and queues nothing: the ADDED events of the
children a reconcile just created, the MODIFIED event of the status it just wrote,
an HPA's or a Service's status write (no field a reconcile reads), a Deployment's
status write that changes nothing of its rollout state, the pods of a Deployment
that serves. What remains: a spec change, a hand edit or deletion of a child, a
rollout making progress, a Secret key appearing.

Before the first handler runs, Kopf has listed and indexed every watched kind, so
the cache is complete when the first key is taken. The resync loop (every
MODELPORT_RESYNC_SECONDS) queues every endpoint, to catch what no watch sees (the
TokenReview binding edited by hand).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from modelport import operatormetrics as metrics
from modelport.controller.cache import Cache, EndpointKey, owner_of
from modelport.controller.queue import DEBOUNCE_SECONDS, WorkQueue
from modelport.controller.reconcile import Reconciler, Seen
from modelport.kube import KubeError
from modelport.render.names import ENDPOINT_LABEL

log = logging.getLogger("modelport.controller")

DELETED = "DELETED"
BINDING_DRAIN_SECONDS = 5.0
"""At stop, how long to wait for the binding's last group of changes."""
STATS_SECONDS = 10.0
"""How often the manager logs what it did (only when it did something)."""
_MISSING = object()


class Manager:
    """Queues reconciles for the events that matter and runs them; see the module."""

    def __init__(
        self,
        reconciler: Reconciler,
        cache: Cache,
        *,
        workers: int,
        resync_seconds: float,
        queue: WorkQueue[EndpointKey] | None = None,
        debounce: float = DEBOUNCE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reconciler = reconciler
        self.cache = cache
        self.queue: WorkQueue[EndpointKey] = queue if queue is not None else WorkQueue(clock=clock)
        self.seen: dict[EndpointKey, Seen] = {}
        self.stats: Counter[str] = Counter()
        self._workers = workers
        self._resync_seconds = resync_seconds
        self._debounce = debounce
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = False
        reconciler.requeue = lambda key: self._queue(key, 0.0, "binding")
        metrics.QUEUE_DEPTH.set_function(lambda: len(self.queue))

    # --- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Start the workers (on the running event loop)."""
        for i in range(self._workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"modelport-worker-{i}"))
        self._tasks.append(asyncio.create_task(self._log_stats(), name="modelport-stats"))

    async def stop(self) -> None:
        """Stop the workers and the resync loop (a reconcile in flight is cancelled; the
        next operator's start redoes it), and commit the binding changes wanted so far."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.reconciler.binding.drain(), BINDING_DRAIN_SECONDS)

    def _handlers_running(self) -> None:
        """Kopf calls handlers only once every index is populated: the cache is
        complete from here on, and the resync loop may start."""
        if self._ready:
            return
        self._ready = True
        if self._resync_seconds > 0:
            self._tasks.append(asyncio.create_task(self._resync(), name="modelport-resync"))

    # --- events ----------------------------------------------------------------

    def endpoint_event(self, event_type: str | None, namespace: str, name: str) -> None:
        """A ServingEndpoint was listed, added, changed or deleted."""
        self._handlers_running()
        self.stats["events endpoint"] += 1
        key = (namespace, name)
        record = self.cache.endpoint(key)
        if (
            event_type != DELETED
            and record is not None
            and self.reconciler.expectations.observe_endpoint(key, record)
        ):
            return  # our own status write, shown by the watch (maybe late)
        seen = self.seen.get(key)
        if event_type == DELETED or record is None or seen is None or seen.endpoint != record:
            self._queue(key, 0.0, "endpoint")  # a user's change: no debounce

    def child_event(self, event_type: str | None, kind: str, body: Mapping[str, Any]) -> None:
        """A child (by the managed-by label) was listed, added, changed or deleted."""
        self._handlers_running()
        self.stats[f"events {kind}"] += 1
        owner = owner_of(body)
        meta = body.get("metadata") or {}
        if owner is None or not meta.get("namespace"):
            return
        key = (str(meta["namespace"]), owner[0])
        uid = str(meta.get("uid") or "")
        seen = self.seen.get(key)
        if event_type == DELETED:
            self.reconciler.expectations.observe_deletion(key, uid)
            if seen is None or any(c.uid == uid for c in seen.children.values()):
                self._queue(key, self._debounce, kind)
            return
        record = self.cache.child(key, uid)
        if record is None:  # its index function failed (Kopf logged why)
            self._queue(key, self._debounce, kind)
            return
        self.reconciler.expectations.observe_child(key, record)
        if seen is None or seen.children.get(record.key) != record:
            self._queue(key, self._debounce, kind)

    def pod_event(self, event_type: str | None, namespace: str, body: Mapping[str, Any]) -> None:
        """A pod of an endpoint's Deployment was listed, added, changed or deleted."""
        self._handlers_running()
        self.stats["events Pod"] += 1
        meta = body.get("metadata") or {}
        label = str((meta.get("labels") or {}).get(ENDPOINT_LABEL) or "")
        uid = str(meta.get("uid") or "")
        for name in self.cache.endpoints_labelled(namespace, label):
            key = (namespace, name)
            seen = self.seen.get(key)
            if seen is None:
                self._queue(key, self._debounce, "Pod")
                continue
            if event_type == DELETED:
                if uid in seen.pods:
                    self._queue(key, self._debounce, "Pod")
                continue
            record = self.cache.pod(namespace, label, uid)
            if record is None:
                continue
            # Only the pods of a Deployment that did not serve were read: the others'
            # changes show in their Deployment's status, if they matter.
            if seen.pods.get(uid) != record and any(record.matches(s) for s in seen.pod_selectors):
                self._queue(key, self._debounce, "Pod")

    def secret_event(self, namespace: str, name: str) -> None:
        """A Secret was listed, added, changed or deleted (only its key names count)."""
        self._handlers_running()
        self.stats["events Secret"] += 1
        keys = self.cache.secret(namespace, name)
        for endpoint in self.cache.endpoints_using_secret(namespace, name):
            key = (namespace, endpoint)
            seen = self.seen.get(key)
            if seen is None or seen.secrets.get(name, _MISSING) != keys:
                self._queue(key, self._debounce, "Secret")

    def _queue(self, key: EndpointKey, delay: float, why: str) -> None:
        self.stats[f"queued by {why}"] += 1
        log.debug("queue %s/%s in %.2f s: %s", *key, delay, why)
        self.queue.add(key, delay)

    # --- work ------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            key = await self.queue.get()
            started = time.monotonic()
            try:
                result = await self.reconciler.reconcile(*key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.RECONCILES.labels("error").inc()
                metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
                retry = self.queue.done(key, failed=True)
                self.stats["reconciles failed"] += 1
                failures = self.queue.failures(key)
                if isinstance(exc, KubeError):
                    log.warning(
                        "reconcile of %s/%s failed (%d in a row), retrying in %.1f s: %s",
                        *key, failures, retry or 0, exc,
                    )  # fmt: skip
                else:
                    log.exception(
                        "reconcile of %s/%s failed (%d in a row), retrying in %.1f s",
                        *key, failures, retry or 0,
                    )  # fmt: skip
                continue
            self.stats["reconciles"] += 1
            metrics.RECONCILES.labels("ok").inc()
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
            if result.seen is None:
                metrics.endpoint_gone(*key)
                self.seen.pop(key, None)
                self.queue.forget(key)
            else:
                self.seen[key] = result.seen
            self.queue.done(key)
            if result.again_at is not None:
                self.queue.add(key, result.again_at - self._clock())

    async def _resync(self) -> None:
        """The safety net: now and then, reconcile every endpoint (writing only drift).

        A loop of our own rather than a Kopf timer: Kopf puts a finalizer on every
        object that has a timer, and a finalizer left behind by a stopped operator
        blocks the deletion of the endpoint and of its namespace."""
        while True:
            await asyncio.sleep(self._resync_seconds)
            for key in self.cache.endpoints():
                self._queue(key, 0.0, "resync")

    async def _log_stats(self) -> None:
        """What the manager did in the last period, when it did anything."""
        last: Counter[str] = Counter()
        while True:
            await asyncio.sleep(STATS_SECONDS)
            delta = self.stats - last
            if delta:
                last = self.stats.copy()
                log.info(
                    "activity: %s; queued now %d, tracked %d, expecting %d",
                    ", ".join(f"{k} {v}" for k, v in sorted(delta.items())),
                    len(self.queue),
                    len(self.seen),
                    len(self.reconciler.expectations),
                )
