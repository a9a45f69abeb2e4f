"""Custom (MLflow) models: what the operator renders for them, table-driven and pure."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from modelport import gatewayconfig as gc
from modelport.api import ServingEndpoint
from modelport.render import RenderError, render
from modelport.settings import SettingsError, from_env
from tests.unit.operator.helpers import endpoint
from tests.unit.runtimes.test_runtimes import container_of, flag, pod_of

TRACKING = "http://mlflow.mlflow.svc.cluster.local:5000"
SETTINGS = from_env({"MODELPORT_MLFLOW_TRACKING_URI": TRACKING})
NO_TRACKING = from_env({})


def custom(name: str = "m", **extra: Any) -> dict[str, Any]:
    return {"name": name, **extra}


# id, entity, settings, the model's URI (fetched first unless it is a mounted path),
# MLFLOW_TRACKING_URI
URIS = [
    ("models-version", custom(entityName="models:/churn/3"), SETTINGS, "models:/churn/3", True),
    ("models-alias", custom(entityName="models:/churn@champion"), SETTINGS,
     "models:/churn@champion", True),
    ("runs", custom(entityName="runs:/0a1b2c/model"), SETTINGS, "runs:/0a1b2c/model", True),
    ("registered-name", custom(entityName="main.default.churn", entityVersion="7"), SETTINGS,
     "models:/main.default.churn/7", True),
    ("pvc-by-engine", custom(entityName="pvc://models/churn/v3", runtime={"engine": "mlflow"}),
     NO_TRACKING, "/models/churn/v3", False),
    ("s3-by-task", custom(entityName="s3://bucket/churn", task="ml/v1/predict"), NO_TRACKING,
     "s3://bucket/churn", False),
]  # fmt: skip


@pytest.mark.parametrize(("body", "settings", "uri", "tracking"), [c[1:] for c in URIS],
                         ids=[c[0] for c in URIS])  # fmt: skip
def test_scoring_server_command_per_source(
    body: dict[str, Any], settings: Any, uri: str, tracking: bool
) -> None:
    template = pod_of(body, settings=settings)
    spec = template["spec"]
    container = container_of(template)
    assert container["name"] == "mlflow"
    assert container["image"] == settings.mlflow_image == "ghcr.io/mlflow/mlflow:v3.17.2"
    # MLflow's scoring app, as `mlflow models serve` runs it, with the image's packages.
    assert container["command"] == ["uvicorn"]
    args = container["args"]
    assert args[-1] == "mlflow.pyfunc.scoring_server.app:app"
    assert (flag(args, "--host"), flag(args, "--port")) == ("0.0.0.0", "8000")  # noqa: S104
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env.get("MLFLOW_TRACKING_URI") == (TRACKING if tracking else None)
    # Loaded once /ping answers; the load error is the termination message.
    assert container["readinessProbe"]["httpGet"]["path"] == "/ping"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert "annotations" not in template["metadata"]  # no metrics route to scrape
    volumes = {v["name"]: v for v in spec["volumes"]}
    if uri.startswith("/models/"):
        # A directory on a PVC: loaded where it is mounted, nothing fetched.
        assert env["__pyfunc_model_path__"] == uri
        assert "initContainers" not in spec
        assert volumes["model"]["persistentVolumeClaim"] == {
            "claimName": "models",
            "readOnly": True,
        }
        return
    # Fetched first, by the same image with the same env and mounts, into an emptyDir.
    (fetch,) = spec["initContainers"]
    assert fetch["name"] == "fetch-model"
    assert fetch["command"] == ["mlflow", "artifacts", "download"]
    assert fetch["args"] == ["--artifact-uri", uri, "--dst-path", "/models"]
    assert fetch["terminationMessagePolicy"] == "FallbackToLogsOnError"
    for key in ("image", "env", "volumeMounts", "resources", "securityContext"):
        assert fetch[key] == container[key], key
    assert env["__pyfunc_model_path__"] == "/models"
    assert volumes["fetched-model"] == {"name": "fetched-model", "emptyDir": {}}


def test_custom_model_runs_on_cpu_unless_a_gpu_profile_is_named() -> None:
    cpu = container_of(pod_of(custom(entityName="models:/churn/1"), settings=SETTINGS))
    assert cpu["resources"] == {
        "limits": {"memory": "16Gi"},
        "requests": {"cpu": "4", "memory": "16Gi"},
    }
    template = pod_of(
        custom(entityName="models:/vision/2", workloadType="GPU_MEDIUM"), settings=SETTINGS
    )
    gpu = container_of(template)
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert template["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert template["spec"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_gateway_sends_invocations_to_the_scoring_server_and_splits_traffic() -> None:
    rendered = render(
        endpoint(
            custom("a", entityName="models:/churn/1"),
            custom("b", entityName="churn", entityVersion="2"),
            name="churn",
            weights=[50, 50],
        ),
        SETTINGS,
    )
    config = gc.loads(rendered.children[0]["data"]["gateway.json"])
    assert config.task is gc.Task.CUSTOM
    assert [(e.provider, e.base_url) for e in config.entities] == [
        (gc.ProviderName.MLFLOW, "http://churn-a.team-a.svc.cluster.local:8000"),
        (gc.ProviderName.MLFLOW, "http://churn-b.team-a.svc.cluster.local:8000"),
    ]
    assert config.weights() == [("a", 50), ("b", 50)]


def test_environment_variables_and_secrets_reach_the_model_pod() -> None:
    body = custom(
        entityName="models:/churn/1",
        environmentVars=[
            {"name": "MLFLOW_TRACKING_TOKEN", "secretKeyRef": {"name": "mlflow", "key": "token"}},
            {"name": "THRESHOLD", "value": "0.7"},
        ],
    )
    env = container_of(pod_of(body, settings=SETTINGS))["env"]
    assert {"name": "THRESHOLD", "value": "0.7"} in env
    assert {
        "name": "MLFLOW_TRACKING_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "mlflow", "key": "token"}},
    } in env
    # The token is never in the rendered config or the Deployment as a value.
    assert "token" not in json.dumps(render(endpoint(body), SETTINGS).children[0]["data"])


REFUSED = [
    ("registry-without-tracking-server", custom(entityName="models:/churn/1"), NO_TRACKING,
     ["servedEntities[0].entityName", "mlflow.trackingUri", "MLFLOW_TRACKING_URI", "pvc://"]),
    ("registered-name-without-version", custom(entityName="churn", task="ml/v1/predict"),
     SETTINGS, ["servedEntities[0].entityVersion", "models:/churn@<alias>"]),
    ("unknown-name-without-version", custom(entityName="churn"), SETTINGS,
     ["entityName 'churn'", "catalog"]),
]  # fmt: skip


@pytest.mark.parametrize(("body", "settings", "words"), [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])  # fmt: skip
def test_refusals_name_the_field_and_the_fix(
    body: dict[str, Any], settings: Any, words: list[str]
) -> None:
    with pytest.raises(RenderError) as refused:
        render(endpoint(body), settings)
    for word in words:
        assert word in str(refused.value)


def test_a_custom_model_and_an_llm_cannot_share_an_endpoint() -> None:
    # Known from the spec alone: refused when the endpoint is parsed (and by the CRD).
    with pytest.raises(ValidationError, match="same for all entities"):
        endpoint(
            custom("a", entityName="models:/churn/1"),
            custom("b", entityName="hf://org/llm", task="llm/v1/chat"),
            weights=[50, 50],
        )
    # A registered model's bare name (and a catalog LLM's task) is known only when
    # rendering: the operator refuses it there.
    with pytest.raises(RenderError, match=r"different tasks .*ml/v1/predict"):
        render(
            endpoint(
                custom("a", entityName="churn", entityVersion="1"),
                custom("b", entityName="system.ai.meta_llama_v3_1_8b_instruct"),
                weights=[50, 50],
            ),
            SETTINGS,
        )


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (custom(entityName="models:/churn/1", runtime={"engine": "vllm"}), ["models:/", "mlflow"]),
        (custom(entityName="models:/churn/1", task="llm/v1/chat"), ["models:/", "ml/v1/predict"]),
        (custom(entityName="hf://org/m", task="ml/v1/predict", runtime={"engine": "vllm"}),
         ["task ml/v1/predict", "runtime.engine mlflow"]),
        (custom(entityName="pvc://m/x", task="llm/v1/chat", runtime={"engine": "mlflow"}),
         ["task ml/v1/predict", "runtime.engine mlflow"]),
    ],
)  # fmt: skip
def test_api_refuses_engine_task_and_source_that_disagree(
    body: dict[str, Any], words: list[str]
) -> None:
    with pytest.raises(ValidationError) as refused:
        endpoint(body)
    for word in words:
        assert word in str(refused.value)


def test_effective_task_of_a_custom_model() -> None:
    spec = endpoint(custom(entityName="runs:/abc/model")).spec
    assert spec.task == "ml/v1/predict"
    assert ServingEndpoint.model_json_schema()  # the schema still builds


TRACKING_URIS = [
    ("http://mlflow.mlflow.svc:5000/", "http://mlflow.mlflow.svc:5000"),
    ("https://mlflow.example.com/prefix", "https://mlflow.example.com/prefix"),
    ("", ""),
]


@pytest.mark.parametrize(("raw", "kept"), TRACKING_URIS)
def test_tracking_uri_setting(raw: str, kept: str) -> None:
    assert from_env({"MODELPORT_MLFLOW_TRACKING_URI": raw}).mlflow_tracking_uri == kept


@pytest.mark.parametrize(
    "raw",
    [
        "https://admin:s3cr3t-pw@mlflow.example.com",
        "admin:s3cr3t-pw@mlflow:5000",
        "http://s3cr3t-pw@h/",
    ],
)
def test_tracking_uri_with_credentials_is_refused_without_repeating_them(raw: str) -> None:
    with pytest.raises(SettingsError) as refused:
        from_env({"MODELPORT_MLFLOW_TRACKING_URI": raw})
    message = str(refused.value)
    assert "s3cr3t-pw" not in message
    for word in ("MODELPORT_MLFLOW_TRACKING_URI", "credentials", "MLFLOW_TRACKING_PASSWORD"):
        assert word in message


def test_tracking_uri_that_is_not_a_url_names_the_fix() -> None:
    with pytest.raises(SettingsError) as refused:
        from_env({"MODELPORT_MLFLOW_TRACKING_URI": "mlflow.mlflow.svc:5000"})
    assert "not an http(s) URL" in str(refused.value)
    assert "http://mlflow.mlflow.svc:5000" in str(refused.value)
