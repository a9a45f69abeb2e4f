"""What the end-to-end tests on the real node share: the real node and the host's address
as pods see it, the project image loaded into the node, a fake provider pods can reach,
and the chart installed watching one namespace. The fixtures are registered by
tests/e2e/conftest.py."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import HACK, ROOT, Cluster
from tests.integration.gateway.fakes import FakeProvider, Seen
from tests.integration.gateway.openai_fake import serve_openai
from tests.integration.operator.support import claim_for
from tests.integration.test_real_node import hack_cluster, state_dir

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
AUDIENCE = "modelport"
"""The audience of callers' ServiceAccount tokens (the chart's default)."""
GATEWAY_PODS = f"serving.modelport.io/endpoint={ENDPOINT},serving.modelport.io/component=gateway"
LLAMA_SAMPLE = "local-llamacpp"
LLAMA_ENDPOINT = "local-chat"
"""The llama.cpp sample hack/up serves: a small chat model on CPU (SmolLM2)."""


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
def host_ip(cluster: Cluster, real_node: str) -> str:
    """MODELPORT_HOST_IP of the session's cluster: where pods reach this host."""
    env = hack_cluster(state_dir(cluster), "env")
    assert env.returncode == 0, env.stderr
    found = re.search(r"MODELPORT_HOST_IP=([0-9.]+)", env.stdout)
    assert found, f"hack/cluster env names no MODELPORT_HOST_IP:\n{env.stdout}"
    return found[1]


@pytest.fixture(scope="session")
def image(cluster: Cluster, real_node: str) -> str:
    """The project image, built as the test set-up does (offline; quick when the
    sources are unchanged), loaded into the real node."""
    return built_image(cluster, "image")


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


@contextlib.contextmanager
def host_path_claim(
    cluster: Cluster, namespace: str, node: str, folder: Path, claim: str
) -> Iterator[str]:
    """The PVC `claim` bound to `folder` of this host, a hostPath PV on the real node
    `node` (which shares this host's filesystem); the PV and the folder go afterwards."""
    pv = f"{namespace}-{claim}"
    node_affinity = {
        "required": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
                    ]
                }
            ]
        }
    }
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
                "claimRef": {"namespace": namespace, "name": claim},
                "nodeAffinity": node_affinity,
            },
        },
        claim_for(namespace, claim, pv, "1Gi"),
    ]
    for manifest in manifests:
        cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(manifest))
    try:
        yield claim
    finally:
        cluster.kubectl("delete", "pv", pv, "--wait=false", check=False)
        shutil.rmtree(folder, ignore_errors=True)


def built_image(cluster: Cluster, target: str) -> str:
    """`hack/docker <target>` (offline, quick when its inputs are unchanged), loaded into
    the real node; returns the image's name."""
    built = subprocess.run(
        [str(HACK / "docker"), target], capture_output=True, text=True, timeout=1200
    )
    assert built.returncode == 0, built.stderr[-4000:]
    name = built.stdout.strip().splitlines()[-1]
    loaded = hack_cluster(state_dir(cluster), "load-image", name)
    assert loaded.returncode == 0, loaded.stderr
    return name


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


# --- a self-hosted llama.cpp model on CPU, the sample hack/up serves -------------------

# What hack/up sets for the llama.cpp sample: the CPU profile's pods on the real node.
LLAMA_CPU_PROFILE: dict[str, Any] = {"gpus": 0, "cpu": "1", "memory": "1Gi", **ON_REAL_NODE}
# Outside /root: the model pod's non-root user must be able to reach the file.
MODELS_ROOT = Path("/var/lib/modelport-models/e2e")


@pytest.fixture(scope="module")
def llamacpp_image(cluster: Cluster, real_node: str) -> str:
    """llama.cpp's server image (hack/docker llamacpp-image), loaded into the real node."""
    return built_image(cluster, "llamacpp-image")


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
    with host_path_claim(cluster, namespace, real_node, folder, "model-cache"):
        yield gguf.name
