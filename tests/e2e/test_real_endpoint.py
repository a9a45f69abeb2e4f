"""A ServingEndpoint answers for real: the chart installed, its operator and the
endpoint's gateway pods running as containers on the local cluster's real node.

The upstream is a fake OpenAI-compatible provider on this host, listening on the
address pods reach the host at (MODELPORT_HOST_IP); it accepts only the bearer
tokens the test says are valid. The test then drives what only real pods do:
the gateway starts from its rendered config and projected Secret files, passes
its probes, answers the `openai` SDK through the endpoint's Service ClusterIP
(kube-proxy), picks up a Secret rotated in Kubernetes once the kubelet rewrites
the file (no restart, no failed request), and goes away with the endpoint.

Skips when the session's cluster has no real node, unless MODELPORT_REAL_NODE=1
asks for one, in which case it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
import requests
import yaml

from tests.conftest import HACK, ROOT, Cluster
from tests.integration.gateway.fakes import FakeProvider, Seen
from tests.integration.gateway.openai_fake import serve_openai
from tests.integration.operator.support import apply, sample, wait_ready
from tests.integration.test_real_node import hack_cluster, host_processes_of, state_dir
from tests.support import eventually

pytestmark = pytest.mark.cluster

CHART = str(ROOT / "charts" / "modelport")
IMAGE = os.environ.get("MODELPORT_IMAGE", "modelport/modelport:dev")
REAL_NODE_LABEL = "modelport.io/node-kind"
ON_REAL_NODE: dict[str, Any] = {
    "nodeSelector": {REAL_NODE_LABEL: "real"},
    "tolerations": [
        {"key": "modelport.io/real-node", "operator": "Exists", "effect": "NoSchedule"}
    ],
}
ENDPOINT = "custom-chat"  # manifests/samples/custom.yaml
SECRET, SECRET_KEY = "llm-proxy", "token"
UPSTREAM_MODEL = "in-house-chat"
GATEWAY_PODS = f"serving.modelport.io/endpoint={ENDPOINT},serving.modelport.io/component=gateway"


@pytest.fixture(scope="module")
def real_node(cluster: Cluster) -> str:
    """The real node's name and this host's address as pods see it; skips without one."""
    nodes = json.loads(
        cluster.kubectl("get", "nodes", "-l", f"{REAL_NODE_LABEL}=real", "-o", "json").stdout
    )["items"]
    if not nodes or not (state_dir(cluster) / "node" / "node.json").is_file():
        reason = (
            "the cluster has no real node that hack/cluster runs here (hack/cluster up starts "
            "one when the machine can: root, containerd, runc, CNI plugins; see README)"
        )
        if os.environ.get("MODELPORT_REAL_NODE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return str(nodes[0]["metadata"]["name"])


@pytest.fixture(scope="module")
def host_ip(cluster: Cluster, real_node: str) -> str:
    """MODELPORT_HOST_IP of the session's cluster: where pods reach this host."""
    env = hack_cluster(state_dir(cluster), "env")
    assert env.returncode == 0, env.stderr
    found = re.search(r"MODELPORT_HOST_IP=([0-9.]+)", env.stdout)
    assert found, f"hack/cluster env names no MODELPORT_HOST_IP:\n{env.stdout}"
    return found[1]


@pytest.fixture(scope="module")
def image(cluster: Cluster, real_node: str) -> str:
    """The project image, built as the test set-up does (offline; quick when the
    sources are unchanged), loaded into the real node."""
    built = subprocess.run(
        [str(HACK / "docker"), "image"], capture_output=True, text=True, timeout=1200
    )
    assert built.returncode == 0, built.stderr[-4000:]
    name = built.stdout.strip().splitlines()[-1]
    loaded = hack_cluster(state_dir(cluster), "load-image", name)
    assert loaded.returncode == 0, loaded.stderr
    return name


