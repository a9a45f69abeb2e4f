"""The children of a self-hosted entity: Deployment, Service and HPA of vLLM pods.

Deliberately minimal: a vLLM container with the GPU profile's resources, the GPU
taint tolerated and a GPU node selected, so that the pods are valid and schedulable.
The runtimes work refines images, arguments, catalog resolution and autoscaling.
"""

from __future__ import annotations

import math

from modelport.api.entities import ServedEntity
from modelport.render.config import INFERENCE_PORT, RenderError
from modelport.render.manifest import Manifest, OwnerRef, metadata
from modelport.render.names import (
    COMPONENT_LABEL,
    INFERENCE,
    entity_labels,
    entity_name,
    entity_selector,
)
from modelport.render.profiles import UnknownProfileError, resolve
from modelport.settings import Settings

GPU_RESOURCE = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
# Concurrent requests one replica is sized for; workloadSize Small (4) is one replica.
CONCURRENCY_PER_REPLICA = 4
WORKLOAD_SIZE_CONCURRENCY = {"Small": 4, "Medium": 16, "Large": 64}
RUN_AS = 1000
CACHE_DIR = "/cache"
MODELS_DIR = "/models"
CPU_TARGET_PERCENT = 80


def entity_children(
    endpoint: str,
    namespace: str,
    owner: OwnerRef,
    index: int,
    entity: ServedEntity,
    settings: Settings,
) -> list[Manifest]:
    """Service, Deployment and HPA of one self-hosted entity, in apply order."""
    name = entity_name(endpoint, entity.name)
    labels = {**entity_labels(endpoint, entity.name), COMPONENT_LABEL: INFERENCE}
    min_replicas, max_replicas = replica_bounds(entity)
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
        _deployment(name, namespace, owner, labels, index, endpoint, entity, settings),
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": metadata(name, namespace, labels, owner),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicas": min_replicas,
                "maxReplicas": max_replicas,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {
                                "type": "Utilization",
                                "averageUtilization": CPU_TARGET_PERCENT,
                            },
                        },
                    }
                ],
            },
        },
    ]


def replica_bounds(entity: ServedEntity) -> tuple[int, int]:
    """(min, max) replicas for the entity's concurrency band.

    The HPA cannot go to zero without an alpha feature gate, so scale to zero keeps
    one replica here; the runtimes work replaces the HPA for that case.
    """
    if entity.workload_size is not None or entity.max_provisioned_concurrency is None:
        top = WORKLOAD_SIZE_CONCURRENCY[entity.workload_size or "Small"]
        return 1, max(1, math.ceil(top / CONCURRENCY_PER_REPLICA))
    low = max(1, math.ceil((entity.min_provisioned_concurrency or 0) / CONCURRENCY_PER_REPLICA))
    high = math.ceil(entity.max_provisioned_concurrency / CONCURRENCY_PER_REPLICA)
    return low, max(low, high)


def _quantity(value: int | str) -> str:
    return str(value)


def _resources(index: int, entity: ServedEntity, settings: Settings) -> tuple[Manifest, int]:
    """Container resources (profile, then the user's overrides) and the GPU count."""
    workload_type = entity.workload_type or settings.default_workload_type
    try:
        profile = resolve(workload_type, settings.gpu_profiles)
    except UnknownProfileError:
        raise RenderError(
            f"spec.servedEntities[{index}].workloadType {workload_type!r} is not a GPU profile "
            f"of this cluster; use one of {sorted(settings.gpu_profiles)} (or a sized variant "
            "such as GPU_MEDIUM_4), or ask the admin to add it to MODELPORT_GPU_PROFILES"
        ) from None
    requests = {"cpu": profile.cpu, "memory": profile.memory}
    limits = {"memory": profile.memory}
    if profile.gpus:
        # Extended resources need request == limit.
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(profile.gpus)
    custom = entity.runtime.resources if entity.runtime else None
    if custom is not None:
        requests.update({k: _quantity(v) for k, v in (custom.requests or {}).items()})
        limits.update({k: _quantity(v) for k, v in (custom.limits or {}).items()})
        if GPU_RESOURCE in limits and GPU_RESOURCE not in (custom.requests or {}):
            requests[GPU_RESOURCE] = limits[GPU_RESOURCE]
    gpus = int(float(limits.get(GPU_RESOURCE, "0")))
    return {"requests": dict(sorted(requests.items())), "limits": dict(sorted(limits.items()))}, (
        gpus
    )


