"""One round: N endpoints applied at once, through the operator or directly, timed
until everything is ready, from watches (never polling the apiserver).

- ``operator_round``: a fresh ``modelport operator`` process watches the round's
  namespaces; the benchmark applies the Secrets and endpoints; the clock stops when
  every endpoint's status says READY / NOT_UPDATING for its current generation. Then
  the steady window: nothing changes for ``steady_s`` seconds, and every request the
  operator makes in it is counted.
- ``direct_round``: no operator; the benchmark applies the same Secrets and endpoints
  and, right after each endpoint, its children as ``modelport.render.render`` gives them
  (``workload.direct_children``); the clock stops when every Deployment is available.

Both rounds use the same thread pool for their own applies and the same readiness
watches; both count the same Deployments.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.gateway.procs import Processes, cpu_seconds, free_port, rss_mib
from benchmarks.operator import workload
from benchmarks.operator.api import Api
from benchmarks.operator.audit import AuditLog, Tally, tally
from benchmarks.operator.cluster import (
    DIRECT_USER,
    OPERATOR_USER,
    OTHER_USERS,
    TOKENREVIEW_BINDING,
    Cluster,
    reset_tokenreview_binding,
)
from modelport.settings import Settings

SAMPLE_SECONDS = 0.25
QUIET_S = 20.0
"""The settle window ends once the operator has made no request for this long: longer
than the HPA controller's 15-s sync, whose status writes made the operator before issue
18 reconcile every endpoint once more after READY."""
WATCH_VERBS = frozenset({"watch"})
"""Requests that are the watches themselves (a watch is logged when it ends)."""
WRITES = re.compile(r"writes=(\d+)")


@dataclass
class Readiness:
    """What the watches saw: endpoints READY and Deployments available, and when all
    of them first were (``time.time()``)."""

    spaces: frozenset[str]
    endpoints_expected: int
    deployments_expected: int
    endpoints: dict[tuple[str, str], bool] = field(default_factory=dict)
    deployments: dict[tuple[str, str], bool] = field(default_factory=dict)
    endpoints_at: float | None = None
    deployments_at: float | None = None
    changed: threading.Condition = field(default_factory=threading.Condition)

    def on_endpoint(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata", {})
        if meta.get("namespace") not in self.spaces:
            return
        status = obj.get("status") or {}
        state = status.get("state") or {}
        ready = (
            kind != "DELETED"
            and status.get("observedGeneration") == meta.get("generation")
            and state.get("ready") == "READY"
            and state.get("configUpdate") == "NOT_UPDATING"
        )
        with self.changed:
            self.endpoints[(meta["namespace"], meta["name"])] = ready
            if self.endpoints_at is None and self._all(self.endpoints, self.endpoints_expected):
                self.endpoints_at = time.time()
            self.changed.notify_all()

    def on_deployment(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata", {})
        if meta.get("namespace") not in self.spaces:
            return
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        want = int(spec.get("replicas", 1))
        available = (
            kind != "DELETED"
            and int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 1)
            and int(status.get("updatedReplicas") or 0) >= want
            and int(status.get("availableReplicas") or 0) >= want
        )
        with self.changed:
            self.deployments[(meta["namespace"], meta["name"])] = available
            if self.deployments_at is None and self._all(
                self.deployments, self.deployments_expected
            ):
                self.deployments_at = time.time()
            self.changed.notify_all()

    @staticmethod
    def _all(seen: dict[tuple[str, str], bool], expected: int) -> bool:
        return len(seen) >= expected and sum(seen.values()) >= expected

    def wait(self, what: Callable[[], float | None], deadline: float) -> float | None:
        """Until ``what()`` is set or the monotonic ``deadline``; its value."""
        with self.changed:
            while what() is None and time.monotonic() < deadline:
                self.changed.wait(max(0.0, min(1.0, deadline - time.monotonic())))
            return what()

    def counts(self) -> dict[str, int]:
        with self.changed:
            return {
                "endpoints_ready": sum(self.endpoints.values()),
                "deployments_available": sum(self.deployments.values()),
            }


def watch_readiness(api: Api, readiness: Readiness, round_id: str) -> threading.Event:
    """Start the two watches (daemon threads); set the returned event to stop them."""
    stop = threading.Event()
    endpoints = (
        f"/apis/{workload.GROUP}/{workload.VERSION}/{workload.PLURAL}",
        {"labelSelector": f"{workload.BENCH_LABEL}={round_id}"},
        readiness.on_endpoint,
    )
    deployments = (
        "/apis/apps/v1/deployments",
        {"labelSelector": "app.kubernetes.io/managed-by=modelport"},
        readiness.on_deployment,
    )
    for path, query, handler in (endpoints, deployments):
        threading.Thread(
            target=api.watch, args=(path, query, handler, stop), daemon=True, name=f"watch {path}"
        ).start()
    return stop


class Sampler:
    """Peak RSS of a process tree, sampled every SAMPLE_SECONDS in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_mib = 0.0
        self.last_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss sampler")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.last_mib = rss_mib(self.pid)
            self.peak_mib = max(self.peak_mib, self.last_mib)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


