"""The request pipeline on a running gateway: what each stage sees, that ``finish`` always
runs, that admission is outside the fallback loop, taps, sinks, and usage that is always
known."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from modelport import gatewayconfig
from modelport.gateway.app import GatewayApp, default_pipeline
from modelport.gateway.context import Attempt, RequestContext
from modelport.gateway.errors import REQUEST_LIMIT_EXCEEDED, GatewayError
from modelport.gateway.pipeline import Pipeline, QueueSink
from modelport.gateway.providers.base import Call
from tests.integration.gateway.fakes import (
    FakeProvider,
    Reply,
    RunningGateway,
    Seen,
    endpoint,
    json_reply,
    sse,
    vllm,
    write_config,
)
from tests.integration.gateway.openai_fake import USAGE, serve_openai
from tests.integration.gateway.test_openai_compatible import client
from tests.support import eventually

CHAT = [{"role": "user", "content": "Say hello to the pipeline"}]


class Capture:
    """A sink that keeps every finished context (thread-safe enough for one gateway)."""

    def __init__(self) -> None:
        self.done: list[RequestContext] = []
        self._event = threading.Event()

    def submit(self, ctx: RequestContext) -> None:
        self.done.append(ctx)
        self._event.set()

    def wait(self, count: int = 1) -> list[RequestContext]:
        return eventually(lambda: self.done if len(self.done) >= count else None, timeout=10)


class Refuse:
    """An admission stage that refuses every request with a 429."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []

    async def admit(self, ctx: RequestContext, call: Call) -> None:
        self.seen.append(ctx.model)
        raise GatewayError(429, REQUEST_LIMIT_EXCEEDED, "over the test's limit")


class Hooks:
    """Attempt hooks that record what they saw and can skip one entity."""

    def __init__(self, skip: str | None = None) -> None:
        self.before_seen: list[str] = []
        self.after_seen: list[tuple[str, int, str | None]] = []
        self._skip = skip

    async def before(self, ctx: RequestContext, call: Call, attempt: Attempt) -> None:
        self.before_seen.append(attempt.entity)
        if attempt.entity == self._skip:
            raise GatewayError(503, "TEMPORARILY_UNAVAILABLE", "breaker open (test)")

    def after(self, ctx: RequestContext, attempt: Attempt) -> None:
        self.after_seen.append((attempt.entity, attempt.status, attempt.error_code))


