"""Raw Deployments and Pods -> observations with reasons a person can act on."""

from __future__ import annotations

from typing import Any

from modelport.kube.observe import observe_deployment, pod_problems

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
    assert pod_problems(pods) == (f"pods unschedulable: {UNSCHEDULABLE}",)


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
