"""Helpers for the operator's integration tests: run the real operator as a
subprocess against the test cluster, and read what it produced through kubectl."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT, Cluster

SAMPLES = ROOT / "manifests" / "samples"
CHILD_KINDS = (
    "configmaps,serviceaccounts,services,deployments.apps,horizontalpodautoscalers.autoscaling,"
    "rolebindings.rbac.authorization.k8s.io,roles.rbac.authorization.k8s.io"
)
MANAGED = "app.kubernetes.io/managed-by=modelport"
KIND_ALIASES = {
    "ConfigMap": "configmap",
    "ServiceAccount": "serviceaccount",
    "Service": "service",
    "Deployment": "deployment.apps",
    "HorizontalPodAutoscaler": "horizontalpodautoscaler.autoscaling",
}
# Fake values, unique enough that a hit in a scan means a leak, not a coincidence.
FAKE_SECRET_PREFIX = "test-key-not-real"


def install_crd(cluster: Cluster) -> None:
    """Install (or refresh) the ServingEndpoint CRD and wait until it is served."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/servingendpoints.serving.modelport.io",
    )


def install_tokenreview_binding(cluster: Cluster, name: str) -> None:
    """What the chart creates for the gateways' TokenReviews: a ClusterRole `<name>-role`
    that may create TokenReviews, and a ClusterRoleBinding `name` to it, no subjects."""
    apply(
        cluster,
        "default",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": f"{name}-role", "labels": {"modelport-test": "tokenreview"}},
            "rules": [
                {
                    "apiGroups": ["authentication.k8s.io"],
                    "resources": ["tokenreviews"],
                    "verbs": ["create"],
                }
            ],
        },
    )
    apply(
        cluster,
        "default",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": {"modelport-test": "tokenreview"}},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": f"{name}-role",
            },
        },
    )


def binding_subjects(cluster: Cluster, name: str) -> list[str]:
    """`<namespace>/<name>` of each ServiceAccount subject of ClusterRoleBinding `name`."""
    binding = kubectl_json(cluster, "get", "clusterrolebinding", name)
    return [
        f"{s.get('namespace')}/{s['name']}"
        for s in binding.get("subjects") or []
        if s["kind"] == "ServiceAccount"
    ]


def can_create_tokenreviews(cluster: Cluster, namespace: str, account: str) -> bool:
    """Whether ServiceAccount `namespace/account` may create TokenReviews (impersonated)."""
    done = cluster.kubectl(
        "auth",
        "can-i",
        "create",
        "tokenreviews.authentication.k8s.io",
        f"--as=system:serviceaccount:{namespace}:{account}",
        check=False,
    )
    return done.stdout.strip() == "yes"


SHARED_STORE = '{"store": {"address": "redis://modelport-ratelimit.modelport-system:6379/0"}}'


