"""Operator scale benchmark: ``benchmarks/operator/run [--quick] [options]``.

Starts a private cluster (``hack/cluster`` in a temporary directory, free ports, no
real node, an audit log of the operator's requests, extra kwok nodes for the load),
then for each N: applies N endpoints at once directly (the limit: the same children
that ``modelport.render.render`` gives, server-side applied by this script), and then
through ``modelport operator``; cleans up between rounds; tears everything down at the
end, on an error and on Ctrl-C. Prints a table and writes JSON (see README.md).
"""

from __future__ import annotations

import argparse
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
from pathlib import Path
from typing import Any

from benchmarks.operator import cluster as cluster_mod
from benchmarks.operator import workload
from benchmarks.operator.api import Api
from benchmarks.operator.audit import AuditLog
from benchmarks.operator.report import render, summarize
from benchmarks.operator.rounds import Context, cleanup, direct_round, operator_round
from modelport.settings import from_env

REPO = Path(__file__).resolve().parents[2]
CONTROLLER_QPS = 200.0
"""Client rate limit given to kube-controller-manager and kube-scheduler (see cluster.up)."""
BUDGET_S = 25 * 60
"""Whole-run budget: rounds of the smaller sizes that would not fit are skipped (and
reported so); the largest size's two rounds always run."""


