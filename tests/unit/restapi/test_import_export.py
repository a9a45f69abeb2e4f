"""``modelport import`` and ``modelport export``: files in, YAML or JSON out, notes and
errors on stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from modelport.cli import main
from tests.conftest import ROOT

SAMPLES = ROOT / "manifests" / "reference"


def test_import_prints_yaml_kubectl_can_apply(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", str(SAMPLES / "openai.json"), str(SAMPLES / "self-hosted.json")]) == 0
    out, err = capsys.readouterr()
    docs = list(yaml.safe_load_all(out))
    assert [d["metadata"]["name"] for d in docs] == ["openai-chat", "llama-chat"]
    assert all(d["kind"] == "ServingEndpoint" and "status" not in d for d in docs)
    assert "namespace" not in docs[0]["metadata"]
    assert "route_optimized kept in an annotation" in err


def test_export_of_an_import_gives_the_create_request_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["import", "-n", "team-a", str(SAMPLES / "anthropic.json")])
    manifest = tmp_path / "anthropic.yaml"
    manifest.write_text(capsys.readouterr().out)
    assert main(["export", str(manifest)]) == 0
    exported = json.loads(capsys.readouterr().out)
    original = json.loads((SAMPLES / "anthropic.json").read_text())
    assert exported["ai_gateway"] == original["ai_gateway"]
    assert (
        exported["config"]["served_entities"][0]["external_model"]
        == (original["config"]["served_entities"][0]["external_model"])
    )


def test_import_reads_a_list_answer_and_reports_every_refusal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = json.loads((SAMPLES / "cohere.json").read_text())
    bad = {
        "name": "Bad_Name!",
        "config": {"served_entities": [{"name": "x", "external_model": {
            "name": "m", "provider": "openai", "task": "llm/v1/chat",
            "openai_config": {"openai_api_key_plaintext": "sk-NOT-REAL-0000"}}}]},
    }  # fmt: skip
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps({"endpoints": [good, bad]}))
    assert main(["import", str(listing)]) == 1
    out, err = capsys.readouterr()
    assert [d["metadata"]["name"] for d in yaml.safe_load_all(out)] == ["cohere-embeddings"]
    assert "'Bad_Name!': name:" in err
    assert "openai_api_key_plaintext: plaintext credentials are not accepted" in err
    assert "sk-NOT-REAL-0000" not in out + err


def test_export_reads_a_kubectl_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["import", str(SAMPLES / "openai.json"), str(SAMPLES / "cohere.json")])
    items = list(yaml.safe_load_all(capsys.readouterr().out))
    listing = tmp_path / "list.yaml"
    listing.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}))
    assert main(["export", str(listing)]) == 0
    assert [b["name"] for b in json.loads(capsys.readouterr().out)] == [
        "openai-chat",
        "cohere-embeddings",
    ]
