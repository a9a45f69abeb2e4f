"""The servers under test: how each is configured, started and addressed.

Every target is configured for the same fake upstream and the same two models: ``fast``
(answered at once, or streamed when the request asks) and ``delay50`` (answered after
50 ms). Targets with one worker are pinned to CPU 0 and the clients (wrk, the open-loop
generator) and the fake upstream to CPU 1, so that "per core" means one core; targets
with one worker per core run unpinned and share the machine with the clients.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from tests.postgres import PostgresServer

from benchmarks.gateway.procs import Processes, free_port, tree

CALLER_KEY = "bench-caller-key-not-secret-0000"
"""The API key of the ``modelport-apikey`` targets' one caller (loopback only)."""
MASTER_KEY = "sk-bench-master-key"
"""LiteLLM refuses to start without a master key; it is a loopback-only benchmark secret."""
CHAT_PATH = "/v1/chat/completions"
RATE_LIMIT_CALLS = 1_000_000_000
"""The ``modelport-ratelimit`` targets' per-user limit: counted on every request, never
reached (the API's largest)."""
READY_TIMEOUT_SECONDS = 180.0


@dataclass
class Target:
    """One server the load is sent to."""

    name: str
    kind: str  # direct | forwarder | modelport | litellm
    workers: int
    port: int
    pid: int = 0
    headers: list[str] = field(default_factory=list)
    pinned: bool = False
    log: Path | None = None

    @property
    def url(self) -> str:
        """The chat completions URL."""
        return f"http://127.0.0.1:{self.port}{CHAT_PATH}"


def taskset(cpus: str | None) -> list[str]:
    """A ``taskset`` prefix pinning a command to ``cpus`` (nothing when ``cpus`` is None)."""
    return ["taskset", "-c", cpus] if cpus else []


def start_upstream(procs: Processes, workdir: Path, cpus: str | None, lifetime: float) -> Target:
    """The fake upstream; as a target it is the direct, no-proxy limit."""
    port = free_port()
    proc = procs.start(
        [
            *taskset(cpus),
            sys.executable,
            "-m",
            "benchmarks.gateway.upstream",
            "--port",
            str(port),
            "--lifetime",
            str(lifetime),
        ],
        log=workdir / "upstream.log",
    )
    return Target(
        "direct", "direct", 1, port, proc.pid, pinned=cpus is not None, log=workdir / "upstream.log"
    )


def start_forwarder(
    procs: Processes, workdir: Path, upstream: Target, cpus: str | None, lifetime: float
) -> Target:
    """The minimal asyncio forwarder, one process."""
    port = free_port()
    proc = procs.start(
        [
            *taskset(cpus),
            sys.executable,
            "-m",
            "benchmarks.gateway.forwarder",
            "--port",
            str(port),
            "--upstream-port",
            str(upstream.port),
            "--lifetime",
            str(lifetime),
        ],
        log=workdir / "forwarder.log",
    )
    return Target(
        "forwarder",
        "forwarder",
        1,
        port,
        proc.pid,
        pinned=cpus is not None,
        log=workdir / "forwarder.log",
    )


def start_redis(procs: Processes, workdir: Path, cpus: str | None, lifetime: float) -> str:
    """A private redis-server (Debian's) for the rate-limit targets; its URL.

    Pinned with the clients and the upstream: its CPU is not the gateway's, and the
    gateway's CPU per request is what the comparison is about."""
    port = free_port()
    data = workdir / "redis"
    data.mkdir()
    procs.start(
        [
            *taskset(cpus),
            "timeout",
            str(int(lifetime)),
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data),
        ],
        log=workdir / "redis.log",
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    raise RuntimeError("redis-server did not start; hack/setup installs it")


