"""Fixtures for the gateway's integration tests: fake providers and a running gateway."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.gateway.fakes import FakeProvider, RunningGateway, start_gateway
from tests.postgres import PostgresServer, create_database


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    """A fake provider on a loopback port."""
    fake = FakeProvider().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Callable[..., RunningGateway]]:
    """Start gateways from (config, secrets); all are stopped after the test."""
    running: list[RunningGateway] = []

    def start(config: dict[str, Any], secrets: dict[str, str] | None = None) -> RunningGateway:
        gw = start_gateway(tmp_path / f"gw{len(running)}", config, secrets or {})
        running.append(gw)
        return gw

    try:
        yield start
    finally:
        for gw in running:
            gw.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One private PostgreSQL server for the session (tests make databases of their own)."""
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.close()


@pytest.fixture
def database(postgres: PostgresServer) -> str:
    """A fresh database on the session's server; its connection string."""
    return create_database(postgres)