def _model_source(entity: ServedEntity) -> tuple[str, Manifest | None]:
    """What to pass to `vllm serve`, and a volume the weights come from, if any."""
    source = entity.entity_name or ""
    if source.startswith("hf://"):
        return source.removeprefix("hf://"), None
    if source.startswith("pvc://"):
        claim, _, path = source.removeprefix("pvc://").partition("/")
        volume = {"name": "model", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        return f"{MODELS_DIR}/{path}".rstrip("/"), volume
    # Catalog names and s3:// are resolved by the runtimes work; pass them through.
    return source, None


def _deployment(
    name: str,
    namespace: str,
    owner: OwnerRef,
    labels: dict[str, str],
    index: int,
    endpoint: str,
    entity: ServedEntity,
    settings: Settings,
) -> Manifest:
    resources, gpus = _resources(index, entity, settings)
    workload_type = entity.workload_type or settings.default_workload_type
    profile = resolve(workload_type, settings.gpu_profiles)
    runtime = entity.runtime
    model, model_volume = _model_source(entity)

    env: list[Manifest] = [{"name": "HOME", "value": "/tmp"}]  # noqa: S108 - pod's emptyDir
    volumes: list[Manifest] = [
        {"name": "shm", "emptyDir": {"medium": "Memory"}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[Manifest] = [
        {"name": "shm", "mountPath": "/dev/shm"},  # noqa: S108 - vLLM needs a big /dev/shm
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - pod's emptyDir
    ]
    if entity.model_cache is not None:
        env.append({"name": "HF_HOME", "value": CACHE_DIR})
        volumes.append(
            {"name": "cache", "persistentVolumeClaim": {"claimName": entity.model_cache.claim_name}}
        )
        mount: Manifest = {"name": "cache", "mountPath": CACHE_DIR}
        if entity.model_cache.sub_path:
            mount["subPath"] = entity.model_cache.sub_path
        mounts.append(mount)
    if model_volume is not None:
        volumes.append(model_volume)
        mounts.append({"name": "model", "mountPath": MODELS_DIR, "readOnly": True})
    if entity.hf_token_secret_ref is not None:
        ref = entity.hf_token_secret_ref
        env.append(
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
        )
    for var in entity.environment_vars or []:
        if var.secret_key_ref is not None:
            ref = var.secret_key_ref
            env.append(
                {
                    "name": var.name,
                    "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
                }
            )
        else:
            env.append({"name": var.name, "value": var.value or ""})

    node_selector = {
        **profile.node_selector,
        **((runtime.node_selector if runtime else None) or {}),
    }
    tolerations: list[Manifest] = [dict(GPU_TOLERATION)] if gpus else []
    for toleration in (runtime.tolerations if runtime else None) or []:
        body = toleration.to_body()
        if body not in tolerations:
            tolerations.append(body)

    probe = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10}
    pod_spec: Manifest = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "vllm",
                "image": (runtime.image if runtime else None) or settings.vllm_image,
                "command": ["vllm", "serve", model],
                "args": [
                    "--served-model-name",
                    entity.name,
                    "--host",
                    "0.0.0.0",  # noqa: S104 - a container listens on its pod IP
                    "--port",
                    str(INFERENCE_PORT),
                    *((runtime.args if runtime else None) or []),
                ],
                "env": env,
                "ports": [{"name": "http", "containerPort": INFERENCE_PORT, "protocol": "TCP"}],
                # Loading weights can take many minutes; only then do liveness checks start.
                "startupProbe": {**probe, "failureThreshold": 180},
                "readinessProbe": {**probe, "periodSeconds": 5},
                "livenessProbe": {**probe, "failureThreshold": 6},
                "resources": resources,
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": mounts,
            }
        ],
        "volumes": volumes,
    }
    if node_selector:
        pod_spec["nodeSelector"] = dict(sorted(node_selector.items()))
    if tolerations:
        pod_spec["tolerations"] = tolerations
    selector = entity_selector(endpoint, entity.name)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(name, namespace, labels, owner),
        "spec": {
            # replicas is left to the HPA.
            "selector": {"matchLabels": selector},
            "progressDeadlineSeconds": settings.progress_deadline_seconds,
            "revisionHistoryLimit": 3,
            "template": {"metadata": {"labels": {**labels, **selector}}, "spec": pod_spec},
        },
    }
