"""Whether a live child already is what we would apply: the test that keeps an
unchanged endpoint from writing anything.

The operator compares from its watch cache, which keeps a small digest per child
rather than the object, so the question is asked of what server-side apply itself
records: the fields our field manager owns (`metadata.managedFields`, the `Apply`
entry of manager `modelport`). `owned_digest(live)` hashes the live object's values
at exactly those fields; `desired_digest(manifest)` hashes what we would apply. They
are equal when, and only when:

- every field we render has our value on the live object: a hand edit of one of them
  (`kubectl edit`, `kubectl set image`, a patch) moves that field's ownership to the
  editor, so it drops out of our set and the digests differ;
- we own no field we stopped rendering: an option removed from the spec is still in
  our set until the next apply removes it;
- the live object carries the applied-hash annotation of the manifest (it is one of
  our fields), so a change of the manifest is always noticed.

Fields the apiserver defaults and fields other controllers own (a Deployment's
revision annotation, the HPA's replicas, every status) are not in our set and never
count. Quantities compare by value ("1000m" is "1"), and empty maps and lists count
as absent, as the apiserver omits them.

`needs_apply(desired, live)` is the same question asked of a whole live object (a
subset test plus the applied-hash annotation), for callers that hold one.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import orjson

from modelport.objects import Manifest, canonical_quantity

APPLIED_HASH_ANNOTATION = "serving.modelport.io/applied-hash"
FIELD_MANAGER = "modelport"
"""The one field manager of everything the operator applies."""
DIGEST_LEN = 16
# Identity of an object, not content: never among an applier's managed fields.
_IDENTITY = ("apiVersion", "kind")
_IDENTITY_META = ("name", "namespace")


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


def desired_digest(applied: Manifest) -> str:
    """The digest of `applied` (a manifest as it is sent, with its applied hash), to
    compare with `owned_digest` of the live object."""
    return _digest(_canonical(_without_identity(applied), ()))


def owned_digest(live: dict[str, Any]) -> str | None:
    """The digest of the live object's values at the fields our field manager owns by
    apply; None when it owns none (created by someone else, or never applied)."""
    fields = applied_fields(live)
    if fields is None:
        return None
    return _digest(_canonical(_without_identity(_project(live, fields)), ()))


def applied_fields(live: dict[str, Any]) -> dict[str, Any] | None:
    """The `fieldsV1` set of our apply on the main resource (not a subresource)."""
    for entry in live.get("metadata", {}).get("managedFields") or []:
        if (
            entry.get("manager") == FIELD_MANAGER
            and entry.get("operation") == "Apply"
            and not entry.get("subresource")
            and entry.get("fieldsType", "FieldsV1") == "FieldsV1"
        ):
            fields: dict[str, Any] = entry.get("fieldsV1") or {}
            return fields
    return None


def needs_apply(desired: Manifest, live: dict[str, Any] | None) -> bool:
    """True when applying `desired` over the whole object `live` would change something."""
    if live is None:
        return True
    annotations = live.get("metadata", {}).get("annotations") or {}
    if annotations.get(APPLIED_HASH_ANNOTATION) != manifest_hash(desired):
        return True
    return not _contains(live, desired, ())


def _project(value: Any, fields: dict[str, Any]) -> Any:
    """The parts of `value` named by a `fieldsV1` set (a leaf set owns the whole value).

    `f:<name>` is a map field; in a list, `k:<json>` an item by its key fields,
    `v:<json>` an item of a set by value, `i:<n>` an item by position; `.` the item
    itself (no content of its own).
    """
    if not fields or not isinstance(value, dict | list):
        return value
    if isinstance(value, dict):
        return {
            key[2:]: _project(value[key[2:]], sub)
            for key, sub in fields.items()
            if key.startswith("f:") and key[2:] in value
        }
    keyed: list[tuple[dict[str, Any], dict[str, Any]]] = []
    values: list[tuple[Any, dict[str, Any]]] = []
    positions: dict[int, dict[str, Any]] = {}
    for key, sub in fields.items():
        if key.startswith("k:"):
            keyed.append((json.loads(key[2:]), sub))
        elif key.startswith("v:"):
            values.append((json.loads(key[2:]), sub))
        elif key.startswith("i:"):
            positions[int(key[2:])] = sub
    out = []
    for index, item in enumerate(value):
        if index in positions:
            out.append(_project(item, positions[index]))
            continue
        for selector, sub in keyed:
            if isinstance(item, dict) and all(item.get(k) == v for k, v in selector.items()):
                out.append(_project(item, sub))
                break
        else:
            if any(item == wanted for wanted, _ in values):
                out.append(item)
    return out


def _without_identity(obj: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in obj.items() if k not in _IDENTITY}
    if isinstance(out.get("metadata"), dict):
        out["metadata"] = {k: v for k, v in out["metadata"].items() if k not in _IDENTITY_META}
    return out


def _canonical(value: Any, path: tuple[str, ...]) -> Any:
    """One form per meaning: no empty maps, lists or nulls; quantities by value."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            item = _canonical(item, (*path, key))
            if item not in (None, {}, []):
                out[key] = item
        return out
    if isinstance(value, list):
        return [_canonical(item, path) for item in value]
    if "resources" in path and isinstance(value, str | int) and not isinstance(value, bool):
        return canonical_quantity(value) or value
    return value


def _digest(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:DIGEST_LEN]


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
        return canonical_quantity(live) is not None and (
            canonical_quantity(live) == canonical_quantity(desired)
        )
    return False