@dataclass
class Upstream:
    """The fake provider and which bearer tokens it accepts right now."""

    fake: FakeProvider
    accepted: set[str] = field(default_factory=set)
    tokens: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"{self.fake.url}/v1"


@pytest.fixture
def upstream(host_ip: str) -> Iterator[Upstream]:
    fake = FakeProvider(host=host_ip).start()
    up = Upstream(fake)

    def check(seen: Seen) -> None:
        header = seen.headers.get("authorization", "")
        token = header.removeprefix("Bearer ")
        with up.lock:
            up.tokens.append(token)
            assert header.startswith("Bearer ") and token in up.accepted, "unknown bearer token"

    serve_openai(fake, "/v1", check, model=UPSTREAM_MODEL)
    yield up
    fake.stop()


def helm(cluster: Cluster, *args: str, timeout: float = 240) -> None:
    done = subprocess.run(
        [str(cluster.tools / "helm"), *args],
        env=cluster.env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"helm {' '.join(args[:2])}: {done.stderr[-3000:]}"


@contextlib.contextmanager
def installed(
    cluster: Cluster, namespace: str, image: str, tmp_path: Path, **extra: Any
) -> Iterator[str]:
    """The chart installed into `namespace` (restricted Pod Security), watching only
    it, its operator and gateway pods pinned to the real node; `extra` adds values."""
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    repository, _, tag = image.rpartition(":")
    values = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "watchNamespaces": [namespace],
        "operator": {**ON_REAL_NODE, "logFormat": "plain"},
        "gateway": {**ON_REAL_NODE, "maxReplicas": 1},
        "metrics": {"service": {"enabled": False}},
        **extra,
    }
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    name = f"mp-{uuid.uuid4().hex[:6]}"
    helm(
        cluster, "install", name, CHART, "--namespace", namespace,
        "--values", str(tmp_path / "values.yaml"), "--wait", "--timeout", "150s",
    )  # fmt: skip
    try:
        yield name
    finally:
        helm(cluster, "uninstall", name, "--namespace", namespace, "--wait", timeout=120)


@pytest.fixture
def release(
    cluster: Cluster, namespace: str, image: str, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    with installed(cluster, namespace, image, tmp_path) as name:
        yield name, image


def pods(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(
        cluster.kubectl("-n", namespace, "get", "pods", "-l", selector, "-o", "json").stdout
    )["items"]
    return found


def running_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return pod["status"].get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conditions
    )


def secret(cluster: Cluster, namespace: str, value: str) -> None:
    """Create or replace the Secret the endpoint refers to, as a user would."""
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET},
        "stringData": {SECRET_KEY: value},
    }
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(body))


