"""`hack/cluster up` removes a real node whose processes were all killed without
`hack/cluster down`: its network namespace, host link and routes survive such a
kill, and its routes to the Service range would keep the new node from routing
ClusterIPs. A node that still has a process is left alone.

These build a node's leftovers for real (a network namespace kept by a bind
mount, a veth pair, a host route) on a documentation-only range, so they need
root and the `ip`, `unshare` and `nsenter` tools; they skip elsewhere."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import HACK

ROUTED = "198.51.100.0/24"  # TEST-NET-2: never a real destination
LINK_HOST, LINK_NODE = "203.0.113.253", "203.0.113.254"  # TEST-NET-3, a /30


def _load_realnode() -> ModuleType:
    spec = importlib.util.spec_from_file_location("realnode", HACK / "node" / "realnode.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("realnode", module)
    spec.loader.exec_module(module)
    return module


realnode = _load_realnode()

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "unshare", "nsenter")),
    reason="needs root and ip, unshare, nsenter",
)


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def routes() -> str:
    return sh("ip", "-4", "route", "show")


def leftover_node() -> Path:
    """What a killed node leaves: its data directory with a bound network namespace,
    the host end of its veth, and a host route through it."""
    nid = uuid.uuid4().hex[:10]
    data = Path("/var/lib/modelport") / nid
    data.mkdir(parents=True)
    netns = data / "netns"
    netns.touch()
    sh("unshare", f"--net={netns}", "true")
    host_veth, host_ip, node_ip = f"mph{nid[:8]}", LINK_HOST, LINK_NODE
    inside = ("nsenter", f"--net={netns}", "--")
    sh(*inside, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", host_veth)
    sh(*inside, "ip", "link", "set", host_veth, "netns", str(os.getpid()))
    sh("ip", "addr", "add", f"{host_ip}/30", "dev", host_veth)
    sh("ip", "link", "set", host_veth, "up")
    sh(*inside, "ip", "addr", "add", f"{node_ip}/30", "dev", "eth0")
    sh(*inside, "ip", "link", "set", "eth0", "up")
    sh("ip", "route", "add", ROUTED, "via", node_ip, "dev", host_veth)
    old = time.time() - 3600
    os.utime(data, (old, old))
    return data


@pytest.fixture
def cleanup() -> Iterator[list[Path]]:
    made: list[Path] = []
    yield made
    for data in made:
        subprocess.run(["ip", "link", "delete", f"mph{data.name[:8]}"], capture_output=True)
        subprocess.run(["umount", str(data / "netns")], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def test_an_abandoned_node_is_removed_with_its_link_and_routes(cleanup: list[Path]) -> None:
    data = leftover_node()
    cleanup.append(data)
    assert ROUTED in routes()

    removed = realnode.reclaim_abandoned(keep="none", min_age=60)

    assert data.name in removed
    assert ROUTED not in routes()
    assert not Path(f"/sys/class/net/mph{data.name[:8]}").exists()
    assert not data.exists()


def test_a_node_with_a_live_process_or_a_young_one_is_kept(cleanup: list[Path]) -> None:
    data = leftover_node()
    cleanup.append(data)
    inside = subprocess.Popen(["nsenter", f"--net={data / 'netns'}", "--", "sleep", "60"])
    try:
        time.sleep(0.2)  # nsenter has entered the namespace and exec'd sleep
        assert data.name not in realnode.reclaim_abandoned(keep="none", min_age=60)
        assert ROUTED in routes()
    finally:
        inside.kill()
        inside.wait()
    # Its process gone, but set up moments ago: `up` may be building it right now.
    now = time.time()
    os.utime(data, (now, now))
    assert data.name not in realnode.reclaim_abandoned(keep="none", min_age=60)
    assert ROUTED in routes()
    # The node `up` is building keeps itself.
    old = now - 3600
    os.utime(data, (old, old))
    assert data.name not in realnode.reclaim_abandoned(keep=data.name, min_age=60)
    assert data.name in realnode.reclaim_abandoned(keep="none", min_age=60)
    assert ROUTED not in routes()
