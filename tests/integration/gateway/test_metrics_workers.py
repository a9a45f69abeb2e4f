"""`modelport gateway --workers 2` as a process: any worker's scrape reports the pod's
totals, a killed worker's counts stay while its in-flight requests go, and the metric
files' directory is removed at exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from modelport.gateway.metrics import MULTIPROC_DIR_ENV
from tests.integration.gateway.fakes import FakeProvider, Reply, Seen, endpoint, write_config
from tests.integration.gateway.test_cli_process import free_port, gateway_command

PROMPT_TOKENS = 11
SLOW_PIECES = 12
SLOW_PIECE_SECONDS = 0.25  # a slow answer takes ~3 s: long enough to kill a worker mid-way
CHAT = {"model": "ep", "messages": [{"role": "user", "content": "hi"}]}


def answer(content: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-up",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": 2, "total_tokens": 13},
        }
    ).encode()


@pytest.fixture
def upstream(provider: FakeProvider) -> FakeProvider:
    """Answers at once, or slowly (the whole body in pieces) when the user says 'slow'."""

    @provider.route("POST", "/v1/chat/completions")
    def chat(seen: Seen) -> Reply:
        if seen.json()["messages"][0]["content"] == "slow":
            body = answer("slow")
            size = len(body) // SLOW_PIECES + 1
            pieces = [body[i : i + size] for i in range(0, len(body), size)]
            return Reply(chunks=pieces, delay=SLOW_PIECE_SECONDS)
        return Reply(body=answer("fast"))

    return provider


class Gateway:
    """A `modelport gateway --workers 2` process whose temp dir is ours to look into."""

    def __init__(self, upstream: FakeProvider, root: Path) -> None:
        config_dir, secrets_dir = write_config(
            root,
            endpoint(
                {
                    "name": "e1",
                    "task": "llm/v1/chat",
                    "provider": "self-hosted",
                    "modelName": "m",
                    "baseUrl": upstream.url + "/v1",
                },
                # Without this every request would be refused 401: auth defaults to required.
                aiGateway={"auth": {"enabled": False}},
            ),
            {},
        )
        self.tmp = root / "tmp"
        self.tmp.mkdir()
        env = {**os.environ, "TMPDIR": str(self.tmp)}
        env.pop(MULTIPROC_DIR_ENV, None)
        self.url = f"http://127.0.0.1:{free_port()}"
        self.proc = subprocess.Popen(
            gateway_command(
                config_dir, secrets_dir, int(self.url.rsplit(":", 1)[1]), "--workers", "2"
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < deadline, "the gateway did not become ready"
            time.sleep(0.1)

    @property
    def metrics_dir(self) -> Path:
        (path,) = self.tmp.glob("modelport-metrics-*")
        return path

    def pids(self, prefix: str) -> set[int]:
        """The worker pids that have a metric file of this kind."""
        return {int(p.stem.rpartition("_")[2]) for p in self.metrics_dir.glob(f"{prefix}_*.db")}

    def scrape(self) -> dict[str, float]:
        """One scrape, over its own connection (so either worker may answer), summed per
        sample name over the labels."""
        text = httpx.get(self.url + "/metrics", timeout=5).text
        totals: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                totals[s.name] = totals.get(s.name, 0.0) + s.value
        return totals

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        # uvicorn's supervisor stops its workers and returns; a lone worker re-raises.
        assert self.proc.wait(timeout=30) in (0, -signal.SIGTERM)
        return self.output()

    def output(self) -> str:
        return self.proc.stdout.read().decode() if self.proc.stdout else ""


@pytest.fixture
def gateway(upstream: FakeProvider, tmp_path: Path) -> Iterator[Gateway]:
    gw = Gateway(upstream, tmp_path)
    try:
        gw.wait_ready()
        yield gw
    finally:
        if gw.proc.poll() is None:
            gw.proc.kill()
            gw.proc.wait()


def post(gw: Gateway, content: str) -> int:
    """One request over a fresh connection; its status, or 0 when the connection died."""
    try:
        r = httpx.post(
            gw.url + "/v1/chat/completions",
            json={**CHAT, "messages": [{"role": "user", "content": content}]},
            timeout=30,
        )
    except httpx.TransportError:
        return 0
    return r.status_code


def in_flight_of(gauge_file: Path) -> float:
    """One worker's own in-flight count, read from its live-gauge file."""
    for metric in MultiProcessCollector.merge([str(gauge_file)], accumulate=False):
        for s in metric.samples:
            if s.name == "modelport_gateway_in_flight_requests":
                return float(s.value)
    return 0.0


def eventually(check: Callable[[], bool], what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_any_workers_scrape_reports_the_pods_totals(gateway: Gateway) -> None:
    sent = 0
    with ThreadPoolExecutor(8) as pool:
        # Concurrent connections, so that both workers accept some; more rounds only if
        # the kernel happened to hand every one to the same worker.
        while sent == 0 or (len(gateway.pids("counter")) < 2 and sent < 400):
            assert set(pool.map(lambda _: post(gateway, "fast"), range(40))) == {200}
            sent += 40
    assert len(gateway.pids("counter")) == 2, "one worker served every request"
    # Each worker flushes what it counted at most a second after its last request.
    eventually(
        lambda: gateway.scrape()["modelport_gateway_requests_total"] == sent,
        "the workers' counts never added up to the requests sent",
        seconds=5,
    )
    for _ in range(10):
        totals = gateway.scrape()
        assert totals["modelport_gateway_requests_total"] == sent
        assert totals["modelport_gateway_request_duration_seconds_count"] == sent
        assert totals["modelport_gateway_time_to_first_token_seconds_count"] == sent
        assert totals["modelport_gateway_tokens_total"] == sent * (PROMPT_TOKENS + 2)
        assert totals["modelport_gateway_principal_tokens_total"] == sent * (PROMPT_TOKENS + 2)
        assert totals["modelport_gateway_in_flight_requests"] == 0

    # A worker dies with requests in flight; uvicorn starts another in its place.
    slow = 8
    with ThreadPoolExecutor(slow) as pool:
        statuses = pool.map(lambda _: post(gateway, "slow"), range(slow))
        eventually(
            lambda: gateway.scrape()["modelport_gateway_in_flight_requests"] == slow,
            "the slow requests never were all in flight",
        )
        by_pid = {
            pid: in_flight_of(gateway.metrics_dir / f"gauge_livesum_{pid}.db")
            for pid in gateway.pids("gauge_livesum")
        }
        victim = max(by_pid, key=lambda pid: by_pid[pid])
        assert by_pid[victim] > 0
        os.kill(victim, signal.SIGKILL)
        answered = sum(status == 200 for status in statuses)
    assert answered == slow - by_pid[victim]
    eventually(
        lambda: len(gateway.pids("gauge_livesum") - set(by_pid)) == 1,
        "no worker was started in place of the killed one",
    )
    # Its in-flight requests leave the sum (the scrape drops its live gauge once the
    # supervisor has reaped it); its finished requests stay in the totals.
    eventually(
        lambda: gateway.scrape()["modelport_gateway_in_flight_requests"] == 0,
        "the killed worker's in-flight requests stayed in the sum",
    )
    assert victim not in gateway.pids("gauge_livesum")
    assert victim in gateway.pids("counter")
    eventually(
        lambda: gateway.scrape()["modelport_gateway_requests_total"] == sent + answered,
        "the surviving worker's answers never reached the totals",
        seconds=5,
    )

    metrics_dir = gateway.metrics_dir
    output = gateway.stop()
    assert "Traceback" not in output, output
    assert not metrics_dir.exists(), "the metric files outlived the gateway"
