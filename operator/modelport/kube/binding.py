"""The ClusterRoleBinding that lets gateways create TokenReviews.

A gateway that verifies callers' ServiceAccount tokens asks the apiserver (a
TokenReview), and TokenReview is cluster-scoped: a namespaced RoleBinding cannot grant
it. The chart therefore creates one ClusterRole (create tokenreviews, nothing else) and
one ClusterRoleBinding to it with no subjects; the operator keeps the binding's
subjects equal to the gateway ServiceAccounts that need it. It may `bind` that one
ClusterRole and `get`/`update` that one binding, and nothing else cluster-wide, so it
cannot grant any other right, nor this one to itself.

Rules of the subjects list:

- a reconcile adds its endpoint's gateway ServiceAccount when the gateway verifies
  ServiceAccount tokens, and removes it when the endpoint is gone or stopped verifying
  them; any other subject (someone else's) is left alone;
- read, change, replace with the resourceVersion that was read: a concurrent writer
  (`helm upgrade`, a person) makes the replace fail with 409, and the change is redone
  on a fresh read;
- nothing to change, nothing written; a recent read is reused for a few seconds, so
  that a burst of reconciles (the operator's start) reads the binding once, not once
  per endpoint;
- changes are committed in groups: the changes wanted within a short window (and
  while the previous replace is in flight) share one read and one replace, so that
  creating a thousand endpoints writes the binding tens of times, not a thousand
  times (each write carries every subject, and each makes the apiserver rebuild its
  RBAC view). A reconcile does not wait for its group (`want` answers "pending");
  `on_committed` reports each group's outcome, and the operator reconciles again
  the endpoints it concerns. `sync` waits, for callers that need the outcome.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from modelport.kube import KubeError

log = logging.getLogger(__name__)

MAX_CONFLICTS = 5
DEFAULT_MAX_AGE = 5.0
DEFAULT_WINDOW = 1.0
"""How long a group of changes waits for more to join it, seconds."""
RETRY_CAP = 30.0
"""Longest wait before a group that failed (apiserver unreachable) is tried again."""

BindingState = Literal["ok", "pending", "unset", "missing", "forbidden"]


class BindingApi(Protocol):
    """The two calls of `modelport.kube.Kube` this needs (a stand-in in unit tests)."""

    async def get_cluster_role_binding(self, name: str) -> dict[str, Any] | None:
        """The binding, or None."""
        ...

    async def replace_cluster_role_binding(self, body: dict[str, Any]) -> dict[str, Any]:
        """PUT the binding; raises KubeError (409 on a stale resourceVersion)."""
        ...


@dataclass(frozen=True)
class BindingResult:
    """Whether the subject is as wanted, and if not why (for the endpoint's status)."""

    state: BindingState
    binding: str
    detail: str = ""
    """The apiserver's words when it refused (state forbidden)."""

    @property
    def ok(self) -> bool:
        """The gateway's ServiceAccount holds the TokenReview right (or needs none)."""
        return self.state == "ok"

    @property
    def pending(self) -> bool:
        """The change is queued for the next group (the binding was fine when last read)."""
        return self.state == "pending"

    def problem(self, namespace: str, account: str) -> str:
        """Why `namespace/account` cannot verify ServiceAccount tokens, and the fix."""
        what = (
            f"gateway ServiceAccount {namespace}/{account} cannot verify callers' "
            "ServiceAccount tokens (TokenReview) until "
        )
        opt_out = (
            "; or stop accepting them: spec.aiGateway.auth.serviceAccountTokens.enabled: false"
        )
        if self.state == "unset":
            return (
                what + "the operator is given a ClusterRoleBinding to maintain: install it "
                "with the Helm chart (gatewayAuth.serviceAccountTokens.enabled: true) or set "
                "MODELPORT_GATEWAY_TOKENREVIEW_BINDING" + opt_out
            )
        if self.state == "missing":
            return (
                what + f"ClusterRoleBinding {self.binding} exists: helm upgrade the release "
                "with gatewayAuth.serviceAccountTokens.enabled: true, which creates it" + opt_out
            )
        return (
            what + f"the operator may update ClusterRoleBinding {self.binding} ({self.detail}): "
            "grant it get/update on that binding and bind on its ClusterRole, as the chart "
            "does" + opt_out
        )


def subject(namespace: str, account: str) -> dict[str, str]:
    """The binding's subject for ServiceAccount `namespace/account`."""
    return {"kind": "ServiceAccount", "name": account, "namespace": namespace}


def changed_subjects(
    subjects: list[dict[str, Any]], namespace: str, account: str, present: bool
) -> list[dict[str, Any]] | None:
    """`subjects` with `namespace/account` added (`present`) or removed, or None when
    they already are so. Pure; every other subject is kept as it is, in its place."""
    mine = subject(namespace, account)

    def is_mine(s: dict[str, Any]) -> bool:
        return s.get("kind") == "ServiceAccount" and all(s.get(k) == v for k, v in mine.items())

    found = any(is_mine(s) for s in subjects)
    if found == present:
        return None
    if present:
        return [*subjects, mine]
    return [s for s in subjects if not is_mine(s)]


Subject = tuple[str, str]
"""(namespace, ServiceAccount name)."""
Committed = Callable[[dict[Subject, "BindingResult"]], None]


class TokenReviewBinding:
    """Keeps the binding's subjects; one per operator process, shared by every reconcile
    (all on one event loop)."""

    def __init__(
        self,
        api: BindingApi,
        name: str,
        *,
        max_age: float = DEFAULT_MAX_AGE,
        window: float = DEFAULT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
        on_committed: Committed | None = None,
    ) -> None:
        self._api = api
        self.name = name
        self._max_age = max_age
        self._window = window
        self._clock = clock
        self._seen: dict[str, Any] | None = None
        self._seen_at: float | None = None
        self._failed: BindingResult | None = None
        # The next group: the wanted state of each subject, and who awaits the outcome.
        self._group: dict[Subject, bool] = {}
        self._outcome: asyncio.Future[dict[Subject, BindingResult]] | None = None
        self._committer: asyncio.Task[None] | None = None
        self.on_committed = on_committed

    def want(self, namespace: str, account: str, *, present: bool) -> BindingResult:
        """Want `namespace/account` a subject (`present`) or not one; the answer now:
        as wanted ("ok"), a problem a recent read showed, or "pending" (the next group
        commits it; `on_committed` says how it went). Never waits."""
        if not self.name:
            return BindingResult("unset" if present else "ok", self.name)
        subject = (namespace, account)
        known = self._known(namespace, account, present)
        if known is not None and subject not in self._group:
            return known
        self._group[subject] = present  # also overrides an opposite wish not committed yet
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_groups())
        return BindingResult("pending", self.name)

    async def sync(self, namespace: str, account: str, *, present: bool) -> BindingResult:
        """Make `namespace/account` a subject (`present`) or not one; say how it went,
        once its group is committed.

        Raises KubeError for what a retry may cure (the apiserver unreachable, conflicts
        that did not stop); a missing binding or a refusal is returned, not raised.
        """
        result = self.want(namespace, account, present=present)
        if not result.pending:
            return result
        if self._outcome is None:
            self._outcome = asyncio.get_running_loop().create_future()
        results = await asyncio.shield(self._outcome)
        return results[(namespace, account)]

    async def drain(self) -> None:
        """Until every wanted change is committed (or its group failed): at the
        operator's stop, and in tests."""
        while self._committer is not None and not self._committer.done():
            await asyncio.shield(self._committer)

    def _known(self, namespace: str, account: str, present: bool) -> BindingResult | None:
        """The answer without a request, from a recent read: already as wanted (or a
        recent refusal that a new request would only repeat); None to ask."""
        if self._seen_at is None or self._clock() - self._seen_at > self._max_age:
            return None
        if self._failed is not None:
            return self._failed
        if self._seen is None:
            return BindingResult("missing" if present else "ok", self.name)
        subjects = self._seen.get("subjects") or []
        if changed_subjects(subjects, namespace, account, present) is None:
            return BindingResult("ok", self.name)
        return None

    async def _commit_groups(self) -> None:
        """Commit groups one after another until no change waits; a group that fails is
        tried again, after a backoff, with what was wanted meanwhile."""
        wait = self._window
        while self._group:
            await asyncio.sleep(wait)  # let the group fill
            group, outcome = self._group, self._outcome
            self._group, self._outcome = {}, None
            try:
                results = await self._commit(group)
            except Exception as exc:
                if outcome is not None:  # its waiters get the error
                    outcome.set_exception(exc)
                for subject, present in group.items():
                    self._group.setdefault(subject, present)  # newer wishes win
                wait = min(max(wait, self._window, 0.5) * 2, RETRY_CAP)
                log.warning(
                    "ClusterRoleBinding %s: could not commit %d change(s), retrying in %.1f s: %s",
                    self.name,
                    len(group),
                    wait,
                    exc,
                )
                continue
            wait = self._window
            if outcome is not None:
                outcome.set_result(results)
            if self.on_committed is not None:
                self.on_committed(results)

    async def _commit(self, group: dict[Subject, bool]) -> dict[Subject, BindingResult]:
        """One read (unless recent) and at most one replace for the whole group."""

        def every(result: BindingResult, absent: BindingResult) -> dict[Subject, BindingResult]:
            return {s: (result if present else absent) for s, present in group.items()}

        ok = BindingResult("ok", self.name)
        fresh = False
        for _ in range(MAX_CONFLICTS):
            try:
                binding = await self._read(force=fresh)
            except KubeError as exc:
                if exc.status == 403:
                    refused = self._refused(str(exc))
                    return every(refused, refused)
                raise
            if binding is None:
                return every(BindingResult("missing", self.name), ok)
            subjects: list[dict[str, Any]] = binding.get("subjects") or []
            changed = False
            for (namespace, account), present in group.items():
                updated = changed_subjects(subjects, namespace, account, present)
                if updated is not None:
                    subjects, changed = updated, True
            if not changed:
                return every(ok, ok)
            body = copy.deepcopy(binding)
            body["subjects"] = subjects
            try:
                self._remember(await self._api.replace_cluster_role_binding(body))
            except KubeError as exc:
                if exc.status == 409:  # changed since read: read again, redo
                    fresh = True
                    continue
                if exc.status == 404:
                    self._remember(None)
                    return every(BindingResult("missing", self.name), ok)
                if exc.status == 403:
                    refused = self._refused(str(exc))
                    return every(refused, refused)
                raise
            for (namespace, account), present in group.items():
                log.info(
                    "%s ServiceAccount %s/%s %s ClusterRoleBinding %s",
                    "added" if present else "removed",
                    namespace,
                    account,
                    "to" if present else "from",
                    self.name,
                )
            return every(ok, ok)
        raise KubeError(
            f"ClusterRoleBinding {self.name} kept changing under {MAX_CONFLICTS} tries",
            409,
        )

    def _refused(self, detail: str) -> BindingResult:
        """Remember a refusal for as long as a read is reused: asking again sooner would
        only be refused again."""
        self._failed = BindingResult("forbidden", self.name, detail)
        self._seen_at = self._clock()
        return self._failed

    async def _read(self, *, force: bool) -> dict[str, Any] | None:
        now = self._clock()
        if (
            force
            or self._failed is not None
            or self._seen_at is None
            or now - self._seen_at > self._max_age
        ):
            self._remember(await self._api.get_cluster_role_binding(self.name))
        return self._seen

    def _remember(self, binding: dict[str, Any] | None) -> None:
        self._seen = binding
        self._seen_at = self._clock()
        self._failed = None
