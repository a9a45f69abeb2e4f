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


# A custom model that fails to load: uvicorn's traceback ends the log, and the kubelet keeps
# its tail (FallbackToLogsOnError) as the termination message.
LOAD_FAILURE = """Traceback (most recent call last):
  File "/opt/mlflow/lib/python3.11/site-packages/mlflow/pyfunc/model.py", line 951, in load
    return cloudpickle.load(f)
           ^^^^^^^^^^^^^^^^^^^
ModuleNotFoundError: No module named 'lightgbm'
"""
NOT_IN_REGISTRY = (
    '  File "/opt/mlflow/lib/python3.11/site-packages/mlflow/utils/rest_utils.py"\n'
    "    raise RestException(json.loads(response.text))\n"
    "mlflow.exceptions.RestException: RESOURCE_DOES_NOT_EXIST: Registered Model with "
    "name=churn not found\n"
)


def _crash_looping(name: str, message: str, code: int = 1) -> dict[str, Any]:
    return {
        "name": name,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting"}},
        "lastState": {"terminated": {"exitCode": code, "reason": "Error", "message": message}},
    }


def test_the_runtimes_own_reason_for_failing_to_load() -> None:
    pods = [
        _pod("a", containerStatuses=[_crash_looping("mlflow", LOAD_FAILURE)]),
        _pod(
            "b",
            initContainerStatuses=[_crash_looping("fetch-model", NOT_IN_REGISTRY)],
            containerStatuses=[
                {"name": "mlflow", "state": {"waiting": {"reason": "PodInitializing"}}}
            ],
        ),
        # No message (the server wrote none and logged nothing): the back-off, as before.
        _pod("c", containerStatuses=[_crash_looping("vllm", "")]),
    ]
    assert pod_problems(pods) == (
        "container mlflow: crash looping (exit code 1: ModuleNotFoundError: No module named "
        "'lightgbm')",
        "init container fetch-model: crash looping (exit code 1: "
        "mlflow.exceptions.RestException: RESOURCE_DOES_NOT_EXIST: Registered Model with "
        "name=churn not found)",
        "container vllm: crash looping (back-off 40s restarting)",
    )


def test_a_message_without_a_traceback_gives_its_last_line() -> None:
    pod = _pod("a", containerStatuses=[_crash_looping("m", "loading\nout of memory\n", 137)])
    assert pod_problems([pod]) == ("container m: crash looping (exit code 137: out of memory)",)


def test_an_init_container_at_work_is_where_the_pod_is() -> None:
    pod = _pod(
        "a",
        initContainerStatuses=[{"name": "fetch-model", "state": {"running": {}}}],
        containerStatuses=[{"name": "mlflow", "state": {"waiting": {"reason": "PodInitializing"}}}],
    )
    pod["spec"] = {"nodeName": "node-1"}
    assert pod_progress([pod]) == ("1 pod running init container: fetch-model",)
