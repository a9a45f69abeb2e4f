"""`helm install`, `upgrade` and `uninstall` of the chart into the test cluster."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import ROOT, Cluster
from tests.support import eventually

pytestmark = pytest.mark.cluster

CHART = str(ROOT / "charts" / "modelport")


def helm(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(cluster.tools / "helm"), *args],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, f"helm {' '.join(args)}: {done.stderr}"
    return done


def test_install_upgrade_uninstall(cluster: Cluster, namespace: str) -> None:
    # Every pod the chart installs must pass the restricted Pod Security level.
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    release = f"mp-{namespace[-6:]}"
    installed = helm(
        cluster, "install", release, CHART, "--namespace", namespace,
        "--set", f"watchNamespaces={{{namespace}}}", "--wait", "--timeout", "120s",
    )  # fmt: skip
    assert "kubectl get servingendpoints -w" in installed.stdout  # NOTES.txt: the next step
    cluster.kubectl("get", "crd", "servingendpoints.serving.modelport.io")

    def ready_pod() -> dict[str, object] | None:
        pods = json.loads(
            cluster.kubectl(
                "-n", namespace, "get", "pods", "-l", "app.kubernetes.io/component=operator",
                "-o", "json",
            ).stdout
        )["items"]  # fmt: skip
        for pod in pods:
            for c in pod["status"].get("conditions", []):
                if c["type"] == "Ready" and c["status"] == "True":
                    return pod  # type: ignore[no-any-return]
        return None

    first = eventually(ready_pod, timeout=90)

    helm(
        cluster, "upgrade", release, CHART, "--namespace", namespace, "--reuse-values",
        "--set", "operator.logLevel=DEBUG", "--wait", "--timeout", "120s",
    )  # fmt: skip
    deployment = json.loads(
        cluster.kubectl(
            "-n", namespace, "get", "deployment", release + "-modelport", "-o", "json"
        ).stdout
    )
    env = {
        e["name"]: e["value"]
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MODELPORT_LOG_LEVEL"] == "DEBUG"
    eventually(
        lambda: (p := ready_pod()) and p["metadata"]["uid"] != first["metadata"]["uid"], timeout=90
    )  # type: ignore[index]

    helm(cluster, "uninstall", release, "--namespace", namespace, "--wait")
    left = cluster.kubectl(
        "-n", namespace, "get", "deployment,serviceaccount,role,rolebinding,configmap,service",
        "-l", f"app.kubernetes.io/instance={release}", "-o", "name",
    )  # fmt: skip
    assert left.stdout.strip() == ""
    # Nor the cluster-scoped part (the gateways' TokenReview role and binding).
    left = cluster.kubectl(
        "get", "clusterrole,clusterrolebinding",
        "-l", f"app.kubernetes.io/instance={release}", "-o", "name",
    )  # fmt: skip
    assert left.stdout.strip() == ""