@dataclass
class Context:
    """What every round needs."""

    cluster: Cluster
    admin: Api
    direct: Api
    audit: AuditLog
    settings: Settings
    threads: int
    namespaces: int
    settle_s: float
    largest: int
    steady_s: float
    operator_workers: int
    operator_env: dict[str, str]
    memory_probe: bool
    work_dir: Path
    log: Callable[[str], None]


def prepare(ctx: Context, round_id: str, n: int) -> tuple[list[str], list[workload.Item]]:
    """Create the round's namespaces and wait for their default ServiceAccounts (pods
    cannot be created before them, which would time the ServiceAccount controller)."""
    spaces = workload.namespaces(round_id, min(ctx.namespaces, n))
    workload.create_namespaces(ctx.admin, spaces, round_id)
    deadline = time.monotonic() + 60
    for ns in spaces:
        while ctx.admin.request("GET", f"/api/v1/namespaces/{ns}/serviceaccounts/default") is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"namespace {ns}: no default ServiceAccount after 60 s")
            time.sleep(0.2)
    return spaces, workload.items(round_id, n, spaces)


def direct_round(ctx: Context, n: int, timeout_s: float) -> dict[str, Any]:
    """The limit: see the module docstring."""
    round_id = f"direct-{n}"
    spaces, items = prepare(ctx, round_id, n)
    expected = n + workload.self_hosted_count(n)
    readiness = Readiness(frozenset(spaces), n, expected)
    stop = watch_readiness(ctx.admin, readiness, round_id)
    ctx.audit.skip()
    load = os.getloadavg()[0]
    t0 = time.time()
    deadline = time.monotonic() + timeout_s
    try:
        workload.apply_all(
            ctx.admin, items, ctx.threads, workload.direct_children(ctx.direct, ctx.settings)
        )
        applied = time.time()
        done = readiness.wait(lambda: readiness.deployments_at, deadline)
    finally:
        stop.set()
    others = ctx.audit.read([DIRECT_USER, *OTHER_USERS])
    events = others.pop(DIRECT_USER)
    ctx.audit.skip()
    end = done or time.time()
    requests = tally(events, t0, end + 1)
    result = {
        "kind": "direct",
        "n": n,
        "namespaces": spaces,
        "deployments": expected,
        "timed_out": done is None,
        "applied_s": round(applied - t0, 2),
        "deployments_available_s": round(done - t0, 2) if done else None,
        "counts_at_end": readiness.counts(),
        "requests": requests.summary(),
        "requests_per_endpoint": round(requests.requests / n, 2),
        "other_clients_to_ready": {
            user: rate(tally(ev, t0, end + 1)) for user, ev in others.items()
        },
        "load_average_1m": [round(load, 2), round(os.getloadavg()[0], 2)],
    }
    ctx.log(
        f"direct n={n}: all {expected} Deployments available in "
        f"{result['deployments_available_s']} s (applied in {result['applied_s']} s)"
    )
    return result


