"""Fallback's readiness, against the real apiserver: with fallback over a self-hosted
entity, the operator binds the gateway's ServiceAccount to the readiness role in the
endpoint's namespace, which lets it read EndpointSlices there and nothing else; the
binding goes when fallback does."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cluster
from tests.integration.operator.conftest import make_namespace
from tests.integration.operator.support import Operator, apply, children, kubectl_json
from tests.support import eventually
from tests.unit.operator.helpers import external, self_hosted

pytestmark = pytest.mark.cluster


@pytest.fixture
def readiness_role(crd: Cluster) -> Iterator[str]:
    """The chart's readiness ClusterRole (a name of this test's own)."""
    name = f"modelport-test-{uuid.uuid4().hex[:8]}-readiness"
    crd.kubectl(
        "create", "clusterrole", name, "--verb=get,list,watch",
        "--resource=endpointslices.discovery.k8s.io",
    )  # fmt: skip
    try:
        yield name
    finally:
        crd.kubectl("delete", "clusterrole", name, "--ignore-not-found", check=False)


def _endpoint(fallback: bool) -> dict[str, Any]:
    return {
        "apiVersion": "serving.modelport.io/v1alpha1",
        "kind": "ServingEndpoint",
        "metadata": {"name": "spill"},
        "spec": {
            "servedEntities": [self_hosted("llama", workloadType="GPU_SMALL"), external("gpt")],
            "trafficConfig": {
                "routes": [
                    {"servedEntityName": "llama", "trafficPercentage": 100},
                    {"servedEntityName": "gpt", "trafficPercentage": 0},
                ]
            },
            "aiGateway": {"fallbackConfig": {"enabled": fallback}},
        },
    }


def _can(cluster: Cluster, ns: str, verb: str, resource: str, where: str | None = None) -> bool:
    """Whether ``ns``'s gateway ServiceAccount may ``verb`` ``resource`` in ``where``."""
    done = cluster.kubectl(
        "auth", "can-i", verb, resource, "-n", where or ns,
        f"--as=system:serviceaccount:{ns}:spill-gateway", check=False,
    )  # fmt: skip
    return done.stdout.strip() == "yes"


def test_the_gateway_may_watch_its_endpointslices_while_fallback_needs_it(
    crd: Cluster, readiness_role: str, tmp_path: Path
) -> None:
    ns = make_namespace(crd, "readiness")
    op = Operator(
        crd, [ns], tmp_path / "operator.log",
        "--liveness", "off", "--gateway-readiness-role", f"ClusterRole/{readiness_role}",
    ).start()  # fmt: skip
    try:
        apply(crd, ns, _endpoint(True))
        binding = eventually(
            lambda: children(crd, ns, "spill").get(("RoleBinding", "spill-gateway")), timeout=60
        )
        assert binding["roleRef"]["name"] == readiness_role
        cm = kubectl_json(crd, "-n", ns, "get", "configmap", "spill-gateway")
        readiness = json.loads(cm["data"]["gateway.json"])["readiness"]
        assert readiness == {"namespace": ns, "services": {"llama": "spill-llama"}}
        eventually(lambda: _can(crd, ns, "watch", "endpointslices.discovery.k8s.io"), timeout=30)
        assert not _can(crd, ns, "get", "secrets")
        # In its own namespace only.
        assert not _can(crd, ns, "list", "endpointslices.discovery.k8s.io", "default")

        # Fallback off: nothing to skip to, so no binding and no readiness section.
        apply(crd, ns, _endpoint(False))
        eventually(
            lambda: ("RoleBinding", "spill-gateway") not in children(crd, ns, "spill"), timeout=60
        )
        op.assert_alive()
    finally:
        op.stop()
        crd.kubectl("delete", "namespace", ns, "--wait=false", check=False)
