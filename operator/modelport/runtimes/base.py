"""The interface every inference runtime implements, and the parts all of them share.

A runtime (`vllm`, `sglang`, `llamacpp`, `mlflow`) knows only its own server: image, command
line, health and metrics routes. Everything else about the pod is common and built
here from a `ModelPlan`: probes, volumes (/dev/shm, the model cache PVC, `pvc://`
weights, the Hugging Face token file), environment, Prometheus annotations and the
restricted security settings. Pure: no I/O.

    plan = ModelPlan(...)                  # what to serve, resolved by render/inference
    parts = pod_parts(runtime, plan, image, startup_seconds)
    parts.container, parts.volumes, parts.annotations
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from modelport.objects import Manifest as Manifest  # the one type, used here by name

CACHE_DIR = "/cache"
MODELS_DIR = "/models"
# Where the Hugging Face token file is mounted (a path, not a credential).
HF_TOKEN_DIR = "/var/run/secrets/modelport/hf"  # noqa: S105
HF_TOKEN_FILE = "token"  # noqa: S105
LISTEN_HOST = "0.0.0.0"  # noqa: S104 - a container listens on its pod IP
RUN_AS = 1000
PROBE_PERIOD_SECONDS = 10
# Secret files readable by the pod's group (fsGroup) only.
SECRET_FILE_MODE = 0o440
EMBEDDINGS = "llm/v1/embeddings"


class UnsupportedModelError(ValueError):
    """The model cannot run on this runtime; the message says what to change."""


@dataclass(frozen=True)
class ModelPlan:
    """Everything a runtime needs to know to serve one entity, already resolved.

    `source` is a Hugging Face repository id, a path under `MODELS_DIR` (a `pvc://`
    source, `local`), or an `s3://` URI.
    """

    served_name: str
    source: str
    task: str
    gpus: int
    port: int
    local: bool = False
    context_length: int | None = None
    trust_remote_code: bool = False
    normalize_embeddings: bool | None = None
    catalog_args: tuple[str, ...] = ()
    user_args: tuple[str, ...] = ()
    gguf_file: str | None = None
    """llamacpp: the GGUF file (name or glob) in `source` when it is a repository."""
    env: tuple[Manifest, ...] = ()
    """The entity's own environment variables, already in Kubernetes form."""
    model_claim: str | None = None
    """PVC holding the weights (`pvc://claim/path`), mounted read-only at MODELS_DIR."""
    cache_claim: str | None = None
    cache_sub_path: str | None = None
    hf_token: tuple[str, str] | None = None
    """(Secret name, key) of the Hugging Face token."""
    tracking_uri: str | None = None
    """mlflow: the cluster's MLflow tracking server (models:/ and runs:/ sources)."""

    @property
    def embeddings(self) -> bool:
        """True when the model serves /v1/embeddings."""
        return self.task == EMBEDDINGS


class InferenceRuntime(ABC):
    """One inference server: how to start it and how to ask whether it is healthy."""

    engine: ClassVar[str]
    container_name: ClassVar[str]
    health_path: ClassVar[str]
    metrics_path: ClassVar[str | None] = None
    supports_s3: ClassVar[bool] = False
    termination_from_logs: ClassVar[bool] = False
    """The server states why it failed only in its log: the container's termination
    message is the log's tail (which status reports) when it writes none itself."""

    @abstractmethod
    def command(self, plan: ModelPlan) -> list[str]:
        """The container's command (the server's executable)."""

    @abstractmethod
    def args(self, plan: ModelPlan) -> list[str]:
        """The server's own arguments, before the catalog's and the user's."""

    def env(self, plan: ModelPlan) -> list[Manifest]:
        """Runtime-specific environment variables."""
        del plan
        return []

    def model_volumes(self, plan: ModelPlan) -> list[tuple[Manifest, Manifest]]:
        """Runtime-specific (volume, mount) pairs, mounted in every container of the pod."""
        del plan
        return []

    def init_containers(self, plan: ModelPlan, template: Manifest) -> list[Manifest]:
        """Containers that run before the server (e.g. to fetch the model). `template`
        holds what they share with the server: image, env, mounts, resources, security."""
        del plan, template
        return []

    def full_args(self, plan: ModelPlan) -> list[str]:
        """Our arguments, then the catalog's, then the user's; a flag the user sets
        replaces ours (with its value) instead of appearing twice."""
        ours = [*self.args(plan), *plan.catalog_args]
        return [*without_flags(ours, flags_of(plan.user_args)), *plan.user_args]


@dataclass(frozen=True)
class PodParts:
    """The runtime's container and what the pod needs around it."""

    container: Manifest
    volumes: list[Manifest] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    pod_security: Manifest = field(default_factory=dict)
    init_containers: list[Manifest] = field(default_factory=list)