def operator_round(ctx: Context, n: int, timeout_s: float, profile: Any = None) -> dict[str, Any]:
    """The operator: see the module docstring."""
    round_id = f"operator-{n}"
    spaces, items = prepare(ctx, round_id, n)
    expected = n + workload.self_hosted_count(n)
    readiness = Readiness(frozenset(spaces), n, expected)
    stop = watch_readiness(ctx.admin, readiness, round_id)
    procs = Processes()
    log_path = ctx.work_dir / f"operator-{n}.log"
    ctx.audit.skip()
    try:
        started = time.time()
        proc = start_operator(ctx, procs, spaces, log_path)
        wait_watching(ctx, proc, log_path)
        startup_s = time.time() - started
        sampler = Sampler(proc.pid)
        cpu_start = cpu_seconds(proc.pid)
        rss_idle = rss_mib(proc.pid)
        profiler = profile(proc.pid, n) if profile is not None else None
        load = os.getloadavg()[0]
        t0 = time.time()
        deadline = time.monotonic() + timeout_s
        workload.apply_all(ctx.admin, items, ctx.threads)
        applied = time.time()
        ready_at = readiness.wait(lambda: readiness.endpoints_at, deadline)
        cpu_ready = cpu_seconds(proc.pid)
        if profiler is not None:
            profiler.stop()
        settle_from = time.time()
        steady_s = steady_for(ctx, n)
        if ready_at:
            quiet_at = wait_quiet(ctx.audit.path, ctx.audit.offset, QUIET_S, ctx.settle_s)
            ctx.log(
                f"operator n={n}: all READY in {ready_at - t0:.1f} s; "
                + (
                    f"quiet ({QUIET_S:.0f} s without a request) {quiet_at - settle_from:.0f} s "
                    if quiet_at
                    else f"not quiet within {ctx.settle_s:.0f} s "
                )
                + f"after; now {steady_s:.0f} s steady"
            )
        steady_from = time.time()
        cpu_settled = cpu_seconds(proc.pid)
        if ready_at:
            time.sleep(steady_s)
        steady_to = time.time()
        cpu_end = cpu_seconds(proc.pid)
        probe = probe_memory(proc.pid, log_path) if ctx.memory_probe else None
        sampler.stop()
        alive = proc.poll() is None
    finally:
        stop.set()
        procs.stop_all(grace=15)
    others = ctx.audit.read([OPERATOR_USER, *OTHER_USERS])
    events = others.pop(OPERATOR_USER)
    ctx.audit.skip()
    startup = tally(events, started, t0)
    burst = tally(events, t0, settle_from)
    settle = tally(events, settle_from, steady_from)
    steady = tally(events, steady_from, steady_to)
    steady_beyond = tally(events, steady_from, steady_to, exclude=WATCH_VERBS)
    last = tally(events, settle_from, steady_from, exclude=WATCH_VERBS).last
    minutes = max(steady_to - steady_from, 1e-9) / 60
    measured = bool(ready_at) and steady_s > 0
    result = {
        "kind": "operator",
        "n": n,
        "namespaces": spaces,
        "deployments": expected,
        "timed_out": ready_at is None,
        "operator_alive": alive,
        "operator_startup_s": round(startup_s, 2),
        "applied_s": round(applied - t0, 2),
        "ready_s": round(ready_at - t0, 2) if ready_at else None,
        "deployments_available_s": (
            round(readiness.deployments_at - t0, 2) if readiness.deployments_at else None
        ),
        "counts_at_end": readiness.counts(),
        "rss_mib": {"idle": rss_idle, "peak": sampler.peak_mib, "end": sampler.last_mib},
        "cpu_s": {
            "startup": round(cpu_start, 2),
            "to_ready": round(cpu_ready - cpu_start, 2),
            "settle": round(cpu_settled - cpu_ready, 2),
            "steady": round(cpu_end - cpu_settled, 2),
        },
        "requests": {
            "startup": startup.summary(),
            "to_ready": burst.summary(),
            "settle": settle.summary(),
            "steady": steady.summary(),
        },
        "requests_per_endpoint": round(burst.requests / n, 2),
        "writes_per_endpoint": round(burst.writes / n, 2),
        "settle_window_s": round(steady_from - settle_from, 1),
        # READY until the operator's last request (watches aside); 0: none after READY.
        "quiet_after_ready_s": (
            round(max(last - ready_at, 0.0), 1)
            if ready_at and last is not None
            else (0.0 if ready_at else None)
        ),
        "steady_window_s": round(steady_to - steady_from, 1),
        "steady_writes_per_min": round(steady.writes / minutes, 2) if measured else None,
        "steady_requests_per_min": round(steady.requests / minutes, 2) if measured else None,
        "steady_requests_beyond_watches_per_min": (
            round(steady_beyond.requests / minutes, 2) if measured else None
        ),
        "buckets_10s_after_ready": buckets(events, settle_from, steady_to, 10.0),
        "log_activity": {
            "to_ready": log_activity(log_path, t0, settle_from),
            "settle": log_activity(log_path, settle_from, steady_from),
            "steady": log_activity(log_path, steady_from, steady_to),
        },
        "other_clients_to_ready": {
            user: rate(tally(ev, t0, settle_from)) for user, ev in others.items()
        },
        "load_average_1m": [round(load, 2), round(os.getloadavg()[0], 2)],
        "log": str(log_path),
    }
    if profiler is not None:
        result["profile"] = profiler.result()
    if probe is not None:
        result["memory_probe"] = probe
    result["log_tail"] = log_path.read_text(errors="replace")[-2000:] if not alive else ""

    ctx.log(
        f"operator n={n}: READY {result['ready_s']} s, {result['requests_per_endpoint']} "
        f"requests/endpoint, peak RSS {sampler.peak_mib} MiB, writes after READY: "
        f"{settle.writes} settling, {steady.writes} steady"
    )
    return result