def test_endpoint_answers_rotates_its_key_and_goes_away_on_the_real_node(
    cluster: Cluster,
    namespace: str,
    real_node: str,
    release: tuple[str, str],
    upstream: Upstream,
) -> None:
    name, image = release
    # The operator itself runs for real on the real node.
    (operator,) = pods(cluster, namespace, f"app.kubernetes.io/instance={name}")
    assert operator["spec"]["nodeName"] == real_node and running_ready(operator)

    old_key = f"test-key-not-real-{uuid.uuid4().hex[:8]}"
    upstream.accepted.add(old_key)
    secret(cluster, namespace, old_key)
    body = sample("custom")
    body["spec"]["servedEntities"][0]["externalModel"]["customProviderConfig"][
        "customProviderUrl"
    ] = upstream.base_url
    apply(cluster, namespace, body)
    try:
        wait_ready(cluster, namespace, ENDPOINT, timeout=120)
    except AssertionError:
        described = cluster.kubectl("-n", namespace, "describe", "pods", check=False).stdout
        raise AssertionError(f"{ENDPOINT} never became READY:\n{described[-4000:]}") from None

    # The gateway pods run for real: on the real node, in containerd, as processes
    # of this host in the pod's cgroup, from the image the chart was given.
    gateways = eventually(
        lambda: [p for p in pods(cluster, namespace, GATEWAY_PODS) if running_ready(p)], 60
    )
    for pod in gateways:
        assert pod["spec"]["nodeName"] == real_node
        assert pod["spec"]["containers"][0]["image"] == image
        status = pod["status"]["containerStatuses"][0]
        assert status["containerID"].startswith("containerd://")
        found = host_processes_of(pod["metadata"]["uid"])
        assert any("modelport gateway" in cmd for cmd in found.values()), found

    # A chat request through the endpoint's Service: ClusterIP, kube-proxy, pod.
    service = json.loads(
        cluster.kubectl("-n", namespace, "get", "service", ENDPOINT, "-o", "json").stdout
    )
    base = f"http://{service['spec']['clusterIP']}"
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=30)
    raw = client.chat.completions.with_raw_response.create(
        model=ENDPOINT, messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.parse().choices[0].message.content == "Hello from upstream"
    assert raw.headers["served-model-name"] == "in-house"
    assert upstream.tokens and set(upstream.tokens) == {old_key}

    # Rotate the key in Kubernetes. The provider accepts both while it rotates; the
    # kubelet rewrites the projected file, and the gateway's next call carries the new
    # key, with no restart and no failed request in between.
    new_key = f"test-key-not-real-{uuid.uuid4().hex[:8]}"
    upstream.accepted.add(new_key)
    restarts = {p["metadata"]["name"]: p["status"]["containerStatuses"][0]["restartCount"]
                for p in gateways}  # fmt: skip
    rotated_at = time.monotonic()
    secret(cluster, namespace, new_key)
    statuses: list[int] = []
    chat = {"model": ENDPOINT, "messages": [{"role": "user", "content": "hi"}]}
    with requests.Session() as http:
        while new_key not in upstream.tokens:
            assert time.monotonic() - rotated_at < 120, "the rotated key never reached upstream"
            statuses.append(
                http.post(f"{base}/v1/chat/completions", json=chat, timeout=30).status_code
            )
            time.sleep(0.5)
    took = time.monotonic() - rotated_at
    assert statuses and set(statuses) == {200}, statuses
    print(f"rotated key used upstream after {took:.1f}s and {len(statuses)} requests")
    # From then on only the new key: the provider may now revoke the old one.
    with upstream.lock:
        upstream.accepted.discard(old_key)
    for _ in range(3):
        assert http_ok(base, chat)
    after = {p["metadata"]["name"]: p["status"]["containerStatuses"][0]["restartCount"]
             for p in pods(cluster, namespace, GATEWAY_PODS)}  # fmt: skip
    assert after == restarts, "a gateway pod restarted or was replaced during the rotation"

    # Keys never reach a log line.
    logs = cluster.kubectl("-n", namespace, "logs", "-l", GATEWAY_PODS, "--tail=-1").stdout
    assert old_key not in logs and new_key not in logs

    # Deleting the endpoint removes its gateway pods, and their processes on this host.
    cluster.kubectl("-n", namespace, "delete", "servingendpoint", ENDPOINT, "--wait=true")
    eventually(lambda: not pods(cluster, namespace, GATEWAY_PODS), timeout=90)
    eventually(
        lambda: not any(host_processes_of(p["metadata"]["uid"]) for p in gateways), timeout=30
    )


def http_ok(base: str, chat: dict[str, Any]) -> bool:
    return requests.post(f"{base}/v1/chat/completions", json=chat, timeout=30).status_code == 200


# --- a self-hosted llama.cpp model on CPU, the sample hack/up serves -------------------

LLAMA_SAMPLE = "local-llamacpp"
LLAMA_ENDPOINT = "local-chat"
# Outside /root: the model pod's non-root user must be able to reach the file.
MODELS_ROOT = Path("/var/lib/modelport-models/e2e")


@pytest.fixture(scope="module")
def llamacpp_image(cluster: Cluster, real_node: str) -> str:
    """llama.cpp's server image (hack/docker llamacpp-image), loaded into the real node."""
    built = subprocess.run(
        [str(HACK / "docker"), "llamacpp-image"], capture_output=True, text=True, timeout=1200
    )
    assert built.returncode == 0, built.stderr[-4000:]
    name = built.stdout.strip().splitlines()[-1]
    loaded = hack_cluster(state_dir(cluster), "load-image", name)
    assert loaded.returncode == 0, loaded.stderr
    return name


@pytest.fixture
def model_claim(cluster: Cluster, namespace: str, real_node: str) -> Iterator[str]:
    """The PVC `model-cache` holding the SmolLM2 GGUF: a hostPath PV on the real node."""
    from tests.integration.runtimes.llamacpp_env import prepare

    gguf = prepare(log=False).gguf
    folder = MODELS_ROOT / namespace
    folder.mkdir(parents=True, exist_ok=True)
    for path in (MODELS_ROOT.parent, MODELS_ROOT, folder):
        path.chmod(0o755)
    shutil.copyfile(gguf, folder / gguf.name)
    (folder / gguf.name).chmod(0o644)
    pv = f"{namespace}-model-cache"
    manifests = [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": str(folder), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": "model-cache"},
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "kubernetes.io/hostname",
                                        "operator": "In",
                                        "values": [real_node],
                                    }
                                ]
                            }
                        ]
                    }
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "model-cache", "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "volumeName": pv,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    ]
    for manifest in manifests:
        apply(cluster, namespace, manifest)
    try:
        yield gguf.name
    finally:
        cluster.kubectl("delete", "pv", pv, "--wait=false", check=False)
        shutil.rmtree(folder, ignore_errors=True)


