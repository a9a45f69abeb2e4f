"""The children of a self-hosted entity: the Deployment and Service of inference pods,
and the bounds within which the operator's autoscaler sets its replicas.

The entity's `entityName` is resolved through the model catalog (or taken as a
`hf://`, `pvc://` or `s3://` source, or, for a custom model, as an MLflow model URI:
see `mlflow_model_uri`), its `workloadType` through the GPU profiles,
and the runtime module (`modelport.runtimes`) renders the container around that
`ModelPlan`. Here: which runtime, which profile, whether the model fits it, the
resources and placement, and how many replicas.

Replicas: no HorizontalPodAutoscaler. The Deployment leaves `replicas` out, and the
operator's autoscaler (`modelport.scaling`) sets it from the requests in flight that the
gateways count, one replica per `CONCURRENCY_PER_REPLICA` of them, within the bounds of
`replica_bounds` (an HPA on CPU says little about a model server whose work is on a GPU,
and could never reach zero without an alpha feature gate). With `scaleToZeroEnabled`
the minimum is 0: idle, the entity has no pod at all, and the gateway holds the next
requests while it starts one.
"""

from __future__ import annotations

import math

from modelport.api.entities import ServedEntity
from modelport.gpuprofiles import GpuProfile
from modelport.objects import whole_units
from modelport.render.config import INFERENCE_PORT, RenderError, entity_task, is_mlflow_entity
from modelport.render.manifest import Manifest, OwnerRef, metadata
from modelport.render.names import (
    COMPONENT_LABEL,
    INFERENCE,
    entity_labels,
    entity_name,
    entity_selector,
)
from modelport.render.profiles import UnknownProfileError, resolve, smallest_fit
from modelport.runtimes import RUNTIMES, InferenceRuntime
from modelport.runtimes.base import MODELS_DIR, ModelPlan, UnsupportedModelError, pod_parts
from modelport.runtimes.catalog import CatalogEntry, CatalogError
from modelport.runtimes.mlflow import REGISTRY_SCHEMES, registered_model_uri
from modelport.scaling import ScaleTarget
from modelport.settings import Settings

# Concurrent requests one replica is sized for; workloadSize Small (4) is one replica.
CONCURRENCY_PER_REPLICA = 4
WORKLOAD_SIZE_CONCURRENCY = {"Small": 4, "Medium": 16, "Large": 64}
# Allowance for pulling an inference image (often 10+ GB) before the startup probe runs.
IMAGE_PULL_SECONDS = 600
# Where a custom model runs when the entity names no workloadType (as on the reference
# service: classic ML on CPU).
CUSTOM_MODEL_WORKLOAD_TYPE = "CPU"


def entity_children(
    endpoint: str,
    namespace: str,
    owner: OwnerRef,
    index: int,
    entity: ServedEntity,
    settings: Settings,
    endpoint_task: str | None = None,
) -> list[Manifest]:
    """Service and Deployment of one self-hosted entity, in apply order."""
    name = entity_name(endpoint, entity.name)
    labels = {**entity_labels(endpoint, entity.name), COMPONENT_LABEL: INFERENCE}
    where = f"spec.servedEntities[{index}]"
    entry = catalog_entry(index, entity, settings)
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(name, namespace, labels, owner),
            "spec": {
                "type": "ClusterIP",
                "selector": entity_selector(endpoint, entity.name),
                "ports": [
                    {
                        "name": "http",
                        "port": INFERENCE_PORT,
                        "targetPort": "http",
                        "protocol": "TCP",
                    }
                ],
            },
        },
        _deployment(
            name, namespace, owner, labels, where, endpoint, entity, entry, settings, endpoint_task
        ),
    ]


def entity_scale_target(
    endpoint: str, index: int, entity: ServedEntity, settings: Settings
) -> ScaleTarget:
    """The bounds the autoscaler keeps the entity's replicas within (see the module)."""
    where = f"spec.servedEntities[{index}]"
    low, high = replica_bounds(entity, catalog_entry(index, entity, settings), where)
    idle = None
    if entity.scale_to_zero_enabled:
        idle = float(
            entity.scale_to_zero_idle_seconds or settings.autoscaling.scale_to_zero_idle_seconds
        )
    return ScaleTarget(
        deployment=entity_name(endpoint, entity.name),
        entity=entity.name,
        min_replicas=low,
        max_replicas=high,
        target_in_flight=CONCURRENCY_PER_REPLICA,
        idle_seconds=idle,
    )