def probe_memory(pid: int, log_path: Path) -> dict[str, Any]:
    """Signal ``memory_what_if``'s probe and read what it wrote (at most 60 s)."""
    out = log_path.with_suffix(".probe.json")
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if out.exists() and out.stat().st_size:
            time.sleep(0.5)
            return dict(json.loads(out.read_text()))
        time.sleep(0.5)
    return {"error": "the probe wrote nothing within 60 s"}


def steady_for(ctx: Context, n: int) -> float:
    """The steady window: ``steady_s`` for the largest round, a third of it for the
    others (to fit the run in its time budget; the largest round is the one that matters)."""
    return ctx.steady_s if n >= ctx.largest else ctx.steady_s / 3


def wait_quiet(path: Path, offset: int, quiet_s: float, limit_s: float) -> float | None:
    """Until the audit log shows no request of the operator for ``quiet_s`` seconds
    (read from the file, not the API); the time it became quiet, or None after
    ``limit_s``. A request's line is written when it completes."""
    started = time.time()
    last = started
    marker = f'"username":"{OPERATOR_USER}"'.encode()
    with path.open("rb") as f:
        f.seek(offset)
        f.read()  # what came before READY does not count
        while time.time() - started < limit_s:
            chunk = f.read()
            if marker in chunk:
                last = time.time()
            if time.time() - last >= quiet_s:
                return last
            time.sleep(0.5)
    return None


def buckets(
    events: list[dict[str, Any]], start: float, end: float, width: float
) -> list[dict[str, int]]:
    """Requests and writes per ``width`` seconds from ``start``: how the tail decays."""
    out = []
    at = start
    while at < end:
        part = tally(events, at, min(at + width, end))
        out.append({"requests": part.requests, "writes": part.writes})
        at += width
    return out


def rate(t: Tally) -> dict[str, Any]:
    """Requests of one client and their mean rate over its active span."""
    span = (t.last - t.first) if t.first is not None and t.last is not None else 0.0
    return {
        "requests": t.requests,
        "writes": t.writes,
        "active_s": round(span, 1),
        "per_s": round(t.requests / span, 1) if span else None,
        "top": dict(t.by_resource.most_common(5)),
    }


