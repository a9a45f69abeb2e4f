"""Three `modelport gateway` processes sharing one real redis-server: the limits hold
exactly between them (never limit x replicas), per user, per group and per endpoint, and
they hold again after the store is killed mid-load and comes back."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.gateway.fakes import FakeProvider, endpoint, vllm, write_config
from tests.integration.gateway.openai_fake import serve_openai
from tests.integration.gateway.redis_server import RedisServer
from tests.integration.gateway.test_cli_process import free_port, gateway_command

USERS = {
    # key file -> (key, principal)
    "alice": ("alice-key-0123456789abcdef", {"user": "alice", "groups": ["team-a"]}),
    "bob": ("bob-key-0123456789abcdef00", {"user": "bob", "groups": ["team-a"]}),
    "carol": ("carol-key-0123456789abcdef", {"user": "carol", "groups": ["team-b"]}),
}
ALICE_CALLS = 20
TEAM_A_CALLS = 5
ENDPOINT_CALLS = 30
REPLICAS = 3


class Replicas:
    """Three gateway processes of one endpoint, counting in one Redis."""

    def __init__(self, root: Path, upstream: FakeProvider, store: RedisServer) -> None:
        config = endpoint(
            vllm("m", upstream.url + "/v1", "m"),
            aiGateway={
                "auth": {
                    "apiKeys": [
                        {"path": f"callers/{name}", "principal": principal}
                        for name, (_, principal) in USERS.items()
                    ]
                },
                "rateLimits": [
                    {"key": "user", "principal": "alice", "calls": ALICE_CALLS},
                    {"key": "user_group", "principal": "team-a", "calls": TEAM_A_CALLS},
                    {"key": "endpoint", "calls": ENDPOINT_CALLS},
                ],
                "rateLimiting": {
                    "store": {"address": store.url, "keyPrefix": "it:{ns/ep}:"},
                    "failOpen": False,
                },
            },
        )
        secrets = {f"callers/{name}": key for name, (key, _) in USERS.items()}
        config_dir, secrets_dir = write_config(root, config, secrets)
        self.urls: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        for i in range(REPLICAS):
            port = free_port()
            log = (root / f"gateway{i}.log").open("wb")
            self.procs.append(
                subprocess.Popen(
                    gateway_command(config_dir, secrets_dir, port),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            self.urls.append(f"http://127.0.0.1:{port}")
        self.root = root

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 90
        for i, url in enumerate(self.urls):
            while True:
                try:
                    if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert self.procs[i].poll() is None, self.log(i)
                assert time.monotonic() < deadline, "a gateway did not become ready"
                time.sleep(0.1)

    def log(self, i: int) -> str:
        return (self.root / f"gateway{i}.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def replicas(
    tmp_path: Path, provider: FakeProvider, redis_server: RedisServer
) -> Iterator[Replicas]:
    serve_openai(provider, "/v1", lambda seen: None, model="m")
    running = Replicas(tmp_path, provider, redis_server)
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


async def burst(replicas: Replicas, who: str, count: int) -> list[httpx.Response]:
    """``count`` concurrent requests of one caller, spread round-robin over the replicas."""
    key = USERS[who][0]
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def one(i: int) -> httpx.Response:
            return await client.post(
                replicas.urls[i % REPLICAS] + "/v1/chat/completions",
                json={"model": "ep", "messages": [{"role": "user", "content": "hi"}]},
                headers={"authorization": f"Bearer {key}"},
            )

        return list(await asyncio.gather(*(one(i) for i in range(count))))


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


def test_limits_hold_exactly_across_three_replicas(replicas: Replicas) -> None:
    # 200 concurrent requests of alice over the three: exactly her 20.
    alice = asyncio.run(burst(replicas, "alice", 200))
    assert statuses(alice) == {200: ALICE_CALLS, 429: 200 - ALICE_CALLS}
    for r in alice:
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
            assert r.headers["x-ratelimit-remaining-requests"] == "0"
    served = sorted(
        int(r.headers["x-ratelimit-remaining-requests"]) for r in alice if r.status_code == 200
    )
    # Each admitted request saw the budget after itself: every value from 19 down to 0 once
    # (alice's own limit is her tightest).
    assert served == list(range(ALICE_CALLS))
    # Bob is unaffected by alice: his group's budget, shared with alice but overridden for
    # her by her own limit, admits exactly its 5.
    assert statuses(asyncio.run(burst(replicas, "bob", 12))) == {200: TEAM_A_CALLS, 429: 7}
    # The endpoint's 30 caps everyone: 25 are spent, so carol (no limit of her own) gets 5.
    carol = asyncio.run(burst(replicas, "carol", 12))
    assert statuses(carol) == {200: ENDPOINT_CALLS - ALICE_CALLS - TEAM_A_CALLS, 429: 7}
    assert all(
        "per minute for the endpoint" in r.json()["message"] for r in carol if r.status_code == 429
    )


def test_the_store_killed_mid_load_then_back(replicas: Replicas, redis_server: RedisServer) -> None:
    results: list[tuple[int, float, float]] = []  # status, seconds taken, finished at
    restarted_at = [0.0]

    async def load(seconds: float) -> None:
        key = USERS["carol"][0]
        deadline = time.monotonic() + seconds
        async with httpx.AsyncClient(timeout=30) as client:

            async def worker(i: int) -> None:
                while time.monotonic() < deadline:
                    started = time.monotonic()
                    try:
                        r = await client.post(
                            replicas.urls[i % REPLICAS] + "/v1/chat/completions",
                            json={"model": "ep", "messages": [{"role": "user", "content": "hi"}]},
                            headers={"authorization": f"Bearer {key}"},
                        )
                        code = r.status_code
                    except httpx.HTTPError:
                        code = 0
                    now = time.monotonic()
                    results.append((code, now - started, now))
                    await asyncio.sleep(0.02)

            await asyncio.gather(*(worker(i) for i in range(6)))

    async def outage() -> None:
        await asyncio.sleep(1.0)
        redis_server.kill()
        await asyncio.sleep(1.5)
        redis_server.start()
        restarted_at[0] = time.monotonic()

    async def both() -> None:
        await asyncio.gather(load(4.0), outage())

    asyncio.run(both())
    codes = Counter(code for code, _, _ in results)
    # Every request got a clean answer (admitted, limited, or 503 while the store was
    # away: failOpen is false), none hung past the store's timeout by much.
    assert set(codes) <= {200, 429, 503}, codes
    assert codes[503] > 0, codes
    assert max(seconds for _, seconds, _ in results) < 2.0
    # Back, with its memory empty: exact again. Carol meets only the endpoint's limit, and
    # the load after the return asked for far more than it: exactly 30 were admitted.
    after = Counter(code for code, _, at in results if at > restarted_at[0])
    assert after[200] == ENDPOINT_CALLS, after
    assert after[429] > 0, after
