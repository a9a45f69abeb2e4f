"""Counting API requests per identity from the apiserver's audit log.

The policy (``cluster.AUDIT_POLICY``) logs, at Metadata level, only the operator's and
the direct-apply script's requests, skipping the RequestReceived stage: so every
request is one ``ResponseComplete`` line (a watch also has a ``ResponseStarted`` line
when it begins, which is not counted). The apiserver counts, not the client: Kopf's own
requests (its watches, its annotation patches) count as much as ``modelport.kube``'s.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@dataclass
class Tally:
    """Requests of one identity in a window, by verb and by verb+resource."""

    requests: int = 0
    writes: int = 0
    by_verb: Counter[str] = field(default_factory=Counter)
    by_resource: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    first: float | None = None
    last: float | None = None

    def add(self, event: dict[str, Any]) -> None:
        verb = event.get("verb", "?")
        ref = event.get("objectRef") or {}
        resource = ref.get("resource", "?") + (
            "/" + ref["subresource"] if ref.get("subresource") else ""
        )
        self.requests += 1
        self.writes += verb in WRITE_VERBS
        self.by_verb[verb] += 1
        self.by_resource[f"{verb} {resource}"] += 1
        code = int((event.get("responseStatus") or {}).get("code") or 0)
        if code >= 400:
            self.errors[f"{verb} {resource} {code}"] += 1
        when = _timestamp(event.get("stageTimestamp"))
        if when is not None:
            self.first = when if self.first is None else min(self.first, when)
            self.last = when if self.last is None else max(self.last, when)

    def summary(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "requests": self.requests,
            "writes": self.writes,
            "by_verb": dict(self.by_verb.most_common()),
            "by_resource": dict(self.by_resource.most_common()),
            "errors": dict(self.errors.most_common()),
        }


class AuditLog:
    """Reads the audit log incrementally: each :meth:`read` returns what is new."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def skip(self) -> None:
        """Forget everything logged so far."""
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def read(self, users: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """The complete requests of each of ``users`` logged since the last skip."""
        found: dict[str, list[dict[str, Any]]] = {user: [] for user in users}
        if not self.path.exists():
            return found
        if self.path.stat().st_size < self.offset:
            raise RuntimeError(f"{self.path} shrank (rotated?): its counts would be wrong")
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line being written is left out
        for line in data[:end].splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            user = (event.get("user") or {}).get("username")
            if event.get("stage") == "ResponseComplete" and user in found:
                found[user].append(event)
        return found


def tally(
    events: list[dict[str, Any]],
    start: float,
    end: float,
    *,
    exclude: frozenset[str] = frozenset(),
) -> Tally:
    """The requests that completed in [start, end) (epoch seconds), but those whose verb
    is in `exclude`."""
    out = Tally()
    for event in events:
        when = _timestamp(event.get("stageTimestamp"))
        if when is not None and start <= when < end and event.get("verb") not in exclude:
            out.add(event)
    return out


def _timestamp(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
