"""A private PostgreSQL server for tests and benchmarks: Debian's ``postgresql`` binaries,
a fresh cluster in a temporary directory, listening on a free loopback port.

``initdb`` refuses to run as root, so as root the server runs as the ``postgres`` user
(which Debian's package creates) through ``runuser``, and the directory is handed to it.
The cluster requires a password (SCRAM), so that connection strings in tests look like
real ones, secret included. Durability is off (``fsync``, ``synchronous_commit``,
``full_page_writes``): a test database is thrown away, and the machine is shared.

``stop()`` and ``start()`` again keep the data: tests use that for an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg

USER = "modelport"
DATABASE = "postgres"


class PostgresMissingError(RuntimeError):
    """The PostgreSQL server binaries are not installed."""


def binaries() -> Path:
    """The directory of ``initdb``/``pg_ctl``/``postgres`` (Debian's newest version, else
    whatever ``initdb`` on PATH belongs to)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: p.parts[-3])
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise PostgresMissingError(
        "PostgreSQL's server is not installed: run hack/setup, or apt-get install postgresql"
    )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresServer:
    """One private cluster; ``dsn`` is what a gateway would read from its Secret."""

    def __init__(self, *, port: int | None = None, extra: tuple[str, ...] = ()) -> None:
        self.bin = binaries()
        self.root = Path(tempfile.mkdtemp(prefix="modelport-pg-"))
        self.data = self.root / "data"
        self.port = port or free_port()
        self.password = secrets.token_hex(12)
        self.extra = extra
        self._as_postgres = os.geteuid() == 0
        self._initialised = False

    @property
    def dsn(self) -> str:
        """``postgresql://modelport:<password>@127.0.0.1:<port>/postgres``."""
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def start(self) -> PostgresServer:
        """Create the cluster (first time) and start the server; returns when it accepts
        connections."""
        if not self._initialised:
            self._init()
        options = " ".join(
            [
                f"-p {self.port}",
                f"-k {self.root}",
                "-c listen_addresses=127.0.0.1",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                *self.extra,
            ]
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect clients; ``immediate``: like a crash)."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def close(self) -> None:
        """Stop the server if it runs and remove everything."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(
                str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"
            )
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        """The server's log (for a failing test's message)."""
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _init(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        self.root.chmod(0o700)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            USER,
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--no-locale",
        )
        pwfile.unlink()
        self._initialised = True

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        done = subprocess.run(
            [*prefix, *command], capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise subprocess.CalledProcessError(
                done.returncode, command, done.stdout, done.stderr + "\n" + self.log()[-2000:]
            )


@contextlib.contextmanager
def running_postgres(port: int | None = None) -> Iterator[PostgresServer]:
    """A started server, removed afterwards."""
    server = PostgresServer(port=port)
    try:
        yield server.start()
    finally:
        server.close()


def create_database(server: PostgresServer) -> str:
    """A fresh, empty database on ``server``; its connection string."""
    name = f"t_{secrets.token_hex(6)}"

    async def create() -> None:
        conn = await asyncpg.connect(server.dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return server.dsn.rsplit("/", 1)[0] + "/" + name


def query(dsn: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    """Rows of ``sql`` as dicts (a fresh connection; for assertions)."""
    return asyncio.run(fetch(dsn, sql, *args))


async def fetch(dsn: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    """:func:`query` for code already on an event loop."""
    conn = await asyncpg.connect(dsn)
    try:
        return [dict(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()