class StopAfter:
    """A tap that relays ``limit`` chunks, then stops the stream; counts what it saw."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.bodies: list[bytes] = []

    def open(self, ctx: RequestContext, call: Call) -> StopAfter:
        return self

    def chunk(self, payload: bytes) -> bytes:
        self.chunks.append(payload)
        if len(self.chunks) > self.limit:
            raise GatewayError(400, "BAD_REQUEST", "stopped by the output check (test)")
        return payload

    def body(self, body: bytes) -> bytes:
        self.bodies.append(body)
        return body.replace(b"Hello", b"HELLO")


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Any]:
    """Start gateways whose pipeline a test extends: ``start(config, **stages)``."""
    started: list[RunningGateway] = []

    def start(config: dict[str, Any], **stages: Any) -> tuple[RunningGateway, Capture]:
        root = tmp_path / f"gw{len(started)}"
        config_dir, secrets_dir = write_config(root, config, {})
        parsed = gatewayconfig.load(config_dir)
        capture = Capture()
        base = default_pipeline(parsed, secrets_dir)
        sinks = (*stages.pop("sinks", ()), capture)
        pipeline = dataclasses.replace(base, sinks=sinks, **stages)
        gw = RunningGateway(GatewayApp(parsed, secrets_dir, pipeline=pipeline), secrets_dir)
        started.append(gw.start())
        return gw, capture

    try:
        yield start
    finally:
        for gw in started:
            gw.stop()


def test_finish_sees_a_whole_request(provider: FakeProvider, running: Any) -> None:
    serve_openai(provider, "/v1", lambda seen: None, model="e1")
    gw, capture = running(endpoint(vllm("e1", provider.url + "/v1")))
    client(gw).chat.completions.create(model="ep", messages=CHAT)
    (ctx,) = capture.wait()
    assert ctx.status == 200 and ctx.outcome == "ok" and ctx.error_code is None
    assert ctx.endpoint == "ep" and ctx.route == "/v1/chat/completions"
    assert ctx.model == "ep" and ctx.stream is False and ctx.principal is None
    assert [a.entity for a in ctx.attempts] == ["e1"] and ctx.attempts[0].status == 200
    assert ctx.usage is not None and not ctx.usage.estimated
    assert (ctx.usage.prompt_tokens, ctx.usage.completion_tokens) == (11, 7)
    ttfb = ctx.time_to_first_byte
    assert ttfb is not None and 0 < ttfb <= ctx.duration
    assert len(ctx.request_id) == 32


def test_refused_before_dispatch_still_finishes(provider: FakeProvider, running: Any) -> None:
    gw, capture = running(endpoint(vllm("e1", provider.url + "/v1")))
    r = httpx.post(
        gw.url + "/v1/chat/completions",
        content=b"{",
        timeout=5,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    r = httpx.post(
        gw.url + "/v1/chat/completions",
        content=b"x",
        timeout=5,
        headers={"content-type": "text/plain"},
    )
    assert r.status_code == 415
    first, second = capture.wait(2)
    assert (first.status, first.error_code, first.entity) == (400, "BAD_REQUEST", None)
    assert second.status == 415 and second.outcome == "error" and not second.attempts
    assert provider.seen == []
    metrics = httpx.get(gw.url + "/metrics", timeout=5).text
    assert 'status="400"' in metrics and 'status="415"' in metrics


def test_admission_refusal_is_never_retried_by_fallback(
    provider: FakeProvider, running: Any
) -> None:
    serve_openai(provider, "/a/v1", lambda seen: None, model="a")
    serve_openai(provider, "/b/v1", lambda seen: None, model="b")
    refuse = Refuse()
    gw, capture = running(
        endpoint(
            vllm("a", provider.url + "/a/v1"),
            vllm("b", provider.url + "/b/v1"),
            routes=[
                {"servedEntityName": "a", "trafficPercentage": 50},
                {"servedEntityName": "b", "trafficPercentage": 50},
            ],
            aiGateway={"fallbackEnabled": True},
        ),
        admission=(refuse,),
    )
    with pytest.raises(openai.RateLimitError) as caught:
        client(gw).chat.completions.create(model="ep", messages=CHAT)
    assert caught.value.body["code"] == REQUEST_LIMIT_EXCEEDED  # type: ignore[index]
    assert provider.seen == [], "a refused request must reach no entity"
    assert refuse.seen == ["ep"]
    (ctx,) = capture.wait()
    assert ctx.status == 429 and ctx.attempts == []


def test_attempt_hooks_see_each_entity_and_can_skip_one(
    provider: FakeProvider, running: Any
) -> None:
    serve_openai(provider, "/b/v1", lambda seen: None, model="b")
    hooks = Hooks(skip="a")
    gw, capture = running(
        endpoint(
            vllm("a", provider.url + "/a/v1"),
            vllm("b", provider.url + "/b/v1"),
            routes=[
                {"servedEntityName": "a", "trafficPercentage": 100},
                {"servedEntityName": "b", "trafficPercentage": 0},
            ],
            aiGateway={"fallbackEnabled": True},
        ),
        attempt_hooks=(hooks,),
    )
    raw = client(gw).chat.completions.with_raw_response.create(model="ep", messages=CHAT)
    assert raw.headers["served-model-name"] == "b"
    assert hooks.before_seen == ["a", "b"]
    assert hooks.after_seen == [("a", 503, "TEMPORARILY_UNAVAILABLE"), ("b", 200, None)]
    (ctx,) = capture.wait()
    assert [(a.entity, a.status) for a in ctx.attempts] == [("a", 503), ("b", 200)]
    assert ctx.entity == "b" and ctx.status == 200
    assert all(a.ended >= a.started for a in ctx.attempts)


def test_a_tap_sees_every_chunk_and_can_stop_the_stream(
    provider: FakeProvider, running: Any
) -> None:
    serve_openai(provider, "/v1", lambda seen: None, model="e1")
    tap = StopAfter(limit=2)
    gw, capture = running(endpoint(vllm("e1", provider.url + "/v1")), taps=(tap,))
    stream = client(gw).chat.completions.create(model="ep", messages=CHAT, stream=True)
    got = []
    with pytest.raises(openai.APIError, match="stopped by the output check"):
        for chunk in stream:
            got.append(chunk)
    assert len(got) == 2 and len(tap.chunks) == 3
    (ctx,) = capture.wait()
    assert ctx.status == 200 and ctx.error_code == "BAD_REQUEST" and ctx.outcome == "error"

    reply = client(gw).chat.completions.create(model="ep", messages=CHAT)
    assert reply.choices[0].message.content == "HELLO from upstream"
    assert len(tap.bodies) == 1


def test_finish_runs_on_a_client_disconnect(provider: FakeProvider, running: Any) -> None:
    @provider.route("POST", "/v1/chat/completions")
    def slow(seen: Seen) -> Reply:
        return Reply(chunks=[b" "] * 100, delay=0.1)

    gw, capture = running(endpoint(vllm("e1", provider.url + "/v1")))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gw.url + "/v1/chat/completions", json={"messages": CHAT}, timeout=0.5)
    (ctx,) = capture.wait()
    assert ctx.status == 499 and ctx.outcome == "disconnected"
    assert ctx.first_byte is None and ctx.ended is not None


def test_finish_runs_on_a_timeout(provider: FakeProvider, running: Any) -> None:
    @provider.route("POST", "/v1/chat/completions")
    def slow(seen: Seen) -> Reply:
        return Reply(chunks=[b" "] * 30, delay=0.1)

    gw, capture = running(endpoint(vllm("e1", provider.url + "/v1"), requestTimeoutSeconds=0.5))
    r = httpx.post(gw.url + "/v1/chat/completions", json={"messages": CHAT}, timeout=10)
    assert r.status_code == 504
    (ctx,) = capture.wait()
    assert (ctx.status, ctx.outcome, ctx.error_code) == (504, "timeout", "DEADLINE_EXCEEDED")


def test_a_failing_sink_does_not_fail_the_request(provider: FakeProvider, running: Any) -> None:
    class Broken:
        def submit(self, ctx: RequestContext) -> None:
            raise RuntimeError("sink down")

    serve_openai(provider, "/v1", lambda seen: None, model="e1")
    gw, capture = running(endpoint(vllm("e1", provider.url + "/v1")), sinks=(Broken(),))
    reply = client(gw).chat.completions.create(model="ep", messages=CHAT)
    assert reply.choices[0].message.content == "Hello from upstream"
    assert capture.wait()[0].status == 200, "the sinks after a failing one still run"


def test_a_queue_sink_never_blocks_and_counts_what_it_drops(
    provider: FakeProvider, running: Any
) -> None:
    release = threading.Event()
    consumed: list[str] = []

    async def slow_consumer(ctx: RequestContext) -> None:
        while not release.is_set():
            await asyncio.sleep(0.01)
        consumed.append(ctx.request_id)

    queue = QueueSink(slow_consumer, max_queued=2, name="test-sink")
    serve_openai(provider, "/v1", lambda seen: None, model="e1")
    gw, capture = running(endpoint(vllm("e1", provider.url + "/v1")), sinks=(queue,))
    started = time.monotonic()
    for _ in range(6):
        client(gw).chat.completions.create(model="ep", messages=CHAT)
    assert time.monotonic() - started < 5, "requests must not wait for a slow sink"
    capture.wait(6)
    # One context is being consumed, two wait in the queue, the other three were dropped.
    assert queue.dropped == 3
    release.set()
    eventually(lambda: len(consumed) == 3, timeout=10)


@pytest.mark.parametrize("client_asks", [False, True])
def test_stream_usage_is_always_known(
    client_asks: bool, provider: FakeProvider, running: Any
) -> None:
    serve_openai(provider, "/v1", lambda seen: None, model="e1")
    gw, capture = running(endpoint(vllm("e1", provider.url + "/v1")))
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if client_asks else {}
    chunks = list(
        client(gw).chat.completions.create(model="ep", messages=CHAT, stream=True, **extra)
    )
    sent = provider.last().json()
    assert sent["stream_options"]["include_usage"] is True, "the gateway always asks"
    usage_chunks = [c for c in chunks if c.usage is not None]
    if client_asks:
        assert len(usage_chunks) == 1 and usage_chunks[0].usage.prompt_tokens == 11  # type: ignore[union-attr]
    else:
        assert usage_chunks == [] and all(c.choices for c in chunks), "not asked, not sent"
    (ctx,) = capture.wait()
    assert ctx.usage is not None and not ctx.usage.estimated
    assert (ctx.usage.prompt_tokens, ctx.usage.completion_tokens) == (
        USAGE["prompt_tokens"],
        USAGE["completion_tokens"],
    )
    assert ctx.stream and ctx.time_to_first_byte is not None


def test_usage_is_estimated_and_marked_when_the_upstream_gives_none(
    provider: FakeProvider, running: Any
) -> None:
    def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "x",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
        }

    @provider.route("POST", "/v1/chat/completions")
    def no_usage(seen: Seen) -> Reply:
        if seen.json().get("stream"):
            pieces = [chunk("one"), chunk(" two"), chunk(" three", "stop")]
            return sse([(None, c) for c in pieces] + [(None, "[DONE]")])
        return json_reply(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 1,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "x" * 40},
                    }
                ],
            }
        )

    gw, capture = running(endpoint(vllm("e1", provider.url + "/v1")))
    list(client(gw).chat.completions.create(model="ep", messages=CHAT, stream=True))
    client(gw).chat.completions.create(model="ep", messages=CHAT)
    streamed, whole = capture.wait(2)
    prompt = -(-len(CHAT[0]["content"]) // 4)
    assert streamed.usage is not None and streamed.usage.estimated
    assert (streamed.usage.prompt_tokens, streamed.usage.completion_tokens) == (prompt, 3)
    assert whole.usage is not None and whole.usage.estimated
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (prompt, 10)


def test_usage_option_is_not_sent_where_the_api_may_refuse_it(
    provider: FakeProvider, running: Any
) -> None:
    """Azure before 2024-09-01 rejects stream_options; the gateway does not send it there."""
    seen_bodies: list[dict[str, Any]] = []

    def check(seen: Seen) -> None:
        seen_bodies.append(seen.json())

    serve_openai(provider, "/openai/deployments/d", check, model="up")
    azure = {
        "name": "e1",
        "task": "llm/v1/chat",
        "provider": "openai",
        "modelName": "up",
        "baseUrl": provider.url,
        "openai": {"apiType": "azure", "apiVersion": "2024-06-01", "deploymentName": "d"},
        "credentials": {"apiKey": "k/azure"},
    }
    config = endpoint(azure)
    gw, capture = running(config)
    gw.secrets_dir.joinpath("k").mkdir()
    gw.write_secret("k/azure", "test-azure-key-not-real")
    list(client(gw).chat.completions.create(model="ep", messages=CHAT, stream=True))
    assert "stream_options" not in seen_bodies[-1]
    (ctx,) = capture.wait()
    assert ctx.usage is not None and ctx.usage.estimated


def test_the_config_file_round_trips_the_auth_section() -> None:
    doc = endpoint(
        vllm("e1", "http://x/v1"),
        aiGateway={
            "auth": {
                "apiKeys": [{"path": "k/a", "principal": {"user": "alice", "groups": ["g"]}}],
                "serviceAccountTokens": {"audiences": ["modelport"]},
                "allow": {"serviceAccounts": ["team-a/*"]},
            }
        },
    )
    config = gatewayconfig.loads(json.dumps(doc))
    assert gatewayconfig.loads(gatewayconfig.dumps(config)) == config
    assert config.ai_gateway.auth.enabled is True
    assert (
        default_pipeline(
            gatewayconfig.loads(json.dumps(endpoint(vllm("e", "http://x/v1")))),
            Path("/nonexistent"),
        )
        == Pipeline()
    ), "auth off: no stage at all"
