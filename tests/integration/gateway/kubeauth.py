"""Kubernetes credentials for gateway tests against the local cluster: the apiserver's
URL and CA, ServiceAccount tokens minted by the apiserver, and the right to create
TokenReviews granted (and taken back) as the chart grants it to gateways."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import Cluster
from tests.support import eventually


def api_server(cluster: Cluster, directory: Path) -> tuple[str, Path]:
    """The apiserver's URL and a file with its CA, from the kubeconfig's current context."""
    config: dict[str, Any] = yaml.safe_load(cluster.kubeconfig.read_text())
    context_name = config.get("current-context")
    contexts = {c["name"]: c["context"] for c in config.get("contexts", [])}
    clusters = {c["name"]: c["cluster"] for c in config["clusters"]}
    entry = (
        clusters[contexts[context_name]["cluster"]]
        if context_name in contexts
        else next(iter(clusters.values()))
    )
    if "certificate-authority-data" in entry:
        ca_file = directory / "ca.crt"
        ca_file.write_bytes(base64.b64decode(entry["certificate-authority-data"]))
    else:
        ca_file = Path(entry["certificate-authority"])
        if not ca_file.is_absolute():
            ca_file = cluster.kubeconfig.parent / ca_file
    return entry["server"], ca_file


def mint(cluster: Cluster, namespace: str, account: str, *audiences: str) -> str:
    """A fresh token of ``account`` (for ``audiences``; none: the apiserver's own)."""
    flags = [f"--audience={a}" for a in audiences]
    return cluster.kubectl("-n", namespace, "create", "token", account, *flags).stdout.strip()


def grant_tokenreview(cluster: Cluster, namespace: str, account: str) -> Callable[[], None]:
    """Let ``namespace/account`` create TokenReviews (a ClusterRole and binding named after
    the namespace); returns the function that removes both again."""
    role = f"modelport-test-tokenreview-{namespace}-{account}"
    cluster.kubectl(
        "create", "clusterrole", role, "--verb=create",
        "--resource=tokenreviews.authentication.k8s.io",
    )  # fmt: skip
    cluster.kubectl(
        "create", "clusterrolebinding", role, f"--clusterrole={role}",
        f"--serviceaccount={namespace}:{account}",
    )  # fmt: skip
    # The RBAC authorizer learns of the binding through a watch: wait until it applies.
    eventually(
        lambda: cluster.kubectl(
            "auth", "can-i", "create", "tokenreviews.authentication.k8s.io",
            f"--as=system:serviceaccount:{namespace}:{account}", check=False,
        ).stdout.strip() == "yes",
        timeout=30,
    )  # fmt: skip

    def revoke() -> None:
        cluster.kubectl("delete", "clusterrolebinding", role, "--ignore-not-found", check=False)
        cluster.kubectl("delete", "clusterrole", role, "--ignore-not-found", check=False)

    return revoke
