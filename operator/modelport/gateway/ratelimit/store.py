"""Where budgets are counted: the contract, and the in-process store.

Every budget is a **sliding window log**: each admitted request adds an entry (its time
and its amount: 1 call, or the tokens it was charged) and an entry counts for exactly
:data:`~modelport.gateway.ratelimit.policy.WINDOW_SECONDS` after it was made. So "100
calls a minute" means at most 100 in *any* 60 seconds, at a minute's edge too (a fixed
window would admit 200 across one), and a refusal knows exactly when the budget will
admit the request (the wait is when enough of the oldest entries leave the window).
Memory follows the traffic, not the limit: one entry per admitted request of the last
minute per budget.

A decision is atomic over all the budgets of a request: either every budget takes the
request or none does. Token budgets are charged a reservation at admission and then
*settled* to what the request used (:meth:`Store.settle`), or *extended* while a stream
runs (:meth:`Store.extend`); a request whose entry already left the window is charged
the difference as a new entry, at the time it is known.

:class:`MemoryStore` keeps the logs in this process (exact for one process);
:class:`~modelport.gateway.ratelimit.redis_store.RedisStore` keeps them in Redis, one
Lua script per decision, so that every replica counts in the same logs.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from modelport.gateway.ratelimit.policy import WINDOW_SECONDS, Budget

WINDOW_MS = WINDOW_SECONDS * 1000


class StoreUnavailableError(Exception):
    """The store did not answer within its timeout, or refused the connection."""


@dataclass(frozen=True, slots=True)
class Decision:
    """A store's answer to one admission."""

    admitted: bool
    now_ms: int
    """The store's clock at the decision (milliseconds)."""
    wait_ms: int
    """Refused: milliseconds until every budget would admit the request; -1 when one
    never can (the request alone is more than its limit). 0 when admitted."""
    totals: tuple[int, ...]
    """Per budget: the amount counted in the window (with this request, if admitted)."""
    oldest_ms: tuple[int, ...]
    """Per budget: when its oldest counted entry was made; -1 when it has none."""


class Store(Protocol):
    """Counts budgets (see the module). ``now_ms`` None: the store's own clock."""

    @property
    def up(self) -> bool:
        """Whether the last exchange with the store worked (for /readyz and metrics)."""
        ...

    async def admit(
        self, rid: str, budgets: Sequence[Budget], amounts: Sequence[int], now_ms: int | None
    ) -> Decision:
        """Add ``amounts`` (one per budget) for request ``rid`` if every budget has room."""
        ...

    async def settle(
        self, rid: str, budgets: Sequence[Budget], charged: int, actual: int, now_ms: int | None
    ) -> None:
        """Change what ``rid`` is charged in each budget from ``charged`` to ``actual``."""
        ...

    async def extend(
        self, rid: str, budgets: Sequence[Budget], charged: int, wanted: int, now_ms: int | None
    ) -> int:
        """Charge ``rid`` up to ``wanted`` more, as much as every budget has room for;
        return how much (0: the budgets are spent)."""
        ...


@dataclass(slots=True)
class _Entry:
    at: int
    amount: int


@dataclass(slots=True)
class _Log:
    entries: deque[_Entry] = field(default_factory=deque)
    by_rid: dict[str, _Entry] = field(default_factory=dict)
    rids: deque[str] = field(default_factory=deque)
    total: int = 0

    def expire(self, cutoff: int) -> int:
        """Drop the entries made at or before ``cutoff``; the total left."""
        entries = self.entries
        while entries and entries[0].at <= cutoff:
            entry = entries.popleft()
            self.total -= entry.amount
            rid = self.rids.popleft()
            if rid and self.by_rid.get(rid) is entry:
                del self.by_rid[rid]
        return self.total

    def add(self, rid: str, at: int, amount: int) -> None:
        entry = _Entry(at, amount)
        self.entries.append(entry)
        self.rids.append(rid)
        if rid:
            self.by_rid[rid] = entry
        self.total += amount

    def wait(self, need: int, now: int) -> int:
        """Milliseconds until ``need`` of the counted amount has left the window."""
        freed = 0
        for entry in self.entries:
            freed += entry.amount
            if freed >= need:
                return max(0, entry.at + WINDOW_MS - now)
        return 0


class MemoryStore:
    """The logs in this process's memory: exact for one process, and never down.

    Single-threaded by design (the serving event loop): every method runs to completion
    without awaiting, which makes each decision atomic.
    """

    def __init__(self) -> None:
        self._logs: dict[str, _Log] = {}

    @property
    def up(self) -> bool:
        """Always: nothing to reach."""
        return True

    async def admit(
        self, rid: str, budgets: Sequence[Budget], amounts: Sequence[int], now_ms: int | None
    ) -> Decision:
        """See :meth:`Store.admit`."""
        now = _now(now_ms)
        logs = [self._log(b.key, now) for b in budgets]
        wait = 0
        admitted = True
        for log, budget, amount in zip(logs, budgets, amounts, strict=True):
            if log.total + amount > budget.limit:
                admitted = False
                if amount > budget.limit or wait < 0:
                    wait = -1
                else:
                    wait = max(wait, log.wait(log.total + amount - budget.limit, now))
        if admitted:
            for log, amount in zip(logs, amounts, strict=True):
                if amount:
                    log.add(rid, now, amount)
            wait = 0
        self._forget_empty(budgets)
        return Decision(
            admitted,
            now,
            wait,
            tuple(log.total for log in logs),
            tuple(log.entries[0].at if log.entries else -1 for log in logs),
        )

    async def settle(
        self, rid: str, budgets: Sequence[Budget], charged: int, actual: int, now_ms: int | None
    ) -> None:
        """See :meth:`Store.settle`."""
        now = _now(now_ms)
        for budget in budgets:
            self._recharge(self._log(budget.key, now), rid, charged, actual, now)
        self._forget_empty(budgets)

    async def extend(
        self, rid: str, budgets: Sequence[Budget], charged: int, wanted: int, now_ms: int | None
    ) -> int:
        """See :meth:`Store.extend`."""
        now = _now(now_ms)
        logs = [self._log(b.key, now) for b in budgets]
        room = min((b.limit - log.total for b, log in zip(budgets, logs, strict=True)), default=0)
        granted = max(0, min(wanted, room))
        if granted:
            for log in logs:
                self._recharge(log, rid, charged, charged + granted, now)
        return granted

    def _log(self, key: str, now: int) -> _Log:
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = _Log()
        else:
            log.expire(now - WINDOW_MS)
        return log

    @staticmethod
    def _recharge(log: _Log, rid: str, charged: int, new: int, now: int) -> None:
        entry = log.by_rid.get(rid)
        if entry is not None and entry.amount == charged:
            log.total += new - charged
            entry.amount = new
        elif new > charged:
            # The reservation has left the window: charge the rest now, as its own entry.
            log.add("", now, new - charged)

    def _forget_empty(self, budgets: Sequence[Budget]) -> None:
        # A budget nobody used for a minute holds no memory.
        for budget in budgets:
            log = self._logs.get(budget.key)
            if log is not None and not log.entries:
                del self._logs[budget.key]


def _now(now_ms: int | None) -> int:
    return time.time_ns() // 1_000_000 if now_ms is None else now_ms
