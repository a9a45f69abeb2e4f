"""Custom (MLflow) models for real, on the local cluster's real node.

The test trains a scikit-learn, an XGBoost and a pyfunc model with custom code (see
`tests/integration/runtimes/mlflow_models`), saves them with their signatures as MLflow
model directories on a hostPath volume of the real node, and registers the
scikit-learn one in an MLflow tracking server it starts on this host (SQLite backend,
artifacts proxied by the server) where pods reach it. The chart is installed with the
mlflow runtime's image (hack/docker mlflow-image, built offline) and that tracking
server (`mlflow.trackingUri`). Then, through the endpoints' Services, as a caller with a
ServiceAccount token:

- the sample `custom-model` (scikit-learn and XGBoost on the PVC, 50/50) answers all four
  input formats with each model's own predictions, and a wrong column is a 400 naming it;
- a second endpoint splits the *registered* model (`entityName: iris`, `entityVersion`,
  fetched by the init container through the tracking server) with the pyfunc model
  whose code ships inside it;
- a third holds a model whose code is missing and a registered model that does not
  exist: both entities are DEPLOYMENT_FAILED with the runtime's reason in status.

Skips without a real node, unless MODELPORT_REAL_NODE=1 asks for one.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import Cluster
from tests.e2e.realnode import (
    AUDIENCE,
    ON_REAL_NODE,
    built_image,
    host_path_claim,
    installed,
    pods,
    running_ready,
)
from tests.integration.gateway.kubeauth import mint
from tests.integration.operator.support import apply, endpoint, install_crd, sample, wait_ready
from tests.integration.runtimes.mlflow_env import MlflowEnv, formats, prepare
from tests.integration.runtimes.test_llamacpp import free_port
from tests.support import eventually

pytestmark = pytest.mark.cluster

# Outside /root: the model pods' non-root user must be able to read the files.
MODELS_ROOT = Path("/var/lib/modelport-models/e2e-mlflow")
REGISTERED = "iris"
READY_SECONDS = 360  # six model servers starting on two shared cores


@contextlib.contextmanager
def tracking_server(env: MlflowEnv, host: str, root: Path) -> Iterator[str]:
    """`mlflow server` on `host` (where pods reach this host), SQLite and local artifacts
    served through it; yields its URL."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    argv = [
        str(env.bin / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", host, "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log = root / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env.run_env())
    url = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def models(
    cluster: Cluster, namespace: str, real_node: str, host_ip: str, tmp_path: Path
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(tracking URL, expected predictions): the models trained, on the PVC
    `model-cache` under iris/, and the scikit-learn one registered."""
    env = prepare(log=False)
    folder = MODELS_ROOT / namespace
    with tracking_server(env, host_ip, tmp_path / "tracking") as url:
        expected = env.train(folder / "iris", tracking_uri=url, register=REGISTERED)
        for path in (MODELS_ROOT.parent, MODELS_ROOT, *folder.rglob("*"), folder):
            path.chmod(0o755 if path.is_dir() else 0o644)
        with host_path_claim(cluster, namespace, real_node, folder, "model-cache"):
            yield url, expected
    shutil.rmtree(folder, ignore_errors=True)


def invocations(cluster: Cluster, namespace: str, name: str) -> str:
    service = json.loads(
        cluster.kubectl("-n", namespace, "get", "service", name, "-o", "json").stdout
    )
    return f"http://{service['spec']['clusterIP']}/serving-endpoints/{name}/invocations"


def ready_or_explain(cluster: Cluster, namespace: str, name: str) -> None:
    try:
        wait_ready(cluster, namespace, name, timeout=READY_SECONDS)
    except AssertionError:
        status = (endpoint(cluster, namespace, name) or {}).get("status")
        described = cluster.kubectl("-n", namespace, "describe", "pods", check=False).stdout
        raise AssertionError(
            f"{name} never READY: {crd_replaced(cluster)}{json.dumps(status)[-3000:]}\n"
            f"{described[-4000:]}"
        ) from None


def crd_replaced(cluster: Cluster) -> str:
    """Why status can stop moving on a cluster shared with other checkouts: one of them
    applied its own CRD, without the mlflow engine, so every status write is refused."""
    crd = cluster.kubectl(
        "get", "crd", "servingendpoints.serving.modelport.io", "-o", "json", check=False
    ).stdout
    if '"mlflow"' in crd:
        return ""
    return (
        "the cluster's ServingEndpoint CRD no longer accepts runtime.engine mlflow (another "
        "checkout sharing this cluster applied its own during the test, and the operator's "
        "status writes are refused); rerun when the cluster is idle. "
    )


def custom(name: str, source: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "entityName": source,
        "scaleToZeroEnabled": False,
        "runtime": {
            "engine": "mlflow",
            "resources": {
                "requests": {"cpu": "100m", "memory": "384Mi"},
                "limits": {"memory": "1Gi"},
            },
        },
        **extra,
    }


def split_endpoint(name: str, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "serving.modelport.io/v1alpha1",
        "kind": "ServingEndpoint",
        "metadata": {"name": name},
        "spec": {
            "servedEntities": [a, b],
            "trafficConfig": {
                "routes": [
                    {"servedEntityName": a["name"], "trafficPercentage": 50},
                    {"servedEntityName": b["name"], "trafficPercentage": 50},
                ]
            },
        },
    }


# Loading a 700 MB image into the node and starting six model servers on two cores.
@pytest.mark.timeout(900)
def test_custom_models_answer_split_and_fail_with_reasons_on_the_real_node(
    cluster: Cluster,
    namespace: str,
    real_node: str,
    image: str,
    models: tuple[str, dict[str, Any]],
    tmp_path: Path,
) -> None:
    tracking, expected = models
    mlflow_image = built_image(cluster, "mlflow-image")
    # The CPU profile's pods on the real node; the models' own requests are small.
    cpu_on_real_node = {"gpus": 0, "cpu": "100m", "memory": "1Gi", **ON_REAL_NODE}
    # This tree's CRD first (what the chart holds): a cluster shared with other checkouts
    # may hold another version, applied by kubectl, which helm's apply would conflict with.
    install_crd(cluster)
    with installed(
        cluster, namespace, image, tmp_path,
        inference={"mlflowImage": mlflow_image},
        mlflow={"trackingUri": tracking},
        gpuProfiles={"CPU": cpu_on_real_node},
    ):  # fmt: skip
        token = mint(cluster, namespace, "default", AUDIENCE)
        auth = {"authorization": f"Bearer {token}"}

        # The sample and the registered model beside the pyfunc, rolled out together.
        apply(cluster, namespace, sample("custom-model"))
        registered = custom("registered", REGISTERED, entityVersion="1")
        apply(
            cluster,
            namespace,
            split_endpoint(
                "iris-reg", registered, custom("pyfunc", "pvc://model-cache/iris/pyfunc")
            ),
        )
        ready_or_explain(cluster, namespace, "iris")
        ready_or_explain(cluster, namespace, "iris-reg")
        model_pods = pods(cluster, namespace, "serving.modelport.io/component=inference")
        assert {p["spec"]["nodeName"] for p in model_pods} == {real_node}
        assert all(running_ready(p) for p in model_pods)
        (fetched,) = [p for p in model_pods if p["spec"].get("initContainers")]
        assert fetched["metadata"]["labels"]["serving.modelport.io/entity"] == "registered"

        # Four formats, 50/50: each answer is its model's own predictions.
        url = invocations(cluster, namespace, "iris")
        answered: Counter[str] = Counter()
        with requests.Session() as http:
            for _ in range(4):
                for fmt, body in formats(expected).items():
                    response = http.post(url, json=body, headers=auth, timeout=60)
                    assert response.status_code == 200, (fmt, response.text)
                    entity = response.headers["served-model-name"]
                    answered[entity] += 1
                    assert response.json() == {"predictions": expected[entity]}, (fmt, entity)
            assert set(answered) == {"sklearn", "xgboost"}, answered
            print(f"custom models on {real_node}, 50/50 over 16 requests: {dict(answered)}")

            # A column the signature does not have: 400 naming the one it needs.
            wrong = {"dataframe_records": [{"sepal_lenght": 5.1, "sepal_width": 3.5,
                                            "petal_length": 1.4, "petal_width": 0.2}]}  # fmt: skip
            response = http.post(url, json=wrong, headers=auth, timeout=60)
            assert response.status_code == 400, response.text
            assert response.json()["error_code"] == "BAD_REQUEST"
            assert "missing inputs ['sepal_length']" in response.json()["message"]
            # No credential: refused before any model is asked.
            assert http.post(url, json=wrong, timeout=30).status_code == 401

            # The registered model (through the tracking server) and the pyfunc model
            # whose custom code ships inside it.
            url = invocations(cluster, namespace, "iris-reg")
            seen: set[str] = set()
            body = formats(expected)["dataframe_split"]
            for _ in range(10):
                response = http.post(url, json=body, headers=auth, timeout=60)
                assert response.status_code == 200, response.text
                entity = response.headers["served-model-name"]
                seen.add(entity)
                want = expected["sklearn" if entity == "registered" else "pyfunc"]
                assert response.json() == {"predictions": want}, entity
            assert seen == {"registered", "pyfunc"}, seen
        for name in ("iris", "iris-reg"):
            cluster.kubectl("-n", namespace, "delete", "servingendpoint", name, "--wait=false")

        # Models that cannot run: the entity fails with the runtime's own reason.
        apply(
            cluster,
            namespace,
            split_endpoint(
                "broken",
                custom("missing-code", "pvc://model-cache/iris/broken"),
                custom("not-registered", "models:/no-such-model/1"),
            ),
        )

        last_states: list[Any] = []

        def failed() -> dict[str, str] | None:
            status = (endpoint(cluster, namespace, "broken") or {}).get("status") or {}
            states = {e["name"]: e["state"] for e in status.get("servedEntities") or []}
            last_states[:] = [states]
            if len(states) == 2 and all(
                s["deployment"] == "DEPLOYMENT_FAILED"
                and "exit code" in s["deploymentStateMessage"]
                for s in states.values()
            ):
                return {n: s["deploymentStateMessage"] for n, s in states.items()}
            return None

        try:
            messages = eventually(failed, timeout=READY_SECONDS)
        except AssertionError:
            raise AssertionError(f"no failure reasons in status: {last_states}") from None
        assert "No module named 'modelport_test_missing'" in messages["missing-code"], messages
        assert "container mlflow: crash looping" in messages["missing-code"]
        assert "init container fetch-model" in messages["not-registered"], messages
        assert "RESOURCE_DOES_NOT_EXIST" in messages["not-registered"], messages
        print(f"failure reasons in status: {messages}")
        cluster.kubectl("-n", namespace, "delete", "servingendpoint", "broken")
