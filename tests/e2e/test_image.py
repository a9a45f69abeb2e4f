"""The project image: built offline by hack/docker, it runs both commands, and its
gateway serves a chat request from the very config and secret files the operator
renders for an endpoint, and writes its usage and payload rows to PostgreSQL."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from modelport.api import ServingEndpoint
from modelport.render import render
from modelport.settings import Settings, UsageDatabase
from tests.conftest import HACK
from tests.integration.gateway.fakes import FakeProvider, Seen
from tests.integration.gateway.openai_fake import serve_openai
from tests.integration.operator.support import sample
from tests.postgres import PostgresServer, create_database, query
from tests.support import eventually

FAKE_TOKEN = "test-key-not-real-image"
CALLER_KEY = "test-caller-key-not-real-image"
CALLERS = {"callers/image": CALLER_KEY}
"""The endpoint's API-key file and the key in it; every other Secret file holds FAKE_TOKEN."""
IMAGE_GID = 65532  # the image's user and group; the operator renders fsGroup to match


@pytest.fixture(scope="module")
def image() -> str:
    """Build the image as the test set-up does (Docker engine, local base, offline)."""
    built = subprocess.run(
        [str(HACK / "docker"), "image"], capture_output=True, text=True, timeout=1200
    )
    assert built.returncode == 0, built.stderr[-4000:]
    return built.stdout.strip().splitlines()[-1]


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=120, check=check
    )


def test_image_runs_both_commands_as_non_root(image: str) -> None:
    helped = docker("run", "--rm", image, "--help").stdout
    assert "operator" in helped and "gateway" in helped
    assert docker("run", "--rm", "--entrypoint", "id", image, "-u").stdout.strip() == "65532"
    # The uid has a name: Kopf looks it up (getpass.getuser()) and fails without one.
    assert docker("run", "--rm", "--entrypoint", "whoami", image).stdout.strip() == "modelport"
    # No compiler in the final stage.
    probe = docker("run", "--rm", "--entrypoint", "sh", image, "-c", "command -v gcc cc || true")
    assert probe.stdout.strip() == ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kubelet_files(
    rendered: list[dict[str, Any]], root: Path, files: dict[str, str] | None = None
) -> tuple[dict[str, Path | None], list[str]]:
    """Lay out the gateway pod's ConfigMap and Secret volumes as the kubelet would.

    Returns the host directory for each mount path (None for an emptyDir), and
    the container's command. Secret files hold FAKE_TOKEN, or what ``files`` (and
    CALLERS) say for their path.
    """
    config_map = next(c for c in rendered if c["kind"] == "ConfigMap")
    deployment = next(
        c for c in rendered
        if c["kind"] == "Deployment" and c["metadata"]["name"].endswith("-gateway")
    )  # fmt: skip
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts: dict[str, Path | None] = {}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            mounts[mount["mountPath"]] = None
            continue
        host = root / mount["name"]
        host.mkdir(parents=True)
        if "configMap" in volume:
            for key, text in config_map["data"].items():
                (host / key).write_text(text)
        elif "projected" in volume:
            mode = volume["projected"]["defaultMode"]
            for source in volume["projected"]["sources"]:
                for item in source["secret"]["items"]:
                    path = host / item["path"]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text({**CALLERS, **(files or {})}.get(item["path"], FAKE_TOKEN))
                    # With fsGroup the kubelet makes read-only volume files
                    # group-owned and group-readable: mode | 0440, group fsGroup.
                    os.chown(path, 0, pod["securityContext"]["fsGroup"])
                    path.chmod(mode | 0o040)
        mounts[mount["mountPath"]] = host
    return mounts, container["command"]


@pytest.fixture
def upstream() -> Iterator[FakeProvider]:
    fake = FakeProvider().start()

    def check(seen: Seen) -> None:
        assert seen.headers.get("authorization") == f"Bearer {FAKE_TOKEN}"

    serve_openai(fake, "/v1", check, model="in-house-chat")
    yield fake
    fake.stop()


