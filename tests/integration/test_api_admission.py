"""The ServingEndpoint CRD against the real apiserver: it installs, every sample is
admitted, every invalid endpoint of the shared table is refused with a message that
names the field, and `kubectl explain` / `kubectl get` show what users rely on.

CEL messages, structural-schema errors and the CEL cost budget exist only in the
apiserver, which is why this is not a unit test.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from modelport.api import ServingEndpoint
from modelport.api.crd import CRD_FILENAME

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / CRD_FILENAME
CRD_NAME = "servingendpoints.serving.modelport.io"


def _load_cases() -> ModuleType:
    # The table lives with the unit tests, which run it against the pydantic models.
    if "api_cases" in sys.modules:  # already imported by the unit tests in this run
        return sys.modules["api_cases"]
    path = ROOT / "tests" / "unit" / "api" / "api_cases.py"
    spec = importlib.util.spec_from_file_location("api_cases", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["api_cases"] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


cases = _load_cases()


@pytest.fixture(scope="module")
def crd(cluster: Any) -> Any:
    """The CRD, installed (idempotently) and served."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD_NAME}")
    # Established comes before discovery and the OpenAPI document catch up.
    deadline = time.monotonic() + 60
    while cluster.kubectl("get", "sep", "-A", check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise TimeoutError("the servingendpoints resource never appeared in discovery")
        time.sleep(0.5)
    return cluster


@pytest.fixture(scope="module")
def shared_namespace(crd: Any) -> Iterator[str]:
    """One namespace for the dry-run cases (a fresh one per case would be slow)."""
    name = f"t-api-{uuid.uuid4().hex[:8]}"
    crd.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        crd.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _dry_run(cluster: Any, namespace: str, body: dict[str, Any]) -> Any:
    return cluster.kubectl(
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-o",
        "json",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(body),
        check=False,
    )


@pytest.mark.parametrize("name", cases.sample_names())
def test_sample_is_admitted_and_defaults_match_the_models(
    crd: Any, shared_namespace: str, name: str
) -> None:
    result = _dry_run(crd, shared_namespace, cases.load_sample(name))
    assert result.returncode == 0, result.stderr
    admitted = json.loads(result.stdout)
    # The apiserver's defaults are the models' defaults: what the operator parses and
    # what Argo CD diffs agree.
    assert ServingEndpoint.parse(admitted).spec.to_body() == admitted["spec"]


@pytest.mark.parametrize("case", cases.CASES, ids=lambda c: c.id)
def test_invalid_endpoint_is_refused_naming_the_field(
    crd: Any, shared_namespace: str, case: Any
) -> None:
    result = _dry_run(crd, shared_namespace, case.body())
    assert result.returncode != 0, f"{case.id} was admitted"
    assert case.field in result.stderr, result.stderr


def test_enough_invalid_cases() -> None:
    assert len(cases.CASES) >= 40


def test_explain_prints_descriptions(crd: Any) -> None:
    deadline = time.monotonic() + 60
    while True:  # the OpenAPI document is published a little after discovery
        result = crd.kubectl(
            "explain", "servingendpoint.spec.servedEntities.externalModel", check=False
        )
        if result.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "A model served by an external provider" in out
    assert "openaiConfig" in out
    assert "Settings for provider anthropic" in out
    deeper = crd.kubectl(
        "explain", "servingendpoint.spec.servedEntities.externalModel.openaiConfig.openaiApiKey"
    ).stdout
    assert "secretKeyRef" in deeper


def test_get_shows_the_printer_columns(crd: Any, namespace: str) -> None:
    crd.kubectl("apply", "-n", namespace, "-f", str(ROOT / "manifests" / "samples"))
    status = {
        "status": {
            "observedGeneration": 1,
            "url": f"http://chat.{namespace}.svc.cluster.local",
            "state": {"ready": "READY", "configUpdate": "NOT_UPDATING"},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "EntitiesReady",
                    "message": "",
                    "observedGeneration": 1,
                    "lastTransitionTime": "2026-11-22T00:00:00Z",
                }
            ],
        }
    }
    crd.kubectl(
        "patch", "-n", namespace, "sep", "chat", "--subresource=status", "--type=merge",
        "-p", json.dumps(status),
    )  # fmt: skip
    table = crd.kubectl("get", "sep", "-n", namespace).stdout.splitlines()
    header = table[0].split()
    assert header[:2] == ["NAME", "READY"]
    assert "CONFIG" in header and "UPDATE" in header and "URL" in header and "AGE" in header
    chat = next(line.split() for line in table if line.startswith("chat "))
    assert chat[1:4] == ["READY", "NOT_UPDATING", f"http://chat.{namespace}.svc.cluster.local"]
    # The category lists them too.
    assert (
        "servingendpoint.serving.modelport.io/chat"
        in crd.kubectl("get", "modelport", "-n", namespace, "-o", "name").stdout
    )
