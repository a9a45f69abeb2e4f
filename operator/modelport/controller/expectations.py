"""What this operator wrote and the watches have not shown yet (the "expectations" of
kube-controller-manager's ReplicaSet controller).

A watch shows a write some time after it returns. A reconcile that ran in between
would read the cache from before the write and write again: apply a child it just
created, delete one it just deleted, write the status it just wrote (and repeat its
events). So each write's answer is remembered here, per endpoint, and a reconcile
reads the cache through it:

- a child applied: the answer stands in for the cached child until the cache shows
  our applied fields (same uid, same digest of our fields: the watch caught up, and
  what it shows is at least as new);
- a child deleted: hidden until the cache no longer has that uid;
- the status written: the answer stands in for the cached endpoint until the cache
  shows the same body, or a newer generation.

An expectation the watch never meets (someone changed the object again right after
our write, and Kopf's batching folded both events into the last) lapses after `ttl`
seconds; the reconcile that relied on it asks to run again then (`pending_until`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from modelport.controller.cache import CachedChild, CachedEndpoint, EndpointKey
from modelport.kube import ChildKey

TTL_SECONDS = 30.0


@dataclass
class _Written:
    applied: dict[ChildKey, tuple[CachedChild, float]] = field(default_factory=dict)
    deleted: dict[str, float] = field(default_factory=dict)
    """uid -> when."""
    status: tuple[CachedEndpoint, float] | None = None
    status_versions: set[str] = field(default_factory=set)
    """resourceVersions of our status writes since the watch last caught up."""


class Expectations:
    """Per endpoint, the writes not yet seen by the watches (see the module docstring)."""

    def __init__(
        self, *, ttl: float = TTL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._written: dict[EndpointKey, _Written] = {}
        self._relied: dict[EndpointKey, float] = {}

    def applied(self, key: EndpointKey, child: CachedChild) -> None:
        """`child` (from the apply's answer) was just applied."""
        self._for(key).applied[child.key] = (child, self._clock())

    def deleted(self, key: EndpointKey, uid: str) -> None:
        """The child with `uid` was just deleted."""
        self._for(key).deleted[uid] = self._clock()

    def status_written(self, key: EndpointKey, endpoint: CachedEndpoint) -> None:
        """The status was just written; `endpoint` is the apiserver's answer."""
        written = self._for(key)
        written.status = (endpoint, self._clock())
        written.status_versions.add(endpoint.version)

    def children(
        self, key: EndpointKey, cached: dict[ChildKey, CachedChild]
    ) -> dict[ChildKey, CachedChild]:
        """The children as they are after our writes: `cached`, with what the watches
        have not shown yet put in."""
        written = self._written.get(key)
        if written is None:
            return dict(cached)
        now = self._clock()
        out = dict(cached)
        for child_key, (child, at) in list(written.applied.items()):
            seen = cached.get(child_key)
            if seen is not None and (seen.uid, seen.owned) == (child.uid, child.owned):
                del written.applied[child_key]  # the watch caught up
            elif now - at < self._ttl:
                out[child_key] = child
                self._rely(key, at)
            else:
                del written.applied[child_key]
        for uid, at in list(written.deleted.items()):
            present = [k for k, c in out.items() if c.uid == uid]
            if not present:
                del written.deleted[uid]
            elif now - at < self._ttl:
                for child_key in present:
                    del out[child_key]
                self._rely(key, at)
            else:
                del written.deleted[uid]
        self._tidy(key, written)
        return out

    def endpoint(self, key: EndpointKey, cached: CachedEndpoint) -> CachedEndpoint:
        """The endpoint as it is after our status write: `cached`, or our write's
        answer while the watch has not shown it."""
        written = self._written.get(key)
        if written is None or written.status is None:
            return cached
        ours, at = written.status
        if (
            cached.body == ours.body
            or cached.uid != ours.uid
            or cached.generation > ours.generation
            or self._clock() - at >= self._ttl
        ):
            written.status = None
            written.status_versions.clear()
            self._tidy(key, written)
            return cached
        self._rely(key, at)
        return ours

    def observe_child(self, key: EndpointKey, child: CachedChild) -> None:
        """A watch showed `child`: drop what it satisfies."""
        written = self._written.get(key)
        if written is None:
            return
        expected = written.applied.get(child.key)
        if expected is not None and (expected[0].uid, expected[0].owned) == (
            child.uid,
            child.owned,
        ):
            del written.applied[child.key]
            self._tidy(key, written)

    def observe_deletion(self, key: EndpointKey, uid: str) -> None:
        """A watch showed the child with `uid` deleted: whatever we applied to it is
        past (a new object of that name is another uid)."""
        written = self._written.get(key)
        if written is None:
            return
        for child_key, (child, _) in list(written.applied.items()):
            if child.uid == uid:
                del written.applied[child_key]
        written.deleted.pop(uid, None)
        self._tidy(key, written)

    def observe_endpoint(self, key: EndpointKey, endpoint: CachedEndpoint) -> bool:
        """A watch showed `endpoint`: drop what it satisfies. Whether it is one of our
        own status writes (the last, or one before it that the watch shows late):
        nothing new to reconcile."""
        written = self._written.get(key)
        ours = (
            written is not None
            and bool(endpoint.version)
            and (endpoint.version in written.status_versions)
        )
        self.endpoint(key, endpoint)
        return ours

    def pending_until(self, key: EndpointKey) -> float | None:
        """When the earliest expectation a reconcile relied on since the last call
        lapses (clock time), or None: a reconcile should run again then, in case the
        watch never meets it."""
        at = self._relied.pop(key, None)
        return None if at is None else at + self._ttl

    def forget(self, key: EndpointKey) -> None:
        """The endpoint is gone."""
        self._written.pop(key, None)
        self._relied.pop(key, None)

    def __len__(self) -> int:
        """Endpoints with writes not yet seen."""
        return len(self._written)

    def _for(self, key: EndpointKey) -> _Written:
        return self._written.setdefault(key, _Written())

    def _rely(self, key: EndpointKey, at: float) -> None:
        self._relied[key] = min(at, self._relied.get(key, at))

    def _tidy(self, key: EndpointKey, written: _Written) -> None:
        if not written.applied and not written.deleted and written.status is None:
            self._written.pop(key, None)
