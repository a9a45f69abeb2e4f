"""The local cluster's real node runs containers for real.

`hack/cluster up` adds one real node (containerd, runc, a CNI bridge, kubelet
and kube-proxy; see hack/node/realnode.py) beside the kwok nodes when the
machine can run it. Pods opt in to it: they select the label
`modelport.io/node-kind: real` and tolerate the taint `modelport.io/real-node`.
These tests run the project image there and check what only a real node does:
the process exists on the host, a Service's ClusterIP reaches it through
kube-proxy, the kubelet rewrites a mounted Secret when it changes, `kubectl
exec` and `logs` reach the container, and `hack/cluster down` leaves nothing.

They skip when the session's cluster has no real node, unless
MODELPORT_REAL_NODE=1 asks for one, in which case they fail.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import HACK, Cluster
from tests.support import eventually

pytestmark = pytest.mark.cluster

IMAGE = os.environ.get("MODELPORT_IMAGE", "modelport/modelport:dev")
ON_REAL_NODE: dict[str, Any] = {
    "nodeSelector": {"modelport.io/node-kind": "real"},
    "tolerations": [
        {"key": "modelport.io/real-node", "operator": "Exists", "effect": "NoSchedule"}
    ],
}
HTTP_PORT = 8080


def state_dir(cluster: Cluster) -> Path:
    """`hack/cluster` keeps its kubeconfig at the top of the cluster's state directory."""
    return cluster.kubeconfig.parent


