"""Gateway overhead benchmark: ``benchmarks/gateway/run [--quick] [options]``.

Starts a fake upstream, the minimal forwarder, the Modelport gateway (1 worker, then one
per core) and LiteLLM's proxy (the same worker counts), all on loopback, and drives them
in interleaved rounds: every point (a mode and a load) is measured on every target, one
target after the other, before the next point, and the target order rotates each round.
Neighbours on a shared machine slow whatever runs while they are busy; interleaving
spreads that over all targets, and each figure is the best of its rounds (a disturbance
only ever makes a figure worse). Prints tables and writes JSON (see README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.postgres import PostgresServer, create_database

from benchmarks.gateway import install, outage, profile
from benchmarks.gateway.measure import Settings, body, closed_loop, open_loop
from benchmarks.gateway.procs import Processes, rss_mib
from benchmarks.gateway.report import render, summarize
from benchmarks.gateway.targets import (
    Target,
    start_forwarder,
    start_litellm,
    start_modelport,
    start_postgres,
    start_redis,
    start_upstream,
    wait_ready,
)

REPO = Path(__file__).resolve().parents[2]
P99_LIMIT_MS = 10.0
OPEN_LOOP_FIRST_FRACTION = 0.25
"""The open-loop search starts at this fraction of the target's closed-loop peak: a p99 of
10 ms is far below the latency at saturation, and neighbours' bursts eat into it."""


@dataclass(frozen=True)
class Point:
    """A load: the upstream mode, and wrk's connections (closed loop)."""

    mode: str
    connections: int

    @property
    def key(self) -> str:
        """A stable name, e.g. ``none-c64``."""
        return f"{self.mode}-c{self.connections}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="benchmarks/gateway/run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: 1 round, short points")
    p.add_argument("--duration", type=float, help="seconds per point (default 4; quick 1)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 2; quick 1)")
    p.add_argument(
        "--open-steps", type=int, help="open-loop rate steps per round (default 4; quick 2)"
    )
    p.add_argument(
        "--max-rate", type=float, default=12000, help="cap of the Python open-loop generator"
    )
    p.add_argument(
        "--targets",
        default="direct,forwarder,modelport-1w,modelport-Nw,litellm-1w,litellm-Nw",
        help="comma-separated subset (N = the number of cores); also modelport-apikey-1w and "
        "modelport-apikey-Nw: the gateway with API-key caller auth on; modelport-ratelimit-1w "
        "and -Nw: that, plus a per-user calls limit counted in a redis-server the run starts; "
        "modelport-tables-1w and -Nw: auth off, usage rows and payload logging to a "
        "PostgreSQL the run starts; "
        "modelport-pii-1w and -Nw: caller auth off, guardrails' PII MASK on input and output; "
        "modelport-traced-1w and -Nw: caller auth off, every request traced and its spans "
        "exported over OTLP (to a collector that drops them)",
    )
    p.add_argument(
        "--points",
        help="comma-separated subset of the closed-loop points, e.g. none-c1,sse-c64 "
        "(default: all)",
    )
    p.add_argument(
        "--report",
        type=Path,
        metavar="JSON",
        help="measure nothing: print the tables of an earlier run's JSON (summary "
        "recomputed; with --out, also written there)",
    )
    p.add_argument(
        "--litellm-version",
        default=install.LITELLM_VERSION,
        help=f"LiteLLM release to compare with (default {install.LITELLM_VERSION}; "
        "1.107.0 is refused)",
    )
    p.add_argument(
        "--baseline",
        metavar="REF",
        help="also offer targets baseline-1w and baseline-Nw: the gateway as of git REF "
        "(its operator/ tree exported, on PYTHONPATH, with this venv's packages), to "
        "compare a change with what it replaces in the same run",
    )
    p.add_argument("--out", type=Path, help="JSON output (default benchmarks/results/...)")
    p.add_argument("--keep-workdir", action="store_true", help="keep configs and server logs")
    p.add_argument(
        "--profile",
        action="store_true",
        help="instead of the comparison: py-spy profile of a 1-worker gateway under wrk",
    )
    p.add_argument(
        "--db-outage",
        action="store_true",
        help="instead of the comparison: the gateway with usage rows and payload logging "
        "under load while its PostgreSQL is stopped (RSS, drops, latency; see outage.py)",
    )
    p.add_argument(
        "--outage-segments",
        type=int,
        help="segments of load while the database is down (default 8; quick 3)",
    )
    p.add_argument(
        "--profile-connections",
        default="1,64",
        help="wrk concurrencies to profile at (default 1,64)",
    )
    args = p.parse_args(argv)
    if args.duration is None:
        args.duration = 1.0 if args.quick else 4.0
    if args.rounds is None:
        args.rounds = 1 if args.quick else 2
    if args.open_steps is None:
        args.open_steps = 2 if args.quick else 4
    if any(t.startswith("baseline-") for t in args.targets.split(",")) and not args.baseline:
        p.error("the baseline-* targets need --baseline REF")
    if not (0.5 <= args.duration <= 60 and 1 <= args.rounds <= 10 and 0 <= args.open_steps <= 6):
        p.error("--duration must be in [0.5, 60], --rounds in [1, 10], --open-steps in [0, 6]")
    return args


