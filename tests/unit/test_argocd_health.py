"""The Argo CD health check (manifests/argocd/health.lua), run by a real Lua interpreter.

Argo CD runs the script with the live object in the global `obj` and reads the
table it returns; the harness here does the same with Lua 5.4 (installed by
hack/setup), so the script is tested as Argo CD executes it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "manifests" / "argocd"
HEALTH_KEY = "resource.customizations.health.serving.modelport.io_ServingEndpoint"
LUA = shutil.which("lua5.4") or shutil.which("lua")


def lua_literal(value: Any) -> str:
    """A Python value as a Lua expression (tables for dicts and lists)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"[{lua_literal(k)}] = {lua_literal(v)}" for k, v in value.items())
            + "}"
        )
    raise TypeError(type(value))


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """Run health.lua on `obj`; return (status, message)."""
    assert LUA, "lua5.4 is needed (hack/setup installs it)"
    script = (ARGOCD / "health.lua").read_text()
    program = (
        f"obj = {lua_literal(obj)}\n"
        f"local hs = (function()\n{script}\nend)()\n"
        "io.write(hs.status, '\\n', hs.message)\n"
    )
    out = subprocess.run([LUA, "-"], input=program, capture_output=True, text=True, check=True)
    status, message = out.stdout.split("\n", 1)
    return status, message


def endpoint(generation: int, status: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "serving.modelport.io/v1alpha1",
        "kind": "ServingEndpoint",
        "metadata": {"name": "chat", "namespace": "team-a", "generation": generation},
        "spec": {"servedEntities": [{"name": "a"}]},
    }
    if status is not None:
        body["status"] = status
    return body


def status(
    observed: int, ready: str, update: str, conditions: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "observedGeneration": observed,
        "state": {"ready": ready, "configUpdate": update},
        "conditions": conditions or [],
    }


DEGRADED = {"type": "Degraded", "status": "True", "message": "Secret llm-keys has no key openai"}
PROGRESSING = {"type": "Progressing", "status": "True", "message": "1/2 gateway pods updated"}
NOT_READY = {"type": "Ready", "status": "False", "message": "0/5 nodes have nvidia.com/gpu"}


WAITING = "Waiting for the operator to observe generation "

CASES = {
    "ready": (endpoint(3, status(3, "READY", "NOT_UPDATING")), ("Healthy", "Ready")),
    "never-observed": (endpoint(1, None), ("Progressing", WAITING + "1")),
    "stale-generation": (
        endpoint(4, status(3, "READY", "NOT_UPDATING")),
        ("Progressing", WAITING + "4"),
    ),
    "rolling-out": (
        endpoint(2, status(2, "READY", "IN_PROGRESS", [PROGRESSING])),
        ("Progressing", PROGRESSING["message"]),
    ),
    "rolling-out-no-conditions": (
        endpoint(2, status(2, "NOT_READY", "IN_PROGRESS")),
        ("Progressing", "Update in progress"),
    ),
    "update-failed": (
        endpoint(2, status(2, "NOT_READY", "UPDATE_FAILED", [DEGRADED])),
        ("Degraded", DEGRADED["message"]),
    ),
    "update-failed-still-serving": (
        endpoint(2, status(2, "READY", "UPDATE_FAILED")),
        ("Degraded", "The last update failed"),
    ),
    "not-ready-and-stuck": (
        endpoint(5, status(5, "NOT_READY", "NOT_UPDATING", [NOT_READY])),
        ("Degraded", NOT_READY["message"]),
    ),
}


@pytest.mark.parametrize(("obj", "expected"), CASES.values(), ids=CASES.keys())
def test_health_states(obj: dict[str, Any], expected: tuple[str, str]) -> None:
    assert health(obj) == expected


def test_argocd_cm_patch_carries_the_script_verbatim() -> None:
    patch = yaml.safe_load((ARGOCD / "argocd-cm-patch.yaml").read_text())
    assert patch["metadata"]["name"] == "argocd-cm"
    assert patch["data"][HEALTH_KEY] == (ARGOCD / "health.lua").read_text()


def test_sample_application_installs_the_chart() -> None:
    app = yaml.safe_load((ARGOCD / "application.yaml").read_text())
    assert app["spec"]["source"]["path"] == "charts/modelport"
    assert (ROOT / app["spec"]["source"]["path"] / "Chart.yaml").is_file()
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
