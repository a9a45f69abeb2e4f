"""Whether a live child already is what we would apply: the test that keeps an
unchanged endpoint from writing anything.

Two checks, both needed:

- every field we render has the same value on the live object (a subset test), so
  a hand edit of a field we own is repaired; fields the apiserver defaults or other
  controllers add are ignored;
- the live object carries the hash of the manifest we last applied, so a field we
  *stopped* rendering (an option removed from the spec) is noticed and removed by
  the next apply, which a subset test alone would miss.
"""

from __future__ import annotations

import copy
import hashlib
import json
from decimal import Decimal, InvalidOperation
from typing import Any

from modelport.render import Manifest

APPLIED_HASH_ANNOTATION = "serving.modelport.io/applied-hash"

_QUANTITY_SUFFIX: dict[str, Decimal | int] = {
    "": 1,
    "m": Decimal("0.001"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def manifest_hash(manifest: Manifest) -> str:
    """A stable hash of a rendered manifest (key order does not matter)."""
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def with_applied_hash(manifest: Manifest) -> Manifest:
    """`manifest` plus the annotation holding its own hash."""
    out = copy.deepcopy(manifest)
    annotations = out["metadata"].setdefault("annotations", {})
    annotations[APPLIED_HASH_ANNOTATION] = manifest_hash(manifest)
    return out


def needs_apply(desired: Manifest, live: dict[str, Any] | None) -> bool:
    """True when applying `desired` over `live` would change something."""
    if live is None:
        return True
    annotations = live.get("metadata", {}).get("annotations") or {}
    if annotations.get(APPLIED_HASH_ANNOTATION) != manifest_hash(desired):
        return True
    return not _contains(live, desired, ())


def _contains(live: Any, desired: Any, path: tuple[str, ...]) -> bool:
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return False
        return all(k in live and _contains(live[k], v, (*path, k)) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return False
        return all(_contains(a, b, path) for a, b in zip(live, desired, strict=True))
    if live == desired:
        return True
    # The apiserver prints quantities canonically ("1000m" comes back as "1").
    if "resources" in path and isinstance(live, str | int) and isinstance(desired, str | int):
        return _quantity(live) is not None and _quantity(live) == _quantity(desired)
    return False


def _quantity(value: str | int) -> Decimal | None:
    text = str(value)
    for suffix in sorted(_QUANTITY_SUFFIX, key=len, reverse=True):
        if suffix and text.endswith(suffix):
            number = text[: -len(suffix)]
            break
    else:
        suffix, number = "", text
    try:
        return Decimal(number) * _QUANTITY_SUFFIX[suffix]
    except InvalidOperation:
        return None
