"""Fixtures for the gateway's integration tests: fake providers and a running gateway."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.integration.gateway.fakes import FakeProvider, RunningGateway, start_gateway
from tests.integration.gateway.redis_server import RedisServer
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


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port, stopped after the test."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def service_account_key() -> tuple[dict[str, str], bytes]:
    """A throwaway service-account key (without token_uri) and its public key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    info = {
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "kid-1",
        "private_key": pem,
        "client_email": "gw@test-project.iam.gserviceaccount.com",
        "client_id": "1",
    }
    return info, public


@pytest.fixture
def provider_gateway(
    provider: FakeProvider,
    gateway: Callable[..., RunningGateway],
    service_account_key: tuple[dict[str, str], bytes],
) -> Callable[[str], RunningGateway]:
    """Start a gateway for one entity of the named provider, its feature fake (see
    feature_fakes) registered on ``provider``."""
    from tests.integration.gateway.feature_fakes import start_gateway

    return lambda name: start_gateway(name, provider, gateway, service_account_key[0])


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
