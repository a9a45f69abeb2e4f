"""Raw Deployments and Pods -> observations with reasons a person can act on."""

from __future__ import annotations

from typing import Any

from modelport.observe import observe_deployment, pod_problems, pod_progress
from modelport.status import deployment_view

UNSCHEDULABLE = (
    "0/5 nodes are available: 2 node(s) didn't match Pod's node affinity/selector, "
    "3 Insufficient nvidia.com/gpu. preemption: 0/5 nodes are available: 5 No "
    "preemption victims found for incoming pod."
)


def _pod(name: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": status}


def test_unschedulable_pods_are_explained_once() -> None:
    condition = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": UNSCHEDULABLE,
    }
    pods = [_pod("a", conditions=[condition]), _pod("b", conditions=[condition])]
    assert pod_problems(pods) == (f"pods unschedulable, waiting for a node: {UNSCHEDULABLE}",)


def test_image_pull_and_crash_loop() -> None:
    pods = [
        _pod(
            "a",
            containerStatuses=[
                {
                    "name": "vllm",
                    "state": {
                        "waiting": {
                            "reason": "ImagePullBackOff",
                            "message": 'Back-off pulling image "x"',
                        }
                    },
                }
            ],
        ),
        _pod(
            "b",
            containerStatuses=[
                {"name": "gateway", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ],
        ),
        _pod(
            "c",
            containerStatuses=[
                {"name": "gateway", "state": {"waiting": {"reason": "ContainerCreating"}}}
            ],
        ),  # transient: not a problem
    ]
    assert pod_problems(pods) == (
        'container vllm: image pull failing (Back-off pulling image "x")',
        "container gateway: crash looping (CrashLoopBackOff)",
    )


def test_terminating_pods_are_ignored() -> None:
    pod = _pod(
        "a",
        conditions=[
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "x"}
        ],
    )
    pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert pod_problems([pod]) == ()


def test_deployment_observation() -> None:
    deployment = {
        "metadata": {"name": "d", "generation": 3},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 3,
            "replicas": 3,
            "updatedReplicas": 1,
            "availableReplicas": 2,
            "conditions": [
                {
                    "type": "Progressing",
                    "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": 'ReplicaSet "d-1" has timed out progressing.',
                }
            ],
        },
    }
    obs = observe_deployment(deployment, [])
    assert obs is not None
    assert (obs.generation, obs.observed_generation, obs.replicas) == (3, 3, 2)
    assert obs.progress_deadline_exceeded == 'ReplicaSet "d-1" has timed out progressing.'
    assert obs.serving and not obs.rolled_out
    assert observe_deployment(None, []) is None


def _gpu_pod(name: str, node: str | None = None, **status: Any) -> dict[str, Any]:
    pod = _pod(name, **status)
    pod["spec"] = {
        "containers": [{"name": "vllm", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]
    }
    if node:
        pod["spec"]["nodeName"] = node
    return pod


def test_unschedulable_gpu_pods_wait_for_a_gpu_node() -> None:
    condition = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": UNSCHEDULABLE,
    }
    assert pod_problems([_gpu_pod("a", conditions=[condition])]) == (
        f"pods unschedulable, waiting for a GPU node: {UNSCHEDULABLE}",
    )


def test_progress_of_gpu_pods_stage_by_stage() -> None:
    not_ready = {"type": "Ready", "status": "False"}
    pending = _gpu_pod("a", conditions=[{"type": "PodScheduled", "status": "False"}])
    pulling = _gpu_pod(
        "b",
        node="gpu-0",
        conditions=[not_ready],
        containerStatuses=[
            {
                "name": "vllm",
                "image": "vllm/vllm-openai:v0.11.0",
                "ready": False,
                "state": {"waiting": {"reason": "ContainerCreating"}},
            }
        ],
    )
    loading = [
        _gpu_pod(
            name,
            node="gpu-1",
            conditions=[not_ready],
            containerStatuses=[
                {"name": "vllm", "ready": False, "started": False, "state": {"running": {}}}
            ],
        )
        for name in ("c", "d")
    ]
    ready = _gpu_pod("e", node="gpu-1", conditions=[{"type": "Ready", "status": "True"}])
    assert pod_progress([ready, *loading, pulling, pending]) == (
        "1 pod waiting for a node",
        "1 pod pulling the image: vllm/vllm-openai:v0.11.0",
        "2 pods loading weights",
    )
    assert pod_progress([ready]) == ()


def test_progress_reaches_the_entity_message() -> None:
    deployment = {
        "metadata": {"name": "chat-llama", "generation": 1},
        "spec": {"replicas": 1},
        "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1},
    }
    loading = _gpu_pod(
        "a",
        node="gpu-0",
        conditions=[{"type": "Ready", "status": "False"}],
        containerStatuses=[{"name": "vllm", "ready": False, "state": {"running": {}}}],
    )
    obs = observe_deployment(deployment, [loading])
    view = deployment_view(obs, "entity llama")
    assert view.state == "DEPLOYMENT_CREATING"
    assert view.message.endswith("; 1 pod loading weights"), view.message
