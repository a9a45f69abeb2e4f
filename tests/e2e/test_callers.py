"""Callers of a real endpoint on the local cluster's real node: pods that call with the
ServiceAccount token they already have, a pod whose ServiceAccount the endpoint does not
allow, and an API key rotated in its Secret under load (no restart, no failed request).

The chart runs the operator and the endpoint's gateway pods on the real node; the
gateway verifies tokens with a real TokenReview (through the ClusterRoleBinding the
operator keeps) and reads API keys from the projected Secret the kubelet rewrites.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import Cluster
from tests.e2e.realnode import (
    AUDIENCE,
    ENDPOINT,
    GATEWAY_PODS,
    ON_REAL_NODE,
    Upstream,
    installed,
    pods,
    running_ready,
    secret,
)
from tests.integration.operator.support import apply, sample, wait_ready
from tests.support import eventually

pytestmark = pytest.mark.cluster

CALLERS_SECRET = "chat-callers"
# Run by a pod: POST one chat with the projected token, print the status and the body.
CALL_SCRIPT = """
import json, sys, urllib.error, urllib.request
token = open("/var/run/modelport/token").read().strip()
chat = {"model": sys.argv[2], "messages": [{"role": "user", "content": "hi"}]}
request = urllib.request.Request(
    sys.argv[1],
    data=json.dumps(chat).encode(),
    headers={"content-type": "application/json", "authorization": "Bearer " + token},
)
try:
    with urllib.request.urlopen(request, timeout=30) as response:
        status, body = response.status, response.read()
except urllib.error.HTTPError as error:
    status, body = error.code, error.read()
print(json.dumps({"status": status, "body": json.loads(body)}))
"""


def caller_pod(name: str, account: str, image: str, url: str) -> dict[str, Any]:
    """A pod (restricted Pod Security) that calls ``url`` once with its projected
    ServiceAccount token for the gateways' audience."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "serviceAccountName": account,
            "automountServiceAccountToken": False,
            "restartPolicy": "Never",
            **ON_REAL_NODE,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "caller",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", CALL_SCRIPT, url, ENDPOINT],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [{"name": "token", "mountPath": "/var/run/modelport"}],
                }
            ],
            "volumes": [
                {
                    "name": "token",
                    "projected": {
                        "sources": [
                            {
                                "serviceAccountToken": {
                                    "audience": AUDIENCE,
                                    "expirationSeconds": 600,
                                    "path": "token",
                                }
                            }
                        ]
                    },
                }
            ],
        },
    }


def call_from_pod(
    cluster: Cluster, namespace: str, account: str, image: str, url: str
) -> dict[str, Any]:
    """Run a caller pod as ``account`` to completion; what it printed."""
    name = f"caller-{account}-{uuid.uuid4().hex[:5]}"
    apply(cluster, namespace, caller_pod(name, account, image, url))

    def finished() -> str | None:
        phase = cluster.kubectl(
            "-n", namespace, "get", "pod", name, "-o", "jsonpath={.status.phase}"
        ).stdout
        return phase if phase in ("Succeeded", "Failed") else None

    phase = eventually(finished, timeout=120, interval=1)
    logs = cluster.kubectl("-n", namespace, "logs", name).stdout
    assert phase == "Succeeded", logs
    result: dict[str, Any] = json.loads(logs.strip().splitlines()[-1])
    return result


def callers_secret(cluster: Cluster, namespace: str, value: str) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": CALLERS_SECRET},
        "stringData": {"ci": value},
    }
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(body))


