"""Status policy: observed children -> state, per-entity messages, traffic, config,
conditions; an unchanged world computes an equal status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from modelport.api import ServingEndpointStatus
from modelport.render.config import API_KEY_MISSING
from modelport.status import DeploymentObservation, Observed, SecretProblem, compute_status
from tests.unit.operator.helpers import endpoint, external, self_hosted

T0 = datetime(2026, 11, 22, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
URL = "http://chat.team-a.svc.cluster.local"


def _dep(
    name: str,
    *,
    generation: int = 1,
    observed: int = 1,
    replicas: int = 1,
    updated: int = 1,
    available: int = 1,
    total: int | None = None,
    deadline: str | None = None,
    problems: tuple[str, ...] = (),
) -> DeploymentObservation:
    return DeploymentObservation(
        name=name,
        generation=generation,
        observed_generation=observed,
        replicas=replicas,
        status_replicas=updated if total is None else total,
        updated_replicas=updated,
        available_replicas=available,
        progress_deadline_exceeded=deadline,
        pod_problems=problems,
    )


READY_GW = _dep("chat-gateway")
ROLLING_GW = _dep("chat-gateway", generation=2, observed=2, updated=1, available=1, total=2)
NEW_GW = _dep("chat-gateway", available=0)
UNSCHEDULABLE = "pods unschedulable: 0/5 nodes are available: 3 Insufficient nvidia.com/gpu."


def _observed(gateway: DeploymentObservation | None = READY_GW, **kw: object) -> Observed:
    return Observed(namespace="team-a", url=URL, gateway=gateway, **kw)  # type: ignore[arg-type]


MIXED = endpoint(external("gpt"), self_hosted("llama"), weights=[80, 20])
MIXED_NO_GPU_TRAFFIC = endpoint(external("gpt"), self_hosted("llama"), weights=[100, 0])


@pytest.mark.parametrize(
    ("ep", "observed", "ready", "update", "states"),
    [
        (
            endpoint(external("gpt")),
            _observed(),
            "READY",
            "NOT_UPDATING",
            {"gpt": "DEPLOYMENT_READY"},
        ),
        (
            endpoint(external("gpt")),
            _observed(None),
            "NOT_READY",
            "IN_PROGRESS",
            {"gpt": "DEPLOYMENT_CREATING"},
        ),
        (
            endpoint(external("gpt")),
            _observed(NEW_GW),
            "NOT_READY",
            "IN_PROGRESS",
            {"gpt": "DEPLOYMENT_CREATING"},
        ),
        (
            MIXED,
            _observed(entities={"llama": _dep("chat-llama")}),
            "READY",
            "NOT_UPDATING",
            {"gpt": "DEPLOYMENT_READY", "llama": "DEPLOYMENT_READY"},
        ),
        (
            MIXED,
            _observed(entities={"llama": None}),
            "NOT_READY",
            "IN_PROGRESS",
            {"gpt": "DEPLOYMENT_READY", "llama": "DEPLOYMENT_CREATING"},
        ),
        (
            MIXED,
            _observed(
                entities={"llama": _dep("chat-llama", available=0, problems=(UNSCHEDULABLE,))}
            ),
            "NOT_READY",
            "UPDATE_FAILED",
            {"gpt": "DEPLOYMENT_READY", "llama": "DEPLOYMENT_FAILED"},
        ),
        # No traffic to the failing entity: still READY, but the update failed.
        (
            MIXED_NO_GPU_TRAFFIC,
            _observed(
                entities={"llama": _dep("chat-llama", available=0, problems=(UNSCHEDULABLE,))}
            ),
            "READY",
            "UPDATE_FAILED",
            {"gpt": "DEPLOYMENT_READY", "llama": "DEPLOYMENT_FAILED"},
        ),
        (
            MIXED,
            _observed(entities={"llama": _dep("chat-llama", deadline="timed out")}),
            "READY",
            "UPDATE_FAILED",
            {"gpt": "DEPLOYMENT_READY", "llama": "DEPLOYMENT_FAILED"},
        ),
        (
            endpoint(external("gpt")),
            _observed(
                secret_problems=[
                    SecretProblem(
                        "gpt",
                        "spec.servedEntities[0].externalModel.openaiConfig.openaiApiKey",
                        "llm-keys",
                        "openai",
                        "secret",
                    )
                ]
            ),
            "NOT_READY",
            "UPDATE_FAILED",
            {"gpt": "DEPLOYMENT_FAILED"},
        ),
        (
            endpoint(external("gpt")),
            _observed(spec_error="spec.x: bad; fix it"),
            "READY",
            "UPDATE_FAILED",
            {"gpt": "DEPLOYMENT_READY"},
        ),
    ],
)
def test_states(
    ep: object, observed: Observed, ready: str, update: str, states: dict[str, str]
) -> None:
    status = compute_status(ep, observed, None, T0)  # type: ignore[arg-type]
    assert status.state is not None
    assert (status.state.ready, status.state.config_update) == (ready, update)
    assert {e.name: e.state.deployment for e in status.served_entities or []} == states
    assert status.url == URL
    assert status.observed_generation == 1
    conditions = {c.type: c.status for c in status.conditions or []}
    assert conditions == {
        "Ready": str(ready == "READY"),
        "Progressing": str(update == "IN_PROGRESS"),
        "Degraded": str(update == "UPDATE_FAILED"),
    }


def test_messages_say_what_to_do() -> None:
    problem = SecretProblem(
        "gpt",
        "spec.servedEntities[0].externalModel.openaiConfig.openaiApiKey",
        "llm-keys",
        "openai",
        "key",
    )
    status = compute_status(
        endpoint(external("gpt")), _observed(secret_problems=[problem]), None, T0
    )
    message = (status.served_entities or [])[0].state.deployment_state_message
    assert "Secret llm-keys has no key openai" in message
    assert "openaiApiKey" in message and "kubectl -n team-a" in message

    status = compute_status(
        MIXED,
        _observed(entities={"llama": _dep("chat-llama", available=0, problems=(UNSCHEDULABLE,))}),
        None,
        T0,
    )
    llama = next(e for e in status.served_entities or [] if e.name == "llama")
    assert "0/5 nodes are available" in llama.state.deployment_state_message
    assert "nvidia.com/gpu" in llama.state.deployment_state_message
    degraded = next(c for c in status.conditions or [] if c.type == "Degraded")
    assert "nvidia.com/gpu" in degraded.message


def test_traffic_and_config_follow_the_rollout() -> None:
    v1 = endpoint(external("a"), external("b"), weights=[80, 20], generation=1)
    done = compute_status(v1, _observed(), None, T0)
    assert [(r.served_entity_name, r.traffic_percentage) for r in done.traffic or []] == [
        ("a", 80),
        ("b", 20),
    ]
    assert done.config is not None and done.config.config_version == 1
    assert done.pending_config is None

    v2 = endpoint(external("a"), external("b"), weights=[30, 70], generation=2)
    rolling = compute_status(v2, _observed(ROLLING_GW), done, T1)
    assert rolling.state is not None and rolling.state.config_update == "IN_PROGRESS"
    assert rolling.config == done.config  # the old weights are still in force
    assert [r.traffic_percentage for r in rolling.traffic or []] == [80, 20]
    assert rolling.pending_config is not None and rolling.pending_config.config_version == 2
    assert rolling.pending_config.start_time == T1

    later = T1 + timedelta(seconds=30)
    finished = compute_status(
        v2, _observed(_dep("chat-gateway", generation=2, observed=2)), rolling, later
    )
    assert finished.state is not None and finished.state.config_update == "NOT_UPDATING"
    assert [r.traffic_percentage for r in finished.traffic or []] == [30, 70]
    assert finished.pending_config is None
    assert finished.config is not None and finished.config.start_time == T1


def test_unchanged_world_gives_an_equal_status_and_keeps_transition_times() -> None:
    ep = endpoint(external("gpt"))
    first = compute_status(ep, _observed(), None, T0)
    again = compute_status(ep, _observed(), first, T1)
    assert again == first
    # Round trip through the API's JSON keeps it equal (what the skip test compares).
    assert ServingEndpointStatus.model_validate(first.to_body()).to_body() == first.to_body()


def test_transition_time_moves_only_with_the_condition() -> None:
    ep = endpoint(external("gpt"))
    ready = compute_status(ep, _observed(), None, T0)
    broken = compute_status(ep, _observed(NEW_GW), ready, T1)
    times = {c.type: c.last_transition_time for c in broken.conditions or []}
    assert times["Ready"] == T1  # True -> False
    assert times["Degraded"] == T0  # False -> False


def test_scaling_after_rollout_is_not_a_config_update() -> None:
    ep = endpoint(external("gpt"))
    ready = compute_status(ep, _observed(), None, T0)
    scaling = _dep("chat-gateway", replicas=2, updated=1, available=1)
    status = compute_status(ep, _observed(scaling), ready, T1)
    assert status.state is not None
    assert (status.state.ready, status.state.config_update) == ("READY", "NOT_UPDATING")


def test_a_refused_entity_carries_the_render_error() -> None:
    error = (
        "spec.servedEntities[1].workloadType 'GPU_SMALL': system.ai.x needs at least 160 GiB "
        "of GPU memory and GPU_SMALL gives 1 x 16 GiB = 16 GiB; use workloadType GPU_LARGE_2"
    )
    status = compute_status(MIXED, _observed(spec_error=error, spec_error_entity="llama"), None, T0)
    by_name = {e.name: e.state for e in status.served_entities or []}
    assert by_name["llama"].deployment == "DEPLOYMENT_FAILED"
    assert by_name["llama"].deployment_state_message == error
    assert by_name["gpt"].deployment == "DEPLOYMENT_READY"
    assert status.state is not None and status.state.config_update == "UPDATE_FAILED"
    degraded = next(c for c in status.conditions or [] if c.type == "Degraded")
    assert degraded.message.count("GPU_LARGE_2") == 1  # said once


API_KEY_FIELD = "spec.aiGateway.auth.apiKeys[0].secretKeyRef"


def _conditions(status: ServingEndpointStatus) -> dict[str, tuple[str, str, str]]:
    return {c.type: (c.status, c.reason, c.message) for c in status.conditions or []}


@pytest.mark.parametrize(
    ("problem", "ready", "update", "degraded_reason"),
    [
        (None, "READY", "NOT_UPDATING", "AsExpected"),
        # A missing API key: the gateway serves (it refuses that key), the update failed.
        (SecretProblem("", API_KEY_FIELD, "chat-callers", "alice", "secret", API_KEY_MISSING),
         "READY", "UPDATE_FAILED", "SecretMissing"),
        (SecretProblem("", API_KEY_FIELD, "chat-callers", "alice", "key", API_KEY_MISSING),
         "READY", "UPDATE_FAILED", "SecretMissing"),
    ],
)  # fmt: skip
def test_a_missing_api_key_fails_the_update_but_no_entity(
    problem: SecretProblem | None, ready: str, update: str, degraded_reason: str
) -> None:
    observed = _observed(secret_problems=[problem] if problem else [])
    status = compute_status(endpoint(external("gpt")), observed, None, T0)
    assert status.state is not None
    assert (status.state.ready, status.state.config_update) == (ready, update)
    assert [e.state.deployment for e in status.served_entities or []] == ["DEPLOYMENT_READY"]
    degraded = _conditions(status)["Degraded"]
    assert degraded[1] == degraded_reason
    if problem:
        # The field, the Secret, the fix; never a value.
        assert API_KEY_FIELD in degraded[2] and "chat-callers" in degraded[2]
        assert "kubectl -n team-a" in degraded[2] and "refuses this API key" in degraded[2]


def test_a_gateway_without_token_review_is_degraded_without_failing_the_update() -> None:
    problem = "gateway ServiceAccount team-a/chat-gateway cannot verify callers' tokens ..."
    status = compute_status(
        endpoint(external("gpt")), _observed(token_review_problem=problem), None, T0
    )
    assert status.state is not None
    assert (status.state.ready, status.state.config_update) == ("READY", "NOT_UPDATING")
    assert _conditions(status)["Degraded"] == ("True", "TokenReviewUnavailable", problem)
    # With a failure too, the failure is the reason, and both are said.
    secret = SecretProblem("gpt", "spec.servedEntities[0]...", "llm-keys", "openai", "secret")
    status = compute_status(
        endpoint(external("gpt")),
        _observed(token_review_problem=problem, secret_problems=[secret]),
        None,
        T0,
    )
    degraded = _conditions(status)["Degraded"]
    assert degraded[:2] == ("True", "SecretMissing")
    assert degraded[2].index("llm-keys") < degraded[2].index(problem)


@pytest.mark.parametrize(
    ("observed", "reason"),
    [
        (_observed(spec_error="spec.servedEntities[0]: bad"), "SpecInvalid"),
        (_observed(_dep("chat-gateway", deadline="too slow")), "RolloutFailed"),
    ],
)
def test_degraded_names_its_first_cause(observed: Observed, reason: str) -> None:
    status = compute_status(endpoint(external("gpt")), observed, None, T0)
    assert _conditions(status)["Degraded"][:2] == ("True", reason)
