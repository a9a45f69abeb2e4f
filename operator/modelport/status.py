"""Status, computed by pure functions from what was observed of the children.

`compute_status(endpoint, observed, previous, now)` is the whole policy:

- each entity's `state.deployment` is the worse of its own Deployment (self-hosted)
  and the gateway's, plus its Secret keys; its message says what to do;
- `state.ready` is READY when the gateway serves and every entity with traffic does;
- `state.configUpdate` is UPDATE_FAILED when something failed, IN_PROGRESS while the
  current generation is not rolled out everywhere, NOT_UPDATING otherwise;
- `config` is the config in force, `pendingConfig` the one rolling out, `traffic`
  the weights of `config`;
- a missing Secret of a callers' API key, of the rate limit store's password or of a
  database's connection string fails the update (Degraded, SecretMissing) but no
  entity: the gateway serves, it just refuses that key, cannot count limits, or writes
  no rows; a gateway that cannot
  verify ServiceAccount tokens (the cluster's TokenReview binding) makes the endpoint
  Degraded without failing the update, which nothing in the spec could fix;
- rate limits that each gateway replica would count on its own (no shared store, more
  than one replica allowed) make the endpoint Degraded (RateLimitsPerReplica) without
  failing the update: the spec is fine, the cluster's settings are not;
- conditions Ready/Progressing/Degraded keep their `lastTransitionTime` while their
  status does not change, so an unchanged world computes an equal status (and the
  operator skips the write);
- a body that does not parse keeps its previous status, with the update failed and
  Degraded (SpecInvalid) saying what to fix (`invalid_status`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from modelport.api import ServingEndpoint, ServingEndpointStatus
from modelport.api.meta import Condition, ConditionStatus
from modelport.api.v1alpha1 import (
    ConfigUpdateState,
    DeploymentState,
    EndpointConfig,
    EndpointState,
    EntityDeploymentState,
    ReadyState,
    Route,
    ServedEntityStatus,
    TrafficConfig,
)

READY: DeploymentState = "DEPLOYMENT_READY"
CREATING: DeploymentState = "DEPLOYMENT_CREATING"
FAILED: DeploymentState = "DEPLOYMENT_FAILED"
_SEVERITY = {READY: 0, CREATING: 1, "DEPLOYMENT_RECOVERING": 1, "DEPLOYMENT_ABORTED": 2, FAILED: 2}


@dataclass(frozen=True)
class DeploymentObservation:
    """What a Deployment (and its pods) showed, reduced to what status needs."""

    name: str
    generation: int = 0
    observed_generation: int = 0
    replicas: int = 1
    status_replicas: int = 0
    updated_replicas: int = 0
    available_replicas: int = 0
    progress_deadline_exceeded: str | None = None
    """The Progressing condition's message when its reason is ProgressDeadlineExceeded."""
    pod_problems: tuple[str, ...] = ()
    """Why pods do not run: unschedulable, image pull failing, crash looping."""
    pod_progress: tuple[str, ...] = ()
    """Where pods that are not ready yet are: waiting for a node, pulling the image,
    loading weights."""

    @property
    def rolled_out(self) -> bool:
        """The `kubectl rollout status` test: every replica updated and available."""
        return (
            self.observed_generation >= self.generation
            and self.updated_replicas >= self.replicas
            and self.status_replicas <= self.updated_replicas
            and self.available_replicas >= self.updated_replicas
        )

    @property
    def serving(self) -> bool:
        """At least one pod answers (possibly of the previous version)."""
        return self.available_replicas > 0


@dataclass(frozen=True)
class SecretProblem:
    """A Secret, or a key of it, that the endpoint names and that does not exist.
    `entity` is "" for the endpoint's own Secrets (callers' API keys)."""

    entity: str
    field: str
    secret: str
    key: str
    missing: Literal["secret", "key"]
    consequence: str = ""
    """What an endpoint-wide Secret's absence does (an API key refused, the rate limit
    store unreachable, no usage or payload rows written)."""

    def message(self, namespace: str) -> str:
        """What is wrong and the command that fixes it (never a value)."""
        fix = (
            f"kubectl -n {namespace} create secret generic {self.secret} "
            f"--from-literal={self.key}=<value>"
            if self.missing == "secret"
            else f"kubectl -n {namespace} patch secret {self.secret} --type merge "
            f'-p \'{{"stringData": {{"{self.key}": "<value>"}}}}\''
        )
        what = (
            f"Secret {self.secret} does not exist in namespace {namespace}"
            if self.missing == "secret"
            else f"Secret {self.secret} has no key {self.key}"
        )
        return f"{what} ({self.field}); create it: {fix}"


