"""Cross-provider behaviour of the running gateway: traffic split, key rotation, client
disconnects, hostile input, timeouts, fallback, health and metrics."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest
from aiohttp import web

from modelport import gatewayconfig
from modelport.gateway.app import GatewayApp
from tests.integration.gateway.fakes import (
    FakeProvider,
    Reply,
    RunningGateway,
    Seen,
    endpoint,
    json_reply,
    sse,
    vllm,
)
from tests.integration.gateway.openai_fake import serve_openai
from tests.integration.gateway.test_openai_compatible import KEY, client

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def echo_model(fake: FakeProvider) -> None:
    @fake.route("POST", "/v1/chat/completions")
    def chat(seen: Seen) -> Reply:
        model = seen.json()["model"]
        return json_reply(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 1,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": model},
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )


def test_weighted_split_10000_requests_in_process() -> None:
    """80/20 over 10,000 requests through the ASGI app, with the upstream on loopback in the
    same event loop (an aiohttp server echoing the model)."""

    async def upstream(request: web.Request) -> web.Response:
        model = (await request.json())["model"]
        return web.json_response(
            {
                "id": "x",
                "object": "chat.completion",
                "model": model,
                "choices": [],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )

    async def run() -> Counter[str]:
        server = web.Application()
        server.router.add_post("/{entity}/v1/chat/completions", upstream)
        runner = web.AppRunner(server, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        config = gatewayconfig.loads(
            json.dumps(
                endpoint(
                    vllm("big", f"{base}/big/v1"),
                    vllm("small", f"{base}/small/v1"),
                    routes=[
                        {"servedEntityName": "big", "trafficPercentage": 80},
                        {"servedEntityName": "small", "trafficPercentage": 20},
                    ],
                )
            )
        )
        app = GatewayApp(config, Path("/nonexistent"))
        seen: Counter[str] = Counter()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
                for _ in range(10_000):
                    r = await c.post("/v1/chat/completions", json=CHAT)
                    assert r.status_code == 200
                    served = r.headers["served-model-name"]
                    assert r.json()["model"] == served, "the header must name the entity"
                    seen[served] += 1
        finally:
            await app.upstream.aclose()
            await runner.cleanup()
        return seen

    seen = asyncio.run(run())
    share = seen["big"] / 10_000
    assert abs(share - 0.80) <= 0.02, f"big got {share:.2%}"
    assert seen["big"] + seen["small"] == 10_000


def test_weighted_split_end_to_end(
    provider: FakeProvider, gateway: Callable[..., RunningGateway]
) -> None:
    echo_model(provider)
    gw = gateway(
        endpoint(
            vllm("a", provider.url + "/v1", "model-a"),
            vllm("b", provider.url + "/v1", "model-b"),
            routes=[
                {"servedEntityName": "a", "trafficPercentage": 80},
                {"servedEntityName": "b", "trafficPercentage": 20},
            ],
        )
    )
    seen: Counter[str] = Counter()
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        for _ in range(400):
            r = c.post("/v1/chat/completions", json=CHAT)
            assert r.status_code == 200
            served = r.headers["served-model-name"]
            assert r.json()["model"] == f"model-{served}"
            seen[served] += 1
        # Naming an entity bypasses the split.
        direct = {
            c.post("/v1/chat/completions", json={**CHAT, "model": "b"}).headers["served-model-name"]
            for _ in range(20)
        }
    assert direct == {"b"}
    assert 0.70 <= seen["a"] / 400 <= 0.90  # 400 draws: ±10 points is > 4 sigma


@pytest.mark.parametrize("style", ["rename", "kubelet-symlink-swap"])
def test_key_rotation_under_load(
    style: str, provider: FakeProvider, gateway: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    new_key = "test-key-not-real-rotated"
    keys_seen: list[tuple[float, str]] = []
    lock = threading.Lock()

    def check(seen: Seen) -> None:
        auth = seen.headers.get("authorization", "")
        assert auth in (f"Bearer {KEY}", f"Bearer {new_key}"), "unknown key"
        with lock:
            keys_seen.append((time.monotonic(), auth.removeprefix("Bearer ")))

    serve_openai(provider, "/v1", check, model="up")
    gw = gateway(
        endpoint(
            {
                "name": "e1",
                "task": "llm/v1/chat",
                "provider": "openai",
                "modelName": "up",
                "baseUrl": provider.url + "/v1",
                "credentials": {"apiKey": "keys/openai"},
            }
        )
    )
    keys_dir = gw.secrets_dir / "keys"
    if style == "rename":
        keys_dir.mkdir(parents=True)
        (keys_dir / "openai").write_text(KEY)
    else:
        # The layout the kubelet writes: keys/openai -> ..data/openai, ..data -> ..<timestamp>
        (keys_dir / "..2026_01").mkdir(parents=True)
        (keys_dir / "..2026_01" / "openai").write_text(KEY)
        (keys_dir / "..data").symlink_to("..2026_01")
        (keys_dir / "openai").symlink_to("..data/openai")

    def rotate() -> None:
        if style == "rename":
            gw.write_secret("keys/openai", new_key)
            return
        (keys_dir / "..2026_02").mkdir()
        (keys_dir / "..2026_02" / "openai").write_text(new_key)
        (keys_dir / "..data_tmp").symlink_to("..2026_02")
        (keys_dir / "..data_tmp").replace(keys_dir / "..data")

    failures: list[str] = []
    per_thread: dict[int, list[str]] = {}
    stop = threading.Event()

    def load(n: int) -> None:
        c = client(gw)
        mine: list[str] = []
        for _ in range(300):
            if stop.is_set():
                break
            try:
                c.chat.completions.create(model="ep", messages=[{"role": "user", "content": "x"}])
                mine.append("ok")
            except openai.APIError as exc:
                failures.append(str(exc))
        per_thread[n] = mine

    threads = [threading.Thread(target=load, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 20
        while len(keys_seen) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    wait_for(30)
    rotated_at = time.monotonic()
    rotate()
    # Keep the load on until 30 calls were made well after the rotation: counting
    # calls alone is not enough, a fast gateway makes 60 of them within 0.1 s.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with lock:
            late = sum(1 for t, _ in keys_seen if t > rotated_at + 0.1)
        if late >= 30:
            break
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not failures, failures[:3]
    # The very next call made after the rotation carries the new key.
    client(gw).chat.completions.create(model="ep", messages=[{"role": "user", "content": "x"}])
    assert keys_seen[-1][1] == new_key
    before = [k for t, k in keys_seen if t < rotated_at]
    after = [k for t, k in keys_seen if t > rotated_at + 0.1]
    assert before and set(before) == {KEY}
    assert after and set(after) == {new_key}


def test_client_disconnect_closes_upstream_within_a_second(
    provider: FakeProvider, gateway: Callable[..., RunningGateway]
) -> None:
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "tok"}, "finish_reason": None}],
    }

    @provider.route("POST", "/v1/chat/completions")
    def slow(seen: Seen) -> Reply:
        return sse([(None, chunk)] * 100, delay=0.1)  # 10 s if nobody stops it

    gw = gateway(endpoint(vllm("e1", provider.url + "/v1")))
    with (
        httpx.Client(timeout=10) as c,
        c.stream("POST", gw.url + "/v1/chat/completions", json={**CHAT, "stream": True}) as r,
    ):
        assert r.status_code == 200
        lines = r.iter_lines()
        got = [next(lines) for _ in range(3)]
        assert any(line.startswith("data: ") for line in got)
        closed_at = time.monotonic()
    # leaving the block closes the client's connection mid-stream
    deadline = closed_at + 3
    while not provider.disconnects and time.monotonic() < deadline:
        time.sleep(0.02)
    assert provider.disconnects, "the upstream stream was never closed"
    assert provider.disconnects[0] - closed_at < 1.0
    metrics = httpx.get(gw.url + "/metrics", timeout=5).text
    assert "modelport_gateway_in_flight_requests 0" in metrics


def test_client_disconnect_before_a_complete_answer_closes_upstream(
    provider: FakeProvider, gateway: Callable[..., RunningGateway]
) -> None:
    """A non-streaming request whose client gives up: the gateway is still waiting for the
    whole upstream body, and must drop that connection at once too."""

    @provider.route("POST", "/v1/chat/completions")
    def slow(seen: Seen) -> Reply:
        # The body arrives in chunked pieces for 10 s; the fake notices a closed peer.
        return Reply(chunks=[b" "] * 100, delay=0.1)

    gw = gateway(endpoint(vllm("e1", provider.url + "/v1")))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gw.url + "/v1/chat/completions", json=CHAT, timeout=0.5)
    closed_at = time.monotonic()
    deadline = closed_at + 3
    while not provider.disconnects and time.monotonic() < deadline:
        time.sleep(0.02)
    assert provider.disconnects, "the upstream request was never closed"
    assert provider.disconnects[0] - closed_at < 1.0
    metrics = httpx.get(gw.url + "/metrics", timeout=5).text
    assert "modelport_gateway_in_flight_requests 0" in metrics
    assert 'status="499"' in metrics


BAD_REQUESTS: list[tuple[str, str, dict[str, str], bytes, int, str]] = [
    ("invalid JSON", "/v1/chat/completions", {}, b"{", 400, "BAD_REQUEST"),
    ("JSON array", "/v1/chat/completions", {}, b"[]", 400, "BAD_REQUEST"),
    ("invalid UTF-8", "/v1/chat/completions", {}, b'{"messages": "\xff"}', 400, "BAD_REQUEST"),
    ("deep nesting", "/v1/chat/completions", {}, b"[" * 1500 + b"]" * 1500, 400, "BAD_REQUEST"),
    (
        "text/plain",
        "/v1/chat/completions",
        {"content-type": "text/plain"},
        b"{}",
        415,
        "BAD_REQUEST",
    ),
    (
        "form",
        "/v1/chat/completions",
        {"content-type": "application/x-www-form-urlencoded"},
        b"a=b",
        415,
        "BAD_REQUEST",
    ),
    (
        "unknown field",
        "/v1/chat/completions",
        {},
        json.dumps({**CHAT, "max_token": 5}).encode(),
        400,
        "INVALID_PARAMETER_VALUE",
    ),
    ("missing messages", "/v1/chat/completions", {}, b"{}", 400, "INVALID_PARAMETER_VALUE"),
    (
        "empty messages",
        "/v1/chat/completions",
        {},
        b'{"messages": []}',
        400,
        "INVALID_PARAMETER_VALUE",
    ),
    (
        "wrong type",
        "/v1/chat/completions",
        {},
        b'{"messages": "hi"}',
        400,
        "INVALID_PARAMETER_VALUE",
    ),
    (
        "bad role",
        "/v1/chat/completions",
        {},
        b'{"messages": [{"role": "robot", "content": "x"}]}',
        400,
        "INVALID_PARAMETER_VALUE",
    ),
    (
        "temperature range",
        "/v1/chat/completions",
        {},
        json.dumps({**CHAT, "temperature": 9}).encode(),
        400,
        "INVALID_PARAMETER_VALUE",
    ),
    (
        "unknown model",
        "/v1/chat/completions",
        {},
        json.dumps({**CHAT, "model": "gpt-9"}).encode(),
        400,
        "INVALID_PARAMETER_VALUE",
    ),
    ("task mismatch", "/v1/embeddings", {}, b'{"input": "x"}', 400, "BAD_REQUEST"),
    (
        "oversized",
        "/v1/chat/completions",
        {},
        json.dumps({"messages": [{"role": "user", "content": "x" * 5000}]}).encode(),
        413,
        "BAD_REQUEST",
    ),
    ("unknown route", "/v2/chat", {}, b"{}", 404, "RESOURCE_DOES_NOT_EXIST"),
    (
        "other endpoint",
        "/serving-endpoints/other/invocations",
        {},
        b"{}",
        404,
        "ENDPOINT_NOT_FOUND",
    ),
]


def test_hostile_input_gets_well_formed_4xx(
    provider: FakeProvider, gateway: Callable[..., RunningGateway]
) -> None:
    serve_openai(provider, "/v1", lambda seen: None, model="e1")
    gw = gateway(endpoint(vllm("e1", provider.url + "/v1"), maxRequestBytes=4096))
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        for name, path, headers, body, status, code in BAD_REQUESTS:
            r = c.post(path, content=body, headers={"content-type": "application/json", **headers})
            assert r.status_code == status, f"{name}: {r.status_code} {r.text}"
            error = r.json()
            assert error["error_code"] == code, name
            assert error["error"]["code"] == code and error["error"]["message"], name
            assert "Traceback" not in r.text, name
        # No content type at all, a GET on a POST route, a chunked oversized upload.
        r = c.post("/v1/chat/completions", content=b"{}", headers={"content-type": ""})
        assert r.status_code == 415
        r = c.get("/v1/chat/completions")
        assert r.status_code == 405 and r.headers["allow"] == "POST"
        r = c.post(
            "/v1/chat/completions",
            content=iter([b"{" + b" " * 3000, b" " * 3000 + b"}"]),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 413
        unknown = r = c.post("/v1/chat/completions", json={**CHAT, "max_token": 5})
        assert unknown.json()["error"]["param"] == "max_token"
        assert "max_token" in unknown.json()["message"]
        # The server still serves well-formed requests afterwards.
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_request_timeout_and_unreachable_upstream(
    provider: FakeProvider, gateway: Callable[..., RunningGateway]
) -> None:
    @provider.route("POST", "/v1/chat/completions")
    def slow(seen: Seen) -> Reply:
        time.sleep(1.5)
        return json_reply({})

    gw = gateway(endpoint(vllm("e1", provider.url + "/v1"), requestTimeoutSeconds=0.5))
    r = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, timeout=10)
    assert r.status_code == 504 and r.json()["error_code"] == "DEADLINE_EXCEEDED"

    gw2 = gateway(endpoint(vllm("e1", "http://127.0.0.1:9/v1")))  # discard port: refused
    r = httpx.post(gw2.url + "/v1/chat/completions", json=CHAT, timeout=10)
    assert r.status_code == 503 and r.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"


def test_fallback_seam_tries_the_next_entity(
    provider: FakeProvider, gateway: Callable[..., RunningGateway]
) -> None:
    @provider.route("POST", "/broken/v1/chat/completions")
    def broken(seen: Seen) -> Reply:
        return json_reply({"error": {"message": "boom"}}, 500)

    echo_model(provider)
    gw = gateway(
        endpoint(
            vllm("primary", provider.url + "/broken/v1"),
            vllm("backup", provider.url + "/v1"),
            routes=[
                {"servedEntityName": "primary", "trafficPercentage": 100},
                {"servedEntityName": "backup", "trafficPercentage": 0},
            ],
            aiGateway={"fallbackEnabled": True},
        )
    )
    r = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, timeout=10)
    assert r.status_code == 200 and r.headers["served-model-name"] == "backup"


def test_health_readiness_models_metrics(
    provider: FakeProvider, gateway: Callable[..., RunningGateway]
) -> None:
    serve_openai(provider, "/v1", lambda seen: None, model="up")
    gw = gateway(
        endpoint(
            {
                "name": "e1",
                "task": "llm/v1/chat",
                "provider": "openai",
                "modelName": "up",
                "baseUrl": provider.url + "/v1",
                "credentials": {"apiKey": "keys/openai"},
            }
        )
    )
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 503  # the key file is not mounted yet
        gw.secrets_dir.joinpath("keys").mkdir()
        gw.write_secret("keys/openai", KEY)
        assert c.get("/readyz").status_code == 200
        ids = [m.id for m in client(gw).models.list()]
        assert ids == ["ep", "e1"]
        for _ in range(2):
            client(gw).chat.completions.create(
                model="ep", messages=[{"role": "user", "content": "x"}]
            )
        text = c.get("/metrics").text
    assert (
        'modelport_gateway_requests_total{entity="e1",route="/v1/chat/completions",status="200"} 2'
    ) in text
    assert 'modelport_gateway_tokens_total{entity="e1",kind="prompt"} 22' in text
    assert 'modelport_gateway_request_duration_seconds_count{entity="e1"} 2' in text
    assert KEY not in text


def test_streamed_error_after_headers_is_an_sse_error(
    provider: FakeProvider, gateway: Callable[..., RunningGateway]
) -> None:
    @provider.route("POST", "/v1/messages")
    def overloaded(seen: Seen) -> Reply:
        return sse(
            [
                ("message_start", {"type": "message_start", "message": {"usage": {}}}),
                (
                    "error",
                    {
                        "type": "error",
                        "error": {"type": "overloaded_error", "message": f"Overloaded ({KEY})"},
                    },
                ),
            ]
        )

    gw = gateway(
        endpoint(
            {
                "name": "c",
                "task": "llm/v1/chat",
                "provider": "anthropic",
                "modelName": "m",
                "baseUrl": provider.url,
                "credentials": {"apiKey": "k/a"},
            }
        ),
        {"k/a": KEY},
    )
    with pytest.raises(openai.APIError) as caught:
        list(
            client(gw).chat.completions.create(
                model="ep", stream=True, messages=[{"role": "user", "content": "x"}]
            )
        )
    assert "Overloaded" in str(caught.value)
    assert KEY not in str(caught.value), "an echoed key must be redacted mid-stream too"


def test_upstream_proxy_from_the_environment(
    provider: FakeProvider, gateway: Callable[..., RunningGateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY is honoured as httpx honoured it: the fake provider plays the proxy and
    receives the absolute URL of an upstream that does not resolve."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", provider.url)
    echo_model(provider)
    gw = gateway(endpoint(vllm("e1", "http://upstream.invalid/v1")))
    r = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, timeout=10, trust_env=False)
    assert r.status_code == 200, r.text
    assert provider.last().raw_path == "http://upstream.invalid/v1/chat/completions"

    monkeypatch.setenv("NO_PROXY", "upstream.invalid")
    gw2 = gateway(endpoint(vllm("e1", "http://upstream.invalid/v1")))
    r = httpx.post(gw2.url + "/v1/chat/completions", json=CHAT, timeout=10, trust_env=False)
    assert r.status_code == 503 and r.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
