"""Waking an entity from zero against the real apiserver: the gateway, with the token of
its own ServiceAccount and exactly the Role the operator renders for it, takes the
entity's Deployment from 0 to 1 replica; kwok runs the pod; the EndpointSlice watch sees
it ready and releases the held requests, every one answered. The same ServiceAccount may
scale nothing else (`kubectl auth can-i`, as it).

The entity's Service and Deployment are the operator's own rendering (without owner
references: there is no endpoint object here); the model server the gateway forwards to
is a fake on loopback, since kwok pods run no container.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport import gatewayconfig
from modelport.gateway.app import GatewayApp
from modelport.gateway.readiness import EndpointSliceReadiness
from modelport.render import render
from modelport.settings import from_env
from tests.conftest import Cluster
from tests.integration.gateway.fakes import (
    FakeProvider,
    Reply,
    RunningGateway,
    Seen,
    chat_reply,
    endpoint,
    vllm,
    write_config,
)
from tests.integration.gateway.kubeauth import api_server, mint
from tests.support import eventually
from tests.unit.operator.helpers import endpoint as api_endpoint
from tests.unit.operator.helpers import self_hosted

pytestmark = pytest.mark.cluster

SETTINGS = from_env({"MODELPORT_GATEWAY_READINESS_ROLE": "Role/gateway-readiness"})
ACCOUNT = "chat-gateway"
DEPLOYMENT = "chat-llama"


def _can(cluster: Cluster, namespace: str, *args: str, where: str = "") -> bool:
    """Whether the gateway's ServiceAccount may do `args` in `where` (default: its own
    namespace)."""
    done = cluster.kubectl(
        "auth", "can-i", *args, "-n", where or namespace,
        f"--as=system:serviceaccount:{namespace}:{ACCOUNT}", check=False,
    )  # fmt: skip
    return done.stdout.strip() == "yes"


@pytest.fixture
def rendered(cluster: Cluster, namespace: str) -> Iterator[None]:
    """What the operator renders for an endpoint with one entity that scales to zero:
    the gateway's ServiceAccount, its wake Role and RoleBindings (the readiness role the
    chart would create, as a Role here), the entity's Service and Deployment. A second
    Deployment stands beside it, which the gateway must not be able to scale."""
    ep = api_endpoint(self_hosted("llama", scaleToZeroEnabled=True), name="chat")
    ep = ep.model_copy(update={"metadata": ep.metadata.model_copy(update={"namespace": namespace})})
    children = [
        c
        for c in render(ep, SETTINGS).children
        if c["kind"] in ("ServiceAccount", "Role", "RoleBinding")
        or c["metadata"]["name"] == DEPLOYMENT
    ]
    manifests: list[dict[str, Any]] = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "gateway-readiness"},
            "rules": [
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        }
    ]
    for child in children:
        child["metadata"].pop("ownerReferences", None)
        manifests.append(child)
    other = json.loads(json.dumps(next(m for m in manifests if m["kind"] == "Deployment")))
    other["metadata"]["name"] = "someone-elses"
    manifests.append(other)
    cluster.kubectl(
        "-n", namespace, "apply", "-f", "-", input="\n---\n".join(json.dumps(m) for m in manifests)
    )
    for name in (DEPLOYMENT, "someone-elses"):
        cluster.kubectl("-n", namespace, "scale", "deployment", name, "--replicas=0")
    eventually(lambda: _can(cluster, namespace, "update", f"deployments.apps/{DEPLOYMENT}",
                            "--subresource=scale"), timeout=30)  # fmt: skip
    yield


def test_the_gateway_may_scale_only_its_own_entities(
    cluster: Cluster, namespace: str, rendered: None
) -> None:
    own = f"deployments.apps/{DEPLOYMENT}"
    assert _can(cluster, namespace, "get", own, "--subresource=scale")
    assert _can(cluster, namespace, "update", own, "--subresource=scale")
    assert not _can(cluster, namespace, "patch", own, "--subresource=scale")
    assert not _can(cluster, namespace, "update", "deployments.apps/someone-elses",
                    "--subresource=scale")  # fmt: skip
    assert not _can(cluster, namespace, "update", own)  # the Deployment itself: no
    assert not _can(cluster, namespace, "create", "deployments.apps")
    assert not _can(cluster, namespace, "update", own, "--subresource=scale", where="default")


def test_held_requests_are_answered_once_the_woken_entity_is_ready(
    cluster: Cluster, namespace: str, rendered: None, provider: FakeProvider, tmp_path: Path
) -> None:
    answered: list[float] = []

    @provider.route("POST", "/llama/v1/chat/completions")
    def llama(seen: Seen) -> Reply:
        answered.append(time.monotonic())
        return chat_reply("from llama")

    url, ca_file = api_server(cluster, tmp_path)
    token_file = tmp_path / "gw.token"
    token_file.write_text(mint(cluster, namespace, ACCOUNT))
    kube = {"apiServer": url, "caFile": str(ca_file), "tokenFile": str(token_file)}
    config = endpoint(
        vllm("llama", provider.url + "/llama/v1"),
        name="chat",
        requestTimeoutSeconds=60,
        readiness={"namespace": namespace, "services": {"llama": DEPLOYMENT}, **kube},
        scaleToZero={"namespace": namespace, "deployments": {"llama": DEPLOYMENT}, **kube},
    )
    config_dir, secrets_dir = write_config(tmp_path / "gw", config, {})
    app = GatewayApp(gatewayconfig.load(config_dir), secrets_dir)
    readiness = app.readiness
    assert isinstance(readiness, EndpointSliceReadiness)
    gw = RunningGateway(app, secrets_dir).start()
    try:
        eventually(lambda: readiness.synced.is_set() and not readiness.ready("llama"), 30)
        began = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            answers = list(
                pool.map(
                    lambda _: httpx.post(
                        gw.url + "/v1/chat/completions",
                        json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
                        timeout=90,
                    ),
                    range(4),
                )
            )
        took = time.monotonic() - began
        assert [r.status_code for r in answers] == [200] * 4, [r.text for r in answers]
        assert len(answered) == 4 and min(answered) > began
        deployment = json.loads(
            cluster.kubectl("-n", namespace, "get", "deployment", DEPLOYMENT, "-o", "json").stdout
        )
        assert deployment["spec"]["replicas"] == 1  # woken: 0 -> 1, and no further
        metrics = httpx.get(gw.url + "/metrics").text
        assert 'modelport_gateway_wakes_total{entity="llama",result="woken"} 1.0' in metrics
        assert 'modelport_gateway_cold_start_seconds_count{entity="llama"} 1.0' in metrics
        print(f"held requests answered {took:.1f}s after they were sent (kwok pod start)")
    finally:
        gw.stop()
