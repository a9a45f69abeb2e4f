"""Kubernetes quantities, parsed in one place."""

from __future__ import annotations

from decimal import Decimal

import pytest

from modelport.objects import canonical_quantity, parse_quantity, scale_quantity, whole_units


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", Decimal(1)),
        (2, Decimal(2)),
        ("500m", Decimal("0.5")),
        ("16Gi", Decimal(16 * 2**30)),
        ("1k", Decimal(1000)),
        ("1e3", Decimal(1000)),
        ("1E", Decimal(10) ** 18),
        ("+.5", Decimal("0.5")),
        ("abc", None),
        ("1Gb", None),
        (True, None),
    ],
)
def test_parse(text: str | int, value: Decimal | None) -> None:
    assert parse_quantity(text) == value


def test_one_spelling_per_value() -> None:
    assert canonical_quantity("1000m") == canonical_quantity("1") == canonical_quantity(1) == "1"
    assert canonical_quantity("1024Mi") == canonical_quantity("1Gi")
    assert canonical_quantity("x") is None


def test_scale_keeps_the_suffix() -> None:
    assert scale_quantity("8Gi", 4, 1) == "32Gi"
    assert scale_quantity("10", 3, 2) == "15"
    assert scale_quantity("lots", 2, 1) == "lots"


def test_whole_units() -> None:
    assert (whole_units("2"), whole_units(4), whole_units("1500m"), whole_units("x")) == (
        2,
        4,
        1,
        0,
    )
