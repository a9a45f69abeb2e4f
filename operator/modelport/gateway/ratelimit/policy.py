"""Which of an endpoint's ``rateLimits`` apply to a caller: pure, no I/O.

A limit becomes one or two :class:`Budget` s (``calls`` and ``tokens`` are separate
counters). For a caller the budgets are chosen per dimension (calls, tokens):

1. every ``endpoint`` limit, one budget shared by all callers;
2. the limits of the caller's own kind (``user`` or ``service_principal``): those that
   name the caller (``principal``) if any, otherwise those that name no one (each caller
   of that kind gets a budget of its own);
3. only when step 2 found none for this dimension: for each group of the caller, the
   ``user_group`` limits that name that group, otherwise those that name no group (each
   group's budget is shared by its members).

Every chosen budget must admit the request (so with a calls and a tokens limit the
stricter wins). Two limits with the same key, principal and dimension count the same
requests, so they share one counter; the lower limit is the one that bites.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from modelport import gatewayconfig as gc
from modelport.gateway.context import Principal

Dimension = Literal["calls", "tokens"]
DIMENSIONS: tuple[Dimension, ...] = ("calls", "tokens")
WINDOW_SECONDS = 60
"""``renewalPeriod: minute``, the only period of the API: a sliding 60-second window."""
MAX_CACHED_PRINCIPALS = 10_000


@dataclass(frozen=True, slots=True)
class Budget:
    """One counter: what it counts, for whom, its limit and its key in the store."""

    dimension: Dimension
    kind: gc.RateLimitKey
    subject: str
    """The user, group or service principal the counter is for; "" for the endpoint."""
    limit: int
    key: str
    """The store's key of the counter (the endpoint's prefix, dimension, kind, subject)."""

    def describe(self) -> str:
        """For messages: ``100 calls per minute for user alice``."""
        who = "the endpoint" if self.kind == "endpoint" else f"{_KIND_WORDS[self.kind]} "
        if self.kind != "endpoint":
            who += self.subject
        return f"{self.limit} {self.dimension} per minute for {who}"


_KIND_WORDS = {"user": "user", "user_group": "group", "service_principal": "service principal"}


@dataclass(frozen=True, slots=True)
class Plan:
    """What a request of one caller must pass: its budgets, and what follows from them
    (computed once per caller, so the request path only reads)."""

    budgets: tuple[Budget, ...]
    tokens: tuple[Budget, ...]
    """The token budgets among them (reserved, extended and settled)."""
    kinds: tuple[gc.RateLimitKey, ...]
    """The distinct key kinds of the budgets (metrics)."""
    smallest_tokens: int
    """The lowest token limit (0 without token budgets): no reservation may exceed it."""

    @classmethod
    def of(cls, budgets: tuple[Budget, ...]) -> Plan:
        """The plan of ``budgets``."""
        tokens = tuple(b for b in budgets if b.dimension == "tokens")
        return cls(
            budgets,
            tokens,
            tuple(dict.fromkeys(b.kind for b in budgets)),
            min((b.limit for b in tokens), default=0),
        )


EMPTY = Plan((), (), (), 0)


class Policy:
    """The budgets of each caller of one endpoint, computed once per distinct caller."""

    def __init__(self, limits: Sequence[gc.RateLimit], prefix: str) -> None:
        self._limits = tuple(limits)
        self._prefix = prefix
        self._cache: dict[Principal | None, Plan] = {}
        self.has_tokens = any(r.tokens is not None for r in self._limits)
        """Whether any limit counts tokens (then requests reserve and settle tokens)."""

    def __bool__(self) -> bool:
        return bool(self._limits)

    def plan(self, principal: Principal | None) -> Plan:
        """The budgets that must all admit a request of ``principal`` (None: a caller the
        endpoint does not authenticate, whom only endpoint limits can apply to)."""
        cached = self._cache.get(principal)
        if cached is None:
            if len(self._cache) >= MAX_CACHED_PRINCIPALS:
                self._cache.clear()  # bounded; recomputing is cheap
            budgets = self._choose(principal)
            cached = self._cache[principal] = Plan.of(budgets) if budgets else EMPTY
        return cached

    def _choose(self, principal: Principal | None) -> tuple[Budget, ...]:
        chosen: dict[str, Budget] = {}
        for dimension in DIMENSIONS:
            limits = [r for r in self._limits if _amount(r, dimension) is not None]
            picked = [(r, "") for r in limits if r.key == "endpoint"]
            if principal is not None:
                own = _named_or_generic(
                    (r for r in limits if r.key == principal.kind), principal.name
                )
                picked += [(r, principal.name) for r in own]
                if not own:
                    for group in principal.groups:
                        mine = _named_or_generic(
                            (r for r in limits if r.key == "user_group"), group
                        )
                        picked += [(r, group) for r in mine]
            for limit, subject in picked:
                budget = self._budget(dimension, limit, subject)
                before = chosen.get(budget.key)
                if before is None or budget.limit < before.limit:
                    chosen[budget.key] = budget
        return tuple(chosen.values())

    def _budget(self, dimension: Dimension, limit: gc.RateLimit, subject: str) -> Budget:
        amount = _amount(limit, dimension)
        assert amount is not None
        key = f"{self._prefix}{dimension}:{limit.key}:{subject}"
        return Budget(dimension, limit.key, subject, amount, key)


def _amount(limit: gc.RateLimit, dimension: Dimension) -> int | None:
    return limit.calls if dimension == "calls" else limit.tokens


def _named_or_generic(limits: Iterable[gc.RateLimit], name: str) -> list[gc.RateLimit]:
    """The limits naming ``name``, or else those naming no one."""
    candidates = list(limits)
    named = [r for r in candidates if r.principal == name]
    return named or [r for r in candidates if r.principal is None]