def points(quick: bool) -> list[Point]:
    """The closed-loop points, in the order they run within a round."""
    if quick:
        return [Point("none", 1), Point("none", 64), Point("delay50", 64), Point("sse", 16)]
    return [
        Point("none", 1),
        Point("none", 16),
        Point("none", 64),
        Point("none", 256),
        Point("delay50", 1),
        Point("delay50", 256),
        Point("sse", 64),
    ]


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, ValueError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "memory_mib": mem,
        "kernel": platform.release(),
        "os": platform.platform(),
        "loadavg_start": os.getloadavg(),
    }


def versions(wrk: str, litellm_venv: Path | None) -> dict[str, str]:
    """Versions of everything measured or measuring."""

    def dist(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "absent"

    out = {
        "python": platform.python_version(),
        "modelport": dist("modelport"),
        "uvicorn": dist("uvicorn"),
        "uvloop": dist("uvloop"),
        "httptools": dist("httptools"),
        "httpx": dist("httpx"),
        "httpcore": dist("httpcore"),
        "aiohttp": dist("aiohttp"),
        "anyio": dist("anyio"),
        "orjson": dist("orjson"),
        "redis": dist("redis"),
        "hiredis": dist("hiredis"),
    }
    git = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    out["modelport_commit"] = git.stdout.strip() or "unknown"
    wrk_v = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False, timeout=30)
    out["wrk"] = (wrk_v.stdout or wrk_v.stderr).splitlines()[0].strip()
    if litellm_venv is not None:
        code = (
            "import importlib.metadata as m, platform; "
            "print(platform.python_version(), m.version('litellm'), m.version('uvicorn'))"
        )
        got = subprocess.run(
            [str(litellm_venv / "bin/python"), "-c", code],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout.split()
        out["litellm_python"], out["litellm"], out["litellm_uvicorn"] = got
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start everything, measure, stop everything; return the raw results."""
    cores = os.cpu_count() or 1
    wanted = [t.replace("-Nw", f"-{cores}w") for t in args.targets.split(",")]
    if cores < 2:
        wanted = [t for t in wanted if not t.endswith(f"-{cores}w") or t.endswith("-1w")]
    wanted = list(dict.fromkeys(wanted))
    server_cpus, client_cpus = ("0", "1") if cores >= 2 else (None, None)
    wrk = install.ensure_wrk()
    venv = (
        install.litellm_venv(args.litellm_version)
        if any(t.startswith("litellm") for t in wanted)
        else None
    )
    info = {"machine": machine(), "versions": versions(wrk, venv)}
    workdir = Path(tempfile.mkdtemp(prefix="modelport-bench-"))
    procs = Processes()
    budget = 3600.0  # every server exits by itself after this, whatever happens to us
    postgres: list[PostgresServer] = []

    def tables_database() -> str:
        """A fresh database for a modelport-tables target (one server for all of them)."""
        if not postgres:
            postgres.append(start_postgres(client_cpus))
            info["versions"]["postgresql"] = postgres[0].bin.parent.name
        return create_database(postgres[0])

    try:
        upstream = start_upstream(procs, workdir, client_cpus, budget)
        targets: list[Target] = [upstream]
        starters: dict[str, Callable[[], Target]] = {
            "forwarder": lambda: start_forwarder(procs, workdir, upstream, server_cpus, budget),
        }
        baseline = export_baseline(args.baseline, workdir) if args.baseline else None
        store = (
            start_redis(procs, workdir, client_cpus, budget)
            if any(t.startswith("modelport-ratelimit") for t in wanted)
            else None
        )
        if baseline is not None:
            info["versions"]["baseline"] = baseline[1]
        for w in sorted({1, cores}):
            cpus = server_cpus if w == 1 else None
            starters[f"modelport-{w}w"] = lambda w=w, cpus=cpus: start_modelport(
                procs, workdir, upstream, w, cpus
            )
            starters[f"modelport-apikey-{w}w"] = lambda w=w, cpus=cpus: start_modelport(
                procs, workdir, upstream, w, cpus, api_key=True
            )
            starters[f"modelport-tables-{w}w"] = lambda w=w, cpus=cpus: start_modelport(
                procs, workdir, upstream, w, cpus, tables_dsn=tables_database()
            )
            starters[f"modelport-pii-{w}w"] = lambda w=w, cpus=cpus: start_modelport(
                procs, workdir, upstream, w, cpus, pii=True
            )
            starters[f"modelport-traced-{w}w"] = lambda w=w, cpus=cpus: start_modelport(
                procs, workdir, upstream, w, cpus, traces=True
            )
            if store is not None:
                starters[f"modelport-ratelimit-{w}w"] = lambda w=w, cpus=cpus: start_modelport(
                    procs, workdir, upstream, w, cpus, rate_limit_store=store
                )
            if baseline is not None:
                starters[f"baseline-{w}w"] = lambda w=w, cpus=cpus: start_modelport(
                    procs, workdir, upstream, w, cpus, code=baseline[0]
                )
            if venv is not None:
                starters[f"litellm-{w}w"] = lambda w=w, cpus=cpus: start_litellm(
                    procs, workdir, upstream, w, cpus, venv
                )
        for name in wanted:
            if name != "direct":
                targets.append(starters[name]())
        ready: dict[str, float] = {}
        for t in targets:
            ready[t.name] = round(wait_ready(t, procs, body("none")), 2)
            install.log(f"{t.name} ready in {ready[t.name]}s (pid {t.pid})")
        targets = [t for t in targets if t.name in wanted]
        settings = Settings(workdir, client_cpus, wrk)
        rss_before = {t.name: rss_mib(t.pid) for t in targets}
        rounds = measure_rounds(args, settings, targets)
        rss_after = {t.name: rss_mib(t.pid) for t in targets}
        return {
            **info,
            "targets": [
                {
                    "name": t.name,
                    "kind": t.kind,
                    "workers": t.workers,
                    "pinned_to_cpu0": t.pinned,
                    "ready_s": ready[t.name],
                    "rss_mib_before": rss_before[t.name],
                    "rss_mib_after": rss_after[t.name],
                }
                for t in targets
            ],
            "rounds": rounds,
        }
    finally:
        procs.stop_all()
        for server in postgres:
            server.close()
        info["machine"]["loadavg_end"] = os.getloadavg()
        if args.keep_workdir:
            install.log(f"configs and logs kept in {workdir}")
        else:
            subprocess.run(["rm", "-rf", str(workdir)], check=False)


def export_baseline(ref: str, workdir: Path) -> tuple[Path, str]:
    """Export ``operator/`` as of git ``ref``; return its directory and the commit."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    dest = workdir / "baseline"
    dest.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "operator"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True, timeout=60)
    install.log(f"baseline: the gateway as of {commit} ({ref})")
    return dest / "operator", commit


