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
  (another reconcile thread is excluded by the lock; `helm upgrade`, a person) makes
  the replace fail with 409, and the change is redone on a fresh read;
- nothing to change, nothing written; a recent read is reused for a few seconds, so
  that a burst of reconciles (the operator's start) reads the binding once, not once
  per endpoint.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from modelport.kube import KubeError

log = logging.getLogger(__name__)

MAX_CONFLICTS = 5
DEFAULT_MAX_AGE = 5.0

BindingState = Literal["ok", "unset", "missing", "forbidden"]


class BindingApi(Protocol):
    """The two calls of `modelport.kube.Kube` this needs (a stand-in in unit tests)."""

    def get_cluster_role_binding(self, name: str) -> dict[str, Any] | None:
        """The binding, or None."""
        ...

    def replace_cluster_role_binding(self, body: dict[str, Any]) -> dict[str, Any]:
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


class TokenReviewBinding:
    """Keeps the binding's subjects; one per operator process, shared by every thread."""

    def __init__(
        self,
        api: BindingApi,
        name: str,
        *,
        max_age: float = DEFAULT_MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self.name = name
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, Any] | None = None
        self._seen_at: float | None = None

    def sync(self, namespace: str, account: str, *, present: bool) -> BindingResult:
        """Make `namespace/account` a subject (`present`) or not one; say how it went.

        Raises KubeError for what a retry may cure (the apiserver unreachable, conflicts
        that did not stop); a missing binding or a refusal is returned, not raised.
        """
        if not self.name:
            return BindingResult("unset" if present else "ok", self.name)
        with self._lock:
            fresh = False
            for _ in range(MAX_CONFLICTS):
                try:
                    binding = self._read(force=fresh)
                except KubeError as exc:
                    if exc.status == 403:
                        return BindingResult("forbidden", self.name, str(exc))
                    raise
                if binding is None:
                    return BindingResult("missing" if present else "ok", self.name)
                subjects = changed_subjects(
                    binding.get("subjects") or [], namespace, account, present
                )
                if subjects is None:
                    return BindingResult("ok", self.name)
                body = copy.deepcopy(binding)
                body["subjects"] = subjects
                try:
                    self._remember(self._api.replace_cluster_role_binding(body))
                except KubeError as exc:
                    if exc.status == 409:  # changed since read: read again, redo
                        fresh = True
                        continue
                    if exc.status == 404:
                        self._remember(None)
                        return BindingResult("missing" if present else "ok", self.name)
                    if exc.status == 403:
                        return BindingResult("forbidden", self.name, str(exc))
                    raise
                log.info(
                    "%s ServiceAccount %s/%s %s ClusterRoleBinding %s",
                    "added" if present else "removed",
                    namespace,
                    account,
                    "to" if present else "from",
                    self.name,
                )
                return BindingResult("ok", self.name)
            raise KubeError(
                f"ClusterRoleBinding {self.name} kept changing under {MAX_CONFLICTS} tries",
                409,
            )

    def _read(self, *, force: bool) -> dict[str, Any] | None:
        now = self._clock()
        if force or self._seen_at is None or now - self._seen_at > self._max_age:
            self._remember(self._api.get_cluster_role_binding(self.name))
        return self._seen

    def _remember(self, binding: dict[str, Any] | None) -> None:
        self._seen = binding
        self._seen_at = self._clock()
