"""The table writer: a pipeline sink that never holds a request up.

``submit`` (at ``finish``) makes the row and appends it to a bounded buffer — or, when
the buffer is full, drops it and counts it. The writer's own task takes batches from the
buffer and hands them to its target (PostgreSQL, or JSON lines on stdout). While the
target is slow or down the rows wait in the buffer, up to its bound in rows and (for
payload rows) in bytes, and the task retries with exponential backoff; requests go on
exactly as before. Memory stays bounded whatever the database does.

A batch leaves the buffer only once written, so a failed write loses nothing; a retry of
a batch whose acknowledgement was lost is harmless (rows are keyed by request id).

At shutdown :meth:`TableWriter.aclose` writes what it can within its drain time (the pod's
termination grace period must cover it: 30 s by default, against a drain of 10 s) and
counts the rest as dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
from collections import deque
from collections.abc import Callable, Sequence
from itertools import islice
from typing import Protocol

from modelport.gateway.context import RequestContext
from modelport.gateway.metrics import TableCounters
from modelport.gateway.tables.postgres import UnavailableError
from modelport.gateway.tables.records import Row

log = logging.getLogger("modelport.gateway.tables")

DEFAULT_MAX_ROWS = 10000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_BATCH_ROWS = 500
DEFAULT_FLUSH_SECONDS = 1.0
DEFAULT_DRAIN_SECONDS = 10.0
FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 5.0
"""The longest wait between tries while the database is away: a connection attempt is
cheap, and every second of waiting after it is back is a second of dropped rows."""
TRIM_EVERY_SECONDS = 3600.0


class Target(Protocol):
    """Where a writer's rows go."""

    name: str

    async def prepare(self) -> None:
        """Connect and create the table ahead of the first row (may raise
        :class:`~.postgres.UnavailableError`: the first write tries again)."""
        ...

    async def write(self, rows: Sequence[Row]) -> int:
        """Write ``rows``; return how many were refused for good. Raise
        :class:`~.postgres.UnavailableError` to have the whole batch retried later."""
        ...

    async def trim(self, now: dt.datetime) -> int:
        """Delete rows past the retention period; return how many."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class TableWriter:
    """A :class:`~modelport.gateway.pipeline.Sink` writing one table in batches."""

    def __init__(
        self,
        make_row: Callable[[RequestContext], Row | None],
        target: Target,
        *,
        counters: TableCounters | None = None,
        row_bytes: Callable[[Row], int] | None = None,
        max_rows: int = DEFAULT_MAX_ROWS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        flush_seconds: float = DEFAULT_FLUSH_SECONDS,
        max_backoff_seconds: float = MAX_BACKOFF_SECONDS,
        trim_every_seconds: float = TRIM_EVERY_SECONDS,
    ) -> None:
        self.target = target
        self.name = target.name
        self._make_row = make_row
        self._row_bytes = row_bytes
        self._rows: deque[tuple[Row, int]] = deque()
        self._bytes = 0
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.trim_every_seconds = trim_every_seconds
        self.counters = counters or TableCounters.detached()
        self.written = 0
        self.dropped = 0
        """Rows that never reached the table: buffer full, refused, or left at shutdown."""
        self._wake = asyncio.Event()
        self._closing = False
        self._outage: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._trimmer: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        """Rows waiting to be written."""
        return len(self._rows)

    def submit(self, ctx: RequestContext) -> None:
        """Make the row of ``ctx`` and queue it, or drop and count it when the buffer is
        full. Never waits."""
        row = self._make_row(ctx)
        if row is None:
            return
        size = self._row_bytes(row) if self._row_bytes is not None else 0
        if len(self._rows) >= self.max_rows or self._bytes + size > self.max_bytes:
            self._drop(1, "queue_full")
            return
        self._rows.append((row, size))
        self._bytes += size
        if len(self._rows) >= self.batch_rows:
            self._wake.set()

    async def start(self) -> None:
        """Start writing (at start-up, on the serving loop)."""
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._run(), name=f"table-writer:{self.name}")
            if self.trim_every_seconds > 0:
                self._trimmer = loop.create_task(self._trim_periodically())

    async def aclose(self, drain_seconds: float = DEFAULT_DRAIN_SECONDS) -> None:
        """Write what is buffered (up to ``drain_seconds``), then stop; whatever is left is
        counted as dropped."""
        if self._trimmer is not None:
            self._trimmer.cancel()
            self._trimmer = None
        task, self._task = self._task, None
        if task is not None:
            self._closing = True
            self._wake.set()
            try:
                async with asyncio.timeout(drain_seconds):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._rows:
            log.warning(
                "%s: %d rows not written at shutdown (%s)",
                self.name,
                len(self._rows),
                self._outage or "drain time over",
            )
            self._drop(len(self._rows), "shutdown")
            self._rows.clear()
            self._bytes = 0
        with contextlib.suppress(Exception):
            await self.target.close()

    async def _run(self) -> None:
        backoff = FIRST_BACKOFF_SECONDS
        try:
            await self.target.prepare()  # the table exists before the first request ends
        except UnavailableError as exc:
            self._unavailable(str(exc))
        while True:
            if len(self._rows) < self.batch_rows and not self._closing:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.flush_seconds):
                        await self._wake.wait()
            if not self._rows:
                if self._closing:
                    return
                continue
            batch = [row for row, _ in islice(self._rows, self.batch_rows)]
            try:
                refused = await self.target.write(batch)
            except UnavailableError as exc:
                self._unavailable(str(exc))
                # Jitter: replicas that lost the database together do not return in step.
                await asyncio.sleep(backoff * (0.5 + random.random() / 2))  # noqa: S311
                backoff = min(backoff * 2, self.max_backoff_seconds)
                continue
            except Exception:
                # A bug must not stop the writer for good: keep the rows, try again later.
                log.exception("%s: writing a batch failed unexpectedly", self.name)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_seconds)
                continue
            backoff = FIRST_BACKOFF_SECONDS
            for _ in batch:
                _, size = self._rows.popleft()
                self._bytes -= size
            written = len(batch) - refused
            self.written += written
            self.counters.written.value += written
            if refused:
                self._drop(refused, "rejected")
            if self._outage is not None:
                log.info("%s: writing again after: %s", self.name, self._outage)
                self._outage = None

    def _unavailable(self, reason: str) -> None:
        if self._outage is None:
            # Once per outage: a database down for an hour must not flood the log.
            log.warning(
                "%s: rows wait in memory (at most %d) until this is fixed: %s",
                self.name,
                self.max_rows,
                reason,
            )
        self._outage = reason

    def _drop(self, count: int, why: str) -> None:
        self.dropped += count
        cell = getattr(self.counters, f"dropped_{why}")
        cell.value += count

    async def _trim_periodically(self) -> None:
        # The first pass soon after start-up (replicas spread over a minute), then hourly.
        await asyncio.sleep(60 * random.random())  # noqa: S311
        while True:
            try:
                deleted = await self.target.trim(dt.datetime.now(dt.UTC))
                if deleted:
                    log.info("%s: deleted %d rows past the retention period", self.name, deleted)
            except UnavailableError as exc:
                log.info("%s: retention pass skipped: %s", self.name, exc)
            except Exception:
                log.exception("%s: retention pass failed", self.name)
            await asyncio.sleep(self.trim_every_seconds)