def pod_parts(
    runtime: InferenceRuntime,
    plan: ModelPlan,
    image: str,
    resources: Manifest,
    startup_seconds: int,
) -> PodParts:
    """The container of `runtime` serving `plan`, with its volumes and annotations."""
    env: list[Manifest] = [{"name": "HOME", "value": "/tmp"}]  # noqa: S108 - pod's emptyDir
    volumes: list[Manifest] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[Manifest] = [{"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108
    if plan.gpus > 1:
        # Tensor-parallel workers exchange activations through shared memory; the
        # container runtime's 64 MiB /dev/shm is far too small.
        volumes.append({"name": "shm", "emptyDir": {"medium": "Memory"}})
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})  # noqa: S108
    if plan.cache_claim is not None:
        # Weights are downloaded once into the claim and shared by every replica.
        env.append({"name": "HF_HOME", "value": CACHE_DIR})
        volumes.append({"name": "cache", "persistentVolumeClaim": {"claimName": plan.cache_claim}})
        cache_mount: Manifest = {"name": "cache", "mountPath": CACHE_DIR}
        if plan.cache_sub_path:
            cache_mount["subPath"] = plan.cache_sub_path
        mounts.append(cache_mount)
    if plan.model_claim is not None:
        volumes.append(
            {
                "name": "model",
                "persistentVolumeClaim": {"claimName": plan.model_claim, "readOnly": True},
            }
        )
        mounts.append({"name": "model", "mountPath": MODELS_DIR, "readOnly": True})
    if plan.hf_token is not None:
        # A file, not a variable: huggingface_hub reads HF_TOKEN_PATH, and a file
        # never shows in `kubectl describe` or a process listing.
        secret, key = plan.hf_token
        volumes.append(
            {
                "name": "hf-token",
                "secret": {
                    "secretName": secret,
                    "items": [{"key": key, "path": HF_TOKEN_FILE}],
                    "defaultMode": SECRET_FILE_MODE,
                },
            }
        )
        mounts.append({"name": "hf-token", "mountPath": HF_TOKEN_DIR, "readOnly": True})
        env.append({"name": "HF_TOKEN_PATH", "value": f"{HF_TOKEN_DIR}/{HF_TOKEN_FILE}"})
    for volume, mount in runtime.model_volumes(plan):
        volumes.append(volume)
        mounts.append(mount)
    env += runtime.env(plan)
    env += plan.env

    probe: Manifest = {
        "httpGet": {"path": runtime.health_path, "port": "http"},
        "periodSeconds": PROBE_PERIOD_SECONDS,
    }
    container: Manifest = {
        "name": runtime.container_name,
        "image": image,
        "command": runtime.command(plan),
        "args": runtime.full_args(plan),
        "env": env,
        "ports": [{"name": "http", "containerPort": plan.port, "protocol": "TCP"}],
        # Loading weights can take many minutes; liveness checks start only after.
        "startupProbe": {
            **probe,
            "failureThreshold": max(1, math.ceil(startup_seconds / PROBE_PERIOD_SECONDS)),
        },
        "readinessProbe": {**probe, "periodSeconds": 5},
        "livenessProbe": {**probe, "failureThreshold": 6},
        "resources": resources,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    }
    if runtime.termination_from_logs:
        container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    shared = {k: container[k] for k in ("image", "env", "resources", "securityContext")}
    init_containers = runtime.init_containers(plan, {**shared, "volumeMounts": mounts})
    annotations: dict[str, str] = {}
    if runtime.metrics_path is not None:
        annotations = {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(plan.port),
            "prometheus.io/path": runtime.metrics_path,
        }
    # The restricted Pod Security Standard: every runtime here runs as any user
    # once HOME and its caches point at writable volumes.
    pod_security = {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return PodParts(container, volumes, annotations, pod_security, init_containers)


def flags_of(args: Sequence[str]) -> set[str]:
    """The `--flags` named in `args` (`--flag=value` counts as `--flag`)."""
    return {a.split("=", 1)[0] for a in args if a.startswith("--")}


def without_flags(args: Sequence[str], flags: set[str]) -> list[str]:
    """`args` without each of `flags` and the value that follows it."""
    kept: list[str] = []
    skipping = False
    for arg in args:
        if arg.startswith("--"):
            skipping = arg.split("=", 1)[0] in flags
            if not skipping:
                kept.append(arg)
            elif "=" in arg:
                skipping = False
        elif not skipping:
            kept.append(arg)
        else:
            skipping = False  # the value of a dropped flag
    return kept