def hack_cluster(state: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["MODELPORT_CLUSTER_DIR"] = str(state)
    return subprocess.run(
        [str(HACK / "cluster"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def real_node(cluster: Cluster) -> dict[str, Any]:
    """The real node's Node object; skips (or fails) when the cluster has none."""
    nodes = json.loads(
        cluster.kubectl("get", "nodes", "-l", "modelport.io/node-kind=real", "-o", "json").stdout
    )["items"]
    if not nodes:
        reason = (
            "the cluster has no real node (hack/cluster up starts one when the machine can; "
            "a cluster started before that needs `hack/cluster down && hack/cluster up`)"
        )
        if os.environ.get("MODELPORT_REAL_NODE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    if not (state_dir(cluster) / "node" / "node.json").is_file():
        pytest.skip("the real node is not one that hack/cluster runs here: images cannot be loaded")
    node: dict[str, Any] = nodes[0]
    return node


@pytest.fixture(scope="module")
def image(cluster: Cluster, real_node: dict[str, Any]) -> str:
    """The project image, built if Docker lacks it, loaded into the real node."""
    have = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, check=False)
    if have.returncode != 0:
        subprocess.run([str(HACK / "docker"), "image"], check=True, timeout=900)
    loaded = hack_cluster(state_dir(cluster), "load-image", IMAGE)
    assert loaded.returncode == 0, loaded.stderr
    return IMAGE


def apply(cluster: Cluster, namespace: str, manifest: dict[str, Any]) -> None:
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(manifest))


def get(cluster: Cluster, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    out = cluster.kubectl("-n", namespace, "get", kind, name, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def http_server_pod(name: str, image: str, **spec: Any) -> dict[str, Any]:
    """The project image serving its working directory over HTTP on 8080."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            **ON_REAL_NODE,
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-m", "http.server", str(HTTP_PORT)],
                    "ports": [{"containerPort": HTTP_PORT}],
                    "readinessProbe": {
                        "httpGet": {"path": "/", "port": HTTP_PORT},
                        "periodSeconds": 1,
                    },
                }
            ],
            **spec,
        },
    }


def ready_pod(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        pod = get(cluster, namespace, "pod", name)
        conditions = (pod or {}).get("status", {}).get("conditions", [])
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            return pod
        return None

    try:
        return eventually(ready, timeout=90)
    except AssertionError:
        described = cluster.kubectl("-n", namespace, "describe", "pod", name, check=False)
        raise AssertionError(f"pod {name} never became Ready:\n{described.stdout}") from None


def host_processes_of(pod_uid: str) -> dict[int, str]:
    """Processes on this host in the pod's cgroup (the kubelet names it pod<uid>)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cgroups = (proc / "cgroup").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if f"pod{pod_uid}" in cgroups:
            found[int(proc.name)] = cmdline
    return found


def test_pods_without_the_toleration_stay_off_the_real_node(
    cluster: Cluster, namespace: str, real_node: dict[str, Any]
) -> None:
    apply(
        cluster,
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "plain"},
            "spec": {
                "replicas": 4,
                "selector": {"matchLabels": {"app": "plain"}},
                "template": {
                    "metadata": {"labels": {"app": "plain"}},
                    "spec": {"containers": [{"name": "c", "image": "registry.invalid/x:1"}]},
                },
            },
        },
    )

    def scheduled() -> list[str] | None:
        pods = json.loads(cluster.kubectl("-n", namespace, "get", "pods", "-o", "json").stdout)
        nodes = [p["spec"].get("nodeName") for p in pods["items"]]
        return nodes if len(nodes) == 4 and all(nodes) else None

    assert real_node["metadata"]["name"] not in eventually(scheduled, timeout=60)
    assert {"key": "modelport.io/real-node", "value": "true", "effect": "NoSchedule"} in real_node[
        "spec"
    ]["taints"]


def test_project_image_runs_for_real_and_answers_exec_and_logs(
    cluster: Cluster, namespace: str, real_node: dict[str, Any], image: str
) -> None:
    apply(cluster, namespace, http_server_pod("web", image))
    pod = ready_pod(cluster, namespace, "web")

    assert pod["spec"]["nodeName"] == real_node["metadata"]["name"]
    status = pod["status"]["containerStatuses"][0]
    assert status["containerID"].startswith("containerd://")
    assert status["ready"] is True
    # The container's process runs on this host, in the pod's cgroup.
    processes = host_processes_of(pod["metadata"]["uid"])
    assert f"python3 -m http.server {HTTP_PORT}" in processes.values(), processes

    # apiserver -> kubelet: exec and logs.
    exec_out = cluster.kubectl("-n", namespace, "exec", "web", "--", "cat", "/etc/hostname")
    assert exec_out.stdout.strip() == "web"
    # The readiness probe's requests, answered by the server, are in its log.
    logs = cluster.kubectl("-n", namespace, "logs", "web").stdout
    assert re.search(r'"GET / HTTP/1\.1" 200', logs), logs


def test_service_reaches_the_pod_by_cluster_ip_and_by_name(
    cluster: Cluster, namespace: str, real_node: dict[str, Any], image: str
) -> None:
    apply(cluster, namespace, http_server_pod("web", image))
    apply(
        cluster,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": HTTP_PORT}]},
        },
    )
    ready_pod(cluster, namespace, "web")
    service = get(cluster, namespace, "service", "web")
    assert service
    cluster_ip = service["spec"]["clusterIP"]

    # A second pod on the node: through the ClusterIP to the server (by address,
    # and by name through the cluster DNS), and through the `kubernetes` Service
    # to the apiserver with its ServiceAccount token.
    # kube-proxy and CoreDNS follow the EndpointSlice a moment after the pod is
    # Ready, as in any cluster: retry for a while, and say what failed.
    client = f"""
import os, ssl, sys, time, urllib.request
def get(what, url, **kwargs):
    deadline = time.monotonic() + 30
    while True:
        try:
            print(what + ":", urllib.request.urlopen(url, timeout=5, **kwargs).status, flush=True)
            return
        except OSError as e:
            if time.monotonic() > deadline:
                print(what, "failed:", e, flush=True)
                sys.exit(1)
            time.sleep(0.5)
get("web", "http://{cluster_ip}/")
get("by name", "http://web/")
get("by FQDN", "http://web.{namespace}.svc.cluster.local/")
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
env = os.environ
api = "https://%s:%s" % (env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"])
ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
token = open(sa + "/token").read()
req = urllib.request.Request(api + "/version", headers={{"Authorization": "Bearer " + token}})
get("apiserver", req, context=ctx)
"""
    apply(
        cluster,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "client"},
            "spec": {
                **ON_REAL_NODE,
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "main",
                        "image": image,
                        "imagePullPolicy": "Never",
                        "command": ["python3", "-c", client],
                    }
                ],
            },
        },
    )

    def finished() -> str | None:
        pod = get(cluster, namespace, "pod", "client")
        phase = (pod or {}).get("status", {}).get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = eventually(finished, timeout=90)
    logs = cluster.kubectl("-n", namespace, "logs", "client").stdout
    assert phase == "Succeeded", logs
    assert "web: 200" in logs
    assert "by name: 200" in logs
    assert "by FQDN: 200" in logs
    assert "apiserver: 200" in logs

    # From the host, inside the node's network, kube-proxy's rules answer too.
    def from_node() -> str | None:
        done = hack_cluster(
            state_dir(cluster),
            "node-exec",
            "python3",
            "-c",
            f"import urllib.request as r; print(r.urlopen('http://{cluster_ip}/').status)",
            timeout=30,
        )
        return done.stdout.strip() or None

    assert eventually(from_node, timeout=30) == "200"


def test_kubelet_updates_a_mounted_secret_in_place(
    cluster: Cluster, namespace: str, real_node: dict[str, Any], image: str
) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "keys"},
        "stringData": {"openai": "sk-first"},
    }
    apply(cluster, namespace, secret)
    volume = {
        "name": "keys",
        "projected": {"sources": [{"secret": {"name": "keys"}}], "defaultMode": 0o440},
    }
    pod = http_server_pod("web", image, volumes=[volume])
    pod["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "keys", "mountPath": "/etc/modelport/keys", "readOnly": True}
    ]
    pod["spec"]["securityContext"] = {"fsGroup": 65532}
    apply(cluster, namespace, pod)
    before = ready_pod(cluster, namespace, "web")

    def key_file() -> str:
        out = cluster.kubectl(
            "-n", namespace, "exec", "web", "--", "cat", "/etc/modelport/keys/openai", check=False
        )
        return out.stdout

    assert key_file() == "sk-first"
    secret["stringData"] = {"openai": "sk-second"}
    apply(cluster, namespace, secret)
    started = time.monotonic()
    eventually(lambda: key_file() == "sk-second", timeout=120, interval=1)
    print(f"the kubelet updated the file {time.monotonic() - started:.1f}s after the change")

    # Updated in place: the same container, never restarted.
    after = get(cluster, namespace, "pod", "web")
    assert after
    was, now = before["status"]["containerStatuses"][0], after["status"]["containerStatuses"][0]
    assert now["containerID"] == was["containerID"]
    assert now["restartCount"] == 0


