"""The work queue between watch events and reconciles (controller-runtime's shape).

- **De-duplicating**: a key is queued at most once; adding it again only moves its
  turn earlier, never later.
- **Debounced**: a key is due some time after it is added (`add(key, delay)`), so a
  burst of events on one endpoint's children makes one reconcile, not one each.
- **One at a time per key**: a key handed to a worker is not handed out again until
  the worker is `done` with it; added meanwhile, it is queued again after `done`.
- **Per-key exponential backoff**: a failed key comes back after `base * 2^(n-1)`
  seconds for its n-th failure in a row, at most `cap`; a success forgets the count.
  An event on the key meanwhile brings it back sooner (the world changed), but the
  count stays until a success.

Everything runs on one event loop: `add` and `done` are plain calls (for handlers),
`get` is awaited by the workers. The clock is injectable, for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

DEBOUNCE_SECONDS = 0.5
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 300.0


class WorkQueue(Generic[K]):
    """Keys waiting to be reconciled; see the module docstring."""

    def __init__(
        self,
        *,
        backoff_base: float = BACKOFF_BASE_SECONDS,
        backoff_cap: float = BACKOFF_CAP_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base = backoff_base
        self._cap = backoff_cap
        self._clock = clock
        self._due: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._order = itertools.count()
        self._active: set[K] = set()
        self._again: dict[K, float] = {}
        self._failures: dict[K, int] = {}
        self._wakeup = asyncio.Event()

    def __len__(self) -> int:
        """Keys queued (not those being worked on)."""
        return len(self._due)

    def add(self, key: K, delay: float = 0.0) -> None:
        """Queue `key`, due in `delay` seconds (or sooner, if it already is)."""
        due = self._clock() + max(delay, 0.0)
        if key in self._active:
            self._again[key] = min(due, self._again.get(key, due))
            return
        if key in self._due and self._due[key] <= due:
            return
        self._due[key] = due
        heapq.heappush(self._heap, (due, next(self._order), key))
        self._wakeup.set()

    def take(self) -> K | None:
        """The next due key, now handed out (the caller must call `done`); None when
        no key is due."""
        now = self._clock()
        while self._heap:
            due, _, key = self._heap[0]
            if self._due.get(key) != due:
                heapq.heappop(self._heap)  # superseded by an earlier turn, or taken
                continue
            if due > now:
                return None
            heapq.heappop(self._heap)
            del self._due[key]
            self._active.add(key)
            return key
        return None

    def next_due_in(self) -> float | None:
        """Seconds until the next key is due (0 if one is); None when none is queued."""
        if not self._due:
            return None
        return max(0.0, min(self._due.values()) - self._clock())

    def done(self, key: K, *, failed: bool = False) -> float | None:
        """`key`'s worker finished; with `failed`, it comes back after its backoff,
        which is returned."""
        self._active.discard(key)
        again = self._again.pop(key, None)
        retry = None
        if failed:
            count = self._failures.get(key, 0) + 1
            self._failures[key] = count
            retry = min(self._base * 2 ** (count - 1), self._cap)
        else:
            self._failures.pop(key, None)
        delays = [
            d for d in (retry, None if again is None else again - self._clock()) if d is not None
        ]
        if delays:
            self.add(key, min(delays))
        return retry

    def forget(self, key: K) -> None:
        """Drop what is kept about `key` (it no longer exists); a turn already queued
        stays (it will find the key gone)."""
        self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        """Failures of `key` in a row."""
        return self._failures.get(key, 0)

    async def get(self) -> K:
        """Wait for the next due key and hand it out."""
        while True:
            key = self.take()
            if key is not None:
                return key
            # No await between reading the schedule and clearing the event: an `add`
            # after this point sets it again, so no turn is missed.
            wait = self.next_due_in()
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), wait)
