"""`modelport gateway` as a process: it serves, proxies, stops on SIGTERM, and refuses a
bad config before listening."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.integration.gateway.fakes import FakeProvider, endpoint, write_config
from tests.integration.gateway.openai_fake import serve_openai

MODELPORT = [sys.executable, "-m", "modelport.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gateway_command(config_dir: Path, secrets_dir: Path, port: int, *extra: str) -> list[str]:
    """`modelport gateway` on a loopback port, quiet."""
    return [
        *MODELPORT,
        "gateway",
        "--config",
        str(config_dir),
        "--secrets",
        str(secrets_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        *extra,
    ]


def test_serves_and_stops(provider: FakeProvider, tmp_path: Path) -> None:
    serve_openai(provider, "/v1", lambda seen: None, model="m")
    config_dir, secrets_dir = write_config(
        tmp_path,
        endpoint(
            {
                "name": "e1",
                "task": "llm/v1/chat",
                "provider": "self-hosted",
                "modelName": "m",
                "baseUrl": provider.url + "/v1",
            }
        ),
        {},
    )
    port = free_port()
    proc = subprocess.Popen(
        gateway_command(config_dir, secrets_dir, port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the gateway did not become ready"
            time.sleep(0.1)
        r = httpx.post(
            f"http://127.0.0.1:{port}/serving-endpoints/ep/invocations",
            json={"messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        assert r.status_code == 200 and r.headers["served-model-name"] == "e1"
    finally:
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert proc.wait(timeout=15) in (0, -signal.SIGTERM)
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert "Traceback" not in output, output


def test_bad_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "gateway.json").write_text(
        json.dumps(
            endpoint(
                {"name": "e1", "task": "llm/v1/chat", "provider": "anthropic", "modelName": "m"}
            )
        )
    )
    done = subprocess.run(
        [*MODELPORT, "gateway", "--config", str(config_dir), "--secrets", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "credentials.apiKey is required" in done.stderr
    assert "Traceback" not in done.stderr


def test_provider_that_cannot_serve_the_task_is_refused(tmp_path: Path) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "gateway.json").write_text(
        json.dumps(
            endpoint(
                {
                    "name": "e1",
                    "task": "llm/v1/embeddings",
                    "provider": "anthropic",
                    "modelName": "m",
                    "credentials": {"apiKey": "k/a"},
                }
            )
        )
    )
    done = subprocess.run(
        [*MODELPORT, "gateway", "--config", str(config_dir), "--secrets", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "cannot serve task llm/v1/embeddings" in done.stderr
