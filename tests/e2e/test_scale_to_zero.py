"""Scale to zero for real: the llama.cpp sample (SmolLM2 on CPU) on the real node, with
`scaleToZeroEnabled` and a short idle period, goes to zero pods once idle; the endpoint
stays READY and `kubectl get sep` / `describe` say it is scaled to zero. Chat requests
sent then, several in parallel, are held by the gateway while it wakes the entity (its
own ServiceAccount, the scale subresource), and every one is answered once the pod is
Ready; none is lost. The cold-start time this adds is measured and printed (the
gateway's own `modelport_gateway_cold_start_seconds` too), for the release note:

    MODELPORT_IMAGE=modelport/modelport:dev \\
      pytest -s tests/e2e/test_scale_to_zero.py   # prints "[cold start] ..."

Skips when the session's cluster has no real node (see tests/e2e/realnode.py).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
import pytest
import requests

from tests.conftest import Cluster
from tests.e2e.realnode import (
    AUDIENCE,
    LLAMA_CPU_PROFILE,
    LLAMA_ENDPOINT,
    LLAMA_SAMPLE,
    installed,
    pods,
    running_ready,
)
from tests.integration.gateway.kubeauth import mint
from tests.integration.operator.support import apply, kubectl_json, sample, wait_ready
from tests.support import eventually

pytestmark = pytest.mark.cluster

IDLE_SECONDS = 15
"""The entity's scaleToZeroIdleSeconds (the API's minimum is 10)."""
PARALLEL = 4
"""Chat requests sent at once while the entity is at zero."""
AUTOSCALING = {"intervalSeconds": 1, "scaleDownStabilizationSeconds": 10}


def _deployment(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = kubectl_json(cluster, "-n", namespace, "get", "deployment", name)
    return found


def _histogram(metrics: str, family: str, entity: str) -> tuple[float, float]:
    """(sum, count) of one entity's histogram in Prometheus text."""
    found = {"sum": 0.0, "count": 0.0}
    for line in metrics.splitlines():
        for part in found:
            if line.startswith(f'{family}_{part}{{entity="{entity}"'):
                found[part] += float(line.rsplit(" ", 1)[1])
    return found["sum"], found["count"]


def _pod_stages(pod: dict[str, Any], sent: datetime) -> dict[str, float]:
    """When the woken pod was created, its container started and it became Ready, in
    seconds after `sent` (the apiserver's times have whole seconds)."""

    def after(stamp: str) -> float:
        return round((datetime.fromisoformat(stamp) - sent).total_seconds(), 1)

    (container,) = pod["status"]["containerStatuses"]
    (ready,) = [c for c in pod["status"]["conditions"] if c["type"] == "Ready"]
    return {
        "created": after(pod["metadata"]["creationTimestamp"]),
        "container started": after(container["state"]["running"]["startedAt"]),
        "ready": after(ready["lastTransitionTime"]),
    }