def test_gateway_in_the_image_serves_the_rendered_files(
    image: str, upstream: FakeProvider, tmp_path: Path
) -> None:
    postgres = PostgresServer().start()
    try:
        _serve_the_rendered_files(image, upstream, tmp_path, postgres)
    finally:
        postgres.close()


def _serve_the_rendered_files(
    image: str, upstream: FakeProvider, tmp_path: Path, postgres: PostgresServer
) -> None:
    body = sample("custom")
    body["metadata"].update(namespace="team-a", uid=str(uuid.uuid4()))
    body["spec"]["servedEntities"][0]["externalModel"]["customProviderConfig"][
        "customProviderUrl"
    ] = f"{upstream.url}/v1"
    # Callers with an API key (ServiceAccount tokens need a pod's apiserver).
    body["spec"]["aiGateway"] = {
        "auth": {
            "serviceAccountTokens": {"enabled": False},
            "apiKeys": [
                {"secretKeyRef": {"name": "callers", "key": "image"}, "servicePrincipal": "e2e"}
            ],
        },
        "usageTrackingConfig": {"enabled": True},
        "inferenceTableConfig": {"enabled": True},
    }
    # The cluster's usage database (the chart's usageDatabase), on the host's loopback.
    settings = Settings(usage_database=UsageDatabase("usage-db", "dsn"))
    rendered = render(ServingEndpoint.parse(body), settings)
    dsn = create_database(postgres)
    mounts, command = kubelet_files(rendered.children, tmp_path, {"usage-db/dsn": dsn})
    assert command[:2] == ["modelport", "gateway"]

    port = free_port()
    name = f"modelport-e2e-{uuid.uuid4().hex[:8]}"
    volumes = [
        arg
        for path, host in mounts.items()
        for arg in (("--tmpfs", path) if host is None else ("-v", f"{host}:{path}:ro"))
    ]
    # The rendered command, run as the pod would (read-only root, emptyDirs);
    # the host network lets it reach the loopback upstream, so it listens on a
    # free loopback port instead of 8080.
    docker(
        "run", "-d", "--name", name, "--network", "host", "--read-only", *volumes,
        "--entrypoint", command[0], image,
        *command[1:], "--host", "127.0.0.1", "--port", str(port),
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, docker("logs", name, check=False).stderr[-3000:]
            time.sleep(0.5)

        stranger = openai.OpenAI(base_url=f"{base}/v1", api_key=FAKE_TOKEN, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            stranger.chat.completions.create(
                model="custom-chat", messages=[{"role": "user", "content": "hi"}]
            )
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=CALLER_KEY, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="custom-chat", messages=[{"role": "user", "content": "hi"}]
        )
        reply = raw.parse()
        assert reply.choices[0].message.content == "Hello from upstream"
        assert raw.headers["served-model-name"] == "in-house"
        assert upstream.seen, "the upstream was never called"
        (row,) = eventually(
            lambda: _rows(dsn, "SELECT * FROM modelport_usage WHERE status_code = 200"), 20
        )
        assert (row["endpoint_namespace"], row["endpoint_name"]) == ("team-a", "custom-chat")
        assert (row["requester"], row["served_entity"]) == ("e2e", "in-house")
        (payload,) = eventually(
            lambda: _rows(dsn, "SELECT * FROM custom_chat_payload WHERE status_code = 200"), 20
        )
        assert payload["request_id"] == row["request_id"]
        assert json.loads(payload["response"])["choices"][0]["message"]["content"] == (
            "Hello from upstream"
        )
        logs = docker("logs", name, check=False)
        assert FAKE_TOKEN not in logs.stdout + logs.stderr
        assert CALLER_KEY not in logs.stdout + logs.stderr
        assert postgres.password not in logs.stdout + logs.stderr
    finally:
        docker("rm", "-f", name, check=False)


def _rows(dsn: str, sql: str) -> list[dict[str, Any]] | None:
    try:
        return query(dsn, sql) or None
    except Exception:  # the gateway creates the tables when it first connects
        return None
