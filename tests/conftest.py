"""Fixtures shared by every tier.

Tests that need Kubernetes carry `@pytest.mark.cluster` and take the `cluster`
fixture (one real control plane for the whole session) and, usually, the
`namespace` fixture (a fresh namespace per test, deleted afterwards).

The cluster is the one `KUBECONFIG` points at when it answers, else the one
`hack/cluster up` already runs for this checkout; otherwise the session starts
one with `hack/cluster up` and stops it with `hack/cluster down` at its end.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
HACK = ROOT / "hack"


class KubectlError(RuntimeError):
    """kubectl failed; the message holds its stderr."""


@dataclass(frozen=True)
class Cluster:
    """A running control plane: its kubeconfig and a way to drive it."""

    kubeconfig: Path
    tools: Path  # directory holding the pinned kubectl and helm

    @property
    def env(self) -> dict[str, str]:
        """The environment for a subprocess that talks to this cluster."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.tools}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against this cluster and capture its output.

        With `check`, a failure raises an error that carries kubectl's stderr,
        so the test report says why.
        """
        done = subprocess.run(
            [str(self.tools / "kubectl"), *args],
            input=input,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise KubectlError(f"kubectl {' '.join(args)} exited {done.returncode}: {done.stderr}")
        return done

    def api_client(self) -> Any:
        """A `kubernetes` ApiClient configured from this cluster's kubeconfig."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))


def _answers(kubeconfig: Path, kubectl: Path) -> bool:
    probe = subprocess.run(
        [str(kubectl), "--kubeconfig", str(kubeconfig), "get", "--raw", "/readyz"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    return probe.returncode == 0


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The session's Kubernetes control plane (reused, or started and stopped)."""
    tools = Path(
        subprocess.run(
            [str(HACK / "install-tools")], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    given = os.environ.get("KUBECONFIG")
    if given and Path(given).is_file() and _answers(Path(given), tools / "kubectl"):
        yield Cluster(Path(given), tools)
        return

    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    kubeconfig = Path(
        subprocess.run(
            [str(HACK / "cluster"), "kubeconfig"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # A cluster that `hack/cluster up` started earlier is used and left running;
    # only a cluster this session starts is stopped at its end.
    if kubeconfig.is_file() and _answers(kubeconfig, tools / "kubectl"):
        yield Cluster(kubeconfig, tools)
        return
    subprocess.run([str(HACK / "cluster"), "up"], env=env, check=True, stdout=subprocess.DEVNULL)
    try:
        yield Cluster(kubeconfig, tools)
    finally:
        if not os.environ.get("MODELPORT_KEEP_CLUSTER"):
            subprocess.run([str(HACK / "cluster"), "down"], env=env, check=False)


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace whose `default` ServiceAccount exists; deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", name)
    deadline = time.monotonic() + 60
    # Pods are refused until the ServiceAccount controller has made `default`.
    while cluster.kubectl("-n", name, "get", "sa", "default", check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"namespace {name}: ServiceAccount 'default' never appeared")
        time.sleep(0.2)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