def test_deleting_a_pod_stops_its_processes_on_the_host(
    cluster: Cluster, namespace: str, real_node: dict[str, Any], image: str
) -> None:
    apply(cluster, namespace, http_server_pod("web", image))
    uid = ready_pod(cluster, namespace, "web")["metadata"]["uid"]
    assert host_processes_of(uid)

    cluster.kubectl("-n", namespace, "delete", "pod", "web", "--wait=true", "--timeout=60s")
    assert get(cluster, namespace, "pod", "web") is None
    # Its container and sandbox processes are gone from the host.
    eventually(lambda: not host_processes_of(uid), timeout=30)


# --- a private cluster with its own real node: `down` leaves nothing behind ---------------


PRIVATE = {
    "MODELPORT_ETCD_PORT": "32379",
    "MODELPORT_ETCD_PEER_PORT": "32380",
    "MODELPORT_APISERVER_PORT": "36443",
    "MODELPORT_KCM_PORT": "40257",
    "MODELPORT_SCHEDULER_PORT": "40259",
    "MODELPORT_KWOK_PORT": "40247",
    "MODELPORT_SERVICE_CIDR": "10.98.0.0/16",
    "MODELPORT_NODE_POD_CIDR": "10.247.0.0/24",
}


def host_traces(node: dict[str, Any]) -> list[str]:
    """What of a real node (as node.json describes it) this host still holds."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point.startswith((node["data"], node["state"])):
            found.append(f"mount {point}")
    if Path(f"/sys/class/net/{node['host_veth']}").exists():
        found.append(f"link {node['host_veth']}")
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    found += [f"route {r}" for r in routes.splitlines() if node["host_veth"] in r]
    found += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob(f"*/modelport-{node['id']}")]
    if Path(node["data"]).exists():
        found.append(f"directory {node['data']}")
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if node["data"].encode() in cmdline or node["state"].encode() in cmdline:
            found.append(f"process {proc.name}: {cmdline[:120]!r}")
    for link in Path("/var/log/containers").glob("*.log"):
        if str(link.readlink()).startswith(node["data"]):
            found.append(f"log link {link}")
    return found


@pytest.fixture
def private_state(tmp_path: Path) -> Iterator[Path]:
    # Under /tmp, short: the node's own paths are kept short anyway.
    state = tmp_path / "c"
    yield state
    if state.exists():  # the test failed half-way: never leave a cluster running
        subprocess.run(
            [str(HACK / "cluster"), "down"],
            env={**os.environ, **PRIVATE, "MODELPORT_CLUSTER_DIR": str(state)},
            capture_output=True,
            check=False,
        )


def test_down_removes_the_real_node_and_its_pods_from_the_host(
    cluster: Cluster, private_state: Path
) -> None:
    if any(socket.socket().connect_ex(("127.0.0.1", int(p))) == 0 for k, p in PRIVATE.items()
           if k.endswith("_PORT")):  # fmt: skip
        pytest.skip("the private cluster's ports are taken")
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env.update(PRIVATE, MODELPORT_CLUSTER_DIR=str(private_state))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=180)

    up = run(str(HACK / "cluster"), "up")
    assert up.returncode == 0, up.stderr
    if not (private_state / "node" / "node.json").is_file():
        run(str(HACK / "cluster"), "down")
        if os.environ.get("MODELPORT_REAL_NODE") == "1":
            pytest.fail(f"no real node: {up.stderr}")
        pytest.skip(f"this machine cannot run a real node: {up.stderr[-300:]}")
    node = json.loads((private_state / "node" / "node.json").read_text())

    # A pod on it: the pause image is all that node holds, and all this needs.
    kubectl = str(cluster.tools / "kubectl")
    kc = str(private_state / "kubeconfig")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "sleeper", "namespace": "default"},
        "spec": {
            **ON_REAL_NODE,
            "containers": [
                {"name": "main", "image": "modelport.local/pause:3.10", "imagePullPolicy": "Never"}
            ],
        },
    }
    applied = subprocess.run(
        [kubectl, "--kubeconfig", kc, "apply", "-f", "-"],
        input=json.dumps(pod), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    waited = run(kubectl, "--kubeconfig", kc, "wait", "--for=condition=Ready", "pod/sleeper",
                 "--timeout=90s")  # fmt: skip
    assert waited.returncode == 0, waited.stderr
    # While it runs, the node is visible on the host: mounts, netns, link, cgroups.
    traces = host_traces(node)
    assert any(t.startswith("mount") for t in traces)
    assert f"mount {node['data']}/netns" in traces

    down = run(str(HACK / "cluster"), "down")
    assert down.returncode == 0, down.stderr
    assert host_traces(node) == []
    assert not private_state.exists()
