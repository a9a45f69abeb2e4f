"""The benchmark's own private cluster: ``hack/cluster`` with a temporary state
directory, free ports, no real node, and an audit log of the identities we measure.

Never the developer's cluster: every ``hack/cluster`` call here carries
``MODELPORT_CLUSTER_DIR`` (a fresh temporary directory) and ``MODELPORT_*_PORT``
(free ports), so ``down`` stops and removes only what ``up`` started here.

Identities. The operator and the direct-apply script each get a client certificate of
their own (``modelport-operator``, ``modelport-direct``, group ``modelport-bench``, bound
to ``cluster-admin``), so the apiserver's audit log attributes every request to one of
them; everything else (the benchmark's own applies and watches, the controllers, kwok)
is left out of the log. Not ``system:masters``: that group is exempt from API Priority
and Fairness, which an operator in a real cluster is not.

The gateways' TokenReview binding. As the chart does (``gatewayAuth``), the cluster
gets a ClusterRole that may create TokenReviews and an empty ClusterRoleBinding to it
(``TOKENREVIEW_BINDING``), and the operator the chart's rights on them (get, patch,
update that binding; bind that role); the operator is told its name
(MODELPORT_GATEWAY_TOKENREVIEW_BINDING), keeps every gateway's ServiceAccount in it,
and its requests on it are counted with the rest. Each round starts from an empty
binding (``reset_tokenreview_binding``), like a fresh install.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.gateway.procs import free_port
from benchmarks.operator.api import Api, Identity

REPO = Path(__file__).resolve().parents[2]
HACK = REPO / "hack"
OPERATOR_USER = "modelport-operator"
DIRECT_USER = "modelport-direct"
BENCH_GROUP = "modelport-bench"
# The cluster's own clients that do the work both paths wait for, logged too, to see
# which of them limits the rounds (their request rates).
OTHER_USERS = (
    "system:serviceaccount:kube-system:deployment-controller",
    "system:serviceaccount:kube-system:replicaset-controller",
    "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
    "system:kube-scheduler",
    "kwok",
)
PORT_VARIABLES = {
    "etcd": "MODELPORT_ETCD_PORT",
    "etcd-peer": "MODELPORT_ETCD_PEER_PORT",
    "kube-apiserver": "MODELPORT_APISERVER_PORT",
    "kube-controller-manager": "MODELPORT_KCM_PORT",
    "kube-scheduler": "MODELPORT_SCHEDULER_PORT",
    "kwok": "MODELPORT_KWOK_PORT",
}
# Metadata only (who, what, which object, the answer's code), for the users we count.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "users": [OPERATOR_USER, DIRECT_USER, *OTHER_USERS]},
        {"level": "None"},
    ],
}
TOKENREVIEW_BINDING = "modelport-bench-gateways"
TOKENREVIEW_ROLE = "modelport-bench-gateway-tokenreview"
PODS_PER_NODE = 1000
GPUS_PER_NODE = 8
GATEWAY_PODS_PER_CPU_NODE = 800


@dataclass
class Cluster:
    """A running private cluster (see the module docstring)."""

    state: Path
    env: dict[str, str]
    port: int
    kubectl: Path
    audit_log: Path
    identities: dict[str, Identity] = field(default_factory=dict)

    @property
    def admin(self) -> Identity:
        """The cluster's admin (``system:masters``): the benchmark's own requests."""
        return Identity(self.port, self.state / "pki/ca.crt", *_pair(self.state / "pki", "admin"))

    def kubeconfig(self, user: str) -> Path:
        """A kubeconfig for ``user`` (written by :func:`up`)."""
        return self.state / f"bench-{user}.kubeconfig"

    def run_kubectl(self, *args: str, input_: str | None = None) -> str:
        """kubectl as admin; its output."""
        done = subprocess.run(
            [str(self.kubectl), *args],
            env=self.env,
            input=input_,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if done.returncode:
            raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.strip()[-500:]}")
        return done.stdout


def up(max_gateway_pods: int, max_gpus: int, controller_qps: float, log: Any) -> Cluster:
    """Start the private cluster, sized for the largest round; see the module docstring.

    ``controller_qps`` > 0 raises the client rate limits of kube-controller-manager (its
    default: 20 requests/s, burst 30, per controller) and kube-scheduler (50, burst 100)
    to that rate, burst twice that: at the defaults the Deployment and ReplicaSet
    controllers, not the apiserver or the operator, set the pace of every round.
    """
    state = Path(tempfile.mkdtemp(prefix="modelport-opbench-"))
    audit_dir = Path(tempfile.mkdtemp(prefix="modelport-opbench-audit-"))
    policy = audit_dir / "audit-policy.json"
    policy.write_text(json.dumps(AUDIT_POLICY))
    audit_log = audit_dir / "audit.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPORT_")}
    env.pop("KUBECONFIG", None)
    env.update({var: str(free_port()) for var in PORT_VARIABLES.values()})
    env["MODELPORT_CLUSTER_DIR"] = str(state)
    env["MODELPORT_REAL_NODE"] = "0"
    # maxsize in MB: 0 would mean lumberjack's default of 100 MB, and a rotation mid-round.
    env["MODELPORT_APISERVER_EXTRA_ARGS"] = (
        f"--audit-policy-file={policy} --audit-log-path={audit_log} "
        "--audit-log-format=json --audit-log-maxsize=100000 --audit-log-mode=blocking"
    )
    if controller_qps > 0:
        rates = f"--kube-api-qps={controller_qps:g} --kube-api-burst={2 * controller_qps:g}"
        env["MODELPORT_KCM_EXTRA_ARGS"] = rates
        env["MODELPORT_SCHEDULER_EXTRA_ARGS"] = rates
    started = time.monotonic()
    log(f"starting a private cluster in {state} (apiserver port {env['MODELPORT_APISERVER_PORT']})")
    cluster = Cluster(
        state=state,
        env=env,
        port=int(env["MODELPORT_APISERVER_PORT"]),
        kubectl=Path(_hack("install-tools", env).splitlines()[-1]) / "kubectl",
        audit_log=audit_log,
    )
    try:
        _hack("cluster", env, "up")
        cluster.env["KUBECONFIG"] = str(state / "kubeconfig")
        for user in (OPERATOR_USER, DIRECT_USER):
            cluster.identities[user] = _identity(cluster, user)
        cluster.run_kubectl(
            "create", "clusterrolebinding", BENCH_GROUP, "--clusterrole=cluster-admin",
            f"--group={BENCH_GROUP}",
        )  # fmt: skip
        cluster.run_kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        cluster.run_kubectl(
            "apply", "--server-side", "-f", "-", input_=json.dumps(tokenreview_objects())
        )
        deadline = time.monotonic() + 60
        while True:  # `kubectl wait` fails while the new CRD has no conditions yet
            try:
                cluster.run_kubectl(
                    "wait", "--for=condition=Established", "--timeout=30s",
                    "crd/servingendpoints.serving.modelport.io",
                )  # fmt: skip
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        nodes = bench_nodes(max_gateway_pods, max_gpus)
        cluster.run_kubectl("apply", "--server-side", "-f", "-", input_=json.dumps(nodes))
        cluster.run_kubectl("wait", "--for=condition=Ready", "nodes", "--all", "--timeout=120s")
    except BaseException:
        down(cluster, log)
        raise
    log(
        f"cluster up in {time.monotonic() - started:.0f}s with {len(nodes['items'])} extra kwok "
        f"nodes"
    )
    return cluster


def down(cluster: Cluster, log: Any) -> None:
    """Stop every process of the private cluster and remove its state."""
    done = subprocess.run(
        [str(HACK / "cluster"), "down"], env=cluster.env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    shutil.rmtree(cluster.audit_log.parent, ignore_errors=True)
    log(f"private cluster down (rc {done.returncode})")


def tokenreview_objects() -> dict[str, Any]:
    """What the chart creates for the gateways' TokenReviews, and the operator's rights
    on it (charts/modelport/templates/tokenreview.yaml and rbac.yaml)."""
    operator_role = f"{TOKENREVIEW_BINDING}-operator"
    items: list[dict[str, Any]] = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": TOKENREVIEW_ROLE},
            "rules": [
                {
                    "apiGroups": ["authentication.k8s.io"],
                    "resources": ["tokenreviews"],
                    "verbs": ["create"],
                }
            ],
        },
        _empty_binding(),
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": operator_role},
            "rules": [
                {
                    "apiGroups": ["rbac.authorization.k8s.io"],
                    "resources": ["clusterrolebindings"],
                    "resourceNames": [TOKENREVIEW_BINDING],
                    "verbs": ["get", "patch", "update"],
                },
                {
                    "apiGroups": ["rbac.authorization.k8s.io"],
                    "resources": ["clusterroles"],
                    "resourceNames": [TOKENREVIEW_ROLE],
                    "verbs": ["bind"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": operator_role},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": operator_role,
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR_USER}
            ],
        },
    ]
    return {"apiVersion": "v1", "kind": "List", "items": items}


def _empty_binding() -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": TOKENREVIEW_BINDING},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": TOKENREVIEW_ROLE,
        },
    }


def reset_tokenreview_binding(cluster: Cluster) -> None:
    """The binding with no subjects again (the last round's namespaces are gone, and
    the next operator would leave their subjects alone)."""
    cluster.run_kubectl("delete", "clusterrolebinding", TOKENREVIEW_BINDING, "--wait=true")
    cluster.run_kubectl("create", "-f", "-", input_=json.dumps(_empty_binding()))


def bench_nodes(max_gateway_pods: int, max_gpus: int) -> dict[str, Any]:
    """kwok nodes for the load, beside hack/nodes.yaml's: CPU nodes for the gateways and
    8-GPU nodes (labelled and tainted as in hack/nodes.yaml) for the self-hosted models."""
    items = []
    for i in range(math.ceil(max_gateway_pods / GATEWAY_PODS_PER_CPU_NODE)):
        items.append(_node(f"kwok-bench-cpu-{i}", {"modelport.io/node-kind": "cpu"}, {}, []))
    gpu_labels = {
        "modelport.io/node-kind": "gpu",
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": "NVIDIA-L4",
        "nvidia.com/gpu.memory": "23034",
        "nvidia.com/gpu.count": str(GPUS_PER_NODE),
        "nvidia.com/gpu.family": "ada-lovelace",
    }
    taint = [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    for i in range(math.ceil(max_gpus / GPUS_PER_NODE)):
        extra = {"nvidia.com/gpu": str(GPUS_PER_NODE)}
        items.append(_node(f"kwok-bench-gpu-{i}", gpu_labels, extra, taint))
    return {"apiVersion": "v1", "kind": "List", "items": items}


def _node(
    name: str, labels: dict[str, str], extra: dict[str, str], taints: list[dict[str, str]]
) -> dict[str, Any]:
    resources = {
        "cpu": "1000",
        "memory": "8Ti",
        "pods": str(PODS_PER_NODE),
        "ephemeral-storage": "10Ti",
        **extra,
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                **labels,
            },
        },
        "spec": {"taints": taints},
        "status": {"allocatable": resources, "capacity": resources},
    }


def _hack(script: str, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(HACK / script), *args], env=env, capture_output=True, text=True, timeout=900
    )
    if done.returncode:
        raise RuntimeError(f"hack/{script} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip()


def _pair(pki: Path, name: str) -> tuple[Path, Path]:
    return pki / f"{name}.crt", pki / f"{name}.key"


def _identity(cluster: Cluster, user: str) -> Identity:
    """A client certificate for ``user`` from the cluster's CA, and a kubeconfig."""
    pki = cluster.state / "pki"
    crt, key = _pair(pki, f"bench-{user}")
    csr = pki / f"bench-{user}.csr"

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl("genrsa", "-out", str(key), "2048")
    openssl("req", "-new", "-key", str(key), "-subj", f"/O={BENCH_GROUP}/CN={user}",
            "-out", str(csr))  # fmt: skip
    openssl("x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"), "-CAkey",
            str(pki / "ca.key"), "-CAcreateserial", "-days", "2", "-out", str(crt))  # fmt: skip
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "bench",
                "cluster": {
                    "server": f"https://127.0.0.1:{cluster.port}",
                    "certificate-authority": str(pki / "ca.crt"),
                },
            }
        ],
        "users": [{"name": user, "user": {"client-certificate": str(crt), "client-key": str(key)}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": user}}],
        "current-context": "bench",
    }
    path = cluster.kubeconfig(user)
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return Identity(cluster.port, pki / "ca.crt", crt, key)


def wait_api(api: Api, timeout: float = 30) -> None:
    """Until ``api``'s identity may list namespaces (RBAC binding in effect)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            api.request("GET", "/api/v1/namespaces", query={"limit": "1"})
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
