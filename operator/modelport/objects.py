"""Kubernetes objects and values as plain data, shared by rendering, settings and the
comparison of live children: the one `Manifest` type, and resource quantities.

A leaf module (it imports nothing of ours), so that `runtimes`, `render`, `settings`
and `kube` can all use it without importing each other.

Quantities are parsed here and nowhere else: settings validate them, GPU profiles
scale them, rendering counts GPUs with them, and the comparison of a live child with
its manifest treats "1000m" and "1" as the same CPU, as the apiserver does (it
prints quantities canonically).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

Manifest = dict[str, Any]
"""A Kubernetes object (or a part of one) as the JSON the API takes."""

QUANTITY = re.compile(
    r"^(?P<number>[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>[numkMGTPE]|[KMGTPE]i|[eE][+-]?[0-9]+)?$"
)
"""A Kubernetes resource quantity: a number, then an optional SI or binary suffix or a
decimal exponent (`500m`, `2`, `16Gi`, `1e3`)."""

_MULTIPLIER: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def is_quantity(value: str | int | float) -> bool:
    """Whether `value` is a quantity the apiserver accepts."""
    return parse_quantity(value) is not None


def parse_quantity(value: str | int | float) -> Decimal | None:
    """The quantity's value in base units (cores, bytes, GPUs), or None when `value`
    is not a quantity."""
    if isinstance(value, bool):
        return None
    match = QUANTITY.match(str(value))
    if not match:
        return None
    suffix = match["suffix"] or ""
    try:
        number = Decimal(match["number"])
        if len(suffix) > 1 and suffix[0] in ("e", "E"):
            return number * Decimal(10) ** int(suffix[1:])
        return number * _MULTIPLIER[suffix]
    except (InvalidOperation, ValueError):
        return None


def canonical_quantity(value: str | int | float) -> str | None:
    """One spelling per value ("1000m", "1" and 1 all give "1"), for comparisons; None
    when `value` is not a quantity."""
    parsed = parse_quantity(value)
    if parsed is None:
        return None
    return format(parsed.normalize(), "f")


def scale_quantity(quantity: str, numerator: int, denominator: int) -> str:
    """`quantity * numerator / denominator`, keeping its suffix ("8Gi" * 4 / 1 is
    "32Gi"); a value that is not a quantity is returned unchanged."""
    match = QUANTITY.match(quantity)
    suffix = (match["suffix"] or "") if match else ""
    if not match or (len(suffix) > 1 and suffix[0] in ("e", "E")):
        return quantity
    value = Decimal(match["number"]) * numerator / denominator
    return f"{format(value.normalize(), 'f')}{suffix}"


def whole_units(value: str | int | float) -> int:
    """A quantity as a whole number of units, rounded down (GPUs: "2" is 2); 0 when
    `value` is not a quantity."""
    parsed = parse_quantity(value)
    return int(parsed) if parsed is not None else 0
