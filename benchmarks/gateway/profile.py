"""Where one gateway worker spends its CPU: py-spy samples under a wrk load.

``benchmarks/gateway/run --profile`` starts the fake upstream and a one-worker gateway,
and for each concurrency in ``--profile-connections`` drives it with wrk while py-spy
samples it. Prints the functions with the most samples (inclusive: the function and all
it calls; self: the function's own code) and writes the collapsed stacks next to the
JSON, for a flame graph. py-spy lives in a venv of its own under the bench cache.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.gateway import install
from benchmarks.gateway.measure import Settings, body, closed_loop
from benchmarks.gateway.procs import Processes, tree
from benchmarks.gateway.targets import Target, start_modelport, start_upstream, wait_ready
from modelport.gateway.upstream import KEEPALIVE_SECONDS

PY_SPY_VERSION = "0.4.3"
SAMPLE_RATE = 200


def tools_venv() -> Path:
    """A venv holding py-spy, created on first use."""
    venv = install.CACHE_DIR / "tools-venv"
    if not (venv / "bin/py-spy").exists():
        install.log(f"installing py-spy {PY_SPY_VERSION} into {venv}")
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run(
            [str(venv / "bin/pip"), "install", "--quiet", f"py-spy=={PY_SPY_VERSION}"],
            check=True,
            timeout=install.PIP_TIMEOUT_SECONDS,
        )
    return venv


def _frame(raw: str) -> str:
    # py-spy's raw format: "function (path/to/file.py:line)"; keep function and file name.
    name, _, where = raw.partition(" (")
    return f"{name} ({where.split(':')[0].rsplit('/', 1)[-1]})" if where else name


def top(collapsed: Path, n: int = 25) -> dict[str, list[tuple[str, float]]]:
    """The ``n`` functions with the most inclusive and self samples, in percent."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [_frame(f) for f in stack.split(";")]
        own[frames[-1]] += samples
        for f in set(frames):
            inclusive[f] += samples
    if not total:
        return {"inclusive": [], "self": []}
    return {
        "inclusive": [(f, round(100 * c / total, 1)) for f, c in inclusive.most_common(n)],
        "self": [(f, round(100 * c / total, 1)) for f, c in own.most_common(n)],
    }


def profile(connections: list[int], duration: float, out_dir: Path) -> dict[str, Any]:
    """Profile a one-worker gateway at each concurrency; return the top functions."""
    wrk = install.ensure_wrk()
    py_spy = tools_venv() / "bin/py-spy"
    workdir = Path(tempfile.mkdtemp(prefix="modelport-profile-"))
    procs = Processes()
    results: dict[str, Any] = {}
    try:
        upstream = start_upstream(procs, workdir, "1", 1800)
        gateway = start_modelport(procs, workdir, upstream, 1, "0")
        for t in (upstream, gateway):
            wait_ready(t, procs, body("none"))
        settings = Settings(workdir, "1", wrk)
        for c in connections:
            collapsed = out_dir / f"gateway-profile-c{c}.collapsed"
            load: dict[str, Any] = {}
            thread = threading.Thread(
                target=lambda c=c, load=load: load.update(
                    closed_loop(settings, gateway, "none", c, duration + 2)
                )
            )
            thread.start()
            time.sleep(1)
            subprocess.run(
                [
                    str(py_spy),
                    "record",
                    "--pid",
                    str(gateway.pid),
                    "--duration",
                    f"{duration:.0f}",
                    "--rate",
                    str(SAMPLE_RATE),
                    "--format",
                    "raw",
                    "--output",
                    str(collapsed),
                ],
                check=True,
                timeout=duration + 60,
                capture_output=True,
            )
            thread.join(duration + 120)
            results[f"c{c}"] = {"load": load, "top": top(collapsed), "stacks": collapsed.name}
            install.log(f"profiled c={c}: {load.get('rps')} req/s, stacks in {collapsed}")
        # A second, fresh gateway: the profiled one's pool has grown already.
        fresh = start_modelport(procs, workdir / "probe", upstream, 1, "0")
        wait_ready(fresh, procs, body("none"))
        results["pool_probe"] = pool_probe(settings, fresh, upstream.port, duration)
    finally:
        procs.stop_all()
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    return results


def upstream_connections(port: int, pids: list[int]) -> int:
    """Established TCP connections from ``pids`` to the upstream's port (their pool)."""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", "dst", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    ).stdout
    marks = tuple(f"pid={p}," for p in pids)
    return sum(1 for line in out.splitlines() if any(m in line for m in marks))


def pool_probe(
    settings: Settings, gateway: Target, upstream_port: int, duration: float
) -> dict[str, Any]:
    """Throughput at c=1 on a fresh gateway, and again after a burst at c=256 has grown
    its upstream pool: a pool whose cost grows with its size shows here as a slower c=1.
    The burst is against the 50 ms upstream, so that up to 256 upstream requests are in
    flight at once, whatever the gateway's speed. Last, the upstream connections still
    open once the gateway's keep-alive expiry has passed twice (what a burst leaves)."""
    out: dict[str, Any] = {}
    steps = (("c1_fresh", "none", 1), ("c256_burst_50ms", "delay50", 256), ("c1_after", "none", 1))
    for label, mode, c in steps:
        res = closed_loop(settings, gateway, mode, c, duration)
        out[label] = {
            "rps": res["rps"],
            "cpu_us_per_request": res["cpu_us_per_request"],
            "p50_ms": res["latency_ms"]["p50"],
            "upstream_connections_after": upstream_connections(upstream_port, tree(gateway.pid)),
        }
        time.sleep(0.5)
    time.sleep(2 * KEEPALIVE_SECONDS + 1)  # the connector reaps every KEEPALIVE_SECONDS
    out["idle_after_expiry"] = {
        "waited_s": 2 * KEEPALIVE_SECONDS + 1,
        "upstream_connections_after": upstream_connections(upstream_port, tree(gateway.pid)),
    }
    install.log(f"pool probe: {out}")
    return out


def render(results: dict[str, Any]) -> str:
    """The top functions per concurrency, as text."""
    lines: list[str] = []
    probe = results.get("pool_probe")
    if probe:
        lines.append("== upstream pool probe (gateway, 1 worker) ==")
        for label, r in probe.items():
            if "rps" not in r:
                lines.append(
                    f"{label:<16} after {r['waited_s']:g} s idle: "
                    f"{r['upstream_connections_after']} upstream connections"
                )
                continue
            lines.append(
                f"{label:<16} {r['rps']:>8.1f} req/s  {r['cpu_us_per_request']} CPU µs/request  "
                f"{r['upstream_connections_after']} upstream connections after"
            )
    for key, r in results.items():
        if key == "pool_probe":
            continue
        load = r["load"]
        lines.append(
            f"\n== gateway, 1 worker, wrk {key}: {load.get('rps')} req/s, "
            f"{load.get('cpu_us_per_request')} CPU µs/request =="
        )
        for kind in ("inclusive", "self"):
            lines.append(f"-- {kind} (% of samples)")
            lines += [f"{pct:5.1f}%  {name}" for name, pct in r["top"][kind]]
    return "\n".join(lines)