def start_modelport(
    procs: Processes,
    workdir: Path,
    upstream: Target,
    workers: int,
    cpus: str | None,
    *,
    code: Path | None = None,
    api_key: bool = False,
    rate_limit_store: str | None = None,
    pii: bool = False,
    tables_dsn: str | None = None,
    traces: bool = False,
) -> Target:
    """``modelport gateway`` with ``workers`` uvicorn workers, self-hosted entities.

    With ``code`` (an exported ``operator/`` tree), that version of the gateway runs
    instead of the installed one, as target ``baseline-Nw``: ``PYTHONPATH`` puts it before
    the editable install, and uvicorn's worker processes inherit it. Caller auth is off
    (a gateway that knows the setting is told so), or with ``api_key`` on, as target
    ``modelport-apikey-Nw``: one API key, which the load sends. With
    ``rate_limit_store`` (a Redis URL), as target ``modelport-ratelimit-Nw``: the API-key
    caller under a per-user calls limit too high to ever refuse, counted in that Redis
    (compare it with ``modelport-apikey-Nw``: the difference is the limiter). With
    ``pii``, as target ``modelport-pii-Nw``: caller auth off, guardrails' PII MASK on input
    and output (every request and every answer, streamed chunk by chunk, is checked).
    ``tables_dsn``, as target ``modelport-tables-Nw``: auth off, usage rows and payload
    rows (every request, streams aggregated) written to the PostgreSQL at that connection
    string. With ``traces``, as target ``modelport-traced-Nw``: auth off, every request
    traced (sample ratio 1) and its spans exported over OTLP to the upstream's
    ``/v1/traces``, which accepts and drops them.
    """
    kind = (
        "baseline"
        if code
        else "modelport-ratelimit"
        if rate_limit_store
        else "modelport-apikey"
        if api_key
        else "modelport-pii"
        if pii
        else "modelport-tables"
        if tables_dsn
        else "modelport-traced"
        if traces
        else "modelport"
    )
    api_key = api_key or rate_limit_store is not None
    name = f"{kind}-{workers}w"
    base = workdir / name
    (base / "config").mkdir(parents=True)
    (base / "secrets").mkdir()
    base_url = f"http://127.0.0.1:{upstream.port}/v1"
    config = {
        "version": 1,
        "endpointName": "bench",
        "entities": [
            {
                "name": name,
                "task": "llm/v1/chat",
                "provider": "self-hosted",
                "modelName": name,
                "baseUrl": base_url,
            }
            for name in ("fast", "delay50")
        ],
        "routes": [
            {"servedEntityName": "fast", "trafficPercentage": 100},
            {"servedEntityName": "delay50", "trafficPercentage": 0},
        ],
    }
    headers = []
    if api_key:
        (base / "secrets/callers").mkdir()
        (base / "secrets/callers/bench").write_text(CALLER_KEY)
        config["aiGateway"] = {
            "auth": {"apiKeys": [{"path": "callers/bench", "principal": {"user": "bench"}}]}
        }
        if rate_limit_store is not None:
            config["aiGateway"].update(
                rateLimits=[{"key": "user", "calls": RATE_LIMIT_CALLS}],
                rateLimiting={"store": {"address": rate_limit_store}},
            )
        headers.append(f"Authorization: Bearer {CALLER_KEY}")
    elif tables_dsn:
        (base / "secrets/usage-db").mkdir()
        (base / "secrets/usage-db/dsn").write_text(tables_dsn)
        config["endpointNamespace"] = "bench"
        config["aiGateway"] = {
            "auth": {"enabled": False},
            "usageTrackingEnabled": True,
            "usageTable": {"postgresDsn": "usage-db/dsn"},
            "inferenceTable": {
                "sink": "postgres",
                "table": "bench_payload",
                "postgresDsn": "usage-db/dsn",
            },
        }
    elif _knows_auth(code):
        config["aiGateway"] = {"auth": {"enabled": False}}
    if traces:
        config["aiGateway"] = {"auth": {"enabled": False}}
        config["tracing"] = {"endpoint": f"http://127.0.0.1:{upstream.port}", "sampleRatio": 1}
    if pii:
        mask = {"pii": "MASK"}
        config["aiGateway"] = {
            "auth": {"enabled": False},
            "guardrails": {"input": mask, "output": mask},
        }
    (base / "config/gateway.json").write_text(json.dumps(config, indent=2))
    port = free_port()
    command = [sys.executable, "-m", "modelport.cli"]
    env = None
    if code is not None:
        env = {**os.environ, "PYTHONPATH": str(code)}
    proc = procs.start(
        [
            *taskset(cpus),
            *command,
            "gateway",
            "--config",
            str(base / "config"),
            "--secrets",
            str(base / "secrets"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        log=base / "gateway.log",
        env=env,
    )
    return Target(
        name,
        "modelport",
        workers,
        port,
        proc.pid,
        headers=headers,
        pinned=cpus is not None,
        log=base / "gateway.log",
    )


def start_postgres(cpus: str | None) -> PostgresServer:
    """A private PostgreSQL for the ``modelport-tables`` targets (Debian's server, a fresh
    cluster in a temporary directory), pinned with the clients so that the gateway's core
    is the gateway's: its CPU is not the gateway's cost and is not counted."""
    server = PostgresServer().start()
    if cpus:
        pid = int((server.data / "postmaster.pid").read_text().split()[0])
        # Backends fork from the postmaster later and inherit its CPU set.
        for p in tree(pid):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(p, {int(c) for c in cpus.split(",")})
    return server


def _knows_auth(code: Path | None) -> bool:
    """Whether the gateway (installed, or exported at ``code``) has caller auth, which is
    on unless its config turns it off; older versions refuse the unknown setting."""
    if code is None:
        return True
    return "class AuthConfig" in (code / "modelport" / "gatewayconfig.py").read_text()


def start_litellm(
    procs: Processes,
    workdir: Path,
    upstream: Target,
    workers: int,
    cpus: str | None,
    venv: Path,
) -> Target:
    """LiteLLM's proxy: no database, no callbacks, the local cost map, quiet logs."""
    base = workdir / f"litellm-{workers}w"
    base.mkdir(parents=True)
    api_base = f"http://127.0.0.1:{upstream.port}/v1"
    # YAML is a superset of JSON: the config is written as JSON.
    config = {
        "model_list": [
            {
                "model_name": name,
                "litellm_params": {
                    "model": f"openai/{name}",
                    "api_base": api_base,
                    "api_key": "sk-upstream",
                },
            }
            for name in ("fast", "delay50")
        ],
        "litellm_settings": {
            "callbacks": [],
            "success_callback": [],
            "failure_callback": [],
            "telemetry": False,
            "drop_params": True,
        },
        "general_settings": {"disable_spend_logs": True},
    }
    (base / "config.yaml").write_text(json.dumps(config, indent=2))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LITELLM_", "DATABASE_", "REDIS_", "OPENAI_"))
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env.update(
        LITELLM_MASTER_KEY=MASTER_KEY,
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_LOG="ERROR",  # also sets uvicorn's level: no access log, like the gateway
        LITELLM_TELEMETRY="False",
        VIRTUAL_ENV=str(venv),
        PATH=f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
    )
    port = free_port()
    proc = procs.start(
        [
            *taskset(cpus),
            str(venv / "bin/litellm"),
            "--config",
            str(base / "config.yaml"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            str(workers),
        ],
        log=base / "litellm.log",
        env=env,
        cwd=base,
    )
    return Target(
        f"litellm-{workers}w",
        "litellm",
        workers,
        port,
        proc.pid,
        headers=[f"Authorization: Bearer {MASTER_KEY}"],
        pinned=cpus is not None,
        log=base / "litellm.log",
    )


def wait_ready(target: Target, procs: Processes, body: bytes) -> float:
    """Wait until ``target`` answers a real chat request with 200; return the seconds."""
    start = time.monotonic()
    headers = {"content-type": "application/json"}
    for h in target.headers:
        name, _, value = h.partition(":")
        headers[name] = value.strip()
    proc = next(p for p in procs.started if p.pid == target.pid)
    while time.monotonic() - start < READY_TIMEOUT_SECONDS:
        if proc.poll() is not None:
            log = target.log
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{target.name} exited with {proc.returncode}:\n{tail}")
        try:
            r = httpx.post(target.url, content=body, headers=headers, timeout=5)
            if r.status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{target.name} was not ready after {READY_TIMEOUT_SECONDS:.0f}s")
