"""Custom models in the MLflow format, served by MLflow's own scoring server.

    # init container `fetch-model`, for models:/, runs:/ and s3:// sources only:
    mlflow artifacts download --artifact-uri <uri> --dst-path /models
    # the server:
    uvicorn --host 0.0.0.0 --port 8000 --workers 1 mlflow.pyfunc.scoring_server.app:app
        env __pyfunc_model_path__=/models[/path]

A `pvc://claim/path` model directory is mounted at /models/path; a registered model
(`models:/name/version`, `models:/name@alias`, `runs:/id/path`, through the cluster's
tracking server, `MLFLOW_TRACKING_URI`) or an `s3://` directory is downloaded first by
the init container into an emptyDir at /models. The server answers the reference
service's invocations API (`/invocations`: `dataframe_split`, `dataframe_records`,
`instances`, `inputs`, `params`), enforces the model's signature (a 400 naming the
column), and reports health on `/ping` once the model is loaded. No metrics route.

Why this server: its API *is* the reference service's for custom models (same input
formats, `{"predictions": ...}`, schema errors as 400s), it loads every flavour MLflow
does, and it needs nothing beyond MLflow itself. MLServer's MLflow runtime speaks the
V2 inference protocol first, pulls in gRPC, Kafka and Triton's client, and its last
release (1.7.1, mid-2025) predates the MLflow 3 releases it would have to load.

Why uvicorn and the scoring app directly rather than `mlflow models serve`: that command
is a wrapper that downloads, then runs exactly this uvicorn command (with the model's
path in `__pyfunc_model_path__`) as a child and, when the child fails, adds a traceback
of its own. Kubernetes keeps only the last 2 KiB of a failed container's log as its
termination message, which is what the operator reports in status: the wrapper's
traceback would push the model's own reason (`ModuleNotFoundError: No module named
'lightgbm'`) out of it. Here the reason is the last line: of the init container's log
when the model cannot be fetched (`RESOURCE_DOES_NOT_EXIST: Registered Model with
name=churn not found`), of the server's when it cannot be loaded. The app module and
the variable are MLflow 3's (`mlflow.pyfunc.scoring_server.get_cmd`); the runtime's
integration test runs the rendered command against the pinned MLflow.

The model's Python dependencies: the server runs with the packages of the image, never
installing any at start-up (most clusters that run models cannot reach a package index,
and a start-up install makes every replica's start slow and fallible). The default image
is MLflow's own (MLflow with scikit-learn); `docker/mlflow.Dockerfile` builds one that
also carries XGBoost and skops, offline, from a wheelhouse. A model that needs more gets
an image of its own, `FROM` either, set in `runtime.image`. A package the image lacks
makes the model fail to load, and the status says which (see above).
"""

from __future__ import annotations

from modelport.runtimes.base import LISTEN_HOST, MODELS_DIR, InferenceRuntime, Manifest, ModelPlan

REGISTRY_SCHEMES = ("models:/", "runs:/")
"""Sources the scoring server downloads through the tracking server."""
REMOTE_SCHEMES = (*REGISTRY_SCHEMES, "s3://")
"""Sources the init container fetches before the server starts."""
SCORING_APP = "mlflow.pyfunc.scoring_server.app:app"
MODEL_PATH_VAR = "__pyfunc_model_path__"
"""Where MLflow's scoring app loads the model from (set by `mlflow models serve`)."""
FETCH_CONTAINER = "fetch-model"
FETCHED_VOLUME = "fetched-model"


class Mlflow(InferenceRuntime):
    """MLflow's scoring server (the app `mlflow models serve` runs)."""

    engine = "mlflow"
    container_name = "mlflow"
    health_path = "/ping"
    supports_s3 = True
    termination_from_logs = True

    def command(self, plan: ModelPlan) -> list[str]:
        del plan
        return ["uvicorn"]

    def args(self, plan: ModelPlan) -> list[str]:
        return [
            "--host",
            LISTEN_HOST,
            "--port",
            str(plan.port),
            # One process per pod: replicas scale out through the HPA instead.
            "--workers",
            "1",
            SCORING_APP,
        ]

    def env(self, plan: ModelPlan) -> list[Manifest]:
        env: list[Manifest] = [
            {"name": MODEL_PATH_VAR, "value": served_path(plan)},
            # Downloads log a progress bar per file otherwise, burying the load error.
            {"name": "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "value": "false"},
        ]
        if plan.tracking_uri:
            env.append({"name": "MLFLOW_TRACKING_URI", "value": plan.tracking_uri})
        return env

    def model_volumes(self, plan: ModelPlan) -> list[tuple[Manifest, Manifest]]:
        if not is_remote(plan):
            return []
        return [
            (
                {"name": FETCHED_VOLUME, "emptyDir": {}},
                {"name": FETCHED_VOLUME, "mountPath": MODELS_DIR},
            )
        ]

    def init_containers(self, plan: ModelPlan, template: Manifest) -> list[Manifest]:
        if not is_remote(plan):
            return []
        return [
            {
                "name": FETCH_CONTAINER,
                "command": ["mlflow", "artifacts", "download"],
                "args": ["--artifact-uri", plan.source, "--dst-path", MODELS_DIR],
                # Its last log line says why a fetch failed (not found, no access).
                "terminationMessagePolicy": "FallbackToLogsOnError",
                **template,
            }
        ]


def is_remote(plan: ModelPlan) -> bool:
    """Whether the model is fetched before the server starts (not on a mounted PVC)."""
    return plan.source.startswith(REMOTE_SCHEMES)


def served_path(plan: ModelPlan) -> str:
    """The model directory the server loads: the PVC's path, or the fetched copy."""
    return MODELS_DIR if is_remote(plan) else plan.source


def registered_model_uri(name: str, version: str) -> str:
    """The `models:/` URI of version `version` of the registered model `name`."""
    return f"models:/{name}/{version}"