@dataclass(frozen=True)
class Observed:
    """Everything the operator saw while reconciling one endpoint."""

    namespace: str
    url: str
    gateway: DeploymentObservation | None
    entities: dict[str, DeploymentObservation | None] = field(default_factory=dict)
    """Self-hosted entity name -> its Deployment (None: not created yet)."""
    secret_problems: Sequence[SecretProblem] = ()
    spec_error: str | None = None
    """Why the spec could not be rendered (nothing was applied for this generation)."""
    spec_error_entity: str | None = None
    """The served entity `spec_error` is about (`RenderError.entity`); None: the
    endpoint as a whole."""
    token_review_problem: str | None = None
    """Why the gateway cannot verify ServiceAccount tokens (the cluster's binding)."""
    rate_limit_problem: str | None = None
    """Why the endpoint's rate limits multiply by its replicas (no shared store)."""


@dataclass(frozen=True)
class _EntityView:
    state: DeploymentState
    message: str
    serving: bool
    rolled_out: bool


def deployment_view(obs: DeploymentObservation | None, what: str) -> _EntityView:
    """The state of one Deployment, with a message a person can act on."""
    if obs is None:
        return _EntityView(CREATING, f"{what}: waiting for Deployment to be created", False, False)
    if obs.progress_deadline_exceeded is not None or obs.pod_problems:
        reasons = list(obs.pod_problems)
        if obs.progress_deadline_exceeded is not None:
            reasons.insert(
                0, f"rollout exceeded its progress deadline ({obs.progress_deadline_exceeded})"
            )
        return _EntityView(
            FAILED, f"{what} (Deployment {obs.name}): {'; '.join(reasons)}", obs.serving, False
        )
    if obs.rolled_out and obs.serving:
        return _EntityView(READY, "", True, True)
    progress = "".join(f"; {p}" for p in obs.pod_progress)
    return _EntityView(
        CREATING,
        f"{what} (Deployment {obs.name}): rolling out, {obs.updated_replicas}/{obs.replicas} "
        f"updated, {obs.available_replicas} available{progress}",
        obs.serving,
        False,
    )


def _worse(a: _EntityView, b: _EntityView) -> _EntityView:
    state = a.state if _SEVERITY[a.state] >= _SEVERITY[b.state] else b.state
    message = "; ".join(m for m in (a.message, b.message) if m)
    return _EntityView(state, message, a.serving and b.serving, a.rolled_out and b.rolled_out)


def compute_status(
    endpoint: ServingEndpoint,
    observed: Observed,
    previous: ServingEndpointStatus | None,
    now: datetime,
) -> ServingEndpointStatus:
    """The endpoint's status from `observed`; `previous` keeps transition times."""
    spec = endpoint.spec
    generation = endpoint.metadata.generation or 0
    gateway = deployment_view(observed.gateway, "gateway")

    views: dict[str, _EntityView] = {}
    for entity in spec.served_entities:
        view = gateway
        if observed.spec_error and observed.spec_error_entity == entity.name:
            # The entity the render error is about was refused; the others were not.
            views[entity.name] = _EntityView(FAILED, observed.spec_error, False, False)
            continue
        if entity.is_self_hosted:
            own = deployment_view(observed.entities.get(entity.name), f"entity {entity.name}")
            view = _worse(own, gateway)
        problems = [p for p in observed.secret_problems if p.entity == entity.name]
        if problems:
            message = "; ".join(p.message(observed.namespace) for p in problems)
            view = _EntityView(FAILED, message, False, view.rolled_out)
        views[entity.name] = view

    weights = {r.served_entity_name: r.traffic_percentage for r in spec.routes()}
    not_serving = [n for n, v in views.items() if weights.get(n, 0) > 0 and not v.serving]
    ready: ReadyState = "READY" if gateway.serving and not not_serving else "NOT_READY"
    failures = [
        f"{n}: {v.message}"
        for n, v in views.items()
        if v.state == FAILED and v.message != observed.spec_error  # said once, below
    ]
    if gateway.state == FAILED:
        failures.insert(0, gateway.message)
    # The endpoint's own Secrets (callers' API keys): no entity fails, the update does.
    failures += [
        f"{p.message(observed.namespace)}; {p.consequence}"
        if p.consequence
        else p.message(observed.namespace)
        for p in observed.secret_problems
        if not p.entity
    ]
    if observed.spec_error:
        failures.insert(0, observed.spec_error)
    rolled_out = observed.spec_error is None and all(v.rolled_out for v in views.values())

    previous_config = previous.config if previous else None
    already_live = previous_config is not None and previous_config.config_version == generation
    update: ConfigUpdateState
    if failures:
        update = "UPDATE_FAILED"
    elif not rolled_out and not already_live:
        update = "IN_PROGRESS"
    else:
        update = "NOT_UPDATING"

    current = _config_of(endpoint, generation, previous, now)
    config: EndpointConfig | None = current
    pending: EndpointConfig | None = None
    if update == "NOT_UPDATING" or (already_live and not observed.spec_error):
        config, pending = current, None
    else:
        config, pending = previous_config, current

    traffic = list(config.traffic_config.routes) if config and config.traffic_config else None
    # Degraded names its first cause; a missing TokenReview binding is reported there
    # too, after the failures, without failing the update (see the module docstring).
    degraded = [
        *failures,
        *filter(None, [observed.token_review_problem, observed.rate_limit_problem]),
    ]
    if observed.spec_error:
        reason = "SpecInvalid"
    elif observed.secret_problems:
        reason = "SecretMissing"
    elif failures:
        reason = "RolloutFailed"
    elif observed.token_review_problem:
        reason = "TokenReviewUnavailable"
    else:
        reason = "RateLimitsPerReplica"
    conditions = _conditions(
        ready,
        update,
        not_serving,
        (reason, degraded),
        generation,
        previous.conditions if previous else None,
        now,
    )
    return ServingEndpointStatus(
        observed_generation=generation,
        url=observed.url,
        state=EndpointState(ready=ready, config_update=update),
        config=config,
        pending_config=pending,
        served_entities=[
            ServedEntityStatus(
                name=name,
                state=EntityDeploymentState(
                    deployment=view.state, deployment_state_message=view.message[:4096]
                ),
            )
            for name, view in views.items()
        ],
        traffic=traffic,
        conditions=conditions,
    )


