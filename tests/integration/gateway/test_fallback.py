"""Fallback against loopback providers: one deadline per request, retry-once on a short
Retry-After, the next entity on errors, hangs and refused connections, the circuit
breaker, and what the client and the request's record see."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from modelport import gatewayconfig
from modelport.gateway.app import GatewayApp
from modelport.gateway.context import RequestContext
from modelport.gateway.fallback import Breakers
from modelport.gateway.pipeline import Pipeline
from tests.integration.gateway.fakes import (
    FakeProvider,
    Reply,
    RunningGateway,
    Seen,
    chat_reply,
    endpoint,
    json_reply,
    sse,
    vllm,
    write_config,
)
from tests.support import FakeClock, eventually

CHAT = {"model": "ep", "messages": [{"role": "user", "content": "hi"}]}
REFUSED = "http://127.0.0.1:9/v1"  # the discard port: nothing listens, connections refused


class Capture:
    """A sink keeping finished contexts."""

    def __init__(self) -> None:
        self.done: list[RequestContext] = []

    def submit(self, ctx: RequestContext) -> None:
        self.done.append(ctx)

    def last(self) -> RequestContext:
        return eventually(lambda: self.done[-1] if self.done else None, timeout=10)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., tuple[RunningGateway, Capture]]]:
    """Start a gateway of ``primary`` then ``backup`` (100/0, fallback on)."""
    running: list[RunningGateway] = []

    def make(
        primary: str, backup: str, timeout: float = 10.0, breakers: Breakers | None = None
    ) -> tuple[RunningGateway, Capture]:
        config = endpoint(
            vllm("primary", primary),
            vllm("backup", backup),
            routes=[
                {"servedEntityName": "primary", "trafficPercentage": 100},
                {"servedEntityName": "backup", "trafficPercentage": 0},
            ],
            aiGateway={"fallbackEnabled": True},
            requestTimeoutSeconds=timeout,
        )
        config_dir, secrets_dir = write_config(tmp_path / f"gw{len(running)}", config, {})
        capture = Capture()
        app = GatewayApp(
            gatewayconfig.load(config_dir),
            secrets_dir,
            pipeline=Pipeline(sinks=(capture,)),
            breakers=breakers,
        )
        gw = RunningGateway(app, secrets_dir).start()
        running.append(gw)
        return gw, capture

    try:
        yield make
    finally:
        for gw in running:
            gw.stop()


def routes(provider: FakeProvider, **handlers: Callable[[Seen], Reply]) -> dict[str, int]:
    """Register ``/<name>/v1/chat/completions`` per handler; returns hit counts by name."""
    hits = dict.fromkeys(handlers, 0)
    lock = threading.Lock()
    for name, handler in handlers.items():

        def wrapped(seen: Seen, name: str = name, handler: Any = handler) -> Reply:
            with lock:
                hits[name] += 1
            return handler(seen)

        provider.route("POST", f"/{name}/v1/chat/completions")(wrapped)
    return hits


def post(gw: RunningGateway, body: dict[str, Any] = CHAT) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=30)


@pytest.mark.parametrize(
    ("failure", "status"),
    [
        (lambda s: json_reply({"error": {"message": "boom"}}, 500), 500),
        (lambda s: json_reply({"error": {"message": "later"}}, 503), 503),
        (lambda s: json_reply({"error": {"message": "no"}}, 429, **{"retry-after": "30"}), 429),
    ],
    ids=["500", "503", "429-long-retry-after"],
)
def test_an_error_moves_on_to_the_next_entity(
    provider: FakeProvider, start: Callable[..., Any], failure: Any, status: int
) -> None:
    hits = routes(provider, bad=failure, good=lambda s: chat_reply("from backup"))
    gw, capture = start(provider.url + "/bad/v1", provider.url + "/good/v1")
    r = post(gw)
    assert r.status_code == 200 and r.headers["served-model-name"] == "backup"
    assert r.json()["choices"][0]["message"]["content"] == "from backup"
    assert hits == {"bad": 1, "good": 1}  # no retry on the same entity
    ctx = capture.last()
    assert [(a.entity, a.status) for a in ctx.attempts] == [
        ("primary", status if status != 500 else 502),
        ("backup", 200),
    ]
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'modelport_gateway_fallbacks_total{entity="primary",reason="' in metrics


def test_429_with_a_short_retry_after_is_retried_once_on_the_same_entity(
    provider: FakeProvider, start: Callable[..., Any]
) -> None:
    calls = {"n": 0}

    def flaky(seen: Seen) -> Reply:
        calls["n"] += 1
        if calls["n"] == 1:
            return json_reply({"error": {"message": "busy"}}, 429, **{"retry-after": "1"})
        return chat_reply("second try")

    hits = routes(provider, flaky=flaky, good=lambda s: chat_reply("from backup"))
    gw, capture = start(provider.url + "/flaky/v1", provider.url + "/good/v1")
    began = time.monotonic()
    r = post(gw)
    assert r.status_code == 200 and r.headers["served-model-name"] == "primary"
    assert time.monotonic() - began >= 1.0  # it waited the Retry-After
    assert hits == {"flaky": 2, "good": 0}
    assert [a.status for a in capture.last().attempts] == [429, 200]


def test_503_retried_once_then_the_next(provider: FakeProvider, start: Callable[..., Any]) -> None:
    hits = routes(
        provider,
        busy=lambda s: json_reply({"error": {"message": "x"}}, 503, **{"retry-after": "0"}),
        good=lambda s: chat_reply("from backup"),
    )
    gw, capture = start(provider.url + "/busy/v1", provider.url + "/good/v1")
    r = post(gw)
    assert r.status_code == 200 and r.headers["served-model-name"] == "backup"
    assert hits == {"busy": 2, "good": 1}
    assert [(a.entity, a.status) for a in capture.last().attempts] == [
        ("primary", 503),
        ("primary", 503),
        ("backup", 200),
    ]


@pytest.fixture
def hang() -> Iterator[Callable[[Seen], Reply]]:
    """A handler that answers only after 10 s (or when the test ends)."""
    release = threading.Event()

    def handler(seen: Seen) -> Reply:
        release.wait(10)
        return chat_reply("too late")

    yield handler
    release.set()


def test_a_hanging_entity_leaves_the_next_one_time_within_one_deadline(
    provider: FakeProvider, start: Callable[..., Any], hang: Callable[[Seen], Reply]
) -> None:
    routes(provider, hang=hang, good=lambda s: chat_reply("from backup"))
    gw, capture = start(provider.url + "/hang/v1", provider.url + "/good/v1", timeout=3.0)
    began = time.monotonic()
    r = post(gw)
    took = time.monotonic() - began
    assert r.status_code == 200 and r.headers["served-model-name"] == "backup"
    assert 1.3 < took < 3.0  # half the deadline on the hanging one, then the backup
    assert [(a.entity, a.status) for a in capture.last().attempts] == [
        ("primary", 504),
        ("backup", 200),
    ]


def test_refused_connections_move_on(provider: FakeProvider, start: Callable[..., Any]) -> None:
    routes(provider, good=lambda s: chat_reply("from backup"))
    gw, _ = start(REFUSED, provider.url + "/good/v1")
    r = post(gw)
    assert r.status_code == 200 and r.headers["served-model-name"] == "backup"


def test_all_failing_returns_the_last_error_within_the_deadline(
    provider: FakeProvider, start: Callable[..., Any], hang: Callable[[Seen], Reply]
) -> None:
    routes(provider, hang=hang, bad=lambda s: json_reply({"error": {"message": "down"}}, 500))
    gw, _ = start(provider.url + "/bad/v1", provider.url + "/hang/v1", timeout=2.0)
    began = time.monotonic()
    r = post(gw)
    took = time.monotonic() - began
    assert r.status_code == 504 and r.json()["error_code"] == "DEADLINE_EXCEEDED"
    assert r.headers["served-model-name"] == "backup"
    assert took < 2.5  # one deadline for both

    gw2, _ = start(REFUSED, provider.url + "/bad/v1")
    r = post(gw2)
    assert r.status_code == 502 and "down" in r.json()["message"]  # the last entity's error


def test_the_breaker_opens_skips_the_entity_and_closes_after_a_probe(
    provider: FakeProvider, start: Callable[..., Any]
) -> None:
    healthy = threading.Event()

    def primary(seen: Seen) -> Reply:
        if healthy.is_set():
            return chat_reply("primary again")
        return json_reply({"error": {"message": "down"}}, 500)

    hits = routes(provider, p=primary, good=lambda s: chat_reply("from backup"))
    clock = FakeClock()
    breakers = Breakers(["primary", "backup"], clock, failures=3, cooldown=30.0)
    gw, capture = start(provider.url + "/p/v1", provider.url + "/good/v1", breakers=breakers)
    for _ in range(5):
        assert post(gw).headers["served-model-name"] == "backup"
    assert hits["p"] == 3  # open after 3 failures: the last 2 requests skipped it
    ctx = capture.last()
    assert ctx.attempts[0].skipped == "breaker_open" and ctx.attempts[0].status == 503
    clock.advance(30.0)
    healthy.set()
    r = post(gw)  # the probe
    assert r.headers["served-model-name"] == "primary" and hits["p"] == 4
    assert post(gw).headers["served-model-name"] == "primary"


def test_a_started_stream_keeps_the_whole_deadline(
    provider: FakeProvider, start: Callable[..., Any]
) -> None:
    """Fallback ends when the response starts: from there the stream is not bound by the
    attempt's share of the deadline (it would be cut), only by the deadline itself."""

    def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
        }

    events = [(None, chunk("a")), (None, chunk("b")), (None, chunk("c", "stop")), (None, "[DONE]")]
    routes(provider, slow=lambda s: sse(events, delay=0.8), good=lambda s: chat_reply("backup"))
    # 4 events 0.8 s apart: 3.2 s, past the first attempt's share (2.25 s) of 4.5 s.
    gw, capture = start(provider.url + "/slow/v1", provider.url + "/good/v1", timeout=4.5)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    stream = client.chat.completions.create(stream=True, **CHAT)  # type: ignore[call-overload]
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "abc"
    assert [(a.entity, a.status) for a in capture.last().attempts] == [("primary", 200)]
