"""Budgets counted in Redis (or Valkey), shared by every replica of the gateway.

Each decision is one call of one Lua script (``ratelimit.lua``, loaded with ``SCRIPT
LOAD`` semantics: ``EVALSHA``, and ``EVAL`` with the source when the server answers
``NOSCRIPT``, as after a restart). Redis runs a script atomically, so N replicas racing
for the last call of a budget admit exactly one request between them, never one each.

**Batching.** Decisions wait in a queue that one worker task sends over one connection:
whatever queued while the previous round trip was on the wire goes in the next one, as
a single pipelined write and a run of reads. At one request at a time that is one round
trip a request; under load, one round trip carries many decisions, which is most of
what keeps the limiter's CPU per request low (redis-py's own per-command path costs
several times more). The scripts of one batch still run one by one, each atomic.

**Failure.** Every round trip has a deadline (``timeoutSeconds``); a round trip that
misses it or fails drops the connection (its state is unknown) and fails its decisions
with :class:`~modelport.gateway.ratelimit.store.StoreUnavailableError`. For
:data:`RETRY_SECONDS` after a failure decisions fail at once, without I/O, so a dead
store costs requests nothing; then the next decision tries again (and reconnects). The
limiter turns a failure into a refusal or an admission (``failOpen``).

**Clock.** The script reads the server's clock (``TIME``), so every replica's requests
are placed on one timeline whatever the pods' clocks say; tests pass their own.

Redis Cluster is not supported: the client speaks to one server (a primary, or a
proxy in front of a cluster). The keys of one endpoint share a hash tag all the same,
so one decision never spans slots.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from redis.asyncio.connection import Connection, parse_url
from redis.credentials import CredentialProvider
from redis.exceptions import NoScriptError, ResponseError

from modelport import gatewayconfig as gc
from modelport.gateway.ratelimit.policy import Budget
from modelport.gateway.ratelimit.store import WINDOW_MS, Decision, StoreUnavailableError
from modelport.gateway.secrets import SecretStore

log = logging.getLogger("modelport.gateway.ratelimit")

SCRIPT = files("modelport.gateway.ratelimit").joinpath("ratelimit.lua").read_text()
RETRY_SECONDS = 0.5
MAX_BATCH = 512
"""Decisions per round trip at most; more wait for the next one."""

RoundTrip = Callable[[float, bool], None]
"""Told of each round trip: its seconds, and whether it worked (metrics)."""


class _PasswordFile(CredentialProvider):
    """The password (and user) for AUTH, read from the mounted Secret at each connection,
    so that a rotated password is used from the next reconnection on."""

    def __init__(self, secrets: SecretStore, path: str, username: str | None) -> None:
        self._secrets = secrets
        self._path = path
        self._username = username

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        password = self._secrets.read(self._path, "rateLimiting.store.passwordFile")
        return (self._username, password) if self._username else (password,)

    async def get_credentials_async(self) -> tuple[str] | tuple[str, str]:
        return self.get_credentials()


@dataclass(slots=True)
class _Pending:
    args: tuple[Any, ...]
    future: asyncio.Future[Any]


class RedisStore:
    """A :class:`~modelport.gateway.ratelimit.store.Store` in one Redis server."""

    def __init__(
        self,
        config: gc.RateLimitStore,
        secrets: SecretStore,
        *,
        on_round_trip: RoundTrip | None = None,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self.address = config.address
        self._timeout = config.timeout_seconds
        self._retry_seconds = retry_seconds
        self._on_round_trip = on_round_trip
        options: dict[str, Any] = dict(parse_url(config.address))
        self._connection_class = options.pop("connection_class", Connection)
        if config.password_file is not None:
            options["credential_provider"] = _PasswordFile(
                secrets, config.password_file, config.username
            )
        elif config.username is not None:
            options["username"] = config.username
        options.update(
            socket_timeout=config.timeout_seconds,
            socket_connect_timeout=config.timeout_seconds,
            client_name="modelport-gateway",
        )
        self._options = options
        self._connection: Connection | None = None
        self._sha: str | None = None
        self._queue: list[_Pending] = []
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._retry_at = 0.0
        self._up = True
        self._warned = False

    @property
    def up(self) -> bool:
        """Whether the last round trip worked."""
        return self._up

    async def start(self) -> None:
        """Start the worker (on the serving loop); connecting waits for the first use."""
        if self._worker is None:
            self._connection = self._connection_class(**self._options)
            self._wake = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(
                self._work(), name="ratelimit-store"
            )

    async def aclose(self) -> None:
        """Stop the worker, fail what still waits, close the connection."""
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None
        self._fail(self._queue, "the gateway is shutting down")
        self._queue = []
        if self._connection is not None:
            await self._connection.disconnect()

    async def admit(
        self, rid: str, budgets: Sequence[Budget], amounts: Sequence[int], now_ms: int | None
    ) -> Decision:
        """See :meth:`~modelport.gateway.ratelimit.store.Store.admit`."""
        args: list[Any] = [*_keys(budgets), "admit", _clock(now_ms), WINDOW_MS, rid]
        for budget, amount in zip(budgets, amounts, strict=True):
            args += (budget.limit, amount)
        reply = await self._call(len(budgets) * 2, args)
        admitted, now, wait = int(reply[0]), int(reply[1]), int(reply[2])
        return Decision(
            admitted == 1,
            now,
            wait,
            tuple(int(v) for v in reply[3::2]),
            tuple(int(v) for v in reply[4::2]),
        )

    async def settle(
        self, rid: str, budgets: Sequence[Budget], charged: int, actual: int, now_ms: int | None
    ) -> None:
        """See :meth:`~modelport.gateway.ratelimit.store.Store.settle`."""
        args: list[Any] = [*_keys(budgets), "settle", _clock(now_ms), WINDOW_MS, rid]
        for _ in budgets:
            args += (charged, actual)
        await self._call(len(budgets) * 2, args)

    async def extend(
        self, rid: str, budgets: Sequence[Budget], charged: int, wanted: int, now_ms: int | None
    ) -> int:
        """See :meth:`~modelport.gateway.ratelimit.store.Store.extend`."""
        args: list[Any] = [*_keys(budgets), "extend", _clock(now_ms), WINDOW_MS, rid]
        for budget in budgets:
            args += (budget.limit, charged)
        args.append(wanted)
        reply = await self._call(len(budgets) * 2, args)
        return int(reply[0])

    # -- the worker

    async def _call(self, keys: int, args: list[Any]) -> Any:
        if self._wake is None:
            raise StoreUnavailableError("the rate limit store is not started")
        if self._retry_at and time.monotonic() < self._retry_at:
            raise StoreUnavailableError(f"the rate limit store at {self.address} is unreachable")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending((keys, *args), future))
        self._wake.set()
        return await future

    async def _work(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                await self._round_trip(batch)

    async def _round_trip(self, batch: list[_Pending]) -> None:
        """Send ``batch``, resolve each future with its reply or an error; never raises."""
        conn = self._connection
        assert conn is not None
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                replies = await self._send(conn, batch, by_sha=self._sha is not None)
                again = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
                if again:
                    # A restarted (or flushed) server forgot the script: send the source.
                    retried = await self._send(conn, [batch[i] for i in again], by_sha=False)
                    for i, reply in zip(again, retried, strict=True):
                        replies[i] = reply
        except asyncio.CancelledError:
            await conn.disconnect(nowait=True)
            self._fail(batch, "the gateway is shutting down")
            raise
        except Exception as exc:
            # file: whatever it was, the worker lives on and nobody waits forever.
            await conn.disconnect(nowait=True)
            self._down(exc, time.perf_counter() - started)
            self._fail(batch, f"the rate limit store at {self.address} is unreachable")
            return
        self._retry_at = 0.0
        if not self._up:
            log.info("rate limit store %s is reachable again", self.address)
            self._up, self._warned = True, False
        if self._on_round_trip is not None:
            self._on_round_trip(time.perf_counter() - started, True)
        for pending, reply in zip(batch, replies, strict=True):
            if pending.future.done():
                continue
            if isinstance(reply, ResponseError):
                # The script failed: a bug, not an outage; never a hang.
                log.error("rate limit script failed: %s", reply)
                pending.future.set_exception(StoreUnavailableError(f"script error: {reply}"))
            else:
                pending.future.set_result(reply)

    async def _send(self, conn: Connection, batch: list[_Pending], *, by_sha: bool) -> list[Any]:
        if not conn.is_connected:
            await conn.connect()  # type: ignore[no-untyped-call]
        if self._sha is None:
            # Learnt once: the digest Redis keys scripts by (SCRIPT LOAD's answer).
            await conn.send_command("SCRIPT", "LOAD", SCRIPT, check_health=False)
            self._sha = str(await conn.read_response(), "ascii")
        head = ("EVALSHA", self._sha) if by_sha else ("EVAL", SCRIPT)
        commands = [(*head, *pending.args) for pending in batch]
        await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
        replies: list[Any] = []
        for _ in batch:
            try:
                replies.append(await conn.read_response())
            except ResponseError as exc:  # the reply was read whole: the stream is in step
                replies.append(exc)
        return replies

    def _down(self, exc: BaseException, seconds: float) -> None:
        self._retry_at = time.monotonic() + self._retry_seconds
        if self._on_round_trip is not None:
            self._on_round_trip(seconds, False)
        if not self._warned:
            # Once per outage: a dead store must not flood the log.
            log.warning(
                "rate limit store %s unreachable (%s: %s); retrying every %gs",
                self.address,
                type(exc).__name__,
                exc,
                self._retry_seconds,
            )
            self._warned = True
        self._up = False

    @staticmethod
    def _fail(batch: list[_Pending], reason: str) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(StoreUnavailableError(reason))


def _keys(budgets: Sequence[Budget]) -> list[str]:
    keys: list[str] = []
    for budget in budgets:
        keys += (budget.key, budget.key + "#")
    return keys


def _clock(now_ms: int | None) -> int | str:
    return "" if now_ms is None else now_ms
