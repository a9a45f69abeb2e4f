"""A ServingEndpoint answers for real: the chart installed, its operator and the
endpoint's gateway pods running as containers on the local cluster's real node.

The upstream is a fake OpenAI-compatible provider on this host, listening on the
address pods reach the host at (MODELPORT_HOST_IP); it accepts only the bearer
tokens the test says are valid. The test then drives what only real pods do:
the gateway starts from its rendered config and projected Secret files, passes
its probes, answers the `openai` SDK through the endpoint's Service ClusterIP
(kube-proxy), picks up a Secret rotated in Kubernetes once the kubelet rewrites
the file (no restart, no failed request), and goes away with the endpoint.

Skips when the session's cluster has no real node, unless MODELPORT_REAL_NODE=1
asks for one, in which case it fails.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import requests

from tests.conftest import Cluster
from tests.e2e.realnode import (
    AUDIENCE,
    ENDPOINT,
    GATEWAY_PODS,
    LLAMA_CPU_PROFILE,
    LLAMA_ENDPOINT,
    LLAMA_SAMPLE,
    Upstream,
    installed,
    pods,
    running_ready,
    secret,
)
from tests.integration.gateway.kubeauth import mint
from tests.integration.operator.support import apply, sample, wait_ready
from tests.integration.test_real_node import host_processes_of
from tests.support import eventually

pytestmark = pytest.mark.cluster


@pytest.fixture
def release(
    cluster: Cluster, namespace: str, image: str, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    with installed(cluster, namespace, image, tmp_path) as name:
        yield name, image


def test_endpoint_answers_rotates_its_key_and_goes_away_on_the_real_node(
    cluster: Cluster,
    namespace: str,
    real_node: str,
    release: tuple[str, str],
    upstream: Upstream,
) -> None:
    name, image = release
    # The operator itself runs for real on the real node.
    (operator,) = pods(cluster, namespace, f"app.kubernetes.io/instance={name}")
    assert operator["spec"]["nodeName"] == real_node and running_ready(operator)

    old_key = f"test-key-not-real-{uuid.uuid4().hex[:8]}"
    upstream.accepted.add(old_key)
    secret(cluster, namespace, old_key)
    body = sample("custom")
    body["spec"]["servedEntities"][0]["externalModel"]["customProviderConfig"][
        "customProviderUrl"
    ] = upstream.base_url
    apply(cluster, namespace, body)
    try:
        wait_ready(cluster, namespace, ENDPOINT, timeout=120)
    except AssertionError:
        described = cluster.kubectl("-n", namespace, "describe", "pods", check=False).stdout
        raise AssertionError(f"{ENDPOINT} never became READY:\n{described[-4000:]}") from None

    # The gateway pods run for real: on the real node, in containerd, as processes
    # of this host in the pod's cgroup, from the image the chart was given.
    gateways = eventually(
        lambda: [p for p in pods(cluster, namespace, GATEWAY_PODS) if running_ready(p)], 60
    )
    for pod in gateways:
        assert pod["spec"]["nodeName"] == real_node
        assert pod["spec"]["containers"][0]["image"] == image
        status = pod["status"]["containerStatuses"][0]
        assert status["containerID"].startswith("containerd://")
        found = host_processes_of(pod["metadata"]["uid"])
        assert any("modelport gateway" in cmd for cmd in found.values()), found

    # A chat request through the endpoint's Service: ClusterIP, kube-proxy, pod.
    service = json.loads(
        cluster.kubectl("-n", namespace, "get", "service", ENDPOINT, "-o", "json").stdout
    )
    base = f"http://{service['spec']['clusterIP']}"
    # Endpoints require a credential: the namespace's own ServiceAccounts may call.
    token = mint(cluster, namespace, "default", AUDIENCE)
    auth = {"authorization": f"Bearer {token}"}
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=token, max_retries=0, timeout=30)
    raw = client.chat.completions.with_raw_response.create(
        model=ENDPOINT, messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.parse().choices[0].message.content == "Hello from upstream"
    assert raw.headers["served-model-name"] == "in-house"
    assert upstream.tokens and set(upstream.tokens) == {old_key}

    # Rotate the key in Kubernetes. The provider accepts both while it rotates; the
    # kubelet rewrites the projected file, and the gateway's next call carries the new
    # key, with no restart and no failed request in between.
    new_key = f"test-key-not-real-{uuid.uuid4().hex[:8]}"
    upstream.accepted.add(new_key)
    restarts = {p["metadata"]["name"]: p["status"]["containerStatuses"][0]["restartCount"]
                for p in gateways}  # fmt: skip
    rotated_at = time.monotonic()
    secret(cluster, namespace, new_key)
    statuses: list[int] = []
    chat = {"model": ENDPOINT, "messages": [{"role": "user", "content": "hi"}]}
    with requests.Session() as http:
        while new_key not in upstream.tokens:
            assert time.monotonic() - rotated_at < 120, "the rotated key never reached upstream"
            statuses.append(
                http.post(
                    f"{base}/v1/chat/completions", json=chat, headers=auth, timeout=30
                ).status_code
            )
            time.sleep(0.5)
    took = time.monotonic() - rotated_at
    assert statuses and set(statuses) == {200}, statuses
    print(f"rotated key used upstream after {took:.1f}s and {len(statuses)} requests")
    # From then on only the new key: the provider may now revoke the old one.
    with upstream.lock:
        upstream.accepted.discard(old_key)
    for _ in range(3):
        assert http_ok(base, chat, auth)
    after = {p["metadata"]["name"]: p["status"]["containerStatuses"][0]["restartCount"]
             for p in pods(cluster, namespace, GATEWAY_PODS)}  # fmt: skip
    assert after == restarts, "a gateway pod restarted or was replaced during the rotation"

    # Keys never reach a log line.
    logs = cluster.kubectl("-n", namespace, "logs", "-l", GATEWAY_PODS, "--tail=-1").stdout
    assert old_key not in logs and new_key not in logs and token not in logs

    # Deleting the endpoint removes its gateway pods, and their processes on this host.
    cluster.kubectl("-n", namespace, "delete", "servingendpoint", ENDPOINT, "--wait=true")
    eventually(lambda: not pods(cluster, namespace, GATEWAY_PODS), timeout=90)
    eventually(
        lambda: not any(host_processes_of(p["metadata"]["uid"]) for p in gateways), timeout=30
    )


def http_ok(base: str, chat: dict[str, Any], headers: dict[str, str]) -> bool:
    url = f"{base}/v1/chat/completions"
    return requests.post(url, json=chat, headers=headers, timeout=30).status_code == 200


# --- a self-hosted llama.cpp model on CPU, the sample hack/up serves -------------------


def test_llamacpp_endpoint_serves_a_small_model_on_the_real_node(
    cluster: Cluster,
    namespace: str,
    real_node: str,
    image: str,
    llamacpp_image: str,
    model_claim: str,
    tmp_path: Path,
) -> None:
    body = sample(LLAMA_SAMPLE)
    entity = body["spec"]["servedEntities"][0]
    assert entity["entityName"] == f"pvc://model-cache/{model_claim}"
    # What hack/up sets: the image, and the CPU profile's pods on the real node.
    with installed(
        cluster, namespace, image, tmp_path,
        inference={"llamacppImage": llamacpp_image},
        gpuProfiles={"CPU": LLAMA_CPU_PROFILE},
    ):  # fmt: skip
        apply(cluster, namespace, body)
        try:
            wait_ready(cluster, namespace, LLAMA_ENDPOINT, timeout=180)
        except AssertionError:
            described = cluster.kubectl("-n", namespace, "describe", "pods", check=False).stdout
            raise AssertionError(f"{LLAMA_ENDPOINT} never READY:\n{described[-4000:]}") from None

        model_pods = pods(cluster, namespace, f"serving.modelport.io/endpoint={LLAMA_ENDPOINT}")
        assert {p["spec"]["nodeName"] for p in model_pods} == {real_node}
        assert all(running_ready(p) for p in model_pods)

        service = json.loads(
            cluster.kubectl("-n", namespace, "get", "service", LLAMA_ENDPOINT, "-o", "json").stdout
        )
        client = openai.OpenAI(
            base_url=f"http://{service['spec']['clusterIP']}/v1",
            api_key=mint(cluster, namespace, "default", AUDIENCE),
            timeout=120,
        )
        raw = client.chat.completions.with_raw_response.create(
            model=LLAMA_ENDPOINT,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=24,
        )
        reply = raw.parse()
        assert raw.headers["served-model-name"] == entity["name"]
        assert reply.choices[0].message.content and reply.usage and reply.usage.completion_tokens
        print(f"SmolLM2 on {real_node}: {reply.choices[0].message.content!r}")
        # Streamed: the gateway asks for the usage (stream_options), keeps any usage chunk
        # from a client that did not ask for it, and, since llama-cpp-python's server
        # ignores the option, estimates the stream's tokens and marks them estimated.
        chunks = list(
            client.chat.completions.create(
                model=LLAMA_ENDPOINT, max_tokens=8, stream=True,
                messages=[{"role": "user", "content": "Say hi"}],
            )
        )  # fmt: skip
        assert chunks and all(c.usage is None for c in chunks)
        metrics = requests.get(f"http://{service['spec']['clusterIP']}/metrics", timeout=10).text
        reported = reply.usage.prompt_tokens + reply.usage.completion_tokens
        total = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith('modelport_gateway_tokens_total{entity="smollm2"')
        )
        estimated = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith('modelport_gateway_estimated_tokens_total{entity="smollm2"')
        )
        assert estimated > 0 and total == reported + estimated, metrics[-3000:]
        cluster.kubectl("-n", namespace, "delete", "servingendpoint", LLAMA_ENDPOINT)
