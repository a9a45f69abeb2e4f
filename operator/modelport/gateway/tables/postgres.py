"""Writing rows to PostgreSQL with asyncpg: the only module of the gateway that talks to
the database.

One connection per table writer, opened on first use and again after any failure; the
connection string is re-read from its mounted file each time, so a rotated password is
picked up at the next reconnect. A batch is one statement (``schema.insert_sql``: each
column one array parameter), so 500 rows cost one round trip.

What a failure means for the rows:

- the database cannot be reached, or the connection broke, or it timed out →
  :class:`UnavailableError`: the writer keeps the batch and retries with backoff;
- the table is gone → the migrations run again on the next try;
- the database refuses the *data* (a value it cannot store) → each row of the batch is
  tried on its own and only the refused ones are dropped (and counted).

Error messages never carry the connection string: a password in one is replaced by
``***`` before anything is logged.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from modelport.gateway.tables import schema
from modelport.gateway.tables.records import Row
from modelport.gateway.tables.schema import Table

log = logging.getLogger("modelport.gateway.tables")

CONNECT_TIMEOUT_SECONDS = 5.0
STATEMENT_TIMEOUT_SECONDS = 30.0
# SQLSTATE classes of errors about the data itself: retrying the batch cannot help.
_DATA_CLASSES = ("22", "23")


class UnavailableError(Exception):
    """The database cannot take rows now; the message is safe to log."""


class PostgresTarget:
    """Writes one table's rows; creates and migrates the table on connecting."""

    def __init__(
        self,
        table: Table,
        dsn: Callable[[], str],
        *,
        retention_days: int = 0,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        statement_timeout: float = STATEMENT_TIMEOUT_SECONDS,
    ) -> None:
        self.table = table
        self.name = table.label
        self.retention_days = retention_days
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._statement_timeout = statement_timeout
        self._sql = schema.insert_sql(table)
        self._conn: asyncpg.Connection | None = None
        self._text_payloads = [
            i for i, c in enumerate(table.columns) if c.name in ("request", "response")
        ]

    async def prepare(self) -> None:
        """Connect, and create or migrate the table."""
        await self._connection()

    async def write(self, rows: Sequence[Row]) -> int:
        """Insert ``rows``; return how many the database refused (and were dropped).
        Raises :class:`UnavailableError` when none could be written for now."""
        conn = await self._connection()
        try:
            await conn.execute(self._sql, *self._columns(rows), timeout=self._statement_timeout)
        except asyncpg.PostgresError as exc:
            if _is_data_error(exc):
                return await self._one_by_one(conn, rows)
            await self._reset(exc)
        except (OSError, TimeoutError, asyncpg.InterfaceError) as exc:
            await self._reset(exc)
        return 0

    async def trim(self, now: dt.datetime) -> int:
        """Delete rows older than the retention period (on a connection of its own, in
        small batches, by one replica at a time); return how many went."""
        if self.retention_days <= 0:
            return 0
        cutoff = now - dt.timedelta(days=self.retention_days)
        deleted = 0
        conn = await self._connect()
        try:
            key = schema.lock_key(self.table)
            if not await conn.fetchval(schema.TRY_LOCK_SQL, key):
                return 0  # another replica is at it
            try:
                sql = schema.retention_sql(self.table)
                while True:
                    status = await conn.execute(sql, cutoff, timeout=self._statement_timeout)
                    count = int(status.rsplit(" ", 1)[-1])
                    deleted += count
                    if count < schema.RETENTION_BATCH:
                        return deleted
            finally:
                await conn.fetchval(schema.UNLOCK_SQL, key)
        finally:
            await conn.close()

    async def close(self) -> None:
        """Close the connection (at shutdown)."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close(timeout=2)

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        conn = await self._connect()
        try:
            await migrate(conn, self.table)
        except asyncpg.PostgresError as exc:
            await conn.close()
            raise UnavailableError(
                f"cannot create or migrate table {self.name}: {type(exc).__name__}: "
                f"{self._redact(str(exc))}; grant the gateway's database user CREATE on the "
                "schema, or create the table yourself (README: usage tracking)"
            ) from None
        self._conn = conn
        return conn

    async def _connect(self) -> asyncpg.Connection:
        try:
            dsn = self._dsn()
        except Exception as exc:  # the mounted Secret is missing or empty
            raise UnavailableError(str(exc)) from None
        try:
            return await asyncpg.connect(dsn, timeout=self._connect_timeout)
        except (asyncpg.ClientConfigurationError, ValueError) as exc:
            # A connection string asyncpg cannot parse (before the InterfaceError below).
            raise UnavailableError(
                f"the connection string is not valid ({self._redact(str(exc))}); write "
                "postgresql://user:password@host:5432/database into the Secret"
            ) from None
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise UnavailableError(
                f"cannot connect to PostgreSQL: {type(exc).__name__}: {self._redact(str(exc))}"
            ) from None

    async def _reset(self, exc: BaseException) -> None:
        """Drop the connection after a failure; the next write reconnects (and migrates,
        should the table be gone)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()
        raise UnavailableError(
            f"writing to {self.name} failed: {type(exc).__name__}: {self._redact(str(exc))}"
        ) from None

    async def _one_by_one(self, conn: asyncpg.Connection, rows: Sequence[Row]) -> int:
        refused = 0
        for row in rows:
            try:
                await conn.execute(
                    self._sql, *self._columns([row]), timeout=self._statement_timeout
                )
            except asyncpg.PostgresError as exc:
                if not _is_data_error(exc):
                    await self._reset(exc)
                refused += 1
                log.warning(
                    "%s refused a row (request %s): %s: %s",
                    self.name,
                    row[0],
                    type(exc).__name__,
                    self._redact(str(exc)),
                )
        return refused

    def _columns(self, rows: Sequence[Row]) -> list[list[Any]]:
        columns = [list(c) for c in zip(*rows, strict=True)]
        for i in self._text_payloads:
            # Payloads travel as bytes (no copy until here); text columns take str.
            columns[i] = [_text(v) for v in columns[i]]
        return columns

    def _redact(self, message: str) -> str:
        try:
            dsn = self._dsn()
        except Exception:
            return message
        # The whole string first (some errors echo it), then the password on its own.
        message = message.replace(dsn, "<connection string>")
        password = _password(dsn)
        return message.replace(password, "***") if password else message


