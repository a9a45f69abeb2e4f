"""`hack/cluster up` and `down` on a second, private cluster: nothing is left behind."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import HACK

pytestmark = pytest.mark.cluster

# Ports of their own, so this runs beside the session's cluster.
PRIVATE_PORTS = {
    "MODELPORT_ETCD_PORT": 22379,
    "MODELPORT_ETCD_PEER_PORT": 22380,
    "MODELPORT_APISERVER_PORT": 26443,
    "MODELPORT_KCM_PORT": 30257,
    "MODELPORT_SCHEDULER_PORT": 30259,
    "MODELPORT_KWOK_PORT": 30247,
}


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_down_leaves_no_process_or_port_behind(tmp_path: Path) -> None:
    state = tmp_path / "cluster"
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env.update({k: str(v) for k, v in PRIVATE_PORTS.items()})
    env["MODELPORT_CLUSTER_DIR"] = str(state)

    def cluster(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(HACK / "cluster"), *args], env=env, capture_output=True, text=True, timeout=300
        )

    assert cluster("up").returncode == 0
    pids = [int(p.read_text()) for p in state.glob("*.pid")]
    assert len(pids) == 5
    assert all(listening(p) for p in PRIVATE_PORTS.values() if p != 30247)
    # A second `up` reuses what runs.
    again = cluster("up")
    assert again.returncode == 0
    assert "already running" in again.stderr

    assert cluster("down").returncode == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} survived `down`"
    assert not [p for p in PRIVATE_PORTS.values() if listening(p)]
    assert not state.exists()
    assert cluster("status").returncode == 3
