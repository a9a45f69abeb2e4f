"""The pinned kubectl and helm that hack/install-tools provides."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import HACK, ROOT


def tools() -> Path:
    out = subprocess.run([str(HACK / "install-tools")], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def pinned(name: str) -> str:
    for line in (HACK / "versions.env").read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1]
    raise KeyError(name)


def test_kubectl_and_helm_are_the_pinned_builds() -> None:
    bin_dir = tools()
    assert pinned("KUBECTL_LAYER_PACKAGE").replace("==", "-") in bin_dir.name
    kubectl = subprocess.run(
        [str(bin_dir / "kubectl"), "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert '"gitVersion": "v1.33.' in kubectl.stdout
    helm = subprocess.run(
        [str(bin_dir / "helm"), "version", "--short"], capture_output=True, text=True, check=True
    )
    assert helm.stdout.startswith("v4.")


def test_the_chart_lints() -> None:
    lint = subprocess.run(
        [str(tools() / "helm"), "lint", str(ROOT / "charts" / "modelport")],
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