async def migrate(conn: asyncpg.Connection, table: Table) -> None:
    """Bring ``table`` to the newest version, once across replicas (an advisory lock held
    for the transaction)."""
    steps = schema.migrations(table)
    async with conn.transaction():
        # One lock for every migration of the database: CREATE … IF NOT EXISTS is not
        # safe against a concurrent twin (both may pass the check).
        await conn.execute(schema.LOCK_SQL, schema.MIGRATIONS_LOCK)
        await conn.execute(schema.MIGRATIONS_DDL)
        applied = await conn.fetchval(schema.APPLIED_SQL, table.label)
        for version, step in enumerate(steps, 1):
            if version > applied:
                await conn.execute(step)
                await conn.execute(schema.RECORD_SQL, table.label, version)
                log.info("table %s migrated to version %d", table.label, version)


def _is_data_error(exc: asyncpg.PostgresError) -> bool:
    state = getattr(exc, "sqlstate", None) or ""
    return state[:2] in _DATA_CLASSES


def _text(value: object) -> object:
    if isinstance(value, bytes):
        # A raw NUL cannot be stored in text (and is not valid inside JSON anyway).
        return value.decode("utf-8", "replace").replace("\x00", "\ufffd")
    return value


def _password(dsn: str) -> str:
    """The password in a ``postgresql://user:password@host/db`` string, or ""."""
    rest = dsn.split("://", 1)[-1]
    userinfo, at, _ = rest.rpartition("@")
    if not at:
        return ""
    _, colon, password = userinfo.partition(":")
    return password if colon else ""
