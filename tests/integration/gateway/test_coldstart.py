"""Requests for an entity that scales to zero, through the real gateway on loopback: held
while it has no ready pod and answered once it has (all of them, sent in parallel), the
entity woken once, the hold bounded in number and in time, spilled to another entity with
fallback, and a refused connection held and tried again. Readiness and the wake are
stand-ins the test drives (tests/integration/gateway/test_coldstart_cluster.py does both
for real, against the apiserver)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport import gatewayconfig
from modelport.gateway.app import GatewayApp
from tests.integration.gateway.fakes import (
    FakeProvider,
    Reply,
    RunningGateway,
    Seen,
    chat_reply,
    endpoint,
    vllm,
    write_config,
)
from tests.support import eventually

CHAT = {"model": "ep", "messages": [{"role": "user", "content": "hi"}]}


class Readiness:
    """Whether entity llama has a ready pod, as the test says (thread-safe: the gateway runs
    on uvicorn's thread); every other entity is ready."""

    def __init__(self) -> None:
        self.up = threading.Event()

    def ready(self, entity: str) -> bool:
        return entity != "llama" or self.up.is_set()

    async def until_ready(self, entity: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.ready(entity):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class Waker:
    """Counts wakes; the pod becomes ready `start_seconds` after the first (None: never)."""

    def __init__(self, readiness: Readiness | None, start_seconds: float | None = 0.5) -> None:
        self.readiness = readiness
        self.start_seconds = start_seconds
        self.calls: list[tuple[str, str]] = []

    async def wake(self, entity: str, deployment: str) -> str:
        self.calls.append((entity, deployment))
        if self.readiness is not None and self.start_seconds is not None:
            up = self.readiness.up
            threading.Timer(self.start_seconds, up.set).start()
        return "woken"

    async def aclose(self) -> None:
        return None


def _config(provider: FakeProvider, *, timeout: float = 10, **extra: Any) -> dict[str, Any]:
    scale = {"namespace": "team-a", "deployments": {"llama": "ep-llama"}}
    scale.update(extra.pop("scaleToZero", {}))
    return endpoint(
        vllm("llama", provider.url + "/llama/v1"),
        *extra.pop("entities", []),
        requestTimeoutSeconds=timeout,
        scaleToZero=scale,
        **extra,
    )


@pytest.fixture
def llama(provider: FakeProvider) -> list[Seen]:
    seen: list[Seen] = []

    @provider.route("POST", "/llama/v1/chat/completions")
    def answer(request: Seen) -> Reply:
        seen.append(request)
        return chat_reply("from llama")

    return seen


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Any]:
    running: list[RunningGateway] = []

    def start(config: dict[str, Any], readiness: Any, waker: Waker) -> RunningGateway:
        config_dir, secrets_dir = write_config(tmp_path / f"gw{len(running)}", config, {})
        app = GatewayApp(
            gatewayconfig.load(config_dir), secrets_dir, readiness=readiness, waker=waker
        )
        gw = RunningGateway(app, secrets_dir).start()
        running.append(gw)
        return gw

    yield start
    for gw in running:
        gw.stop()


def _post(gw: RunningGateway) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", json=CHAT, timeout=30)


def _metric(gw: RunningGateway, line: str) -> float:
    text = httpx.get(gw.url + "/metrics").text
    found = [row for row in text.splitlines() if row.startswith(line)]
    return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


def test_requests_at_zero_are_held_and_all_answered_once_a_pod_is_ready(
    provider: FakeProvider, llama: list[Seen], started: Any
) -> None:
    readiness = Readiness()
    waker = Waker(readiness, start_seconds=1.0)
    gw = started(_config(provider), readiness, waker)
    began = time.monotonic()
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: _post(gw), range(6)))
    took = time.monotonic() - began
    assert [r.status_code for r in answers] == [200] * 6
    assert {r.headers["served-model-name"] for r in answers} == {"llama"}
    assert len(llama) == 6, "each was forwarded once, after the pod became ready"
    assert 1.0 <= took < 5, took
    assert waker.calls == [("llama", "ep-llama")], "one wake, however many requests"
    assert _metric(gw, 'modelport_gateway_holds_total{entity="llama",outcome="forwarded"}') == 6
    assert _metric(gw, 'modelport_gateway_cold_start_seconds_count{entity="llama"}') == 1
    assert _metric(gw, 'modelport_gateway_wakes_total{entity="llama",result="woken"}') == 1
    assert _metric(gw, 'modelport_gateway_held_requests{entity="llama"}') == 0
    # Warm now: no hold, no wake.
    assert _post(gw).status_code == 200 and len(waker.calls) == 1