def _config_of(
    endpoint: ServingEndpoint,
    generation: int,
    previous: ServingEndpointStatus | None,
    now: datetime,
) -> EndpointConfig:
    """The spec's config, with the start time of its rollout kept once set."""
    start = now
    for earlier in (previous.pending_config, previous.config) if previous else ():
        if earlier is not None and earlier.config_version == generation and earlier.start_time:
            start = earlier.start_time
            break
    routes = endpoint.spec.routes()
    return EndpointConfig(
        served_entities=list(endpoint.spec.served_entities),
        traffic_config=TrafficConfig(
            routes=[
                Route(
                    served_entity_name=r.served_entity_name, traffic_percentage=r.traffic_percentage
                )
                for r in routes
            ]
        )
        if routes
        else None,
        config_version=generation,
        start_time=start,
    )


def invalid_status(
    previous: ServingEndpointStatus | None,
    name: str,
    generation: int,
    errors: str,
    now: datetime,
) -> ServingEndpointStatus:
    """The status of an endpoint whose body does not parse (it slipped past admission):
    the previous status, with the update failed and Degraded saying what to fix.

    Nothing else can be computed without a spec, so readiness and the other
    conditions stay as they were."""
    previous = previous or ServingEndpointStatus()
    text = f"spec is invalid: {errors}; fix the spec (kubectl edit servingendpoint {name})"
    before = {c.type: c for c in previous.conditions or ()}
    conditions = [c for c in previous.conditions or [] if c.type != "Degraded"]
    conditions.append(_condition("Degraded", True, "SpecInvalid", text, generation, before, now))
    return previous.model_copy(
        update={
            "observed_generation": generation,
            "state": EndpointState(
                ready=previous.state.ready if previous.state else "NOT_READY",
                config_update="UPDATE_FAILED",
            ),
            "conditions": conditions,
        }
    )


def _condition(
    kind: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    before: dict[str, Condition],
    now: datetime,
) -> Condition:
    """One condition; it keeps its `lastTransitionTime` while its status is unchanged."""
    text: ConditionStatus = "True" if status else "False"
    old = before.get(kind)
    since = old.last_transition_time if old is not None and old.status == text else None
    return Condition(
        type=kind,
        status=text,
        reason=reason,
        message=message[:32768],
        observed_generation=generation,
        last_transition_time=since or now,
    )


def _conditions(
    ready: str,
    update: str,
    not_serving: list[str],
    degraded: tuple[str, list[str]],
    generation: int,
    previous: Sequence[Condition] | None,
    now: datetime,
) -> list[Condition]:
    before = {c.type: c for c in previous or ()}
    reason, problems = degraded

    def condition(kind: str, status: bool, reason: str, message: str) -> Condition:
        return _condition(kind, status, reason, message, generation, before, now)

    if ready == "READY":
        ready_message = "every entity with traffic is serving"
    elif not_serving:
        ready_message = f"not serving yet: {', '.join(not_serving)}"
    else:
        ready_message = "the gateway is not serving yet"
    return [
        condition(
            "Ready", ready == "READY", "Ready" if ready == "READY" else "NotReady", ready_message
        ),
        condition(
            "Progressing",
            update == "IN_PROGRESS",
            {"IN_PROGRESS": "RollingOut", "UPDATE_FAILED": "RolloutFailed"}.get(
                update, "RolloutComplete"
            ),
            f"generation {generation} is rolling out"
            if update == "IN_PROGRESS"
            else f"generation {generation}: {update}",
        ),
        condition(
            "Degraded",
            bool(problems),
            reason if problems else "AsExpected",
            "; ".join(problems),
        ),
    ]
