"""The TokenReview ClusterRoleBinding's subjects: added and removed, others left alone,
optimistic concurrency, no write when nothing changes, concurrent changes committed
together."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from modelport.kube import KubeError
from modelport.kube.binding import BindingResult, TokenReviewBinding, changed_subjects, subject

NAME = "modelport-gateways"
OTHER = {"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}
GW_A = subject("team-a", "chat-gateway")


class FakeApi:
    """One ClusterRoleBinding with resourceVersion checks, like the apiserver's."""

    def __init__(self, subjects: list[dict[str, Any]] | None = None, exists: bool = True) -> None:
        self.binding: dict[str, Any] | None = (
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": NAME, "resourceVersion": "1"},
                "roleRef": {"kind": "ClusterRole", "name": "tokenreview"},
                **({"subjects": subjects} if subjects is not None else {}),
            }
            if exists
            else None
        )
        self.gets = 0
        self.puts = 0
        self.conflicts = 0  # how many PUTs to refuse with 409 after a concurrent change
        self.refuse: int = 0

    async def get_cluster_role_binding(self, name: str) -> dict[str, Any] | None:
        assert name == NAME
        self.gets += 1
        if self.refuse:
            raise KubeError("GET: 403 forbidden", self.refuse)
        return copy.deepcopy(self.binding)

    async def replace_cluster_role_binding(self, body: dict[str, Any]) -> dict[str, Any]:
        self.puts += 1
        if self.binding is None:
            raise KubeError("PUT: 404 not found", 404)
        if self.conflicts:
            # Someone else wrote in between: their subject lands, our version is stale.
            self.conflicts -= 1
            self._store([*(self.binding.get("subjects") or []), OTHER])
        if body["metadata"]["resourceVersion"] != self.binding["metadata"]["resourceVersion"]:
            raise KubeError("PUT: 409 the object has been modified", 409)
        self._store(body["subjects"])
        return copy.deepcopy(self.binding)

    def _store(self, subjects: list[dict[str, Any]]) -> None:
        assert self.binding is not None
        self.binding["subjects"] = subjects
        version = int(self.binding["metadata"]["resourceVersion"]) + 1
        self.binding["metadata"]["resourceVersion"] = str(version)


T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def sync(
    binding: TokenReviewBinding, account: str, *, present: bool, namespace: str = "team-a"
) -> BindingResult:
    """One reconcile's call, on a loop of its own."""
    return run(binding.sync(namespace, account, present=present))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("subjects", "present", "expected"),
    [
        ([], True, [GW_A]),
        ([OTHER], True, [OTHER, GW_A]),
        ([OTHER, GW_A], True, None),
        ([GW_A, OTHER], False, [OTHER]),
        ([OTHER], False, None),
        # Same name, another namespace or kind: not ours.
        ([subject("team-b", "chat-gateway")], False, None),
        ([{"kind": "User", "name": "chat-gateway", "namespace": "team-a"}], False, None),
        ([{**GW_A, "apiGroup": ""}], True, None),
    ],
)
def test_changed_subjects(
    subjects: list[dict[str, Any]], present: bool, expected: list[dict[str, Any]] | None
) -> None:
    assert changed_subjects(subjects, "team-a", "chat-gateway", present) == expected


def test_adds_once_then_writes_nothing() -> None:
    api, clock = FakeApi(), Clock()
    binding = TokenReviewBinding(api, NAME, clock=clock)
    assert sync(binding, "chat-gateway", present=True).ok
    assert api.binding is not None and api.binding["subjects"] == [GW_A]
    assert api.puts == 1
    for _ in range(3):
        clock.now += 10  # past the reuse window: read again, write nothing
        assert sync(binding, "chat-gateway", present=True).ok
    assert api.puts == 1 and api.gets == 4


def test_a_burst_reads_once() -> None:
    api = FakeApi([GW_A])
    binding = TokenReviewBinding(api, NAME, clock=Clock())
    for _ in range(50):
        assert sync(binding, "chat-gateway", present=True).ok
        assert sync(binding, "other-gateway", present=False, namespace="team-b").ok
    assert (api.gets, api.puts) == (1, 0)


def test_removes_only_its_subject() -> None:
    api = FakeApi([OTHER, GW_A, subject("team-b", "x-gateway")])
    binding = TokenReviewBinding(api, NAME)
    assert sync(binding, "chat-gateway", present=False).ok
    assert api.binding is not None
    assert api.binding["subjects"] == [OTHER, subject("team-b", "x-gateway")]