class Operator:
    """`modelport operator` in a subprocess, logging JSON lines to a file.

    `binding` names the ClusterRoleBinding it keeps the gateways' TokenReview subjects
    in (`install_tokenreview_binding`; the chart's `<release>-gateways`)."""

    def __init__(
        self,
        cluster: Cluster,
        namespaces: Iterable[str],
        log_path: Path,
        *extra: str,
        binding: str = "",
    ) -> None:
        self.cluster = cluster
        self.namespaces = list(namespaces)
        self.log_path = log_path
        self.extra = extra
        self.binding = binding
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, via_kopf: bool = False) -> Operator:
        """Start `modelport operator`, or with `via_kopf` the equivalent
        `kopf run -m modelport.controller` configured through MODELPORT_* variables."""
        env = {**self.cluster.env, "PYTHONUNBUFFERED": "1"}
        env.pop("MODELPORT_NAMESPACES", None)
        env.pop("MODELPORT_GATEWAY_TOKENREVIEW_BINDING", None)
        if self.binding:
            env["MODELPORT_GATEWAY_TOKENREVIEW_BINDING"] = self.binding
        # The samples have rate limits; a cluster that enforces them shares a store (the
        # operator only names it; the simulated gateway pods never connect).
        env.setdefault("MODELPORT_RATE_LIMITING", SHARED_STORE)
        if via_kopf:
            args = [
                sys.executable,
                "-m",
                "kopf",
                "run",
                "-m",
                "modelport.controller",
                "--standalone",
                "--log-format",
                "json",
            ]
            for ns in self.namespaces:
                args += ["--namespace", ns]
            env.update(MODELPORT_RESYNC_SECONDS="3", MODELPORT_PROGRESS_DEADLINE_SECONDS="30")
        else:
            args = [sys.executable, "-m", "modelport.cli", "operator", "--log-format", "json"]
            for ns in self.namespaces:
                args += ["--namespace", ns]
            args += ["--resync-seconds", "3", "--progress-deadline-seconds", "30"]
            args += list(self.extra) or ["--liveness", "off"]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def reconcile_lines(self, since: int = 0) -> list[str]:
        """Messages of the 'reconciled …' log lines after byte offset `since`."""
        found = []
        for line in self.log()[since:].splitlines():
            try:
                message = json.loads(line).get("message", "")
            except ValueError:
                continue
            if message.startswith("reconciled "):
                found.append(message)
        return found

    def assert_alive(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, self.log()[-4000:]


def kubectl_json(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def apply(cluster: Cluster, namespace: str, body: dict[str, Any]) -> None:
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(body))


def sample(name: str) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((SAMPLES / f"{name}.yaml").read_text())
    return body


def endpoint(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    done = cluster.kubectl(
        "-n", namespace, "get", "servingendpoint", name, "-o", "json", check=False
    )
    return json.loads(done.stdout) if done.returncode == 0 else None


def state(cluster: Cluster, namespace: str, name: str) -> tuple[str, str] | None:
    body = endpoint(cluster, namespace, name)
    if body is None:
        return None
    status = body.get("status") or {}
    if status.get("observedGeneration") != body["metadata"].get("generation"):
        return None
    st = status.get("state") or {}
    return st.get("ready"), st.get("configUpdate")


def children(cluster: Cluster, namespace: str, endpoint_name: str) -> dict[tuple[str, str], Any]:
    items = kubectl_json(
        cluster,
        "-n",
        namespace,
        "get",
        CHILD_KINDS,
        "-l",
        f"{MANAGED},serving.modelport.io/endpoint={endpoint_name}",
    )["items"]
    return {(i["kind"], i["metadata"]["name"]): i for i in items}


def all_managed(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubectl_json(
        cluster, "-n", namespace, "get", CHILD_KINDS, "-l", MANAGED
    )["items"]
    return items


def create_secret(cluster: Cluster, namespace: str, name: str, data: dict[str, str]) -> None:
    literals = [f"--from-literal={k}={v}" for k, v in data.items()]
    cluster.kubectl("-n", namespace, "create", "secret", "generic", name, *literals)


def bound_pvc(cluster: Cluster, namespace: str, claim: str) -> None:
    """A PVC bound to a pre-made PV, so that a pod using it is schedulable."""
    pv = f"{namespace}-{claim}"
    apply(
        cluster,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv, "labels": {"modelport-test": namespace}},
            "spec": {
                "capacity": {"storage": "10Gi"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "hostPath": {"path": f"/tmp/{pv}"},
                "claimRef": {"namespace": namespace, "name": claim},
                "persistentVolumeReclaimPolicy": "Delete",
            },
        },
    )
    apply(cluster, namespace, claim_for(namespace, claim, pv, "10Gi"))


def claim_for(namespace: str, claim: str, pv: str, size: str) -> dict[str, Any]:
    """A PVC bound to the PersistentVolume `pv` (made by the caller, claimRef'd to it)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim, "namespace": namespace},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "volumeName": pv,
            "resources": {"requests": {"storage": size}},
        },
    }


class StateRecorder:
    """Records every (generation, ready, configUpdate) an endpoint's status goes
    through, from a watch, so that a short IN_PROGRESS is not missed by polling."""

    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        self.seen: list[tuple[int, str | None, str | None]] = []
        self._proc = subprocess.Popen(
            [
                str(cluster.tools / "kubectl"),
                "-n",
                namespace,
                "get",
                "servingendpoint",
                name,
                "--watch",
                "--output-watch-events",
                "-o",
                "json",
            ],
            env=cluster.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        decoder = json.JSONDecoder()
        buffer = ""
        for line in self._proc.stdout:
            buffer += line
            while buffer.strip():
                try:
                    event, end = decoder.raw_decode(buffer.lstrip())
                except ValueError:
                    break
                buffer = buffer.lstrip()[end:]
                obj = event.get("object", {})
                status = obj.get("status") or {}
                st = status.get("state") or {}
                self.seen.append(
                    (
                        int(status.get("observedGeneration") or 0),
                        st.get("ready"),
                        st.get("configUpdate"),
                    )
                )

    def updates(self, generation: int) -> list[str | None]:
        return [u for g, _, u in self.seen if g == generation]

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=10)


def wait_ready(cluster: Cluster, namespace: str, name: str, timeout: float = 90) -> None:
    from tests.support import eventually

    eventually(
        lambda: state(cluster, namespace, name) == ("READY", "NOT_UPDATING"), timeout=timeout
    )


def scan_for(text: str, values: Iterable[str]) -> list[str]:
    return [v for v in values if v in text]


def write_snapshot(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    """What changes when the operator writes: each child's generation and the time of
    the `modelport` field manager's last apply (other controllers write status too,
    so resourceVersions would not tell us apart), and the endpoint's resourceVersion
    (only the operator writes to it here)."""
    snap: dict[str, Any] = {}
    for (kind, child), obj in children(cluster, namespace, name).items():
        meta = obj["metadata"]
        ours = [
            (m.get("operation"), m.get("subresource"), m.get("time"))
            for m in meta.get("managedFields", [])
            if m.get("manager") == "modelport"
        ]
        snap[f"{kind}/{child}"] = (meta.get("generation"), sorted(map(str, ours)))
    body = endpoint(cluster, namespace, name)
    assert body is not None
    snap["endpoint"] = body["metadata"]["resourceVersion"]
    return snap


def wait_gone(predicate_has: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while predicate_has():
        if time.monotonic() > deadline:
            raise AssertionError("still present")
        time.sleep(0.5)


WRITES = re.compile(r"writes=(\d+)")
