"""What the benchmark needs besides the project's own venv, installed on first use.

- ``wrk`` (the closed-loop generator) from Debian with apt-get.
- LiteLLM's proxy, pinned, in a virtual environment of its own outside the repository so
  it can never touch Modelport's dependencies. ``pip install 'litellm[proxy]==X'`` fails
  on this workplace's registry mirror: the wheel's metadata pins a ``certifi`` and a
  ``litellm-proxy-extras`` newer than the mirror has. So the wheel is downloaded alone,
  its requirements (the base ones plus the ``proxy`` extra) are written out with those
  two pins relaxed, installed, and then the wheel is installed with ``--no-deps``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

LITELLM_VERSION = "1.109.1"
"""The pinned LiteLLM release. Never 1.107.0: that release was compromised."""
FORBIDDEN_LITELLM_VERSIONS = frozenset({"1.107.0"})
RELAXED_PINS = ("certifi", "litellm-proxy-extras")
"""Requirements whose exact/minimum pins the registry mirror cannot satisfy."""
CACHE_DIR = Path(os.environ.get("MODELPORT_BENCH_CACHE", Path.home() / ".cache/modelport/bench"))
PIP_TIMEOUT_SECONDS = 900


def log(message: str) -> None:
    """Progress goes to stderr; the table goes to stdout."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def ensure_wrk() -> str:
    """The path of ``wrk``, installing Debian's package when it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    log("installing wrk from Debian (apt-get)")
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*prefix, "apt-get", "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(
        [*prefix, "apt-get", "install", "-y", "-qq", "wrk"],
        check=True,
        env=env,
        timeout=600,
        stdout=subprocess.DEVNULL,
    )
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("apt-get installed wrk but it is not on PATH")
    return found


def litellm_venv(version: str = LITELLM_VERSION) -> Path:
    """The venv holding LiteLLM's proxy at ``version``, created when missing."""
    if version in FORBIDDEN_LITELLM_VERSIONS:
        raise ValueError(f"LiteLLM {version} is a compromised release; choose another version")
    venv = CACHE_DIR / f"litellm-{version}-venv"
    stamp = venv / ".installed"
    if stamp.exists():
        return venv
    log(f"installing LiteLLM {version} into {venv} (once; a few minutes)")
    if venv.exists():
        shutil.rmtree(venv)
    # The base interpreter, not the project's venv: the two environments share nothing.
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin/python"), "-m", "pip", "--quiet", "--disable-pip-version-check"]
    wheels = CACHE_DIR / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [*pip, "download", "--no-deps", "-d", str(wheels), f"litellm=={version}"],
        check=True,
        timeout=PIP_TIMEOUT_SECONDS,
    )
    wheel = next(wheels.glob(f"litellm-{version}-*.whl"))
    requirements = venv / "requirements.txt"
    requirements.write_text("\n".join(proxy_requirements(wheel)) + "\n")
    subprocess.run(
        [*pip, "install", "-r", str(requirements)], check=True, timeout=PIP_TIMEOUT_SECONDS
    )
    subprocess.run(
        [*pip, "install", "--no-deps", str(wheel)], check=True, timeout=PIP_TIMEOUT_SECONDS
    )
    installed = subprocess.run(
        [
            str(venv / "bin/python"),
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    if installed != version:
        raise RuntimeError(f"expected LiteLLM {version} in {venv}, found {installed}")
    stamp.write_text(version + "\n")
    return venv


_EXTRA = re.compile(r"""extra\s*==\s*["']([\w-]+)["']""")


def proxy_requirements(wheel: Path) -> list[str]:
    """The wheel's base requirements plus its ``proxy`` extra, two pins relaxed."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode()
    out: list[str] = []
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        spec, _, marker = line.removeprefix("Requires-Dist:").strip().partition(";")
        marker = marker.strip()
        extras = _EXTRA.findall(marker)
        if extras and extras != ["proxy"]:
            continue
        # Drop the extra's clause; whatever else the marker says (python version) stays.
        marker = re.sub(r"\s*and\s+" + _EXTRA.pattern, "", marker)
        marker = re.sub(_EXTRA.pattern + r"\s*(and\s+)?", "", marker).strip()
        project = re.split(r"[\s<>=!~\[(]", spec.strip(), maxsplit=1)[0]
        if project.lower() in RELAXED_PINS:
            spec = project
        out.append(f"{spec.strip()} ; {marker}" if marker else spec.strip())
    return out
