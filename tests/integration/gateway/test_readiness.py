"""Cold-start spill-over against the real apiserver: a self-hosted entity whose pod is not
ready is skipped at once, and used again as soon as the pod is ready.

The entity's pod is a kwok pod whose status the test writes itself (the annotation
``kwok.x-k8s.io/status: custom`` tells kwok to leave it alone), so its readiness flips
when the test says; the EndpointSlice controller turns it into the Service's
EndpointSlice, which the gateway watches with its own ServiceAccount's token, bound (as
the operator binds it) to a role that may only read EndpointSlices.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport import gatewayconfig
from modelport.gateway.app import GatewayApp
from modelport.gateway.context import RequestContext
from modelport.gateway.pipeline import Pipeline
from modelport.gateway.readiness import EndpointSliceReadiness
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

pytestmark = pytest.mark.cluster

SERVICE = "chat-llama"
POD = "llama-0"


def set_ready(cluster: Cluster, namespace: str, ready: bool) -> None:
    """Write the pod's status as a kubelet would: Running, an IP, Ready or not."""
    status = "True" if ready else "False"
    patch = {
        "status": {
            "phase": "Running",
            "podIP": "10.244.9.9",
            "podIPs": [{"ip": "10.244.9.9"}],
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": status},
                {"type": "Ready", "status": status},
            ],
        }
    }
    cluster.kubectl(
        "-n", namespace, "patch", "pod", POD, "--subresource=status", "--type=merge",
        "-p", json.dumps(patch),
    )  # fmt: skip


@pytest.fixture
def self_hosted(cluster: Cluster, namespace: str) -> Iterator[None]:
    """The entity's Service and its one pod (not ready), and the gateway's ServiceAccount
    ``gw`` bound to a role that may read EndpointSlices (what the chart and the operator
    set up)."""
    manifests: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "gw"}},
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
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "gw"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "gateway-readiness",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "gw", "namespace": namespace}],
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": SERVICE},
            "spec": {"selector": {"app": "llama"}, "ports": [{"port": 8000}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": POD,
                "labels": {"app": "llama"},
                "annotations": {"kwok.x-k8s.io/status": "custom"},
            },
            "spec": {
                "nodeName": "kwok-cpu-0",
                "containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0"}],
            },
        },
    ]
    cluster.kubectl(
        "-n", namespace, "apply", "-f", "-",
        input="\n---\n".join(json.dumps(m) for m in manifests),
    )  # fmt: skip
    set_ready(cluster, namespace, False)
    eventually(
        lambda: cluster.kubectl(
            "auth", "can-i", "watch", "endpointslices.discovery.k8s.io", "-n", namespace,
            f"--as=system:serviceaccount:{namespace}:gw", check=False,
        ).stdout.strip() == "yes",
        timeout=30,
    )  # fmt: skip
    yield


def test_a_self_hosted_entity_with_no_ready_pod_is_skipped_at_once(
    cluster: Cluster, namespace: str, self_hosted: None, provider: FakeProvider, tmp_path: Path
) -> None:
    hits = {"llama": 0, "backup": 0}

    @provider.route("POST", "/llama/v1/chat/completions")
    def llama(seen: Seen) -> Reply:
        hits["llama"] += 1
        return chat_reply("from llama")

    @provider.route("POST", "/backup/v1/chat/completions")
    def backup(seen: Seen) -> Reply:
        hits["backup"] += 1
        return chat_reply("from backup")

    url, ca_file = api_server(cluster, tmp_path)
    token_file = tmp_path / "gw.token"
    token_file.write_text(mint(cluster, namespace, "gw"))
    config = endpoint(
        vllm("llama", provider.url + "/llama/v1"),
        vllm("backup", provider.url + "/backup/v1"),
        routes=[
            {"servedEntityName": "llama", "trafficPercentage": 100},
            {"servedEntityName": "backup", "trafficPercentage": 0},
        ],
        aiGateway={"fallbackEnabled": True},
        readiness={
            "namespace": namespace,
            "services": {"llama": SERVICE},
            "apiServer": url,
            "caFile": str(ca_file),
            "tokenFile": str(token_file),
        },
    )
    config_dir, secrets_dir = write_config(tmp_path / "gw", config, {})
    done: list[RequestContext] = []

    class Sink:
        def submit(self, ctx: RequestContext) -> None:
            done.append(ctx)

    app = GatewayApp(
        gatewayconfig.load(config_dir), secrets_dir, pipeline=Pipeline(sinks=(Sink(),))
    )
    readiness = app.readiness
    assert isinstance(readiness, EndpointSliceReadiness)
    gw = RunningGateway(app, secrets_dir).start()
    try:
        # The watch has listed the Service's EndpointSlice: its one endpoint is not ready.
        eventually(lambda: readiness.synced.is_set() and not readiness.ready("llama"), timeout=30)
        chat = {"model": "ep", "messages": [{"role": "user", "content": "hi"}]}
        began = time.monotonic()
        r = httpx.post(gw.url + "/v1/chat/completions", json=chat, timeout=10)
        took = time.monotonic() - began
        assert r.status_code == 200 and r.headers["served-model-name"] == "backup"
        assert hits == {"llama": 0, "backup": 1}  # no request to the cold entity at all
        assert took < 1.0
        skipped = done[-1].attempts[0]
        assert (skipped.entity, skipped.skipped, skipped.status) == ("llama", "not_ready", 503)
        assert 'reason="not_ready"' in httpx.get(gw.url + "/metrics").text

        # The pod becomes ready: the watch sees it, and the entity answers again.
        set_ready(cluster, namespace, True)
        eventually(lambda: readiness.ready("llama"), timeout=30)
        r = httpx.post(gw.url + "/v1/chat/completions", json=chat, timeout=10)
        assert r.headers["served-model-name"] == "llama" and hits["llama"] == 1

        set_ready(cluster, namespace, False)
        eventually(lambda: not readiness.ready("llama"), timeout=30)
        r = httpx.post(gw.url + "/v1/chat/completions", json=chat, timeout=10)
        assert r.headers["served-model-name"] == "backup" and hits["llama"] == 1
    finally:
        gw.stop()


def test_without_rights_every_entity_counts_as_ready(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """A gateway whose ServiceAccount may not read EndpointSlices never skips (the watch
    fails, and an unknown state is "ready")."""
    import asyncio

    cluster.kubectl("-n", namespace, "create", "serviceaccount", "norights")
    url, ca_file = api_server(cluster, tmp_path)
    token_file = tmp_path / "norights.token"
    token_file.write_text(mint(cluster, namespace, "norights"))
    config = gatewayconfig.Readiness.model_validate(
        {
            "namespace": namespace,
            "services": {"llama": SERVICE},
            "apiServer": url,
            "caFile": str(ca_file),
            "tokenFile": str(token_file),
        }
    )

    async def run() -> bool:
        readiness = EndpointSliceReadiness(config)
        await readiness.start()
        await asyncio.sleep(1.0)
        try:
            return readiness.ready("llama") and not readiness.synced.is_set()
        finally:
            await readiness.aclose()

    assert asyncio.run(run())
