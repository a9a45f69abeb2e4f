"""Custom models in the MLflow format, served by MLflow's own scoring server.

    mlflow models serve --model-uri <uri> --env-manager local
        --host 0.0.0.0 --port 8000 --workers 1

`<uri>` is a directory (`pvc://claim/path` mounted at /models/path), an `s3://` URI, or
a `models:/name/version`, `models:/name@alias` or `runs:/id/path` URI that the server
downloads from the cluster's MLflow tracking server (`MLFLOW_TRACKING_URI`) before it
listens. The server answers the reference service's invocations API (`/invocations`:
`dataframe_split`, `dataframe_records`, `instances`, `inputs`, `params`), enforces the
model's signature (a 400 naming the column), and reports health on `/ping` once the
model is loaded. It has no metrics route.

Why this server: its API *is* the reference service's for custom models (same input
formats, `{"predictions": ...}`, schema errors as 400s), it loads every flavour MLflow
does, and it needs nothing beyond MLflow itself. MLServer's MLflow runtime speaks the
V2 inference protocol first, pulls in gRPC, Kafka and Triton's client, and its last
release (1.7.1, mid-2025) predates the MLflow 3 releases it would have to load.

The model's Python dependencies: `--env-manager local` serves the model with the
packages of the image, never installing any at start-up (most clusters that run models
cannot reach a package index). The default image is MLflow's own (MLflow with
scikit-learn); `docker/mlflow.Dockerfile` builds one that also carries XGBoost and
skops, offline, from a wheelhouse. A model that needs more gets an image of its own,
`FROM` either, set in `runtime.image`. A package the image lacks makes the model fail to
load; the server's last log line (`ModuleNotFoundError: …`) becomes the container's
termination message, which the operator puts in the entity's status.
"""

from __future__ import annotations

from modelport.runtimes.base import LISTEN_HOST, InferenceRuntime, Manifest, ModelPlan

REGISTRY_SCHEMES = ("models:/", "runs:/")
"""Sources the scoring server downloads through the tracking server."""


class Mlflow(InferenceRuntime):
    """MLflow's scoring server (`mlflow models serve`)."""

    engine = "mlflow"
    container_name = "mlflow"
    health_path = "/ping"
    supports_s3 = True
    termination_from_logs = True

    def command(self, plan: ModelPlan) -> list[str]:
        del plan
        return ["mlflow", "models", "serve"]

    def args(self, plan: ModelPlan) -> list[str]:
        return [
            "--model-uri",
            plan.source,
            # Serve with the image's packages: no virtualenv or conda at start-up.
            "--env-manager",
            "local",
            "--host",
            LISTEN_HOST,
            "--port",
            str(plan.port),
            # One process per pod: replicas scale out through the HPA instead.
            "--workers",
            "1",
        ]

    def env(self, plan: ModelPlan) -> list[Manifest]:
        env: list[Manifest] = [
            # Downloads log a progress bar per file otherwise, burying the load error.
            {"name": "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "value": "false"},
        ]
        if plan.tracking_uri:
            env.append({"name": "MLFLOW_TRACKING_URI", "value": plan.tracking_uri})
        return env


def registered_model_uri(name: str, version: str) -> str:
    """The `models:/` URI of version `version` of the registered model `name`."""
    return f"models:/{name}/{version}"