def catalog_entry(index: int, entity: ServedEntity, settings: Settings) -> CatalogEntry | None:
    """The catalog entry of the entity (None for a weights source such as hf:// and for a
    custom MLflow model)."""
    if is_mlflow_entity(entity, settings.catalog):
        return None
    try:
        return settings.catalog.resolve(entity.entity_name or "")
    except CatalogError as exc:
        raise RenderError(f"spec.servedEntities[{index}].{exc}") from None


def replica_bounds(
    entity: ServedEntity, entry: CatalogEntry | None = None, where: str = "servedEntity"
) -> tuple[int, int]:
    """(min, max) replicas: from the concurrency band (workloadSize, or provisioned
    concurrency at CONCURRENCY_PER_REPLICA each), and from provisioned throughput
    (tokens/s over the catalog's tokensPerSecondPerReplica); the larger of each bound
    wins when both are given. The minimum is 1, or 0 with scaleToZeroEnabled (a minimum
    throughput still keeps its replicas); the maximum at least 1."""
    floor = 0 if entity.scale_to_zero_enabled else 1
    if entity.workload_size is not None or entity.max_provisioned_concurrency is None:
        top = WORKLOAD_SIZE_CONCURRENCY[entity.workload_size or "Small"]
        low, high = floor, max(1, math.ceil(top / CONCURRENCY_PER_REPLICA))
    else:
        least = math.ceil((entity.min_provisioned_concurrency or 0) / CONCURRENCY_PER_REPLICA)
        low = max(floor, least)
        high = max(1, math.ceil(entity.max_provisioned_concurrency / CONCURRENCY_PER_REPLICA))
    tmin, tmax = entity.min_provisioned_throughput, entity.max_provisioned_throughput
    if tmin is not None or tmax is not None:
        if entry is None:
            raise RenderError(
                f"{where}.min/maxProvisionedThroughput needs the model's tokens per second "
                f"per replica, which only catalog models have ({entity.entity_name!r} is not "
                "one); use min/maxProvisionedConcurrency, or add the model to the catalog "
                "with tokensPerSecondPerReplica"
            )
        per = entry.tokens_per_second_per_replica
        low = max(low, math.ceil((tmin or 0) / per))
        high = max(high, math.ceil((tmax if tmax is not None else tmin or 0) / per))
    return low, max(low, high, 1)


def _quantity(value: int | str) -> str:
    return str(value)


def _profile(where: str, workload_type: str, settings: Settings) -> GpuProfile:
    try:
        return resolve(workload_type, settings.gpu_profiles)
    except UnknownProfileError:
        raise RenderError(
            f"{where}.workloadType {workload_type!r} is not a GPU profile "
            f"of this cluster; use one of {sorted(settings.gpu_profiles)} (or a sized variant "
            "such as GPU_MEDIUM_4), or ask the admin to add it to MODELPORT_GPU_PROFILES"
        ) from None


def _resources(entity: ServedEntity, profile: GpuProfile) -> tuple[Manifest, int]:
    """Container resources (profile, then the user's overrides) and the GPU count."""
    gpu = profile.resource_name
    requests = {"cpu": profile.cpu, "memory": profile.memory}
    limits = {"memory": profile.memory}
    if profile.gpus:
        # Extended resources need request == limit.
        requests[gpu] = limits[gpu] = str(profile.gpus)
    custom = entity.runtime.resources if entity.runtime else None
    if custom is not None:
        requests.update({k: _quantity(v) for k, v in (custom.requests or {}).items()})
        limits.update({k: _quantity(v) for k, v in (custom.limits or {}).items()})
        if gpu in limits and gpu not in (custom.requests or {}):
            requests[gpu] = limits[gpu]
    gpus = whole_units(limits.get(gpu, "0"))
    return {"requests": dict(sorted(requests.items())), "limits": dict(sorted(limits.items()))}, (
        gpus
    )