def test_pods_call_with_their_service_account_and_keys_rotate_under_load(
    cluster: Cluster,
    namespace: str,
    real_node: str,
    image: str,
    upstream: Upstream,
    tmp_path: Path,
) -> None:
    provider_key = f"test-key-not-real-{uuid.uuid4().hex[:8]}"
    upstream.accepted.add(provider_key)
    secret(cluster, namespace, provider_key)
    old_key = f"test-caller-key-{uuid.uuid4().hex}"
    callers_secret(cluster, namespace, old_key)
    for account in ("client", "other"):
        cluster.kubectl("-n", namespace, "create", "serviceaccount", account)

    body = sample("custom")
    body["spec"]["servedEntities"][0]["externalModel"]["customProviderConfig"][
        "customProviderUrl"
    ] = upstream.base_url
    body["spec"]["aiGateway"] = {
        "auth": {
            "apiKeys": [
                {
                    "secretKeyRef": {"name": CALLERS_SECRET, "key": "ci"},
                    "servicePrincipal": "ci-bot",
                }
            ],
            "allow": {"serviceAccounts": [f"{namespace}/client"]},
        }
    }
    with installed(cluster, namespace, image, tmp_path):
        apply(cluster, namespace, body)
        wait_ready(cluster, namespace, ENDPOINT, timeout=120)
        gateways = eventually(
            lambda: [p for p in pods(cluster, namespace, GATEWAY_PODS) if running_ready(p)], 60
        )
        url = f"http://{ENDPOINT}.{namespace}.svc.cluster.local/v1/chat/completions"

        # A pod calls with the identity it already has: no key handed out.
        allowed = call_from_pod(cluster, namespace, "client", image, url)
        assert allowed["status"] == 200, allowed
        assert allowed["body"]["choices"][0]["message"]["content"] == "Hello from upstream"
        # A valid token of a ServiceAccount the endpoint does not allow.
        denied = call_from_pod(cluster, namespace, "other", image, url)
        assert denied["status"] == 403, denied
        assert denied["body"]["error_code"] == "PERMISSION_DENIED"
        assert f"system:serviceaccount:{namespace}:other" in denied["body"]["message"]

        service = json.loads(
            cluster.kubectl("-n", namespace, "get", "service", ENDPOINT, "-o", "json").stdout
        )
        chat_url = f"http://{service['spec']['clusterIP']}/v1/chat/completions"
        chat = {"model": ENDPOINT, "messages": [{"role": "user", "content": "hi"}]}
        restarts = {
            p["metadata"]["name"]: p["status"]["containerStatuses"][0]["restartCount"]
            for p in gateways
        }
        load = Load(chat_url, chat, old_key)
        load.start()
        try:
            load.wait_for(5)
            # Rotation: the Secret holds both keys, callers move to the new one, then the
            # old line goes. The load always uses the key its caller holds.
            new_key = f"test-caller-key-{uuid.uuid4().hex}"
            rotated_at = time.monotonic()
            callers_secret(cluster, namespace, f"{old_key}\n{new_key}")
            eventually(lambda: status(chat_url, chat, new_key) == 200, timeout=120, interval=1)
            took = time.monotonic() - rotated_at
            load.key = new_key
            callers_secret(cluster, namespace, new_key)
            eventually(lambda: status(chat_url, chat, old_key) == 401, timeout=120, interval=1)
            load.wait_for(load.count + 5)
        finally:
            load.stop()
        print(f"new API key accepted {took:.1f}s after the Secret changed; {load.count} calls")
        assert load.failures == [], load.failures[:5]
        after = {
            p["metadata"]["name"]: p["status"]["containerStatuses"][0]["restartCount"]
            for p in pods(cluster, namespace, GATEWAY_PODS)
        }
        assert after == restarts, "a gateway pod restarted or was replaced during the rotation"

        # No credential of any kind in the gateway's logs, the ConfigMap, events or status.
        logs = cluster.kubectl("-n", namespace, "logs", "-l", GATEWAY_PODS, "--tail=-1").stdout
        dumps = [
            logs,
            cluster.kubectl("-n", namespace, "get", "configmaps", "-o", "json").stdout,
            cluster.kubectl("-n", namespace, "get", "events", "-o", "json").stdout,
            cluster.kubectl("-n", namespace, "get", "servingendpoints", "-o", "json").stdout,
        ]
        for text in dumps:
            for credential in (old_key, new_key, provider_key):
                assert credential not in text


def status(url: str, chat: dict[str, Any], key: str) -> int:
    return requests.post(
        url, json=chat, headers={"authorization": f"Bearer {key}"}, timeout=30
    ).status_code


class Load:
    """Steady calls with the current key, from a thread; every non-200 is kept."""

    def __init__(self, url: str, chat: dict[str, Any], key: str) -> None:
        self.url, self.chat, self.key = url, chat, key
        self.count = 0
        self.failures: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def wait_for(self, count: int) -> None:
        eventually(lambda: self.count >= count, timeout=60)

    def _run(self) -> None:
        with requests.Session() as http:
            while not self._stop.is_set():
                key = self.key
                response = http.post(
                    self.url, json=self.chat, headers={"authorization": f"Bearer {key}"},
                    timeout=30,
                )  # fmt: skip
                if response.status_code != 200:
                    self.failures.append((response.status_code, response.text[:200]))
                self.count += 1
                time.sleep(0.1)