def test_llamacpp_endpoint_serves_a_small_model_on_the_real_node(
    cluster: Cluster,
    namespace: str,
    real_node: str,
    image: str,
    llamacpp_image: str,
    model_claim: str,
    tmp_path: Path,
) -> None:
    body = sample(LLAMA_SAMPLE)
    entity = body["spec"]["servedEntities"][0]
    assert entity["entityName"] == f"pvc://model-cache/{model_claim}"
    # What hack/up sets: the image, and the CPU profile's pods on the real node.
    cpu_on_real_node = {"gpus": 0, "cpu": "1", "memory": "1Gi", **ON_REAL_NODE}
    with installed(
        cluster, namespace, image, tmp_path,
        inference={"llamacppImage": llamacpp_image},
        gpuProfiles={"CPU": cpu_on_real_node},
    ):  # fmt: skip
        apply(cluster, namespace, body)
        try:
            wait_ready(cluster, namespace, LLAMA_ENDPOINT, timeout=180)
        except AssertionError:
            described = cluster.kubectl("-n", namespace, "describe", "pods", check=False).stdout
            raise AssertionError(f"{LLAMA_ENDPOINT} never READY:\n{described[-4000:]}") from None

        model_pods = pods(cluster, namespace, f"serving.modelport.io/endpoint={LLAMA_ENDPOINT}")
        assert {p["spec"]["nodeName"] for p in model_pods} == {real_node}
        assert all(running_ready(p) for p in model_pods)

        service = json.loads(
            cluster.kubectl("-n", namespace, "get", "service", LLAMA_ENDPOINT, "-o", "json").stdout
        )
        client = openai.OpenAI(
            base_url=f"http://{service['spec']['clusterIP']}/v1", api_key="unused", timeout=120
        )
        raw = client.chat.completions.with_raw_response.create(
            model=LLAMA_ENDPOINT,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=24,
        )
        reply = raw.parse()
        assert raw.headers["served-model-name"] == entity["name"]
        assert reply.choices[0].message.content and reply.usage and reply.usage.completion_tokens
        print(f"SmolLM2 on {real_node}: {reply.choices[0].message.content!r}")
        cluster.kubectl("-n", namespace, "delete", "servingendpoint", LLAMA_ENDPOINT)