def test_the_hold_is_bounded_in_number_and_in_time(
    provider: FakeProvider, llama: list[Seen], started: Any
) -> None:
    readiness = Readiness()
    waker = Waker(readiness, start_seconds=None)  # never ready
    gw = started(
        _config(provider, timeout=1.5, scaleToZero={"maxHeldRequests": 2}), readiness, waker
    )
    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(_post, gw) for _ in range(2)]
        eventually(lambda: _metric(gw, 'modelport_gateway_held_requests{entity="llama"}') == 2, 5)
        refused = _post(gw)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
        assert "already holds 2 requests" in refused.json()["error"]["message"]
        timed_out = [f.result() for f in held]
    for answer in timed_out:
        assert answer.status_code == 504
        assert "had no ready replica within the request's timeout" in answer.json()["message"]
    assert not llama
    assert _metric(gw, 'modelport_gateway_holds_total{entity="llama",outcome="timeout"}') == 2
    assert _metric(gw, 'modelport_gateway_holds_total{entity="llama",outcome="refused"}') == 1


def test_with_fallback_a_request_spills_over_and_the_entity_still_wakes(
    provider: FakeProvider, llama: list[Seen], started: Any
) -> None:
    @provider.route("POST", "/backup/v1/chat/completions")
    def backup(seen: Seen) -> Reply:
        return chat_reply("from backup")

    readiness = Readiness()
    waker = Waker(readiness, start_seconds=0.3)
    config = _config(
        provider,
        entities=[vllm("backup", provider.url + "/backup/v1")],
        routes=[
            {"servedEntityName": "llama", "trafficPercentage": 100},
            {"servedEntityName": "backup", "trafficPercentage": 0},
        ],
        aiGateway={"fallbackEnabled": True, "auth": {"enabled": False}},
    )
    gw = started(config, readiness, waker)
    began = time.monotonic()
    r = _post(gw)
    assert r.status_code == 200 and r.headers["served-model-name"] == "backup", r.text
    assert time.monotonic() - began < 1.0, "spilled at once, not held"
    assert waker.calls == [("llama", "ep-llama")]
    assert _metric(gw, 'modelport_gateway_fallbacks_total{entity="llama",reason="starting"}') == 1
    eventually(lambda: readiness.ready("llama"), 5)
    again = _post(gw)
    assert again.headers.get("served-model-name") == "llama", again.text


def test_a_refused_connection_is_held_and_tried_again(started: Any) -> None:
    """No readiness watch (the cluster gives gateways no readiness role): the entity is at
    zero, so its Service refuses connections; the request waits and is answered once
    the pod listens."""
    first = FakeProvider().start()
    port = first.port
    first.stop()  # nothing listens there now
    waker = Waker(None)
    config = endpoint(
        vllm("llama", f"http://127.0.0.1:{port}/llama/v1"),
        requestTimeoutSeconds=10,
        scaleToZero={"namespace": "team-a", "deployments": {"llama": "ep-llama"}},
    )
    gw = started(config, None, waker)
    later: list[FakeProvider] = []

    def listen() -> None:
        fake = FakeProvider(port=port)
        fake.route("POST", "/llama/v1/chat/completions")(lambda seen: chat_reply("from llama"))
        later.append(fake.start())

    threading.Timer(1.0, listen).start()
    try:
        began = time.monotonic()
        r = _post(gw)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "from llama"
        assert time.monotonic() - began >= 0.9
        assert waker.calls == [("llama", "ep-llama")]
    finally:
        eventually(lambda: later, 5)[0].stop()