def log(message: str) -> None:
    """Progress goes to stderr; the table goes to stdout."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="benchmarks/operator/run", description=(__doc__ or "").split("\n\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="N = 20, 50; 10 s settle, 20 s steady")
    p.add_argument("--sizes", help="comma-separated N (default 100,500,1000; quick 20,50)")
    p.add_argument("--namespaces", type=int, default=4, help="namespaces per round (default 4)")
    p.add_argument(
        "--threads",
        type=int,
        default=min(32, (os.cpu_count() or 1) + 4),
        help="parallel applies of the benchmark itself (default: Kopf's thread pool size)",
    )
    p.add_argument(
        "--settle",
        type=float,
        help="after READY, wait until the operator is quiet for 20 s, at most this long "
        "(default 45; quick 20)",
    )
    p.add_argument(
        "--steady",
        type=float,
        help="then the steady window, s, for the largest N; a third for the others "
        "(default 60; quick 20)",
    )
    p.add_argument(
        "--operator-workers",
        type=int,
        default=0,
        help="what-if: the operator's reconcile workers (MODELPORT_RECONCILE_WORKERS; "
        "default: as shipped, 8)",
    )
    p.add_argument(
        "--controller-qps",
        type=float,
        default=CONTROLLER_QPS,
        help=f"client rate of kube-controller-manager and kube-scheduler (default "
        f"{CONTROLLER_QPS:g}; 0: their defaults, 20 and 50)",
    )
    p.add_argument(
        "--operator-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="what-if: an environment variable for the operator (repeatable)",
    )
    p.add_argument(
        "--memory-probe",
        action="store_true",
        help="what-if: after the steady window, the operator's live objects and RSS after "
        "malloc_trim (benchmarks/operator/memory_what_if.py)",
    )
    p.add_argument("--budget", type=float, default=BUDGET_S, help="whole-run limit, s")
    p.add_argument("--skip-direct", action="store_true", help="operator rounds only")
    p.add_argument("--profile", action="store_true", help="py-spy the operator's largest round")
    p.add_argument("--out", type=Path, help="JSON output (default benchmarks/results/...)")
    p.add_argument("--report", type=Path, help="re-print the table of a JSON result")
    args = p.parse_args(argv)
    if args.sizes is None:
        args.sizes = "20,50" if args.quick else "100,500,1000"
    args.sizes = [int(s) for s in args.sizes.split(",")]
    if args.settle is None:
        args.settle = 20.0 if args.quick else 45.0
    if args.steady is None:
        args.steady = 20.0 if args.quick else 60.0
    return args


def round_timeout(n: int) -> float:
    """How long one round may wait for readiness (generous: the machine is shared)."""
    return 90 + 0.45 * n


def estimate(rounds: list[dict[str, Any]], kind: str, n: int) -> float:
    """Seconds a round of ``kind`` and size ``n`` will likely take, scaled from the last
    round of that kind (waiting and clean-up), else a guess of 0.3 s per endpoint."""
    previous = [r for r in rounds if r["kind"] == kind]
    if not previous:
        return 0.3 * n
    last = previous[-1]
    took = (last.get("ready_s") or last.get("deployments_available_s") or 0) + last["cleanup_s"]
    return 1.2 * took * n / last["n"]


def versions(cluster: cluster_mod.Cluster) -> dict[str, Any]:
    """Kubernetes, kwok, Python, kopf and the client libraries, and the machine."""
    env_file = (REPO / "hack/versions.env").read_text()
    pinned = dict(
        line.split("=", 1) for line in env_file.splitlines() if "=" in line and line[0] != "#"
    )
    server = subprocess.run(
        [str(cluster.kubectl), "version", "-o", "json"],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    try:
        server_version = json.loads(server.stdout)["serverVersion"]["gitVersion"]
    except (ValueError, KeyError):
        server_version = "?"
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "operator/"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    return {
        "kubernetes": server_version,
        "pinned": {k.strip(): v.strip().strip('"') for k, v in pinned.items()},
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in ("kopf", "aiohttp", "pydantic", "modelport")},
        "git": commit + (" (operator/ has uncommitted changes)" if dirty else ""),
        "machine": {
            "cores": os.cpu_count(),
            "cpu": cpu,
            "memory_gib": round(
                os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1
            ),
            "kernel": platform.release(),
        },
    }


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def run(args: argparse.Namespace, partial: Path | None = None) -> dict[str, Any]:
    """Start the cluster, run the rounds, stop everything; the raw results."""
    started = time.monotonic()
    largest = max(args.sizes)
    gpus = workload.self_hosted_count(largest) * workload.SELF_HOSTED_GPUS
    cluster = cluster_mod.up(largest + 50, gpus, args.controller_qps, log)
    rounds: list[dict[str, Any]] = []
    skipped: list[str] = []
    raw: dict[str, Any] = {"rounds": rounds, "skipped": skipped}
    try:
        raw["versions"] = versions(cluster)
        admin = Api(cluster.admin)
        direct = Api(cluster.identities[cluster_mod.DIRECT_USER])
        cluster_mod.wait_api(direct)
        work = Path(tempfile.mkdtemp(prefix="modelport-opbench-logs-"))
        ctx = Context(
            cluster=cluster,
            admin=admin,
            direct=direct,
            audit=AuditLog(cluster.audit_log),
            settings=from_env({}),
            threads=args.threads,
            namespaces=args.namespaces,
            settle_s=args.settle,
            largest=largest,
            steady_s=args.steady,
            operator_workers=args.operator_workers,
            operator_env=dict(e.split("=", 1) for e in args.operator_env),
            memory_probe=args.memory_probe,
            work_dir=work,
            log=log,
        )
        profiler = None
        if args.profile:
            from benchmarks.operator import profile

            profiler = profile.Profiler.factory(largest)
        for n in args.sizes:
            plan = [] if args.skip_direct else ["direct"]
            plan.append("operator")
            for kind in plan:
                need = estimate(rounds, kind, n) + (
                    args.settle / 2 + args.steady if kind == "operator" else 0
                )
                if n != largest and time.monotonic() - started + need > args.budget:
                    skipped.append(f"{kind} n={n} (budget)")
                    log(f"skipping {kind} n={n}: it would not fit the {args.budget:.0f} s budget")
                    continue
                if kind == "direct":
                    result = direct_round(ctx, n, round_timeout(n))
                else:
                    result = operator_round(ctx, n, round_timeout(n), profiler)
                result["cleanup_s"] = round(cleanup(ctx, result["namespaces"], 240), 1)
                log(f"{kind} n={n}: cleaned up in {result['cleanup_s']} s")
                rounds.append(result)
                if partial is not None:  # what was measured survives a later failure
                    partial.write_text(json.dumps(raw, indent=1) + "\n")
        raw["work_dir"] = str(work)
    finally:
        cluster_mod.down(cluster, log)
    raw["elapsed_s"] = round(time.monotonic() - started, 1)
    return raw


def main(argv: list[str] | None = None) -> int:
    """Run, print the table, write the JSON."""
    args = parse_args(argv)

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    if args.report:
        raw = json.loads(args.report.read_text())
        raw["summary"] = summarize(raw)
        print(render(raw))
        return 0
    now = dt.datetime.now(dt.UTC)
    load = os.getloadavg()
    out = args.out or REPO / "benchmarks/results" / (
        f"operator-{now:%Y-%m-%d}{'-quick' if args.quick else ''}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = run(args, out)
    raw["date"] = now.isoformat(timespec="seconds")
    raw["load_average"] = {"start": [round(x, 2) for x in load], "end": [
        round(x, 2) for x in os.getloadavg()
    ]}  # fmt: skip
    raw["settings"] = {
        "quick": args.quick,
        "sizes": args.sizes,
        "namespaces": args.namespaces,
        "threads": args.threads,
        "operator_workers": args.operator_workers or "the default (8)",
        "operator_env": args.operator_env,
        "controller_qps": args.controller_qps,
        "settle_s": args.settle,
        "steady_s": args.steady,
        "mix": workload.MIX,
        "operator": "modelport operator defaults: resync 300 s, progress deadline 600 s, "
        "INFO logs as JSON, 8 reconcile workers; the gateways' TokenReview binding as the "
        "chart creates it",
    }
    out.write_text(json.dumps(raw, indent=1) + "\n")  # the measurements first, whatever follows
    raw["summary"] = summarize(raw)
    out.write_text(json.dumps(raw, indent=1) + "\n")
    print(render(raw))
    log(f"wrote {out} after {raw['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