def measure_rounds(
    args: argparse.Namespace, settings: Settings, targets: list[Target]
) -> list[dict[str, Any]]:
    """Every point on every target, interleaved, ``args.rounds`` times."""
    rounds: list[dict[str, Any]] = []
    plan = points(args.quick)
    if args.points:
        wanted = args.points.split(",")
        plan = [p for p in plan if p.key in wanted] or [
            Point(k.split("-c")[0], int(k.split("-c")[1])) for k in wanted
        ]
    for r in range(args.rounds):
        order = targets[r % len(targets) :] + targets[: r % len(targets)]
        results: dict[str, dict[str, Any]] = {t.name: {} for t in targets}
        for point in plan:
            # Streams last ~1.3 s: a stream point needs a few of them back to back.
            duration = max(args.duration, 5.0) if point.mode == "sse" else args.duration
            for t in order:
                res = closed_loop(settings, t, point.mode, point.connections, duration)
                results[t.name][point.key] = res
                install.log(
                    f"round {r + 1} {point.key:<12} {t.name:<13} {res['rps']:>9.1f} req/s "
                    f"p50 {res['latency_ms']['p50']:.3f} p99 {res['latency_ms']['p99']:.3f} ms "
                    f"errors {res['errors']}"
                )
                time.sleep(0.3)
        # Open loop: a search per target for the highest rate with p99 <= 10 ms and no
        # errors. Rates are fractions of the round's closed-loop peak (or of the
        # generator's cap, when lower); the search is geometric: x/÷ 2, then √2, then 2^¼.
        bases = {
            t.name: min(
                args.max_rate,
                max(
                    (v["rps"] for k, v in results[t.name].items() if k.startswith("none-")),
                    default=1.0,
                ),
            )
            for t in targets
        }
        fraction = {t.name: OPEN_LOOP_FIRST_FRACTION for t in targets}
        factor = 2.0
        for _ in range(args.open_steps):
            for t in order:
                rate = max(1.0, fraction[t.name] * bases[t.name])
                res = open_loop(settings, t, "none", rate, args.duration)
                p99 = res["latency_ms"]["p99"]
                res["passed"] = bool(
                    res["errors"] == 0
                    and p99 is not None
                    and p99 <= P99_LIMIT_MS
                    and res["achieved"] >= 0.97 * rate
                )
                res["generator_capped"] = bases[t.name] >= args.max_rate
                results[t.name].setdefault("open", []).append(res)
                install.log(
                    f"round {r + 1} open {rate:>9.1f}/s  {t.name:<13} achieved "
                    f"{res['achieved']:>9.1f} p99 {p99} ms errors {res['errors']} "
                    f"{'PASS' if res['passed'] else 'fail'}"
                )
                # Never above 1: past the peak (or the cap) nothing more can be learnt.
                grown = fraction[t.name] * factor if res["passed"] else fraction[t.name] / factor
                fraction[t.name] = min(1.0, grown)
                time.sleep(0.3)
            factor = factor**0.5
        rounds.append({"round": r + 1, "order": [t.name for t in order], "results": results})
    return rounds


