"""Rate limits on a running gateway that counts in a real redis-server, on a clock the test
moves: headers that go down, 429 with Retry-After, no fallback after a refusal, token
reservations settled to the provider's usage (streamed or not), a stream cut when its
budget runs out, the next minute admitting again, and the store going away."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from modelport import gatewayconfig
from modelport.gateway.app import GatewayApp, default_pipeline
from modelport.gateway.pipeline import Pipeline
from modelport.gateway.ratelimit.limiter import RateLimiter
from modelport.gateway.ratelimit.redis_store import RedisStore
from modelport.gateway.secrets import SecretStore
from tests.integration.gateway.fakes import (
    FakeProvider,
    Reply,
    RunningGateway,
    Seen,
    json_reply,
    sse,
    vllm,
    write_config,
)
from tests.integration.gateway.redis_server import RedisServer
from tests.support import eventually

KEYS = {
    "callers/alice": "alice-key-0123456789abcdef",
    "callers/bob": "bob-key-0123456789abcdef00",
}
PROMPT_TOKENS = 11
T0 = 1_800_000_000_000


class Clock:
    """Milliseconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def upstream(provider: FakeProvider) -> FakeProvider:
    """An OpenAI-compatible model: the user's message "tokens N" answers N tokens, one a
    chunk when streamed, with the usage the request asked for."""

    @provider.route("POST", "/v1/chat/completions")
    def chat(seen: Seen) -> Reply:
        body = seen.json()
        words = body["messages"][-1]["content"].split()
        count = int(words[1]) if words[0] == "tokens" else 3
        usage = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": count,
            "total_tokens": PROMPT_TOKENS + count,
        }
        base = {"id": "c1", "created": 1, "model": body["model"]}
        if not body.get("stream"):
            message = {"role": "assistant", "content": "tok" * count}
            return json_reply(
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                    "usage": usage,
                }
            )
        chunk = {**base, "object": "chat.completion.chunk"}
        events: list[tuple[str | None, Any]] = [
            (None, {**chunk, "choices": [{"index": 0, "delta": {"content": "tok"}}]})
            for _ in range(count)
        ]
        events.append(
            (None, {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        )
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append((None, {**chunk, "choices": [], "usage": usage}))
        events.append((None, "[DONE]"))
        return sse(events, delay=0.002)

    return provider


class Limited:
    """A gateway with API-key callers alice and bob (both in team-a), rate limits counted in
    ``redis_server`` on ``clock``."""

    def __init__(
        self,
        root: Path,
        upstream: FakeProvider,
        server: RedisServer,
        rate_limits: list[dict[str, Any]],
        **limiting: Any,
    ) -> None:
        self.clock = Clock()
        entities = [vllm("a", upstream.url + "/v1", "m"), vllm("b", upstream.url + "/v1", "m")]
        doc = {
            "version": 1,
            "endpointName": "ep",
            "entities": entities,
            "routes": [
                {"servedEntityName": "a", "trafficPercentage": 100},
                {"servedEntityName": "b", "trafficPercentage": 0},
            ],
            "aiGateway": {
                "fallbackEnabled": True,
                "auth": {
                    "apiKeys": [
                        {
                            "path": "callers/alice",
                            "principal": {"user": "alice", "groups": ["team-a"]},
                        },
                        {"path": "callers/bob", "principal": {"user": "bob", "groups": ["team-a"]}},
                    ]
                },
                "rateLimits": rate_limits,
                "rateLimiting": {
                    "store": {
                        "address": server.url,
                        "keyPrefix": "t:{ns/ep}:",
                        "timeoutSeconds": 0.3,
                    },
                    **limiting,
                },
            },
        }
        config_dir, secrets_dir = write_config(root, doc, KEYS)
        config = gatewayconfig.load(config_dir)
        app = GatewayApp(config, secrets_dir)  # the default pipeline, then ours with a clock
        store = RedisStore(config.ai_gateway.rate_limiting.store, SecretStore(secrets_dir))  # type: ignore[arg-type]
        self.limiter = RateLimiter(
            config.ai_gateway, "ep", store, metrics=app.metrics, clock=self.clock
        )
        base = default_pipeline(config, secrets_dir)
        app.pipeline = Pipeline(
            authenticator=base.authenticator,
            admission=(self.limiter,),
            taps=(self.limiter,),
            sinks=(self.limiter,),
        )
        self.gw = RunningGateway(app, secrets_dir).start()
        self.redis = redis.Redis(port=server.port)

    def post(self, who: str, content: str, **body: Any) -> httpx.Response:
        return httpx.post(
            self.gw.url + "/v1/chat/completions",
            json={"model": "ep", "messages": [{"role": "user", "content": content}], **body},
            headers={"authorization": f"Bearer {KEYS['callers/' + who]}"},
            timeout=20,
        )

    def client(self, who: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.gw.url + "/v1", api_key=KEYS["callers/" + who], max_retries=0, timeout=20
        )

    def charged(self, kind: str, subject: str) -> int:
        """The tokens counted in a budget right now (the script's total key)."""
        return int(self.redis.get(f"t:{{ns/ep}}:tokens:{kind}:{subject}#") or 0)

    def stop(self) -> None:
        self.gw.stop()
        self.redis.close()


@pytest.fixture
def limited(tmp_path: Path, upstream: FakeProvider, redis_server: RedisServer) -> Iterator[Any]:
    running: list[Limited] = []

    def start(rate_limits: list[dict[str, Any]], **limiting: Any) -> Limited:
        gw = Limited(
            tmp_path / f"gw{len(running)}", upstream, redis_server, rate_limits, **limiting
        )
        running.append(gw)
        return gw

    try:
        yield start
    finally:
        for gw in running:
            gw.stop()


def test_calls_limit_counts_down_refuses_with_retry_after_and_renews(
    limited: Any, upstream: FakeProvider
) -> None:
    gw = limited([{"key": "user", "calls": 3}])
    remaining = []
    for i in range(3):
        gw.clock.now = T0 + i * 10_000
        r = gw.post("alice", "hi")
        assert r.status_code == 200, r.text
        assert r.headers["x-ratelimit-limit-requests"] == "3"
        remaining.append(r.headers["x-ratelimit-remaining-requests"])
        assert r.headers["x-ratelimit-reset-requests"] == f"{60 - i * 10}s"
    assert remaining == ["2", "1", "0"]
    seen = len(upstream.seen)
    gw.clock.now = T0 + 35_500
    refused = gw.post("alice", "hi")
    assert refused.status_code == 429
    # Alice's first call leaves the window at T0 + 60 s: 24.5 s from now, rounded up.
    assert refused.headers["retry-after"] == "25"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    error = refused.json()
    assert error["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert "3 calls per minute for user alice" in error["message"]
    # Fallback is on and a second entity is there: a refusal is still final.
    assert len(upstream.seen) == seen
    with pytest.raises(openai.RateLimitError):
        gw.client("alice").chat.completions.create(
            model="ep", messages=[{"role": "user", "content": "x"}]
        )
    # Bob has a budget of his own.
    assert gw.post("bob", "hi").headers["x-ratelimit-remaining-requests"] == "2"
    gw.clock.now = T0 + 60_000
    assert gw.post("alice", "hi").status_code == 200


def test_group_limit_is_shared_and_the_endpoint_caps_everyone(limited: Any) -> None:
    gw = limited(
        [{"key": "user_group", "principal": "team-a", "calls": 3}, {"key": "endpoint", "calls": 4}]
    )
    statuses = [gw.post(who, "hi").status_code for who in ("alice", "bob", "alice", "bob")]
    assert statuses == [200, 200, 200, 429]  # the group's 3, shared
    gw2 = limited(
        [
            {"key": "user_group", "principal": "team-a", "calls": 3},
            {"key": "user", "principal": "bob", "calls": 10},
            {"key": "endpoint", "calls": 5},
        ]
    )
    gw2.clock.now = T0 + 120_000  # a fresh minute for every budget
    # Bob's own limit overrides the group's for him; the endpoint's 5 caps both.
    statuses = [gw2.post(who, "hi").status_code for who in ("bob",) * 4 + ("alice",) * 3]
    assert statuses == [200] * 5 + [429] * 2


def test_tokens_settle_to_the_reported_usage(limited: Any) -> None:
    gw = limited([{"key": "user", "tokens": 1000}])
    r = gw.post("alice", "tokens 5", max_tokens=50)
    assert r.status_code == 200
    assert r.headers["x-ratelimit-limit-tokens"] == "1000"
    # Reserved at admission: the prompt and max_tokens.
    assert int(r.headers["x-ratelimit-remaining-tokens"]) < 1000 - 50
    eventually(lambda: gw.charged("user", "alice") == PROMPT_TOKENS + 5, timeout=10)
    # Streamed: no max_tokens (the default reservation), usage from the final chunk.
    stream = gw.client("alice").chat.completions.create(
        model="ep", messages=[{"role": "user", "content": "tokens 8"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "tok" * 8
    eventually(lambda: gw.charged("user", "alice") == 2 * PROMPT_TOKENS + 5 + 8, timeout=10)


def test_a_stream_that_spends_the_budget_is_cut_and_the_next_minute_admits(limited: Any) -> None:
    gw = limited([{"key": "user", "tokens": 60}], reserveCompletionTokens=10)
    stream = gw.client("alice").chat.completions.create(
        model="ep", messages=[{"role": "user", "content": "tokens 200"}], stream=True
    )
    received = 0
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received += 1
    assert "used up the token budget" in str(caught.value)
    # Cut within the budget: about 60 tokens less the prompt's estimate, not 200.
    assert 30 < received <= 60
    eventually(lambda: 55 <= gw.charged("user", "alice") <= 62, timeout=10)
    refused = gw.post("alice", "tokens 1")
    assert refused.status_code == 429
    assert refused.headers["x-ratelimit-remaining-tokens"] == str(
        max(0, 60 - gw.charged("user", "alice"))
    )
    gw.clock.now = T0 + 60_000
    assert gw.post("alice", "tokens 1").status_code == 200


def test_a_request_that_can_never_fit_says_what_to_lower(limited: Any) -> None:
    gw = limited([{"key": "user", "tokens": 100}])
    r = gw.post("alice", "hi", max_tokens=500)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "max_tokens"
    assert "lower max_tokens to at most" in r.json()["message"]


@pytest.mark.parametrize("fail_open", [False, True], ids=["closed", "open"])
def test_store_down_refuses_or_admits_within_the_timeout(
    limited: Any, redis_server: RedisServer, fail_open: bool
) -> None:
    gw = limited([{"key": "user", "calls": 100}], failOpen=fail_open)
    assert gw.post("alice", "hi").status_code == 200
    assert httpx.get(gw.gw.url + "/readyz").json() == {"status": "ready", "rateLimitStore": "up"}
    redis_server.kill()
    started = time.monotonic()
    r = gw.post("alice", "hi")
    assert time.monotonic() - started < 2
    if fail_open:
        assert r.status_code == 200 and "x-ratelimit-limit-requests" not in r.headers
    else:
        assert r.status_code == 503 and r.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
        assert r.headers["retry-after"] == "1"
    ready = httpx.get(gw.gw.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["rateLimitStore"] == "unreachable"
    metrics = httpx.get(gw.gw.url + "/metrics").text
    assert (
        'modelport_gateway_rate_limit_decisions_total{decision="unavailable",key="user"} 1.0'
        in metrics
    )
    redis_server.start()
    eventually(
        lambda: gw.post("alice", "hi").headers.get("x-ratelimit-remaining-requests") == "99",
        timeout=10,
    )
    assert json.loads(httpx.get(gw.gw.url + "/readyz").text)["rateLimitStore"] == "up"
