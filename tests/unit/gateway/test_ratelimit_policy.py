"""Which limits apply to whom: the precedence of the rate-limit keys, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from modelport import gatewayconfig as gc
from modelport.gateway.context import Principal
from modelport.gateway.ratelimit.policy import Policy

ALICE = Principal("user", "alice", ("team-a", "ml"))
BOB = Principal("user", "bob", ("team-a",))
CAROL = Principal("user", "carol")
NIGHTLY = Principal("service_principal", "nightly", ("team-a",))


def limits(*items: dict[str, Any]) -> list[gc.RateLimit]:
    return [gc.RateLimit.model_validate(i) for i in items]


def chosen(policy: Policy, principal: Principal | None) -> set[tuple[str, str, str, int]]:
    return {(b.dimension, b.kind, b.subject, b.limit) for b in policy.plan(principal).budgets}


CASES = [
    (
        "each user gets a budget of their own",
        [{"key": "user", "calls": 10}],
        ALICE,
        {("calls", "user", "alice", 10)},
    ),
    (
        "a limit naming a user overrides the generic user limit for that user",
        [{"key": "user", "calls": 10}, {"key": "user", "principal": "alice", "calls": 50}],
        ALICE,
        {("calls", "user", "alice", 50)},
    ),
    (
        "and only for that user",
        [{"key": "user", "calls": 10}, {"key": "user", "principal": "alice", "calls": 50}],
        BOB,
        {("calls", "user", "bob", 10)},
    ),
    (
        "a user limit overrides the group limits of that user",
        [{"key": "user_group", "calls": 5}, {"key": "user", "principal": "alice", "calls": 50}],
        ALICE,
        {("calls", "user", "alice", 50)},
    ),
    (
        "without a user limit each of the user's groups applies (shared by its members)",
        [{"key": "user_group", "calls": 5}],
        ALICE,
        {("calls", "user_group", "team-a", 5), ("calls", "user_group", "ml", 5)},
    ),
    (
        "a limit naming a group beats the generic group limit for that group",
        [{"key": "user_group", "calls": 5}, {"key": "user_group", "principal": "ml", "calls": 9}],
        ALICE,
        {("calls", "user_group", "team-a", 5), ("calls", "user_group", "ml", 9)},
    ),
    (
        "a group limit naming another group does not apply",
        [{"key": "user_group", "principal": "ops", "calls": 9}],
        ALICE,
        set(),
    ),
    (
        "the endpoint limit caps everyone, beside their own",
        [{"key": "endpoint", "calls": 100}, {"key": "user", "calls": 10}],
        ALICE,
        {("calls", "endpoint", "", 100), ("calls", "user", "alice", 10)},
    ),
    (
        "override is per dimension: a user calls limit leaves the group's token limit",
        [
            {"key": "user", "principal": "alice", "calls": 50},
            {"key": "user_group", "principal": "team-a", "tokens": 1000},
        ],
        ALICE,
        {("calls", "user", "alice", 50), ("tokens", "user_group", "team-a", 1000)},
    ),
    (
        "calls and tokens of one limit are two budgets, both must admit",
        [{"key": "user", "calls": 10, "tokens": 500}],
        CAROL,
        {("calls", "user", "carol", 10), ("tokens", "user", "carol", 500)},
    ),
    (
        "user limits do not apply to service principals, and vice versa",
        [{"key": "user", "calls": 10}, {"key": "service_principal", "calls": 3}],
        NIGHTLY,
        {("calls", "service_principal", "nightly", 3)},
    ),
    (
        "a service principal limit overrides its groups' limits",
        [{"key": "service_principal", "calls": 3}, {"key": "user_group", "calls": 5}],
        NIGHTLY,
        {("calls", "service_principal", "nightly", 3)},
    ),
    (
        "two limits on one counter: the lower one bites",
        [{"key": "user", "calls": 10}, {"key": "user", "calls": 4}],
        CAROL,
        {("calls", "user", "carol", 4)},
    ),
    (
        "an unauthenticated caller meets the endpoint limits only",
        [{"key": "endpoint", "tokens": 900}, {"key": "user", "calls": 10}],
        None,
        {("tokens", "endpoint", "", 900)},
    ),
]


@pytest.mark.parametrize(
    ("rules", "principal", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_precedence(
    rules: list[dict[str, Any]],
    principal: Principal | None,
    expected: set[tuple[str, str, str, int]],
) -> None:
    assert chosen(Policy(limits(*rules), "p:"), principal) == expected


def test_budget_keys_separate_dimensions_kinds_and_subjects() -> None:
    policy = Policy(
        limits({"key": "user", "calls": 1, "tokens": 2}, {"key": "user_group", "calls": 3}),
        "modelport:{ns/ep}:",
    )
    plan = policy.plan(BOB)
    assert [b.key for b in plan.budgets] == [
        "modelport:{ns/ep}:calls:user:bob",
        "modelport:{ns/ep}:tokens:user:bob",
    ]
    assert plan.kinds == ("user",)
    assert [b.key for b in plan.tokens] == ["modelport:{ns/ep}:tokens:user:bob"]
    assert plan.smallest_tokens == 2
    assert policy.plan(BOB) is plan  # computed once per caller