def main(argv: list[str] | None = None) -> int:
    """Run, print the tables, write the JSON."""
    args = parse_args(argv)

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    started = time.monotonic()
    now = dt.datetime.now(dt.UTC)
    if args.profile:
        return run_profile(args, now)
    if args.db_outage:
        return run_db_outage(args, now)
    if args.report:
        raw = json.loads(args.report.read_text())
        raw["summary"] = summarize(raw)
        print(render(raw))
        if args.out:  # the same measurements, summarized by this version of report.py
            args.out.write_text(json.dumps(raw, indent=1) + "\n")
        return 0
    raw = run(args)
    raw["date"] = now.isoformat(timespec="seconds")
    raw["settings"] = {
        "quick": args.quick,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "open_steps": args.open_steps,
        "max_rate": args.max_rate,
        "points": args.points or "all",
        "p99_limit_ms": P99_LIMIT_MS,
    }
    raw["summary"] = summarize(raw)
    raw["elapsed_s"] = round(time.monotonic() - started, 1)
    print(render(raw))
    out = args.out or REPO / "benchmarks/results" / (
        f"gateway-{now:%Y-%m-%d}{'-quick' if args.quick else ''}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(raw, indent=1) + "\n")
    install.log(f"wrote {out} after {raw['elapsed_s']}s")
    return 0


def run_profile(args: argparse.Namespace, now: dt.datetime) -> int:
    """The --profile mode: top functions of a 1-worker gateway, and collapsed stacks."""
    out = args.out or REPO / "benchmarks/results" / f"gateway-profile-{now:%Y-%m-%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    connections = [int(c) for c in args.profile_connections.split(",")]
    results = profile.profile(connections, max(args.duration, 5.0), out.parent)
    print(profile.render(results))
    out.write_text(json.dumps({"date": now.isoformat(timespec="seconds"), **results}, indent=1))
    install.log(f"wrote {out}")
    return 0


def run_db_outage(args: argparse.Namespace, now: dt.datetime) -> int:
    """The --db-outage mode (see outage.py)."""
    cores = os.cpu_count() or 1
    server_cpus, client_cpus = ("0", "1") if cores >= 2 else (None, None)
    segments = args.outage_segments or (3 if args.quick else 8)
    duration = max(args.duration, 1.0 if args.quick else 5.0)
    result = outage.run_outage(
        args.quick, duration, segments, client_cpus, server_cpus, install.ensure_wrk()
    )
    print(outage.render(result))
    name = f"gateway-outage-{now:%Y-%m-%d}{'-quick' if args.quick else ''}.json"
    out = args.out or REPO / "benchmarks/results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": now.isoformat(timespec="seconds"), **result}, indent=1))
    install.log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
