"""The gateway's upstream connection pool after a burst, observed at the fake provider.

A burst of concurrent requests opens as many upstream connections as there are requests
in flight. Once it is over the gateway must keep no more than its idle cap per origin,
close those too after the keep-alive expiry, and serve one request at a time as fast as
before the burst (with httpx 1.0.9 ~250 idle connections stayed pooled for 60 s and made
every later request ~50x more expensive).
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest

from modelport import gatewayconfig
from modelport.gateway.app import GatewayApp
from tests.integration.gateway.fakes import (
    FakeProvider,
    Reply,
    RunningGateway,
    Seen,
    endpoint,
    json_reply,
    write_config,
)
from tests.integration.gateway.test_behaviour import vllm

BURST = 200
MAX_IDLE = 8
KEEPALIVE_SECONDS = 1.0
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
COMPLETION = {
    "id": "x",
    "object": "chat.completion",
    "created": 1,
    "model": "e1",
    "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


@pytest.fixture
def pooled_gateway(provider: FakeProvider, tmp_path: Path) -> Iterator[RunningGateway]:
    """A gateway with a small idle cap and a 1-s keep-alive expiry, so the test is short."""
    config_dir, secrets_dir = write_config(tmp_path, endpoint(vllm("e1", provider.url + "/v1")), {})
    app = GatewayApp(
        gatewayconfig.load(config_dir),
        secrets_dir,
        max_idle_per_origin=MAX_IDLE,
        keepalive_seconds=KEEPALIVE_SECONDS,
    )
    gw = RunningGateway(app, secrets_dir).start()
    try:
        yield gw
    finally:
        gw.stop()


def test_a_burst_leaves_at_most_the_idle_cap_then_nothing(
    provider: FakeProvider, pooled_gateway: RunningGateway
) -> None:
    slow = threading.Event()

    @provider.route("POST", "/v1/chat/completions")
    def chat(seen: Seen) -> Reply:
        if slow.is_set():
            time.sleep(0.5)  # keeps the whole burst in flight at once
        return json_reply(COMPLETION)

    client = openai.OpenAI(
        base_url=pooled_gateway.url + "/v1", api_key="unused", max_retries=0, timeout=20
    )
    before = _sequential_latencies(client, 50)

    slow.set()
    asyncio.run(_burst(pooled_gateway.url + "/v1", BURST))
    slow.clear()
    assert provider.peak_connections >= BURST // 2, (
        f"the burst never had {BURST // 2} upstream connections open at once "
        f"(peak {provider.peak_connections}); it tested nothing"
    )

    # The surplus is closed as it comes back, the rest once it has idled past the expiry
    # (the connector checks every KEEPALIVE_SECONDS, so allow two periods and a margin).
    _wait_for(lambda: provider.open_connections <= MAX_IDLE, 2.0, provider, f"<= {MAX_IDLE}")
    _wait_for(lambda: provider.open_connections == 0, 2 * KEEPALIVE_SECONDS + 2, provider, "0")

    after = _sequential_latencies(client, 50)
    assert max(after) < 1.0, f"a request after the burst took {max(after):.3f} s"
    median_before, median_after = statistics.median(before), statistics.median(after)
    assert median_after <= 3 * median_before + 0.005, (
        f"after the burst one request at a time takes {median_after * 1000:.2f} ms "
        f"(median), before it {median_before * 1000:.2f} ms"
    )
    assert provider.open_connections <= 1


async def _burst(base_url: str, n: int) -> None:
    async with openai.AsyncOpenAI(
        base_url=base_url, api_key="unused", max_retries=0, timeout=30
    ) as client:
        replies = await asyncio.gather(
            *(client.chat.completions.create(model="e1", messages=MESSAGES) for _ in range(n))
        )
    assert all(r.choices[0].message.content == "ok" for r in replies)


def _sequential_latencies(client: openai.OpenAI, n: int) -> list[float]:
    latencies = []
    for _ in range(n):
        start = time.monotonic()
        reply = client.chat.completions.create(model="e1", messages=MESSAGES)
        latencies.append(time.monotonic() - start)
        assert reply.choices[0].message.content == "ok"
    return latencies


def _wait_for(
    condition: Callable[[], bool], seconds: float, provider: FakeProvider, wanted: str
) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{provider.open_connections} upstream connections still open after "
                f"{seconds:g} s; expected {wanted}"
            )
        time.sleep(0.02)