def test_llamacpp_sample_scales_to_zero_and_answers_every_request_held_while_it_wakes(
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
    entity["scaleToZeroEnabled"] = True
    entity["scaleToZeroIdleSeconds"] = IDLE_SECONDS
    name = entity["name"]
    deployment = f"{LLAMA_ENDPOINT}-{name}"
    entity_pods = (
        f"serving.modelport.io/endpoint={LLAMA_ENDPOINT},serving.modelport.io/entity={name}"
    )
    with installed(
        cluster, namespace, image, tmp_path,
        inference={"llamacppImage": llamacpp_image},
        gpuProfiles={"CPU": LLAMA_CPU_PROFILE},
        autoscaling=AUTOSCALING,
    ):  # fmt: skip
        apply(cluster, namespace, body)
        try:
            wait_ready(cluster, namespace, LLAMA_ENDPOINT, timeout=240)
            eventually(
                lambda: [p for p in pods(cluster, namespace, entity_pods) if running_ready(p)],
                timeout=240,
            )
        except AssertionError:
            described = cluster.kubectl("-n", namespace, "describe", "pods", check=False).stdout
            raise AssertionError(f"{LLAMA_ENDPOINT} never READY:\n{described[-4000:]}") from None

        service = kubectl_json(cluster, "-n", namespace, "get", "service", LLAMA_ENDPOINT)
        base = f"http://{service['spec']['clusterIP']}"
        client = openai.OpenAI(
            base_url=f"{base}/v1",
            api_key=mint(cluster, namespace, "default", AUDIENCE),
            timeout=300,
            max_retries=0,
        )
        chat: dict[str, Any] = {
            "model": LLAMA_ENDPOINT,
            "messages": [{"role": "user", "content": "Say hi"}],
            "max_tokens": 8,
        }

        def ask(_: int) -> tuple[float, str]:
            began = time.monotonic()
            reply = client.chat.completions.create(**chat)
            content = reply.choices[0].message.content
            assert content, reply
            return time.monotonic() - began, content

        # Warm: what a request takes with a pod up (the model loaded, its cache warm).
        ask(0)
        warm = min(ask(i)[0] for i in range(3))
        idle_from = time.monotonic()

        # Idle for IDLE_SECONDS: the autoscaler takes the entity to zero, its pod goes away.
        eventually(
            lambda: _deployment(cluster, namespace, deployment)["spec"]["replicas"] == 0,
            timeout=IDLE_SECONDS + 60,
        )
        to_zero = time.monotonic() - idle_from
        eventually(lambda: not pods(cluster, namespace, entity_pods), timeout=120)
        # Still READY, and saying why no pod runs.
        status = eventually(
            lambda: (
                s
                if (
                    s := kubectl_json(
                        cluster, "-n", namespace, "get", "servingendpoint", LLAMA_ENDPOINT
                    )["status"]
                ).get("replicaSummary")
                == f"{name} 0/0 (scaled to zero)"
                else None
            ),
            timeout=60,
        )
        assert status["state"]["ready"] == "READY", status
        (entity_status,) = status["servedEntities"]
        assert entity_status["scale"] == {
            "state": "ScaledToZero",
            "replicas": 0,
            "readyReplicas": 0,
        }
        assert entity_status["state"]["deployment"] == "DEPLOYMENT_READY"
        assert "scaled to zero while idle" in entity_status["state"]["deploymentStateMessage"]
        listed = cluster.kubectl("-n", namespace, "get", "sep", LLAMA_ENDPOINT).stdout
        print(f"\n{listed}")
        header, row = listed.strip().splitlines()
        assert "REPLICAS" in header and f"{name} 0/0 (scaled to zero)" in row, listed
        described = cluster.kubectl("-n", namespace, "describe", "sep", LLAMA_ENDPOINT).stdout
        assert "ScaledToZero" in described, described
        assert f"entity {name}: 1 -> 0 replicas: no request for" in described, described

        # Several requests at once, against no pod at all: each is held, the entity is
        # woken, and every one is answered once its pod is Ready.
        sent = datetime.now(UTC)
        with ThreadPoolExecutor(PARALLEL) as pool:
            answered = list(pool.map(ask, range(PARALLEL)))
        first, last = min(t for t, _ in answered), max(t for t, _ in answered)
        assert len(answered) == PARALLEL and all(text for _, text in answered)
        (pod,) = [p for p in pods(cluster, namespace, entity_pods) if running_ready(p)]
        assert pod["spec"]["nodeName"] == real_node
        assert _deployment(cluster, namespace, deployment)["spec"]["replicas"] == 1
        stages = _pod_stages(pod, sent)

        metrics = requests.get(f"{base}/metrics", timeout=10).text
        cold_sum, cold_count = _histogram(metrics, "modelport_gateway_cold_start_seconds", name)
        held_sum, held_count = _histogram(metrics, "modelport_gateway_hold_seconds", name)
        assert cold_count >= 1 and held_count >= PARALLEL, metrics[-3000:]
        held_forwarded = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("modelport_gateway_holds_total")
            and f'entity="{name}"' in line
            and 'outcome="forwarded"' in line
        )
        assert held_forwarded >= PARALLEL, metrics[-3000:]
        print(
            f"[cold start] {PARALLEL} parallel chat requests at zero replicas: all answered, "
            f"first after {first:.1f}s, last after {last:.1f}s (warm: {warm:.2f}s); cold "
            f"start added about {first - warm:.1f}s; the gateway measured "
            f"{cold_sum / cold_count:.1f}s from the first held request to a ready pod "
            f"({held_sum / held_count:.1f}s mean hold); idle to zero replicas after "
            f"{to_zero:.0f}s (scaleToZeroIdleSeconds {IDLE_SECONDS})"
        )
        print(f"[cold start] the woken pod, seconds after the requests were sent: {stages}")
        events = kubectl_json(
            cluster, "-n", namespace, "get", "events",
            "--field-selector", f"involvedObject.name={LLAMA_ENDPOINT}",
        )["items"]  # fmt: skip
        reasons = {e["reason"] for e in events}
        # The gateway woke it (WokenUp, seen by the autoscaler), or the autoscaler saw the
        # held requests first (ScaledUp): either way one writer at a time.
        assert "ScaledToZero" in reasons and reasons & {"WokenUp", "ScaledUp"}, sorted(reasons)
        print(json.dumps(sorted(reasons)))
        cluster.kubectl("-n", namespace, "delete", "servingendpoint", LLAMA_ENDPOINT)
