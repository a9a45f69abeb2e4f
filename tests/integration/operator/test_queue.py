"""The work queue against the real apiserver: status churn on an endpoint's children
costs (almost) no reconciles, and a reconcile the apiserver refuses keeps backing off,
exponentially, and recovers on its own once the cause is gone. The operator runs
without its resync loop here, so that every reconcile counted has an event behind it."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Cluster
from tests.integration.operator.conftest import running_operator, scratch_namespace
from tests.integration.operator.support import (
    FAKE_SECRET_PREFIX,
    Operator,
    apply,
    create_secret,
    wait_ready,
)
from tests.support import eventually
from tests.unit.operator.helpers import external

pytestmark = pytest.mark.cluster

RETRY = re.compile(r"reconcile of (\S+) failed \((\d+) in a row\), retrying in ([\d.]+) s")


@pytest.fixture(scope="module")
def quota_namespace(crd: Cluster) -> Iterator[str]:
    with scratch_namespace(crd, "quota") as name:
        yield name


@pytest.fixture(scope="module")
def operator(
    crd: Cluster,
    op_namespace: str,
    quota_namespace: str,
    tokenreview_binding: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Operator]:
    """An operator with no resync: only events make reconciles."""
    with running_operator(
        crd, [op_namespace, quota_namespace], tmp_path_factory,
        "--resync-seconds", "0", "--liveness", "off", binding=tokenreview_binding,
    ) as op:  # fmt: skip
        yield op


def _endpoint(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "serving.modelport.io/v1alpha1",
        "kind": "ServingEndpoint",
        "metadata": {"name": name},
        "spec": {"servedEntities": [external("gpt")]},
    }


def _reconciles(operator: Operator, ns: str, name: str, since: int) -> int:
    return sum(1 for line in operator.reconcile_lines(since) if f" {ns}/{name}:" in line)


def test_a_burst_of_status_changes_on_children_makes_at_most_a_few_reconciles(
    crd: Cluster, op_namespace: str, operator: Operator
) -> None:
    from kubernetes import client

    ns, name = op_namespace, "churn"
    create_secret(crd, ns, "llm-keys", {"openai": f"{FAKE_SECRET_PREFIX}-{uuid.uuid4().hex}"})
    apply(crd, ns, _endpoint(name))
    wait_ready(crd, ns, name)
    time.sleep(3)  # the rollout's last events
    offset = len(operator.log())

    api = crd.api_client()
    autoscaling, apps = client.AutoscalingV2Api(api), client.AppsV1Api(api)
    for i in range(25):
        # What the HPA controller and the Deployment controller write all day long.
        autoscaling.patch_namespaced_horizontal_pod_autoscaler_status(
            f"{name}-gateway", ns, {"status": {"currentReplicas": 1 + i % 2, "desiredReplicas": 1}}
        )
        apps.patch_namespaced_deployment_status(
            f"{name}-gateway", ns, {"status": {"collisionCount": i + 1}}
        )
    time.sleep(5)  # longer than the debounce, the batching and the watch delay
    count = _reconciles(operator, ns, name, offset)
    assert count <= 3, operator.reconcile_lines(offset)
    operator.assert_alive()


def test_a_refused_reconcile_backs_off_and_recovers_when_the_cause_is_fixed(
    crd: Cluster, quota_namespace: str, operator: Operator
) -> None:
    ns, name = quota_namespace, "refused"
    create_secret(crd, ns, "llm-keys", {"openai": f"{FAKE_SECRET_PREFIX}-{uuid.uuid4().hex}"})
    # Every namespace holds one ConfigMap already (kube-root-ca.crt): the gateway's
    # ConfigMap exceeds the quota, and the apiserver refuses it (403, not the spec's fault).
    apply(
        crd,
        ns,
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "no-more-configmaps"},
            "spec": {"hard": {"count/configmaps": "1"}},
        },
    )
    offset = len(operator.log())
    apply(crd, ns, _endpoint(name))

    def retries() -> list[tuple[int, float]] | None:
        found = [
            (int(m.group(2)), float(m.group(3)))
            for m in RETRY.finditer(operator.log()[offset:])
            if m.group(1) == f"{ns}/{name}"
        ]
        return found if len(found) >= 4 else None

    found = eventually(retries, timeout=60)
    # Backing off: each wait twice the one before, from half a second.
    assert [n for n, _ in found[:4]] == [1, 2, 3, 4]
    assert [d for _, d in found[:4]] == [0.5, 1.0, 2.0, 4.0]
    assert "exceeded quota" in operator.log()[offset:]

    crd.kubectl("-n", ns, "delete", "resourcequota", "no-more-configmaps")
    # No event says the quota is gone: the next retry (at most 16 s away) finds out.
    wait_ready(crd, ns, name, timeout=60)
    operator.assert_alive()