def _check_fit(
    where: str,
    entity: ServedEntity,
    entry: CatalogEntry | None,
    workload_type: str,
    profile: GpuProfile,
    gpus: int,
    settings: Settings,
) -> None:
    """Refuse a catalog model whose weights do not fit the profile's GPU memory."""
    if entry is None or not gpus or not profile.gpu_memory_gib:
        return
    have = gpus * profile.gpu_memory_gib
    if have >= entry.min_gpu_memory_gib:
        return
    better = smallest_fit(entry.min_gpu_memory_gib, settings.gpu_profiles)
    fix = (
        f"use workloadType {better}"
        if better
        else "no GPU profile of this cluster is large enough; ask the admin for one"
    )
    raise RenderError(
        f"{where}.workloadType {workload_type!r}: {entity.entity_name} needs at least "
        f"{entry.min_gpu_memory_gib} GiB of GPU memory and {workload_type} gives {gpus} x "
        f"{profile.gpu_memory_gib} GiB = {have} GiB; {fix} (or remove workloadType to get "
        f"the catalog's default, {entry.default_workload_type})"
    )


def _runtime(entity: ServedEntity, profile: GpuProfile, mlflow: bool) -> InferenceRuntime:
    """The entity's engine; unset, MLflow's server for a custom model, llama.cpp for a
    CPU profile and vLLM otherwise."""
    if mlflow:
        return RUNTIMES["mlflow"]
    runtime = entity.runtime
    if runtime is not None and "engine" in runtime.model_fields_set:
        return RUNTIMES[runtime.engine]
    return RUNTIMES["llamacpp" if profile.gpus == 0 else "vllm"]


def _image(runtime: InferenceRuntime, entity: ServedEntity, settings: Settings) -> str:
    custom = entity.runtime.image if entity.runtime else None
    if custom:
        return custom
    return {
        "vllm": settings.vllm_image,
        "sglang": settings.sglang_image,
        "llamacpp": settings.llamacpp_image,
        "mlflow": settings.mlflow_image,
    }[runtime.engine]


def mlflow_model_uri(where: str, entity: ServedEntity, settings: Settings) -> str:
    """What the scoring server loads: `models:/` and `runs:/` URIs as they are (through
    the tracking server), a registered model's name and `entityVersion` as
    `models:/<name>/<version>`, and `pvc://` / `s3://` directories (the PVC's mounted at
    MODELS_DIR; see `_plan`)."""
    source = entity.entity_name or ""
    if source.startswith(("pvc://", "s3://")):
        return source
    if not source.startswith(REGISTRY_SCHEMES):
        if entity.entity_version is None:
            raise RenderError(
                f"{where}.entityVersion is required for the registered MLflow model "
                f'{source!r}; set the version to serve (e.g. "1"), or write entityName '
                f"models:/{source}@<alias>"
            )
        source = registered_model_uri(source, entity.entity_version)
    tracking = settings.mlflow_tracking_uri or any(
        var.name == "MLFLOW_TRACKING_URI" for var in entity.environment_vars or []
    )
    if not tracking:
        raise RenderError(
            f"{where}.entityName {entity.entity_name!r} is a model of an MLflow tracking "
            "server, and this cluster names none; ask the admin to set the Helm value "
            "mlflow.trackingUri (MODELPORT_MLFLOW_TRACKING_URI), or set environmentVars "
            "MLFLOW_TRACKING_URI on the entity, or serve the model directory from "
            "pvc://claim/path"
        )
    return source


