"""The sliding-window stores, run side by side: the in-process store and the Lua script
in a real redis-server must give the same answers, on a clock the test moves."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from modelport import gatewayconfig as gc
from modelport.gateway.ratelimit.policy import Budget
from modelport.gateway.ratelimit.redis_store import RedisStore
from modelport.gateway.ratelimit.store import MemoryStore, Store, StoreUnavailableError
from modelport.gateway.secrets import SecretStore
from tests.integration.gateway.redis_server import RedisServer
from tests.support import asynchronous

T0 = 1_800_000_000_000  # ms; any fixed time will do: the clock is the test's
CALLS = Budget("calls", "user", "alice", 3, "t:{ep}:calls:user:alice")
TOKENS = Budget("tokens", "user", "alice", 100, "t:{ep}:tokens:user:alice")
GROUP = Budget("calls", "user_group", "team", 5, "t:{ep}:calls:user_group:team")

StoreFactory = Callable[[], "AsyncIterator[Store]"]


@asynccontextmanager
async def memory(_: Path) -> AsyncIterator[Store]:
    yield MemoryStore()


@asynccontextmanager
async def redis(tmp_path: Path) -> AsyncIterator[Store]:
    server = RedisServer(tmp_path / "redis").start()
    store = RedisStore(gc.RateLimitStore(address=server.url), SecretStore(tmp_path))
    await store.start()
    try:
        yield store
    finally:
        await store.aclose()
        server.stop()


STORES = pytest.mark.parametrize("open_store", [memory, redis], ids=["memory", "redis"])


@STORES
@asynchronous
async def test_a_sliding_minute_admits_the_limit_and_no_more(open_store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    async with open_store(tmp_path) as store:
        for i in range(3):
            decision = await store.admit(f"r{i}", [CALLS], [1], T0 + i * 10_000)
            assert decision.admitted
            assert decision.totals == (i + 1,)
            assert decision.oldest_ms == (T0,)
        refused = await store.admit("r3", [CALLS], [1], T0 + 30_000)
        assert not refused.admitted
        assert refused.totals == (3,)
        # The oldest call leaves the window 60 s after it was made: exactly then.
        assert refused.wait_ms == 30_000
        assert not (await store.admit("r4", [CALLS], [1], T0 + 59_999)).admitted
        edge = await store.admit("r5", [CALLS], [1], T0 + 60_000)
        assert edge.admitted and edge.totals == (3,) and edge.oldest_ms == (T0 + 10_000,)
        # Across what would be a fixed window's boundary, still 3 in any 60 s.
        assert not (await store.admit("r6", [CALLS], [1], T0 + 69_999)).admitted


@STORES
@asynchronous
async def test_a_decision_takes_every_budget_or_none(open_store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    async with open_store(tmp_path) as store:
        for i in range(3):
            assert (await store.admit(f"a{i}", [CALLS, GROUP], [1, 1], T0 + i)).admitted
        # The user's budget is spent: the group's is not charged for the refusal.
        refused = await store.admit("a3", [CALLS, GROUP], [1, 1], T0 + 10)
        assert not refused.admitted and refused.totals == (3, 3)
        other = Budget("calls", "user", "bob", 3, "t:{ep}:calls:user:bob")
        assert (await store.admit("b0", [other, GROUP], [1, 1], T0 + 20)).totals == (1, 4)


@STORES
@asynchronous
async def test_tokens_are_reserved_then_settled_and_extended(open_store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    async with open_store(tmp_path) as store:
        assert (await store.admit("t1", [TOKENS], [60], T0)).totals == (60,)
        refused = await store.admit("t2", [TOKENS], [60], T0 + 1)
        assert not refused.admitted and refused.wait_ms == 59_999
        # The first request used 25: the budget gets 35 back and the second fits.
        await store.settle("t1", [TOKENS], 60, 25, T0 + 2)
        assert (await store.admit("t2", [TOKENS], [60], T0 + 3)).totals == (85,)
        # A stream asks for 40 more and gets what is left.
        assert await store.extend("t2", [TOKENS], 60, 40, T0 + 4) == 15
        assert await store.extend("t2", [TOKENS], 75, 40, T0 + 5) == 0
        # A request larger than the limit can never be admitted.
        never = await store.admit("t3", [TOKENS], [101], T0 + 6)
        assert not never.admitted and never.wait_ms == -1
        # After the window both entries are gone; settling t2 late charges what it used
        # beyond its reservation as a new entry, now.
        await store.settle("t2", [TOKENS], 75, 90, T0 + 61_000)
        assert not (await store.admit("t4", [TOKENS], [86], T0 + 61_001)).admitted
        assert (await store.admit("t4", [TOKENS], [85], T0 + 61_002)).totals == (15 + 85,)


@STORES
@asynchronous
async def test_an_overdrawn_budget_waits_for_enough_to_leave(open_store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    async with open_store(tmp_path) as store:
        await store.admit("o1", [TOKENS], [50], T0)
        await store.admit("o2", [TOKENS], [40], T0 + 20_000)
        # A non-streamed answer used far more than it reserved: the budget is overdrawn.
        await store.settle("o2", [TOKENS], 40, 120, T0 + 21_000)
        refused = await store.admit("o3", [TOKENS], [10], T0 + 22_000)
        # 170 counted; 80 must leave before 10 more fit: o1 (50) is not enough, o2 is.
        assert not refused.admitted and refused.totals == (170,)
        assert refused.wait_ms == 20_000 + 60_000 - 22_000


@asynchronous
async def test_redis_forgetting_the_script_is_transparent(tmp_path: Path) -> None:
    async with redis(tmp_path) as store:
        assert (await store.admit("s1", [CALLS], [1], T0)).admitted
        assert isinstance(store, RedisStore)
        conn = store._connection
        assert conn is not None
        await conn.send_command("SCRIPT", "FLUSH")
        await conn.read_response()
        assert (await store.admit("s2", [CALLS], [1], T0 + 1)).totals == (2,)


@asynchronous
async def test_redis_down_fails_fast_and_recovers(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    store = RedisStore(
        gc.RateLimitStore(address=server.url, timeoutSeconds=0.2),
        SecretStore(tmp_path),
        retry_seconds=0.2,
    )
    await store.start()
    try:
        assert (await store.admit("d1", [CALLS], [1], None)).admitted
        server.kill()
        with pytest.raises(StoreUnavailableError):
            await store.admit("d2", [CALLS], [1], None)
        assert not store.up
        server.start()  # same port, empty memory
        import asyncio

        await asyncio.sleep(0.25)
        decision = await store.admit("d3", [CALLS], [1], None)
        assert decision.admitted and decision.totals == (1,) and store.up
    finally:
        await store.aclose()
        server.stop()


@asynchronous
async def test_redis_password_comes_from_the_mounted_file(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", password="s3cret-pass-for-tests").start()
    secrets = tmp_path / "secrets"
    (secrets / "store").mkdir(parents=True)
    (secrets / "store" / "password").write_text("s3cret-pass-for-tests\n")
    store = RedisStore(
        gc.RateLimitStore(address=server.url, passwordFile="store/password"),
        SecretStore(secrets),
    )
    wrong = RedisStore(gc.RateLimitStore(address=server.url), SecretStore(secrets))
    await store.start()
    await wrong.start()
    try:
        assert (await store.admit("p1", [CALLS], [1], T0)).admitted
        with pytest.raises(StoreUnavailableError) as caught:
            await wrong.admit("p2", [CALLS], [1], T0)
        assert "s3cret" not in str(caught.value)
    finally:
        await store.aclose()
        await wrong.aclose()
        server.stop()
