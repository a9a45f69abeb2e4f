"""Fixtures of the operator's integration tests: the CRD, a namespace and one
operator process per test module (the machine is small; starting Kopf per test
would dominate the run time)."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cluster
from tests.integration.operator.support import (
    Operator,
    install_crd,
    install_tokenreview_binding,
)


@pytest.fixture(scope="session")
def crd(cluster: Cluster) -> Cluster:
    """The cluster, with the ServingEndpoint CRD installed."""
    install_crd(cluster)
    return cluster


@pytest.fixture(scope="session")
def tokenreview_binding(crd: Cluster) -> Iterator[str]:
    """The gateways' TokenReview ClusterRoleBinding the chart would create, named for this
    session (it is cluster-scoped; another session may run beside this one)."""
    name = f"modelport-test-{uuid.uuid4().hex[:8]}-gateways"
    install_tokenreview_binding(crd, name)
    yield name
    crd.kubectl("delete", "clusterrolebinding", name, "--wait=false", check=False)
    crd.kubectl("delete", "clusterrole", f"{name}-role", "--wait=false", check=False)


def make_namespace(cluster: Cluster, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    deadline = time.monotonic() + 60
    while cluster.kubectl("-n", name, "get", "sa", "default", check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"namespace {name}: ServiceAccount 'default' never appeared")
        time.sleep(0.2)
    return name


@contextlib.contextmanager
def scratch_namespace(cluster: Cluster, prefix: str) -> Iterator[str]:
    """A fresh namespace, deleted (without waiting) when done."""
    name = make_namespace(cluster, prefix)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@contextlib.contextmanager
def running_operator(
    cluster: Cluster,
    namespaces: list[str],
    tmp_path_factory: pytest.TempPathFactory,
    *extra: str,
    binding: str,
) -> Iterator[Operator]:
    """`modelport operator` watching `namespaces` (flags `extra`), stopped when done."""
    log = Path(tmp_path_factory.mktemp("operator")) / "operator.log"
    op = Operator(cluster, namespaces, log, *extra, binding=binding).start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture(scope="module")
def op_namespace(crd: Cluster) -> Iterator[str]:
    """A namespace for the module's endpoints, deleted at the module's end."""
    with scratch_namespace(crd, "op") as name:
        yield name


@pytest.fixture(scope="module")
def operator(
    crd: Cluster,
    op_namespace: str,
    tokenreview_binding: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Operator]:
    """`modelport operator` watching the module's namespace, keeping the session's
    TokenReview binding."""
    with running_operator(crd, [op_namespace], tmp_path_factory, binding=tokenreview_binding) as op:
        yield op
