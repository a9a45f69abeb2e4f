"""``modelport import`` of the exported samples (one per provider, a self-hosted model, a
mixed split) yields YAML the real apiserver admits, and ``modelport export`` of what the
apiserver stored imports back to the same object."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import yaml

from modelport.api.v1alpha1 import ServingEndpoint
from tests.conftest import ROOT, Cluster
from tests.integration.operator.support import install_crd

pytestmark = pytest.mark.cluster

SAMPLES = sorted((ROOT / "manifests" / "reference").glob("*.json"))


def modelport(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "modelport.cli", *args],
        input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_imported_samples_are_admitted_and_export_round_trips(
    cluster: Cluster, namespace: str
) -> None:
    install_crd(cluster)
    manifests = modelport("import", "-n", namespace, *map(str, SAMPLES))
    assert len(list(yaml.safe_load_all(manifests))) == len(SAMPLES)
    admitted = cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "--validate=strict", "-o", "json",
        "-f", "-",
        input=manifests, check=False,
    )  # fmt: skip
    assert admitted.returncode == 0, admitted.stderr
    answer = json.loads(admitted.stdout)
    stored: list[dict[str, Any]] = answer["items"] if answer.get("kind") == "List" else [answer]
    assert sorted(o["metadata"]["name"] for o in stored) == sorted(
        json.loads(p.read_text())["name"] for p in SAMPLES
    )

    # What the apiserver stored (its defaults applied) exports and imports back unchanged.
    listing = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": stored})
    exported = json.loads(modelport("export", "-", stdin=listing))
    reimported = modelport("import", "-n", namespace, "-", stdin=json.dumps(exported))
    again = list(yaml.safe_load_all(reimported))
    by_name = {o["metadata"]["name"]: ServingEndpoint.parse(o) for o in stored}
    for body in again:
        original = by_name[body["metadata"]["name"]]
        assert ServingEndpoint.parse(body).spec == original.spec
        assert ServingEndpoint.parse(body).metadata.annotations == original.metadata.annotations
