"""Raw Deployments and Pods, as the API returns them, reduced to status's types.

This is the parse boundary for children: after it, nothing reads raw dicts. Pure,
beside `modelport.status` (which decides what the observations mean). The watch
cache keeps these observations, not the objects: a Deployment's rollout state
(`observe_deployment(d, [])`) and each pod's stage and problems (`observe_pod`);
a Deployment that does not serve is explained by its pods (`with_pods`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from modelport.status import DeploymentObservation

# Waiting reasons that will not clear up on their own.
_STUCK = {
    "ErrImagePull": "image pull failing",
    "ImagePullBackOff": "image pull failing",
    "InvalidImageName": "invalid image name",
    "CrashLoopBackOff": "crash looping",
    "CreateContainerConfigError": "cannot create the container",
}


@dataclass(frozen=True)
class PodObservation:
    """What one pod shows about a rollout: where it is, and what keeps it from running."""

    name: str
    deleting: bool = False
    stage: str | None = None
    """Where a pod that is not ready is (see `pod_progress`); None when ready."""
    problems: tuple[str, ...] = ()
    """Why it does not run, in words (see `pod_problems`)."""


def observe_deployment(
    deployment: dict[str, Any] | None, pods: list[dict[str, Any]]
) -> DeploymentObservation | None:
    """The observation of `deployment` (None when it does not exist) and its pods."""
    if deployment is None:
        return None
    meta = deployment.get("metadata", {})
    spec = deployment.get("spec", {})
    status = deployment.get("status", {})
    deadline = None
    for condition in status.get("conditions") or []:
        if (condition.get("type"), condition.get("reason")) == (
            "Progressing",
            "ProgressDeadlineExceeded",
        ):
            deadline = condition.get("message") or "ProgressDeadlineExceeded"
    observation = DeploymentObservation(
        name=meta.get("name", ""),
        generation=int(meta.get("generation") or 0),
        observed_generation=int(status.get("observedGeneration") or 0),
        replicas=int(spec.get("replicas", 1)),
        status_replicas=int(status.get("replicas") or 0),
        updated_replicas=int(status.get("updatedReplicas") or 0),
        available_replicas=int(status.get("availableReplicas") or 0),
        progress_deadline_exceeded=deadline,
    )
    return with_pods(observation, [observe_pod(p) for p in pods]) if pods else observation


def observe_pod(pod: dict[str, Any]) -> PodObservation:
    """One pod, reduced to what `pod_problems` and `pod_progress` say of it."""
    meta = pod.get("metadata", {})
    if meta.get("deletionTimestamp"):
        return PodObservation(meta.get("name", ""), deleting=True)
    return PodObservation(meta.get("name", ""), False, _stage(pod), _problems(pod))


def with_pods(
    observation: DeploymentObservation, pods: Iterable[PodObservation]
) -> DeploymentObservation:
    """`observation` with what its pods say (problems, progress) added."""
    pods = list(pods)
    return dataclasses.replace(
        observation, pod_problems=problems_of(pods), pod_progress=progress_of(pods)
    )


def pod_problems(pods: list[dict[str, Any]]) -> tuple[str, ...]:
    """Distinct reasons why pods do not run, in words (scheduler's own message)."""
    return problems_of(observe_pod(p) for p in pods)


def pod_progress(pods: list[dict[str, Any]]) -> tuple[str, ...]:
    """Where pods that are not ready yet are, in words, most advanced stage last:
    waiting for a node, pulling the image, loading the weights (started, not ready).

    Each stage is counted, so that an unchanged world gives an unchanged text."""
    return progress_of(observe_pod(p) for p in pods)


def problems_of(pods: Iterable[PodObservation]) -> tuple[str, ...]:
    """`pod_problems` of observed pods."""
    found: list[str] = []
    for pod in sorted(pods, key=lambda p: p.name):
        if not pod.deleting:
            found += pod.problems
    return tuple(dict.fromkeys(found))


def progress_of(pods: Iterable[PodObservation]) -> tuple[str, ...]:
    """`pod_progress` of observed pods."""
    stages: dict[str, int] = {}
    for pod in pods:
        if not pod.deleting and pod.stage is not None:
            stages[pod.stage] = stages.get(pod.stage, 0) + 1
    order = [WAITING_FOR_NODE, PULLING, INITIALISING, LOADING]
    ranked = sorted(stages, key=lambda stage: (order.index(stage.split(":")[0]), stage))
    return tuple(f"{stages[s]} pod{'s' if stages[s] > 1 else ''} {s}" for s in ranked)


def _problems(pod: dict[str, Any]) -> tuple[str, ...]:
    found: list[str] = []
    status = pod.get("status", {})
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            node = "GPU node" if _wants_gpu(pod) else "node"
            found.append(
                f"pods unschedulable, waiting for a {node}: {condition.get('message', '')}"
            )
    for kind, key in (
        ("init container", "initContainerStatuses"),
        ("container", "containerStatuses"),
    ):
        for container in status.get(key) or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in _STUCK:
                detail = _runtime_reason(container) or waiting.get("message") or reason
                found.append(f"{kind} {container.get('name')}: {_STUCK[reason]} ({detail})")
    return tuple(found)


# The line of a Python traceback that names the exception: `ModuleNotFoundError: …`,
# `mlflow.exceptions.RestException: RESOURCE_DOES_NOT_EXIST: …`.
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*:")
_REASON_CHARS = 500


def _runtime_reason(container: dict[str, Any]) -> str | None:
    """Why a restarting container last failed, from its termination message: the
    exception line of a Python traceback (the server's own reason: a missing package, a
    model not in the registry), else the message's last line; with the exit code. The
    message is the log's tail for containers with `FallbackToLogsOnError`, so this is
    stable across restarts where the back-off message ("back-off 40s …") is not, and an
    unchanged failure observes equal (no status write)."""
    terminated = (container.get("lastState") or {}).get("terminated") or {}
    message = str(terminated.get("message") or "")
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return None
    reason = next((line for line in reversed(lines) if _EXCEPTION_LINE.match(line)), lines[-1])
    if len(reason) > _REASON_CHARS:
        reason = reason[: _REASON_CHARS - 1] + "…"
    code = terminated.get("exitCode")
    return f"exit code {code}: {reason}" if code is not None else reason


WAITING_FOR_NODE = "waiting for a node"
PULLING = "pulling the image"
INITIALISING = "running init container"
LOADING = "loading weights"


def _stage(pod: dict[str, Any]) -> str | None:
    status = pod.get("status", {})
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    if (conditions.get("Ready") or {}).get("status") == "True":
        return None
    if not pod.get("spec", {}).get("nodeName") and (
        (conditions.get("PodScheduled") or {}).get("reason") != "Unschedulable"
    ):
        return WAITING_FOR_NODE  # unschedulable pods are a problem, reported apart
    for container in status.get("initContainerStatuses") or []:
        if "running" in (container.get("state") or {}):
            # e.g. fetch-model: a custom model downloading from its registry.
            return f"{INITIALISING}: {container.get('name', '')}".rstrip(": ")
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in ("ContainerCreating", "PodInitializing"):
            return f"{PULLING}: {container.get('image', '')}".rstrip(": ")
        if "running" in state and not container.get("ready"):
            # Started but not ready: the server is loading the weights (its startup
            # probe has not passed yet, or it has and readiness still fails).
            return LOADING
    if pod.get("spec", {}).get("nodeName") and not status.get("containerStatuses"):
        return PULLING
    return None


def _wants_gpu(pod: dict[str, Any]) -> bool:
    for container in pod.get("spec", {}).get("containers") or []:
        limits = (container.get("resources") or {}).get("limits") or {}
        if any("gpu" in name for name in limits):
            return True
    return False
