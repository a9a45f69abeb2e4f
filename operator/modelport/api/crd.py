"""Generate the ServingEndpoint CRD from the pydantic models (`modelport crds`).

pydantic's JSON schema is close to what the apiserver wants but not structural:
it has `$ref`s, `anyOf: [X, null]` for optional fields, `const`, titles and
`additionalProperties: false`. `structural` rewrites it: refs are inlined (a
field's description wins over its model's docstring), optionals become plain X
(absent rather than null), `const` becomes a one-value enum. Anything else that a
structural schema forbids raises, so a new field type fails here, not at install.
The output is a pure function of the models: same models, same bytes.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from modelport.api.v1alpha1 import (
    CATEGORIES,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    ServingEndpoint,
    ServingEndpointSpec,
    ServingEndpointStatus,
)

Schema = dict[str, Any]

CRD_FILENAME = f"{GROUP}_{PLURAL}.yaml"
HEADER = "# Generated from operator/modelport/api by `modelport crds`. Do not edit.\n"

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Ready", "type": "string", "jsonPath": ".status.state.ready"},
    {"name": "Config Update", "type": "string", "jsonPath": ".status.state.configUpdate"},
    # One string for every self-hosted entity: the apiserver prints only the first match
    # of a `[*]` path, which would show one entity of several and mislead (hence no
    # ENTITIES column either).
    {"name": "Replicas", "type": "string", "jsonPath": ".status.replicaSummary"},
    {"name": "URL", "type": "string", "jsonPath": ".status.url"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

# Keys copied as they are; anything else in pydantic's output is an error.
_PASSTHROUGH = {
    "description",
    "type",
    "format",
    "enum",
    "default",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "maxProperties",
    "required",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
}
# Readable, stable key order in the YAML.
_ORDER = [
    "description",
    "type",
    "format",
    "enum",
    "default",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "maxProperties",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "items",
    "additionalProperties",
    "properties",
    "required",
    "x-kubernetes-validations",
]


def model_schema(model: type[BaseModel]) -> Schema:
    """The structural OpenAPI v3 schema of `model`, camelCase, refs inlined."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return structural(raw, defs, path=model.__name__)


def structural(node: Schema, defs: dict[str, Schema], path: str) -> Schema:
    """Rewrite one pydantic JSON-schema node into a structural one (see module doc)."""
    node = dict(node)
    node.pop("title", None)
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]  # extra="forbid": the apiserver prunes/rejects
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        return _merge(structural(target, defs, path), node, defs, path)
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o != {"type": "null"}]
        if node.get("x-kubernetes-int-or-string"):
            types = sorted(o.get("type", "") for o in options)
            if types != ["integer", "string"]:
                raise ValueError(f"{path}: int-or-string needs exactly int | str")
        elif len(options) == 1:
            return _merge(structural(options[0], defs, path), node, defs, path)
        else:
            raise ValueError(f"{path}: a union of several types is not structural: {options}")
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("default", 0) is None:
        del node["default"]  # optional means absent, never null
    out: Schema = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {k: structural(v, defs, f"{path}.{k}") for k, v in value.items()}
        elif key == "items":
            out[key] = structural(value, defs, f"{path}[]")
        elif key == "additionalProperties":
            out[key] = structural(value, defs, f"{path}{{}}")
        elif key == "description":
            out[key] = " ".join(value.split())  # docstrings wrap; kubectl explain re-wraps
        elif key in _PASSTHROUGH:
            out[key] = copy.deepcopy(value)
        else:
            raise ValueError(f"{path}: schema keyword {key!r} is not supported in a CRD")
    return _ordered(out)


def _merge(inner: Schema, outer: Schema, defs: dict[str, Schema], path: str) -> Schema:
    """`inner` (the referenced type) with the field-level keys of `outer` on top."""
    merged = dict(inner)
    for key, value in structural(outer, defs, path).items():
        merged[key] = value
    return _ordered(merged)


def _ordered(node: Schema) -> Schema:
    return {k: node[k] for k in sorted(node, key=_ORDER.index)}


def _strip_validations(node: Any) -> Any:
    """Drop CEL rules (status is written by the operator from an already-valid spec,
    and repeating the spec's rules there would double the CRD's CEL cost)."""
    if isinstance(node, dict):
        return {
            k: _strip_validations(v) for k, v in node.items() if k != "x-kubernetes-validations"
        }
    if isinstance(node, list):
        return [_strip_validations(v) for v in node]
    return node


def build_crd(
    spec_model: type[BaseModel] = ServingEndpointSpec,
    status_model: type[BaseModel] = ServingEndpointStatus,
) -> dict[str, Any]:
    """The CustomResourceDefinition as a dict (models are parameters for tests)."""
    spec = model_schema(spec_model)
    status = _strip_validations(model_schema(status_model))
    root: Schema = {
        "description": " ".join((ServingEndpoint.__doc__ or "").split()),
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion of this object: serving.modelport.io/v1alpha1.",
                "type": "string",
            },
            "kind": {"description": "Kind of this object: ServingEndpoint.", "type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "required": ["spec"],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "modelport"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": list(CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render_crd(crd: dict[str, Any] | None = None) -> str:
    """The CRD as YAML text, exactly as committed in crds/."""
    body = yaml.safe_dump(
        crd if crd is not None else build_crd(),
        sort_keys=False,
        width=100,
        allow_unicode=True,
        default_flow_style=False,
    )
    return HEADER + body


def rendered_files() -> dict[str, str]:
    """File name -> content of every generated CRD."""
    return {CRD_FILENAME: render_crd()}


# Where the CRDs are committed: for `kubectl apply`, and inside the Helm chart,
# which installs them from its crds/ directory.
DEFAULT_OUTPUT_DIRS = (Path("crds"), Path("charts/modelport/crds"))


def add_subcommand(sub: Any) -> None:
    """Register `modelport crds` on the CLI's subparsers."""
    cmd = sub.add_parser(
        "crds", help="write the generated CRDs (or check that the committed ones are current)"
    )
    cmd.add_argument(
        "--output-dir",
        type=Path,
        action="append",
        help="directory, repeatable (default: ./crds and the Helm chart's ./charts/modelport/crds)",
    )
    cmd.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a file in --output-dir differs from the models",
    )
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """`modelport crds`: write the CRDs, or with --check report the stale ones."""
    dirs: list[Path] = args.output_dir or list(DEFAULT_OUTPUT_DIRS)
    stale = []
    for (name, text), out in itertools.product(rendered_files().items(), dirs):
        target = out / name
        if args.check:
            if not target.is_file() or target.read_text(encoding="utf-8") != text:
                stale.append(target)
            continue
        out.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        print(f"wrote {target}")
    for target in stale:
        print(f"{target} is not what the models generate; run `modelport crds`", file=sys.stderr)
    return 1 if stale else 0
