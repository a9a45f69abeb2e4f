"""One measurement: a load against a target, with the target's CPU time from /proc.

Closed-loop points use wrk (``-c N`` connections, each sending its next request when the
last answer arrived); open-loop points use :mod:`benchmarks.gateway.loadgen` at a fixed
rate. Both run pinned to the clients' CPU when there is one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.gateway.procs import cpu_seconds
from benchmarks.gateway.targets import CHAT_PATH, Target, taskset

STREAM_CHUNKS = 65
"""Events a streamed answer carries besides [DONE]: 64 content chunks and a usage chunk."""

BODIES = {
    "none": {"model": "fast", "messages": [{"role": "user", "content": "Say hello."}]},
    "delay50": {"model": "delay50", "messages": [{"role": "user", "content": "Say hello."}]},
    "sse": {
        "model": "fast",
        "messages": [{"role": "user", "content": "Say hello."}],
        "stream": True,
        "stream_options": {"include_usage": True},
    },
}

_WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
"""


def body(mode: str) -> bytes:
    """The request body of a mode, as compact JSON."""
    return json.dumps(BODIES[mode], separators=(",", ":")).encode()


def wrk_script(workdir: Path, target: Target, mode: str) -> Path:
    """A wrk Lua script that POSTs the mode's body and prints a JSON summary."""
    path = workdir / f"wrk-{target.name}-{mode}.lua"
    if not path.exists():
        lines = [
            'wrk.method = "POST"',
            f"wrk.body = [[{body(mode).decode()}]]",
            'wrk.headers["Content-Type"] = "application/json"',
        ]
        for h in target.headers:
            name, _, value = h.partition(":")
            lines.append(f'wrk.headers["{name}"] = "{value.strip()}"')
        path.write_text("\n".join(lines) + "\n" + _WRK_DONE)
    return path


@dataclass
class Settings:
    """What every measurement shares."""

    workdir: Path
    client_cpus: str | None
    wrk: str
    timeout: float = 30.0


def closed_loop(
    settings: Settings, target: Target, mode: str, connections: int, duration: float
) -> dict[str, Any]:
    """wrk with ``connections`` connections for ``duration`` seconds."""
    script = wrk_script(settings.workdir, target, mode)
    argv = [
        *taskset(settings.client_cpus),
        settings.wrk,
        "-t1",
        f"-c{connections}",
        f"-d{duration:g}s",
        f"--timeout={settings.timeout:g}s",
        "-s",
        str(script),
        target.url,
    ]
    cpu_before = cpu_seconds(target.pid)
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    window: tuple[float, float, float] | None = None
    try:
        if mode == "sse" and duration >= 3:
            # Streams last ~1.3 s: CPU is sampled in a steady window, away from ramp-up
            # and from the streams wrk cuts off at the end.
            time.sleep(1.5)
            a, ta = cpu_seconds(target.pid), time.monotonic()
            time.sleep(max(0.5, duration - 2.0))
            b, tb = cpu_seconds(target.pid), time.monotonic()
            window = (b - a, tb - ta, 0.0)
        out, _ = proc.communicate(timeout=duration + settings.timeout + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wall = time.monotonic() - started
    cpu = cpu_seconds(target.pid) - cpu_before
    text = out.decode(errors="replace")
    line = next((ln for ln in text.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{text[-2000:]}")
    w = json.loads(line.removeprefix("BENCH_JSON "))
    seconds = w["duration_us"] / 1e6
    errors = w["connect"] + w["read"] + w["write"] + w["status"] + w["timeout"]
    ok = max(0, w["requests"] - w["status"])
    result: dict[str, Any] = {
        "tool": "wrk",
        "connections": connections,
        "seconds": round(seconds, 3),
        "ok": ok,
        "errors": errors,
        "rps": round(ok / seconds, 1) if seconds else 0.0,
        "latency_ms": {k: round(w[k] / 1000, 3) for k in ("p50", "p90", "p99", "p999", "max")}
        | {"mean": round(w["mean"] / 1000, 3)},
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "cpu_us_per_request": round(cpu / ok * 1e6, 1) if ok else None,
    }
    if mode == "sse" and window is not None and w["mean"] > 0:
        # Little's law: chunks/s = streams in flight x chunks per stream / stream duration.
        chunk_rate = connections * STREAM_CHUNKS / (w["mean"] / 1e6)
        cpu_w, secs_w, _ = window
        result["chunks_per_s"] = round(chunk_rate, 1)
        result["cpu_us_per_chunk"] = round(cpu_w / (secs_w * chunk_rate) * 1e6, 2)
        result["cpu_util"] = round(cpu_w / secs_w, 3)
    return result


def open_loop(
    settings: Settings, target: Target, mode: str, rate: float, duration: float
) -> dict[str, Any]:
    """The open-loop generator at ``rate`` requests/s for ``duration`` seconds."""
    argv = [
        *taskset(settings.client_cpus),
        sys.executable,
        "-m",
        "benchmarks.gateway.loadgen",
        "--port",
        str(target.port),
        "--path",
        CHAT_PATH,
        "--rate",
        f"{rate:.1f}",
        "--duration",
        f"{duration:g}",
        "--body",
        body(mode).decode(),
        "--timeout",
        f"{min(settings.timeout, 10):g}",
    ]
    for h in target.headers:
        argv += ["--header", h]
    cpu_before = cpu_seconds(target.pid)
    proc = subprocess.run(
        argv,
        capture_output=True,
        timeout=duration + settings.timeout + 60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    cpu = cpu_seconds(target.pid) - cpu_before
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    result["tool"] = "loadgen"
    result["cpu_s"] = round(cpu, 3)
    ok = result["ok"]
    result["cpu_us_per_request"] = round(cpu / ok * 1e6, 1) if ok else None
    return result
