"""Raw Deployments and Pods, as the API returns them, reduced to status's types.

This is the parse boundary for children: after it, nothing reads raw dicts.
"""

from __future__ import annotations

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
    return DeploymentObservation(
        name=meta.get("name", ""),
        generation=int(meta.get("generation") or 0),
        observed_generation=int(status.get("observedGeneration") or 0),
        replicas=int(spec.get("replicas", 1)),
        status_replicas=int(status.get("replicas") or 0),
        updated_replicas=int(status.get("updatedReplicas") or 0),
        available_replicas=int(status.get("availableReplicas") or 0),
        progress_deadline_exceeded=deadline,
        pod_problems=pod_problems(pods),
    )


def pod_problems(pods: list[dict[str, Any]]) -> tuple[str, ...]:
    """Distinct reasons why pods do not run, in words (scheduler's own message)."""
    found: list[str] = []
    for pod in sorted(pods, key=lambda p: p.get("metadata", {}).get("name", "")):
        if pod.get("metadata", {}).get("deletionTimestamp"):
            continue
        status = pod.get("status", {})
        for condition in status.get("conditions") or []:
            if (
                condition.get("type") == "PodScheduled"
                and condition.get("status") == "False"
                and condition.get("reason") == "Unschedulable"
            ):
                found.append(f"pods unschedulable: {condition.get('message', '')}".strip())
        for container in status.get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in _STUCK:
                detail = waiting.get("message") or reason
                found.append(f"container {container.get('name')}: {_STUCK[reason]} ({detail})")
    return tuple(dict.fromkeys(found))
