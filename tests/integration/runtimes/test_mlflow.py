"""The mlflow runtime for real: MLflow's scoring server, started with exactly the command
line and environment the runtime module renders (only the model's path, host and port
adapted to this machine), serves models this test trains (scikit-learn, XGBoost, a
pyfunc with custom code) through the real Modelport gateway, split 50/50.

What it shows: the reference service's four input formats and `params` give the
predictions the models gave when they were trained; a body that does not fit the
signature is a 400 naming the column (and not echoing the caller's data); the OpenAI
routes point to invocations; a finished request carries rows, never tokens; and a model
whose code is missing fails to load with its reason as the log's last exception line,
which is what the operator reports in status.

The environment (MLflow, scikit-learn, XGBoost) is cached outside the repository (see
`mlflow_env`): about a minute cold, seconds warm.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport import gatewayconfig
from modelport.gateway.app import GatewayApp, default_pipeline
from modelport.render import render
from modelport.runtimes.base import MODELS_DIR
from modelport.settings import from_env
from tests.integration.gateway.fakes import RunningGateway, write_config
from tests.integration.gateway.test_pipeline import Capture
from tests.integration.runtimes.mlflow_env import MlflowEnv, formats, prepare
from tests.integration.runtimes.test_llamacpp import free_port, wait_http
from tests.support import stop_processes
from tests.unit.operator.helpers import endpoint

SETTINGS = from_env({})
START_TIMEOUT = 120.0
INVOCATIONS = "/serving-endpoints/iris/invocations"


def model_entity(name: str, directory: str) -> dict[str, Any]:
    """A custom model whose MLflow directory is on a PVC, as in a cluster."""
    return {
        "name": name,
        "entityName": f"pvc://models/{directory}",
        "runtime": {"engine": "mlflow"},
        "workloadSize": "Small",
    }


def rendered(*entities: dict[str, Any], weights: list[int] | None = None) -> Any:
    return render(endpoint(*entities, name="iris", weights=weights), SETTINGS)


def container_of(result: Any, entity: str) -> dict[str, Any]:
    deployment = next(
        c
        for c in result.children
        if c["kind"] == "Deployment" and c["metadata"]["name"] == f"iris-{entity}"
    )
    spec = deployment["spec"]["template"]["spec"]
    assert "initContainers" not in spec, "a PVC's model is loaded where it is mounted"
    return spec["containers"][0]  # type: ignore[no-any-return]


def adapt(container: dict[str, Any], env: MlflowEnv, models: Path, port: int) -> tuple[
    list[str], dict[str, str]
]:  # fmt: skip
    """The rendered command and environment, with only host, port and paths changed."""
    argv = [str(env.bin / container["command"][0]), *container["args"]]
    assert container["command"] == ["uvicorn"]
    for flag, value in (("--host", "127.0.0.1"), ("--port", str(port))):
        argv[argv.index(flag) + 1] = value
    run_env = env.run_env()
    for var in container["env"]:
        value = var["value"]
        if value.startswith(MODELS_DIR + "/"):
            value = str(models / value.removeprefix(MODELS_DIR + "/"))
        run_env[var["name"]] = value
    run_env["HOME"] = str(models.parent)
    return argv, run_env


@dataclasses.dataclass
class Served:
    gateway: RunningGateway
    capture: Capture
    expected: dict[str, Any]
    containers: dict[str, dict[str, Any]]

    def invoke(self, body: dict[str, Any], path: str = INVOCATIONS) -> httpx.Response:
        return httpx.post(self.gateway.url + path, json=body, timeout=60)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[MlflowEnv, Path, dict[str, Any]]:
    start = time.monotonic()
    env = prepare(log=False)
    models = tmp_path_factory.mktemp("mlflow") / "models"
    expected = env.train(models)
    print(f"\n[mlflow] environment and models ready in {time.monotonic() - start:.1f}s")
    return env, models, expected


@pytest.fixture(scope="module")
def served(
    trained: tuple[MlflowEnv, Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Served]]:
    """sklearn and xgboost 50/50 and the pyfunc alone: three scoring servers as the pods
    would run them, and gateways with the rendered configs in front."""
    env, models, expected = trained
    work = tmp_path_factory.mktemp("served")
    split = rendered(
        model_entity("sklearn", "sklearn"), model_entity("xgboost", "xgboost"), weights=[50, 50]
    )
    alone = rendered(model_entity("pyfunc", "pyfunc"))
    procs: list[subprocess.Popen[bytes]] = []
    ports: dict[str, int] = {}
    containers: dict[str, dict[str, Any]] = {}
    try:
        for result, name in ((split, "sklearn"), (split, "xgboost"), (alone, "pyfunc")):
            containers[name] = container_of(result, name)
            ports[name] = free_port()
            argv, run_env = adapt(containers[name], env, models, ports[name])
            with (work / f"{name}.log").open("wb") as out:
                procs.append(
                    subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=run_env)
                )
        for proc, name in zip(procs, ports, strict=True):
            probe = containers[name]["readinessProbe"]["httpGet"]["path"]
            url = f"http://127.0.0.1:{ports[name]}{probe}"
            wait_http(url, proc, work / f"{name}.log", START_TIMEOUT)

        gateways: dict[str, Served] = {}
        for result, names in ((split, ("sklearn", "xgboost")), (alone, ("pyfunc",))):
            config = gatewayconfig.loads(result.children[0]["data"]["gateway.json"]).model_dump(
                mode="json", by_alias=True, exclude_none=True
            )
            for entity in config["entities"]:
                assert entity["baseUrl"].endswith(
                    f"iris-{entity['name']}.team-a.svc.cluster.local:8000"
                )
                entity["baseUrl"] = f"http://127.0.0.1:{ports[entity['name']]}"
            assert [e["name"] for e in config["entities"]] == list(names)
            # Callers are tested in tests/integration/gateway; this is about the runtime.
            config["aiGateway"]["auth"] = {"enabled": False}
            config_dir, secrets_dir = write_config(work / names[0], config, {})
            parsed = gatewayconfig.load(config_dir)
            capture = Capture()
            pipeline = dataclasses.replace(default_pipeline(parsed, secrets_dir), sinks=(capture,))
            app = GatewayApp(parsed, secrets_dir, pipeline=pipeline)
            running = RunningGateway(app, secrets_dir).start()
            gateways[names[0]] = Served(running, capture, expected, containers)
        yield {"split": gateways["sklearn"], "pyfunc": gateways["pyfunc"]}
        for gateway in gateways.values():
            gateway.gateway.stop()
    finally:
        stop_processes(procs)


def test_four_formats_split_50_50_give_each_models_predictions(served: dict[str, Served]) -> None:
    split = served["split"]
    answered: Counter[str] = Counter()
    for _ in range(5):
        for fmt, body in formats(split.expected).items():
            response = split.invoke(body)
            assert response.status_code == 200, (fmt, response.text)
            entity = response.headers["served-model-name"]
            answered[entity] += 1
            # The predictions this very model gave at training time, whichever answered.
            assert response.json() == {"predictions": split.expected[entity]}, (fmt, entity)
    # 20 requests at 50/50: both models answer (all on one would be 2 x 0.5^20).
    assert set(answered) == {"sklearn", "xgboost"}, answered
    print(f"[mlflow] 50/50 split over 20 requests: {dict(answered)}")

    # Every finished request counts the rows it scored, and no tokens: none are reported,
    # none estimated from a dataframe.
    done = split.capture.wait(20)
    assert all(ctx.status == 200 and ctx.rows == 3 for ctx in done)
    assert all(ctx.usage is None and not ctx.tokens_apply for ctx in done)
    assert {ctx.entity for ctx in done} == {"sklearn", "xgboost"}


def test_wrong_schema_is_a_400_naming_the_column(served: dict[str, Served]) -> None:
    split = served["split"]
    record = {"sepal_lenght": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 4242.5}
    for _ in range(4):  # both entities answer alike
        response = split.invoke({"dataframe_records": [record]})
        assert response.status_code == 400, response.text
        error = response.json()
        assert error["error_code"] == "BAD_REQUEST"
        assert "missing inputs ['sepal_length']" in error["message"], error
        # The caller's data is not echoed back (nor logged by the gateway).
        assert "4242.5" not in response.text


def test_body_shape_errors_stop_at_the_gateway(served: dict[str, Served]) -> None:
    split = served["split"]
    both = {"inputs": [[1.0, 2.0, 3.0, 4.0]], "instances": [[1.0, 2.0, 3.0, 4.0]]}
    response = split.invoke(both)
    assert response.status_code == 400 and "exactly one of" in response.json()["message"]
    assert "served-model-name" not in response.headers  # no model was asked
    chat = {"model": "iris", "messages": [{"role": "user", "content": "hi"}]}
    response = split.invoke(chat, "/v1/chat/completions")
    assert response.status_code == 400
    assert f"use {INVOCATIONS}" in response.json()["message"]


def test_pyfunc_with_custom_code_and_params(served: dict[str, Served]) -> None:
    pyfunc = served["pyfunc"]
    body = formats(pyfunc.expected)["dataframe_split"]
    response = pyfunc.invoke(body)
    assert response.status_code == 200, response.text
    assert response.headers["served-model-name"] == "pyfunc"
    assert response.json() == {"predictions": pyfunc.expected["pyfunc"]}
    scaled = pyfunc.invoke({**body, "params": {"scale": 2.0}}).json()["predictions"]
    assert scaled == pytest.approx([2 * p for p in pyfunc.expected["pyfunc"]])


def test_a_model_that_cannot_load_says_why_in_its_last_lines(
    trained: tuple[MlflowEnv, Path, dict[str, Any]], tmp_path: Path
) -> None:
    env, models, _ = trained
    container = container_of(rendered(model_entity("broken", "broken")), "broken")
    argv, run_env = adapt(container, env, models, free_port())
    done = subprocess.run(argv, env=run_env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    # What the kubelet keeps (FallbackToLogsOnError: the last 2 KiB, 80 lines) still names
    # the missing module: no wrapper's traceback comes after it.
    tail = (done.stdout + done.stderr).encode()[-2048:].decode(errors="replace")
    last = [line for line in tail.splitlines() if line.strip()][-80:]
    assert any("No module named 'modelport_test_missing'" in line for line in last[-3:]), tail
    assert Path(argv[0]).name == "uvicorn"