def _plan(
    where: str,
    entity: ServedEntity,
    entry: CatalogEntry | None,
    runtime: InferenceRuntime,
    gpus: int,
    task: str,
    settings: Settings,
) -> ModelPlan:
    """What to serve: weights source, served name and the model's arguments."""
    source = entity.entity_name or ""
    local = False
    model_claim = None
    gguf_file = entry.gguf_file if entry is not None else None
    if runtime.engine == "mlflow":
        source = mlflow_model_uri(where, entity, settings)
    if source.startswith("hf://"):
        source = source.removeprefix("hf://")
    elif source.startswith("pvc://"):
        model_claim, _, path = source.removeprefix("pvc://").partition("/")
        source, local = f"{MODELS_DIR}/{path}".rstrip("/"), True
    elif entry is not None:
        source = entry.hugging_face_repo
        if runtime.engine == "llamacpp":
            if entry.gguf_repo is None:
                raise RenderError(
                    f"{where}: {entity.entity_name} has no GGUF weights in the catalog, which "
                    "the llamacpp engine needs; use runtime.engine vllm on a GPU workloadType, "
                    "or entityName pvc://claim/path/model.gguf"
                )
            source = entry.gguf_repo
    env: list[Manifest] = []
    for var in entity.environment_vars or []:
        if var.secret_key_ref is not None:
            ref = var.secret_key_ref
            selector = {"secretKeyRef": {"name": ref.name, "key": ref.key}}
            env.append({"name": var.name, "valueFrom": selector})
        else:
            env.append({"name": var.name, "value": var.value or ""})
    hf = entity.hf_token_secret_ref
    cache = entity.model_cache
    return ModelPlan(
        served_name=entity.name,
        source=source,
        task=task,
        gpus=gpus,
        port=INFERENCE_PORT,
        local=local,
        context_length=entry.context_length if entry is not None else None,
        trust_remote_code=entry.trust_remote_code if entry is not None else False,
        normalize_embeddings=entry.normalize_embeddings if entry is not None else None,
        catalog_args=entry.runtime_args(runtime.engine) if entry is not None else (),
        user_args=tuple((entity.runtime.args if entity.runtime else None) or ()),
        gguf_file=gguf_file,
        env=tuple(env),
        model_claim=model_claim,
        cache_claim=cache.claim_name if cache is not None else None,
        cache_sub_path=cache.sub_path if cache is not None else None,
        hf_token=(hf.name, hf.key) if hf is not None else None,
        tracking_uri=(settings.mlflow_tracking_uri or None) if runtime.engine == "mlflow" else None,
    )


def _deployment(
    name: str,
    namespace: str,
    owner: OwnerRef,
    labels: dict[str, str],
    where: str,
    endpoint: str,
    entity: ServedEntity,
    entry: CatalogEntry | None,
    settings: Settings,
    endpoint_task: str | None,
) -> Manifest:
    mlflow = is_mlflow_entity(entity, settings.catalog)
    workload_type = (
        entity.workload_type
        or (entry.default_workload_type if entry is not None else None)
        or (CUSTOM_MODEL_WORKLOAD_TYPE if mlflow else settings.default_workload_type)
    )
    profile = _profile(where, workload_type, settings)
    resources, gpus = _resources(entity, profile)
    _check_fit(where, entity, entry, workload_type, profile, gpus, settings)
    runtime = _runtime(entity, profile, mlflow)
    task = entity_task(entity, entry, endpoint_task, mlflow)
    plan = _plan(where, entity, entry, runtime, gpus, task, settings)
    try:
        parts = pod_parts(
            runtime, plan, _image(runtime, entity, settings), resources, settings.startup_seconds
        )
    except UnsupportedModelError as exc:
        raise RenderError(f"{where}.entityName {entity.entity_name!r}: {exc}") from None

    custom = entity.runtime
    node_selector = {
        **profile.node_selector,
        **((custom.node_selector if custom else None) or {}),
    }
    tolerations: list[Manifest] = []
    if profile.tolerations is not None:
        tolerations = [dict(t) for t in profile.tolerations]
    elif gpus:
        # The taint NVIDIA's GPU operator recommends is named like the resource.
        tolerations = [{"key": profile.resource_name, "operator": "Exists", "effect": "NoSchedule"}]
    for toleration in (custom.tolerations if custom else None) or []:
        body = toleration.to_body()
        if body not in tolerations:
            tolerations.append(body)

    pod_spec: Manifest = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": parts.pod_security,
        "containers": [parts.container],
        "volumes": parts.volumes,
    }
    if parts.init_containers:
        pod_spec["initContainers"] = parts.init_containers
    if node_selector:
        pod_spec["nodeSelector"] = dict(sorted(node_selector.items()))
    if tolerations:
        pod_spec["tolerations"] = tolerations
    selector = entity_selector(endpoint, entity.name)
    template_meta: Manifest = {"labels": {**labels, **selector}}
    if parts.annotations:
        template_meta["annotations"] = parts.annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(name, namespace, labels, owner),
        "spec": {
            # replicas is left out: the autoscaler sets it (scale subresource), and an
            # apply that named it would take it back at every change of the spec.
            "selector": {"matchLabels": selector},
            # Pulling a multi-GB image and loading weights legitimately take long.
            "progressDeadlineSeconds": max(
                settings.progress_deadline_seconds, settings.startup_seconds + IMAGE_PULL_SECONDS
            ),
            "revisionHistoryLimit": 3,
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }
