"""``--db-outage``: the gateway with usage rows and payload logging while its database is
down, under a sustained load. Prints and records, segment by segment, throughput,
latency, CPU per request, the gateway's RSS and its row counters, so that one can see
that requests go on unchanged, that memory stops growing once the writer's buffer is
full (rows are then dropped and counted), and that rows resume when the database is back.

Phases (each segment is one wrk run of ``duration`` seconds at c=16, no-delay upstream):
``up`` (1 segment), ``down`` (``segments`` segments with PostgreSQL stopped), ``back``
(2 segments after it started again). The gateway is ``modelport-tables-1w`` (pinned to
CPU 0; the upstream, wrk and PostgreSQL on CPU 1).
"""

from __future__ import annotations

import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from tests.postgres import create_database

from benchmarks.gateway import install
from benchmarks.gateway.measure import Settings, body, closed_loop
from benchmarks.gateway.procs import Processes, rss_mib
from benchmarks.gateway.targets import (
    Target,
    start_modelport,
    start_postgres,
    start_upstream,
    wait_ready,
)

CONNECTIONS = 16
_COUNTER = re.compile(
    r'^modelport_gateway_table_rows_total\{result="(\w+)",table="([\w.]+)"\} ([0-9.e+]+)$',
    re.MULTILINE,
)


def counters(target: Target) -> dict[str, float]:
    """The gateway's row counters, ``<table>:<result>`` -> value."""
    text = httpx.get(f"http://127.0.0.1:{target.port}/metrics", timeout=10).text
    return {f"{m[2]}:{m[1]}": float(m[3]) for m in _COUNTER.finditer(text)}


def segment(settings: Settings, target: Target, phase: str, duration: float) -> dict[str, Any]:
    """One wrk run, with the gateway's RSS sampled every 0.25 s while it runs."""
    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(rss_mib(target.pid))
            done.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = closed_loop(settings, target, "none", CONNECTIONS, duration)
    finally:
        done.set()
        sampler.join()
    return {
        "phase": phase,
        "rps": result["rps"],
        "errors": result["errors"],
        "p50_ms": result["latency_ms"]["p50"],
        "p99_ms": result["latency_ms"]["p99"],
        "cpu_us_per_request": result["cpu_us_per_request"],
        "rss_mib_max": max(samples, default=0.0),
        "rss_mib_end": rss_mib(target.pid),
        "rows": counters(target),
    }


def run_outage(quick: bool, duration: float, segments: int, client_cpus: str | None,
               server_cpus: str | None, wrk: str) -> dict[str, Any]:  # fmt: skip
    """Start the upstream, PostgreSQL and the gateway; run the phases; stop everything."""
    workdir = Path(tempfile.mkdtemp(prefix="modelport-outage-"))
    procs = Processes()
    postgres = start_postgres(client_cpus)
    try:
        upstream = start_upstream(procs, workdir, client_cpus, 3600.0)
        target = start_modelport(
            procs, workdir, upstream, 1, server_cpus, tables_dsn=create_database(postgres)
        )
        wait_ready(target, procs, body("none"))
        settings = Settings(workdir, client_cpus, wrk)
        rss_start = rss_mib(target.pid)
        out = [segment(settings, target, "up", duration)]
        install.log(f"up: {_line(out[-1])}")
        postgres.stop()
        for _ in range(segments):
            out.append(segment(settings, target, "down", duration))
            install.log(f"down: {_line(out[-1])}")
        postgres.start()
        for _ in range(2):
            out.append(segment(settings, target, "back", duration))
            install.log(f"back: {_line(out[-1])}")
        time.sleep(3)  # the writer's backoff and the buffered rows
        final = counters(target)
        return {
            "quick": quick,
            "duration_s": duration,
            "connections": CONNECTIONS,
            "rss_mib_start": rss_start,
            "segments": out,
            "rows_final": final,
        }
    finally:
        procs.stop_all()
        postgres.close()


def _line(s: dict[str, Any]) -> str:
    rows = ", ".join(f"{k}={v:.0f}" for k, v in sorted(s["rows"].items()))
    return (
        f"{s['rps']:.0f} req/s, errors {s['errors']}, p50 {s['p50_ms']:.2f} ms, p99 "
        f"{s['p99_ms']:.2f} ms, {s['cpu_us_per_request']} µs/req, RSS max "
        f"{s['rss_mib_max']} MiB; {rows}"
    )


def render(result: dict[str, Any]) -> str:
    """The segments as a table."""
    lines = [
        f"Gateway with usage rows and payload logging, PostgreSQL stopped during 'down' "
        f"(wrk c={result['connections']}, {result['duration_s']:g} s a segment; RSS at "
        f"start {result['rss_mib_start']} MiB)",
        "",
        "| phase | req/s | errors | p50 ms | p99 ms | CPU µs/req | RSS MiB max | usage rows "
        "written | usage dropped | payload rows written | payload dropped |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for s in result["segments"]:
        rows = s["rows"]
        lines.append(
            f"| {s['phase']} | {s['rps']:,.0f} | {s['errors']} | {s['p50_ms']:.2f} | "
            f"{s['p99_ms']:.2f} | {s['cpu_us_per_request']} | {s['rss_mib_max']} | "
            f"{rows.get('modelport_usage:written', 0):,.0f} | "
            f"{rows.get('modelport_usage:dropped_queue_full', 0):,.0f} | "
            f"{rows.get('bench_payload:written', 0):,.0f} | "
            f"{rows.get('bench_payload:dropped_queue_full', 0):,.0f} |"
        )
    final = result["rows_final"]
    lines.append("")
    lines.append("at the end: " + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(final.items())))
    return "\n".join(lines)
