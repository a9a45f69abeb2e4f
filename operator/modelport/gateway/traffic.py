"""Which served entity answers a request, and the seam for the AI-gateway policies.

:class:`TrafficSplit` draws one entity by the route weights. :meth:`Router.plan` returns
the entities to try in order: the drawn one first, then (only with fallback enabled) the
others by weight, so the dispatcher needs no change when fallback grows richer.
:class:`Policy` is where rate limits and guardrails will hook in: it sees every call
before it is sent.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable
from typing import Protocol

from modelport.gateway.errors import invalid
from modelport.gateway.providers.base import Call
from modelport.gatewayconfig import EntityConfig, GatewayConfig


class TrafficSplit:
    """A weighted draw over entity names; entities at 0% are never drawn."""

    def __init__(self, weights: list[tuple[str, int]], rng: Callable[[], float] = random.random):
        live = [(name, w) for name, w in weights if w > 0]
        self._names = [name for name, _ in live]
        self._bounds: list[float] = []
        total = float(sum(w for _, w in live))
        running = 0.0
        for _, w in live:
            running += w
            self._bounds.append(running / total)
        self._rng = rng

    def choose(self) -> str:
        """One entity name, drawn by weight."""
        i = bisect.bisect_right(self._bounds, self._rng())
        return self._names[min(i, len(self._names) - 1)]


class Router:
    """Resolves a request's ``model`` to the entities to try, in order."""

    def __init__(self, config: GatewayConfig, rng: Callable[[], float] = random.random):
        self._config = config
        self._entities = {e.name: e for e in config.entities}
        weights = config.weights()
        self._split = TrafficSplit(weights, rng)
        # Fallback order: heaviest first; entities at 0% are standbys that only fallback reaches.
        self._by_weight = [name for name, _ in sorted(weights, key=lambda p: -p[1])]

    def plan(self, model: str | None) -> list[EntityConfig]:
        """The entities to try: the endpoint name (or no model) means the traffic split."""
        ep = self._config.endpoint_name
        if model is None or model == ep:
            first = self._split.choose()
            order = [first]
            if self._config.ai_gateway.fallback_enabled:
                order += [n for n in self._by_weight if n != first]
            return [self._entities[n] for n in order]
        if model in self._entities:
            return [self._entities[model]]  # addressing an entity by name bypasses the split
        raise invalid(
            "model",
            f"model {model!r} is not served here; use {ep!r} (the endpoint, split by traffic "
            f"weights) or one of its served entities {sorted(self._entities)}",
        )


class Policy(Protocol):
    """A check every call passes before it is sent; raise GatewayError (429, ...) to refuse."""

    async def admit(self, call: Call) -> None:
        """Admit or refuse ``call``."""
        ...


class AdmitAll:
    """The policy until rate limits arrive."""

    async def admit(self, call: Call) -> None:
        """Admit every call."""
        return