def log_activity(log_path: Path, start: float, end: float) -> dict[str, Any]:
    """From the operator's JSON log, in [start, end): reconciles, the writes they
    counted, and the manager's activity: watch events by kind, and what queued reconciles
    ("queued by <kind>")."""
    reconciles = writes = 0
    triggers: Counter[str] = Counter()
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
            when = datetime.fromisoformat(entry["timestamp"]).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        if not start <= when < end:
            continue
        message = str(entry.get("message", ""))
        if message.startswith("reconciled "):
            reconciles += 1
            found = WRITES.search(message)
            writes += int(found.group(1)) if found else 0
        elif message.startswith("activity: "):
            for part in message.removeprefix("activity: ").split(";")[0].split(", "):
                what, _, count = part.rpartition(" ")
                if count.isdigit():
                    triggers[what] += int(count)
    return {"reconciles": reconciles, "kube_writes": writes, "activity": dict(triggers)}


def start_operator(ctx: Context, procs: Processes, spaces: list[str], log_path: Path) -> Any:
    """``modelport operator`` with its defaults (resync 300 s, progress deadline 600 s,
    INFO logs as JSON, 8 reconcile workers), watching ``spaces``, as the operator's own
    identity, keeping the gateways' TokenReview binding as the chart would have it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPORT_")}
    env["KUBECONFIG"] = str(ctx.cluster.kubeconfig(OPERATOR_USER))
    env["PYTHONUNBUFFERED"] = "1"
    env["MODELPORT_GATEWAY_TOKENREVIEW_BINDING"] = TOKENREVIEW_BINDING
    if ctx.operator_workers:
        env["MODELPORT_RECONCILE_WORKERS"] = str(ctx.operator_workers)
    env.update(ctx.operator_env)
    # As the image runs it: without the `kubernetes` client (see as_shipped.py).
    args = [sys.executable, "-m", "benchmarks.operator.as_shipped", "operator"]
    args += ["--log-format", "json"]
    if ctx.memory_probe:
        args[1:3] = ["-m", "benchmarks.operator.memory_what_if"]
        env["MODELPORT_BENCH_PROBE_OUT"] = str(log_path.with_suffix(".probe.json"))
    for ns in spaces:
        args += ["--namespace", ns]
    args += ["--liveness", f"http://127.0.0.1:{free_port()}/healthz"]
    return procs.start(args, log=log_path, env=env)


def wait_watching(ctx: Context, proc: Any, log_path: Path, timeout: float = 60) -> None:
    """Until the operator's watch on ServingEndpoints has started in every namespace
    (from the audit log's ResponseStarted lines)."""
    deadline = time.monotonic() + timeout
    path = ctx.audit.path
    offset = ctx.audit.offset
    needed = 1
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the operator exited while starting; its log ends:\n{tail}")
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
        started = 0
        for line in data.splitlines():
            if b'"ResponseStarted"' in line and b'"watch"' in line and b"servingendpoints" in line:
                event = json.loads(line)
                started += (event.get("user") or {}).get("username") == OPERATOR_USER
        if started >= needed:
            time.sleep(1.0)  # the other kinds' watches start alongside
            return
        time.sleep(0.2)
    raise TimeoutError("the operator did not start watching ServingEndpoints within 60 s")


def cleanup(ctx: Context, spaces: list[str], timeout_s: float) -> float:
    """Delete the namespaces and wait until they are gone, and empty the TokenReview
    binding; the seconds it took."""
    started = time.monotonic()
    workload.delete_namespaces(ctx.admin, spaces)
    reset_tokenreview_binding(ctx.cluster)
    deadline = started + timeout_s
    for ns in spaces:
        while ctx.admin.request("GET", f"/api/v1/namespaces/{ns}") is not None:
            if time.monotonic() > deadline:
                ctx.log(f"namespace {ns} still terminating after {timeout_s:.0f} s; going on")
                return time.monotonic() - started
            time.sleep(1.0)
    return time.monotonic() - started
