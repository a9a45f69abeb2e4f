"""MLflow, scikit-learn and XGBoost for the custom-model tests, in a virtual environment
outside the repository and cached: ~/.cache/modelport/venvs/mlflow-<version>-<hash>.

The test process itself has no MLflow (it is heavy, and the gateway and operator never
import it): tests train, log and register models by running `mlflow_models` with this
environment's Python, start MLflow's scoring server (the `mlflow` runtime's command) and
a tracking server from it. The frameworks are the pins of the runtime image
(docker/mlflow-requirements.txt) plus full MLflow (`mlflow==$MLFLOW_VERSION` of
hack/versions.env) for its tracking server.

    python -m tests.integration.runtimes.mlflow_env   # prepare it (hack/setup does)
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.runtimes.llamacpp_env import versions

ROOT = Path(__file__).resolve().parents[3]
REQUIREMENTS = ROOT / "docker" / "mlflow-requirements.txt"


@dataclass(frozen=True)
class MlflowEnv:
    """The environment's interpreter and its `bin` (mlflow, uvicorn)."""

    python: Path

    @property
    def bin(self) -> Path:
        return self.python.parent

    def run_env(self) -> dict[str, str]:
        """A process environment whose PATH finds this environment's commands first."""
        path = f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        return {"PATH": path, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}

    def train(
        self, dest: Path, tracking_uri: str | None = None, register: str | None = None
    ) -> dict[str, Any]:
        """Train and log the test models into `dest` (see `mlflow_models`); returns the
        predictions each should give."""
        argv = [str(self.python), "-m", "tests.integration.runtimes.mlflow_models", str(dest)]
        if tracking_uri and register:
            argv += ["--tracking-uri", tracking_uri, "--register", register]
        done = subprocess.run(
            argv, cwd=ROOT, env=self.run_env(), capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            raise RuntimeError(f"training failed:\n{done.stderr[-4000:]}")
        expected: dict[str, Any] = json.loads((dest / "expected.json").read_text())
        return expected


def formats(expected: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The rows `expected` was computed for, in each of the reference service's input
    formats (by format name)."""
    columns, rows = expected["columns"], expected["rows"]
    records = [dict(zip(columns, row, strict=True)) for row in rows]
    return {
        "dataframe_split": {"dataframe_split": {"columns": columns, "data": rows}},
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs": {"inputs": {c: [r[i] for r in rows] for i, c in enumerate(columns)}},
    }


def prepare(log: bool = True) -> MlflowEnv:
    """Build or reuse the environment; idempotent and quick once done."""
    version = versions()["MLFLOW_VERSION"]
    pins = hashlib.sha256(f"{version}\n{REQUIREMENTS.read_text()}".encode()).hexdigest()[:12]
    cache = Path(os.environ.get("MODELPORT_CACHE", Path.home() / ".cache" / "modelport"))
    venv = cache / "venvs" / f"mlflow-{version}-{pins}"
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    if not stamp.exists():
        if log:
            print(f"[mlflow-env] installing mlflow {version} and the frameworks into {venv}")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, f"mlflow=={version}", "-r", str(REQUIREMENTS)], check=True)
        stamp.touch()
    return MlflowEnv(python=python)


if __name__ == "__main__":
    print(prepare().python)
