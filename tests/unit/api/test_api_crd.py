"""The generated CRD: structural, bounded for CEL, deterministic, and committed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import Field

from modelport.api import ServingEndpointSpec
from modelport.api.crd import CRD_FILENAME, build_crd, render_crd, structural
from modelport.cli import main

ROOT = Path(__file__).resolve().parents[3]
COMMITTED = ROOT / "crds" / CRD_FILENAME
CHART_COPY = ROOT / "charts" / "modelport" / "crds" / CRD_FILENAME


def _schema() -> dict[str, Any]:
    root: dict[str, Any] = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return root


def _walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("committed", [COMMITTED, CHART_COPY], ids=["crds", "chart"])
def test_committed_crd_matches_the_models(committed: Path) -> None:
    """The drift test: regenerate with `modelport crds` after changing a model."""
    assert committed.read_text(encoding="utf-8") == render_crd(), (
        f"{committed} is stale; run `modelport crds` and commit the result"
    )


def test_a_changed_field_changes_the_output() -> None:
    class Changed(ServingEndpointSpec):
        """What the endpoint serves and how."""

        description: str | None = Field(default=None, description="a changed description")

    assert render_crd(build_crd(spec_model=Changed)) != COMMITTED.read_text(encoding="utf-8")


def test_output_is_deterministic_across_processes() -> None:
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    code = "from modelport.api.crd import render_crd; print(render_crd(), end='')"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out == render_crd() == render_crd()


def test_crds_command_writes_then_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["crds", "--check", "--output-dir", str(tmp_path)]) == 1
    assert main(["crds", "--output-dir", str(tmp_path)]) == 0
    assert (tmp_path / CRD_FILENAME).read_text(encoding="utf-8") == render_crd()
    assert main(["crds", "--check", "--output-dir", str(tmp_path)]) == 0
    (tmp_path / CRD_FILENAME).write_text("stale", encoding="utf-8")
    assert main(["crds", "--check", "--output-dir", str(tmp_path)]) == 1
    assert "modelport crds" in capsys.readouterr().err


def test_names_scope_and_columns() -> None:
    crd = build_crd()
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "servingendpoints.serving.modelport.io"
    assert spec["names"]["shortNames"] == ["sep"]
    assert spec["names"]["categories"] == ["modelport"]
    assert spec["scope"] == "Namespaced"
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Ready", "Config Update", "Replicas", "URL", "Age"]


def test_schema_is_structural() -> None:
    text = yaml.safe_dump(_schema())
    for forbidden in ("$ref", "anyOf", "oneOf", "allOf", "title:", "const:", "$defs"):
        assert forbidden not in text
    for path, node in _walk(_schema()):
        if path == ".metadata" or node.get("x-kubernetes-int-or-string"):
            continue
        assert "type" in node, f"{path} has no type"
        if node["type"] == "object":
            assert "properties" in node or "additionalProperties" in node, path
        assert node.get("additionalProperties") is not False, path


def test_every_field_has_a_description() -> None:
    missing = [
        path
        for path, node in _walk(_schema())
        if path and path != ".metadata" and not path.endswith(("[]", "{}"))
        if not node.get("description")
    ]
    assert not missing


def test_cel_cost_is_bounded() -> None:
    """Every string, list and map has a bound: unbounded ones make the apiserver
    estimate CEL cost from the request size limit and refuse the CRD."""
    unbounded = []
    for path, node in _walk(_schema()):
        kind = node.get("type")
        if path.startswith(".metadata") or path in {".apiVersion", ".kind"}:
            continue
        bounded_string = {"maxLength", "enum", "format"} & node.keys()  # format: date-time
        if kind == "string" and not bounded_string:
            unbounded.append(path)
        if kind == "array" and "maxItems" not in node:
            unbounded.append(path)
        if kind == "object" and "additionalProperties" in node and "maxProperties" not in node:
            unbounded.append(path)
    assert not unbounded


def test_status_carries_no_cel_rules() -> None:
    status = yaml.safe_dump(_schema()["properties"]["status"])
    assert "x-kubernetes-validations" not in status


def test_cel_rules_carry_messages_that_name_a_field() -> None:
    rules = [
        rule for _, node in _walk(_schema()) for rule in node.get("x-kubernetes-validations", [])
    ]
    assert len(rules) > 30
    for rule in rules:
        # Starts with the field (`spec.trafficConfig.routes`, `rateLimits[]:`, ...).
        assert re.match(r"^[a-z][A-Za-z0-9.\[\]/]*:? ", rule["message"]), rule["message"]


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ({"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}, {"type": "string"}),
        ({"const": "minute", "type": "string"}, {"type": "string", "enum": ["minute"]}),
        ({"type": "object", "title": "X", "additionalProperties": False}, {"type": "object"}),
        (
            {"$ref": "#/$defs/A", "description": "field"},
            {"description": "field", "type": "integer"},
        ),
    ],
)
def test_structural_rewrites(node: dict[str, Any], expected: dict[str, Any]) -> None:
    defs = {"A": {"type": "integer", "description": "model", "title": "A"}}
    assert structural(node, defs, "x") == expected


@pytest.mark.parametrize(
    "node",
    [
        {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        {"type": "string", "not": {"enum": ["x"]}},
    ],
)
def test_structural_refuses_what_a_crd_cannot_hold(node: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="x"):
        structural(node, {}, "x")