def test_a_concurrent_change_is_kept_and_ours_redone() -> None:
    api = FakeApi([])
    api.conflicts = 2
    binding = TokenReviewBinding(api, NAME)
    assert sync(binding, "chat-gateway", present=True).ok
    assert api.binding is not None
    assert api.binding["subjects"] == [OTHER, OTHER, GW_A]
    assert api.puts == 3


def test_endless_conflicts_are_a_retryable_error() -> None:
    api = FakeApi([])
    api.conflicts = 100
    with pytest.raises(KubeError) as err:
        sync(TokenReviewBinding(api, NAME), "chat-gateway", present=True)
    assert err.value.status == 409


@pytest.mark.parametrize(
    ("api", "name", "present", "state"),
    [
        (FakeApi(), "", True, "unset"),
        (FakeApi(), "", False, "ok"),  # nothing to remove from a binding we do not have
        (FakeApi(exists=False), NAME, True, "missing"),
        (FakeApi(exists=False), NAME, False, "ok"),
    ],
)
def test_no_binding_is_reported_not_raised(
    api: FakeApi, name: str, present: bool, state: str
) -> None:
    result = sync(TokenReviewBinding(api, name), "chat-gateway", present=present)
    assert result.state == state
    if name == "":
        assert api.gets == 0


def test_forbidden_is_reported_with_the_fix() -> None:
    api = FakeApi()
    api.refuse = 403
    result = sync(TokenReviewBinding(api, NAME), "chat-gateway", present=True)
    assert result.state == "forbidden"
    message = result.problem("team-a", "chat-gateway")
    assert NAME in message and "403" in message and "bind" in message
    assert "serviceAccountTokens.enabled: false" in message


def test_other_errors_are_raised_for_a_retry() -> None:
    api = FakeApi()
    api.refuse = 503
    with pytest.raises(KubeError):
        sync(TokenReviewBinding(api, NAME), "chat-gateway", present=True)


@pytest.mark.parametrize(
    ("state", "needles"),
    [
        ("unset", ["MODELPORT_GATEWAY_TOKENREVIEW_BINDING", "gatewayAuth.serviceAccountTokens"]),
        ("missing", [f"ClusterRoleBinding {NAME} exists", "helm upgrade"]),
    ],
)
def test_problems_name_the_binding_and_the_fix(state: str, needles: list[str]) -> None:
    api = FakeApi(exists=state != "missing")
    name = "" if state == "unset" else NAME
    result = sync(TokenReviewBinding(api, name), "chat-gateway", present=True)
    message = result.problem("team-a", "chat-gateway")
    assert "team-a/chat-gateway cannot verify" in message
    assert all(n in message for n in needles), message


def test_concurrent_reconciles_do_not_lose_each_others_subjects() -> None:
    api = FakeApi([])
    binding = TokenReviewBinding(api, NAME, max_age=0)

    async def together() -> None:
        await asyncio.gather(
            *(binding.sync("team-a", f"ep{i}-gateway", present=True) for i in range(20))
        )

    run(together())
    assert api.binding is not None
    assert sorted(s["name"] for s in api.binding["subjects"]) == sorted(
        f"ep{i}-gateway" for i in range(20)
    )
    # Committed together: one read and one replace for all twenty.
    assert (api.gets, api.puts) == (1, 1)


class SlowApi(FakeApi):
    """A replace that takes a while, so that changes can arrive while it is in flight."""

    async def replace_cluster_role_binding(self, body: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.05)
        return await super().replace_cluster_role_binding(body)


def test_changes_while_a_replace_is_in_flight_form_the_next_group() -> None:
    api = SlowApi([])
    binding = TokenReviewBinding(api, NAME, max_age=60, window=0)

    async def waves() -> None:
        first = asyncio.ensure_future(binding.sync("team-a", "a-gateway", present=True))
        await asyncio.sleep(0.02)  # the first group's replace is in flight
        later = [binding.sync("team-a", f"b{i}-gateway", present=True) for i in range(5)]
        assert all(r.ok for r in await asyncio.gather(first, *later))

    run(waves())
    assert api.binding is not None and len(api.binding["subjects"]) == 6
    # One read (reused: recent), one replace per group.
    assert (api.gets, api.puts) == (1, 2)
