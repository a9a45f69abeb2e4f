"""Child names: valid DNS-1035 labels, at most 63 characters, deterministic, and
distinct for distinct inputs."""

from __future__ import annotations

import re

import pytest

from modelport.render.names import (
    child_name,
    entity_name,
    gateway_name,
    label_value,
    service_name,
)

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("chat",), "chat"),
        (("chat", "gateway"), "chat-gateway"),
        (("chat", "llama-8b"), "chat-llama-8b"),
        (("a" * 50, "b" * 12), "a" * 50 + "-" + "b" * 12),  # exactly 63: kept
    ],
)
def test_valid_short_names_are_kept(parts: tuple[str, ...], expected: str) -> None:
    assert child_name(*parts) == expected


@pytest.mark.parametrize(
    "parts",
    [
        ("a" * 50, "b" * 13),  # 64 characters
        ("x" * 253, "gateway"),  # an endpoint name may be a 253-character subdomain
        ("chat", "Llama_8B"),  # capitals and '_' are valid entity names, not DNS names
        ("chat.team", "gpt"),  # dots are valid in endpoint names, not in Services'
        ("1chat",),  # a Service name must start with a letter
        ("chat", "_x_"),
    ],
)
def test_other_names_are_made_valid_with_a_stable_hash(parts: tuple[str, ...]) -> None:
    name = child_name(*parts)
    assert len(name) <= 63 and DNS_1035.match(name), name
    assert name == child_name(*parts)  # deterministic
    assert re.search(r"-[0-9a-f]{8}$", name)


def test_names_that_clean_up_alike_stay_distinct() -> None:
    assert child_name("chat", "Llama") != child_name("chat", "llama")
    assert child_name("chat", "a_b") != child_name("chat", "a-b")
    assert child_name("a" * 70) != child_name("a" * 71)


def test_entity_called_gateway_does_not_collide_with_the_gateway() -> None:
    assert entity_name("chat", "gateway") != gateway_name("chat")
    assert len(entity_name("chat", "gateway")) <= 63


def test_service_is_the_endpoint_name() -> None:
    assert service_name("chat") == "chat"


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("chat", True),
        ("Llama_8B", True),
        ("x" * 63, True),
        ("x" * 64, False),
        ("_x", False),
        ("a.b", True),
    ],
)
def test_label_values(value: str, kept: bool) -> None:
    out = label_value(value)
    assert (out == value) is kept
    assert len(out) <= 63
