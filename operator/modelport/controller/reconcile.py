"""One reconcile of one endpoint: read the cache, render, apply what differs, prune,
keep the gateway's ServiceAccount in the TokenReview binding (or out of it),
observe, write status if it changed, record events for transitions.

Level-based and idempotent: it reads the endpoint and its children from the watch
cache (`modelport.controller.cache`, through `Expectations` for our own writes the
watches have not shown yet) and acts only on differences, so it is safe to run for
any trigger, any number of times. It reads nothing from the API server (the cache
answers everything) and writes only what differs; an unchanged endpoint costs no
request at all.

A status write that would change only the words of progress messages ("1 pod
pulling the image") waits until `PROGRESS_WRITE_SECONDS` after the previous status
write (the reconcile asks to run again then): a rollout's every pod event would
otherwise be a write. Changes of state (ready, failed, a condition) are written at
once. The TokenReview binding commits changes in groups (`modelport.kube.binding`)
and a reconcile does not wait for its own, unless the endpoint would be READY
without it: READY means callers' ServiceAccount tokens can be verified.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from modelport import operatormetrics as metrics
from modelport.api import ServingEndpoint, ServingEndpointStatus, format_errors
from modelport.api.meta import Condition
from modelport.controller.cache import (
    Cache,
    CachedChild,
    CachedEndpoint,
    CachedPod,
    EndpointKey,
    cached_child,
    cached_endpoint,
)
from modelport.controller.expectations import Expectations
from modelport.kube import ChildKey, KubeError, NamespaceGoneError
from modelport.kube.binding import BindingResult, Subject, TokenReviewBinding
from modelport.kube.compare import desired_digest, with_applied_hash
from modelport.objects import Manifest
from modelport.observe import with_pods
from modelport.render import RenderError, endpoint_url, render
from modelport.render.config import SecretRef, secret_refs
from modelport.render.names import (
    entity_name,
    entity_selector,
    gateway_name,
    gateway_selector,
    gateway_service_account_name,
)
from modelport.settings import Settings
from modelport.status import (
    DeploymentObservation,
    Observed,
    SecretProblem,
    compute_status,
    invalid_status,
)

log = logging.getLogger("modelport.reconcile")

PROGRESS_WRITE_SECONDS = 5.0
POD_OWNERS = frozenset({"Deployment"})
"""Kinds whose pods need the other children to exist first."""


class Writer(Protocol):
    """The calls of `modelport.kube.Kube` a reconcile makes (a stand-in in unit tests)."""

    async def apply(self, manifest: Manifest) -> dict[str, Any]:
        """Server-side apply a child; the object after it."""
        ...

    async def delete(self, kind: str, namespace: str, name: str, uid: str) -> None:
        """Delete a child if it still has `uid`."""
        ...

    async def apply_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Write the status; the endpoint after it."""
        ...

    async def event(
        self,
        namespace: str,
        endpoint: str,
        uid: str,
        type_: Literal["Normal", "Warning"],
        reason: str,
        message: str,
    ) -> bool:
        """Record an event; whether it was."""
        ...


@dataclass
class Outcome:
    """What one reconcile did (for logs and tests)."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    status_written: bool = False
    writes: int = 0
    """Write requests this reconcile made (applies, deletes, status, events)."""


@dataclass(frozen=True)
class Seen:
    """What a reconcile went by, as it will be once the watches show our writes: an
    event that brings nothing new against this needs no reconcile."""

    endpoint: CachedEndpoint
    children: Mapping[ChildKey, CachedChild]
    secrets: Mapping[str, frozenset[str] | None]
    pods: Mapping[str, CachedPod]
    """The pods consulted (those of Deployments that do not serve), by uid."""
    pod_selectors: tuple[Mapping[str, str], ...]
    """Selectors of the Deployments whose pods were consulted."""


@dataclass(frozen=True)
class Reconciled:
    """A reconcile's result: what it did, what it went by (None: the endpoint is gone)
    and when it asks to run again (clock time; None: on the next event)."""

    outcome: Outcome | None
    seen: Seen | None
    again_at: float | None = None


class Reconciler:
    """Reconciles endpoints; one per operator process, shared by every worker."""

    def __init__(
        self,
        cache: Cache,
        kube: Writer,
        binding: TokenReviewBinding,
        settings: Settings,
        *,
        expectations: Expectations | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC).replace(microsecond=0),
    ) -> None:
        self.cache = cache
        self.kube = kube
        self.binding = binding
        self.settings = settings
        self.expectations = expectations if expectations is not None else Expectations(clock=clock)
        self._clock = clock
        self._now = now
        self._status_at: dict[EndpointKey, float] = {}
        # Binding changes not committed yet: whose they are, and whether an add.
        self._binding_changes: dict[Subject, tuple[EndpointKey, bool]] = {}
        self.requeue: Callable[[EndpointKey], None] = lambda key: None
        """How to have an endpoint reconciled again (the manager's queue)."""
        binding.on_committed = self._binding_committed

    def forget(self, key: EndpointKey) -> None:
        """Drop what is kept about an endpoint that is gone."""
        self.expectations.forget(key)
        self._status_at.pop(key, None)

    async def reconcile(self, namespace: str, name: str) -> Reconciled:
        """Reconcile one endpoint (see the module docstring)."""
        key = (namespace, name)
        cached = self.cache.endpoint(key)
        if cached is None or cached.deleting:
            # Deleted: garbage collection removes the children through owner refs; the
            # binding is cluster-scoped and owned by no endpoint, so its subject is ours
            # to remove.
            self._bind(key, None)
            self.forget(key)
            return Reconciled(None, None)
        current = self.expectations.endpoint(key, cached)
        raw = current.raw()
        try:
            endpoint = ServingEndpoint.parse(raw)
        except ValidationError as exc:
            outcome, current = await self._invalid(key, current, raw, exc)
            return self._done(key, outcome, Seen(current, {}, {}, {}, ()))
        outcome = Outcome()
        children = self.expectations.children(key, self.cache.children(key))
        spec_error: str | None = None
        spec_error_entity: str | None = None
        token_review: str | None = None
        binding_pending = False
        rate_limits: str | None = None
        try:
            rendered = render(endpoint, self.settings)
        except RenderError as exc:
            spec_error, spec_error_entity = str(exc), exc.entity
        else:
            rate_limits = rendered.rate_limit_warning
            try:
                await self._apply(key, endpoint, rendered.children, children, outcome)
            except NamespaceGoneError as exc:
                log.info("namespace of %s/%s is going away; not applying: %s", namespace, name, exc)
                return self._done(key, outcome, None)
            except KubeError as exc:
                if exc.status not in (400, 422):
                    raise  # transient: the work queue retries with backoff
                # The apiserver refused what the spec produced (e.g. a runtime field
                # it cannot accept): retrying cannot help, the user must change it.
                spec_error = f"the apiserver refused a child of this endpoint: {exc}"
            token_review, binding_pending = self._bind(key, rendered.service_account)

        refs = secret_refs(endpoint, self.settings.rate_limiting, self.settings.usage_database)
        secrets = {ref.name: self.cache.secret(namespace, ref.name) for ref in refs}
        pods: dict[str, CachedPod] = {}
        selectors: list[Mapping[str, str]] = []
        observed = Observed(
            namespace=namespace,
            url=endpoint_url(name, namespace),
            gateway=self._deployment(
                children.get(("Deployment", gateway_name(name))),
                gateway_selector(name),
                key,
                pods,
                selectors,
            ),
            entities={
                entity.name: self._deployment(
                    children.get(("Deployment", entity_name(name, entity.name))),
                    entity_selector(name, entity.name),
                    key,
                    pods,
                    selectors,
                )
                for entity in endpoint.spec.served_entities
                if entity.is_self_hosted
            },
            secret_problems=_secret_problems(refs, secrets),
            spec_error=spec_error,
            spec_error_entity=spec_error_entity,
            token_review_problem=token_review,
            rate_limit_problem=rate_limits,
        )
        status = compute_status(endpoint, observed, endpoint.status, self._now())
        if binding_pending and _ready(status) and not _ready(endpoint.status):
            # READY only once the gateway may verify tokens: wait for the commit.
            account = gateway_service_account_name(name)
            result = await self.binding.sync(namespace, account, present=True)
            problem = None if result.ok else result.problem(namespace, account)
            observed = dataclasses.replace(observed, token_review_problem=problem)
            status = compute_status(endpoint, observed, endpoint.status, self._now())
        metrics.endpoint_ready(namespace, name, _ready(status))
        again_at = None
        write = _body(status) != _body(endpoint.status)
        if write:
            again_at = self._progress_wait(key, status, endpoint.status)
            write = again_at is None
        # The event about the children needs nothing of the status: both at once.
        changes = asyncio.ensure_future(self._change_events(endpoint, outcome))
        try:
            if write:
                current = await self._write_status(key, status, outcome)
        finally:
            await changes
        if write:
            await self._status_events(endpoint, status, outcome)
        seen = Seen(current, children, secrets, pods, tuple(selectors))
        return self._done(key, outcome, seen, again_at)

    def _done(
        self, key: EndpointKey, outcome: Outcome, seen: Seen | None, again_at: float | None = None
    ) -> Reconciled:
        pending = self.expectations.pending_until(key)
        times = [t for t in (again_at, pending) if t is not None]
        namespace, name = key
        log.info(
            "reconciled %s/%s: created=%s updated=%s pruned=%s status_written=%s writes=%d",
            namespace,
            name,
            outcome.created,
            outcome.updated,
            outcome.pruned,
            outcome.status_written,
            outcome.writes,
        )
        return Reconciled(outcome, seen, min(times) if times else None)

    async def _apply(
        self,
        key: EndpointKey,
        endpoint: ServingEndpoint,
        desired: list[Manifest],
        children: dict[ChildKey, CachedChild],
        outcome: Outcome,
    ) -> None:
        """Apply the children whose owned fields differ from `desired`; prune the
        undesired ones. `children` is updated to what it is after the writes.

        Children are independent but for what a pod needs when it is created (its
        ConfigMap, ServiceAccount, Secrets' mounts), so every other kind is applied at
        once, then the Deployments at once: two round trips, not one per child."""
        wanted = {(m["kind"], m["metadata"]["name"]) for m in desired}
        stale = [
            m
            for m in desired
            if (live := children.get((m["kind"], m["metadata"]["name"]))) is None
            or live.owned != desired_digest(with_applied_hash(m))
        ]
        for phase in (
            [m for m in stale if m["kind"] not in POD_OWNERS],
            [m for m in stale if m["kind"] in POD_OWNERS],
        ):
            answers = await asyncio.gather(
                *(self.kube.apply(m) for m in phase), return_exceptions=True
            )
            failure: BaseException | None = None
            for manifest, answer in zip(phase, answers, strict=True):
                if isinstance(answer, BaseException):
                    failure = failure or answer
                    continue
                child_key = (manifest["kind"], manifest["metadata"]["name"])
                outcome.writes += 1
                created = child_key not in children
                (outcome.created if created else outcome.updated).append(" ".join(child_key))
                applied = cached_child(manifest["kind"], answer)
                if applied is not None:
                    children[child_key] = applied
                    self.expectations.applied(key, applied)
            if failure is not None:
                raise failure
        uid = endpoint.metadata.uid
        # Only what this very endpoint owns: a namesake's leftovers are the garbage
        # collector's, and someone else's objects are not ours to delete.
        prune = [
            (child_key, live)
            for child_key, live in children.items()
            if child_key not in wanted and live.owner_uid == uid
        ]
        await asyncio.gather(*(self.kube.delete(k[0], key[0], k[1], live.uid) for k, live in prune))
        for child_key, live in prune:
            outcome.writes += 1
            outcome.pruned.append(" ".join(child_key))
            self.expectations.deleted(key, live.uid)
            del children[child_key]

    def _bind(self, key: EndpointKey, account: str | None) -> tuple[str | None, bool]:
        """Want the gateway's ServiceAccount in the TokenReview binding when it verifies
        ServiceAccount tokens, out of it when not: why it cannot be (or None), and
        whether an add waits for its group's commit."""
        namespace, name = key
        wanted = account is not None
        account = account or gateway_service_account_name(name)
        result: BindingResult = self.binding.want(namespace, account, present=wanted)
        if result.pending:
            self._binding_changes[(namespace, account)] = (key, wanted)
            return None, wanted
        if result.ok:
            return None, False
        if not wanted:
            self._removal_refused(namespace, account, result)
            return None, False
        return result.problem(namespace, account), False

    def _binding_committed(self, results: dict[Subject, BindingResult]) -> None:
        """A group of binding changes was committed: reconcile again the endpoints whose
        add failed, to say so."""
        for subject, result in results.items():
            key, wanted = self._binding_changes.pop(subject, (None, False))
            if key is None or result.ok:
                continue
            if wanted:
                self.requeue(key)
            else:
                self._removal_refused(*subject, result)

    @staticmethod
    def _removal_refused(namespace: str, account: str, result: BindingResult) -> None:
        # A leftover subject (refused removal) harms no caller of this endpoint: worth
        # a log line, not a Degraded endpoint.
        log.warning(
            "could not remove %s/%s from ClusterRoleBinding %s: %s",
            namespace,
            account,
            result.binding,
            result.detail,
        )

    def _deployment(
        self,
        child: CachedChild | None,
        selector: Mapping[str, str],
        key: EndpointKey,
        pods: dict[str, CachedPod],
        selectors: list[Mapping[str, str]],
    ) -> DeploymentObservation | None:
        """A Deployment's observation; when it does not serve, with its pods' reasons."""
        observation = child.deployment if child is not None else None
        if observation is None or (observation.rolled_out and observation.serving):
            return observation  # nothing to explain: pods do not matter
        selectors.append(selector)
        mine = [p for p in self.cache.pods(*key) if p.matches(selector)]
        pods.update((p.uid, p) for p in mine)
        return with_pods(observation, (p.observation for p in mine))

    def _progress_wait(
        self,
        key: EndpointKey,
        status: ServingEndpointStatus,
        previous: ServingEndpointStatus | None,
    ) -> float | None:
        """When a status that changes only progress messages may be written (clock
        time), or None: now."""
        last = self._status_at.get(key)
        if last is None or _shape(status) != _shape(previous):
            return None
        ready_at = last + PROGRESS_WRITE_SECONDS
        return ready_at if ready_at > self._clock() else None

    async def _write_status(
        self, key: EndpointKey, status: ServingEndpointStatus, outcome: Outcome
    ) -> CachedEndpoint:
        """Write `status`; the endpoint after it (which the watch will show)."""
        answer = await self.kube.apply_status(*key, _body(status))
        outcome.writes += 1
        outcome.status_written = True
        self._status_at[key] = self._clock()
        written = cached_endpoint(answer, self.settings)
        self.expectations.status_written(key, written)
        return written

    async def _event(
        self,
        endpoint: ServingEndpoint,
        outcome: Outcome,
        kind: Literal["Normal", "Warning"],
        reason: str,
        message: str,
    ) -> None:
        meta = endpoint.metadata
        if await self.kube.event(
            meta.namespace or "", meta.name, meta.uid or "", kind, reason, message
        ):
            outcome.writes += 1

    async def _change_events(self, endpoint: ServingEndpoint, outcome: Outcome) -> None:
        """An event for the children this reconcile created, updated or deleted."""
        changed = outcome.created + outcome.updated
        if not changed and not outcome.pruned:
            return
        parts = []
        if outcome.created:
            parts.append(f"created {', '.join(outcome.created)}")
        if outcome.updated:
            parts.append(f"updated {', '.join(outcome.updated)}")
        if outcome.pruned:
            parts.append(f"deleted {', '.join(outcome.pruned)}")
        previous = endpoint.status
        generation = endpoint.metadata.generation or 0
        if previous is None or previous.observed_generation is None:
            reason, message = "Created", f"generation {generation}: {'; '.join(parts)}"
        elif previous.observed_generation == generation:
            reason, message = "Repaired", f"restored the desired state: {'; '.join(parts)}"
        else:
            reason, message = "Updated", f"generation {generation}: {'; '.join(parts)}"
        await self._event(endpoint, outcome, "Normal", reason, message)

    async def _status_events(
        self, endpoint: ServingEndpoint, status: ServingEndpointStatus, outcome: Outcome
    ) -> None:
        """Events for the status transitions a user should see: rollout done, failures."""
        previous = endpoint.status
        generation = endpoint.metadata.generation or 0
        state = status.state
        old_state = previous.state if previous else None
        if (
            state is not None
            and state.ready == "READY"
            and state.config_update == "NOT_UPDATING"
            and (old_state is None or old_state != state)
        ):
            traffic = ", ".join(
                f"{r.served_entity_name} {r.traffic_percentage}%" for r in status.traffic or []
            )
            await self._event(
                endpoint,
                outcome,
                "Normal",
                "RolloutComplete",
                f"generation {generation} is serving: {traffic}",
            )
        degraded = _condition(status.conditions, "Degraded")
        old = _condition(previous.conditions if previous else None, "Degraded")
        newly_degraded = degraded is not None and degraded.status == "True"
        if degraded is not None and newly_degraded and (old is None or old != degraded):
            # The condition's reason names the first cause: SpecInvalid, SecretMissing,
            # RolloutFailed or TokenReviewUnavailable.
            await self._event(endpoint, outcome, "Warning", degraded.reason, degraded.message)

    async def _invalid(
        self,
        key: EndpointKey,
        current: CachedEndpoint,
        raw: dict[str, Any],
        error: ValidationError,
    ) -> tuple[Outcome, CachedEndpoint]:
        """A body that does not parse (it slipped past admission): say so in status."""
        outcome = Outcome()
        try:
            previous = ServingEndpointStatus.model_validate(raw.get("status") or {})
        except ValidationError:
            previous = ServingEndpointStatus()
        meta = raw.get("metadata", {})
        status = invalid_status(
            previous,
            key[1],
            int(meta.get("generation") or 0),
            "; ".join(format_errors(error)),
            self._now(),
        )
        if _body(status) != _body(previous):
            current = await self._write_status(key, status, outcome)
            new = _condition(status.conditions, "Degraded")
            old = _condition(previous.conditions, "Degraded")
            if new is not None and (old is None or old.message != new.message):
                endpoint_uid = str(meta.get("uid") or "")
                if await self.kube.event(*key, endpoint_uid, "Warning", "SpecInvalid", new.message):
                    outcome.writes += 1
        return outcome, current


def _secret_problems(
    refs: list[SecretRef], secrets: Mapping[str, frozenset[str] | None]
) -> list[SecretProblem]:
    """The Secrets (or keys of them) the endpoint names and the cache has not."""
    problems = []
    for ref in refs:
        keys = secrets.get(ref.name)
        if keys is None:
            problems.append(
                SecretProblem(ref.entity, ref.field, ref.name, ref.key, "secret", ref.consequence)
            )
        elif ref.key not in keys:
            problems.append(
                SecretProblem(ref.entity, ref.field, ref.name, ref.key, "key", ref.consequence)
            )
    return problems


def _body(status: ServingEndpointStatus | None) -> dict[str, Any]:
    return status.to_body() if status is not None else {}


def _ready(status: ServingEndpointStatus | None) -> bool:
    return status is not None and status.state is not None and status.state.ready == "READY"


def _shape(status: ServingEndpointStatus | None) -> dict[str, Any]:
    """The status without its messages: what changes only when a state does."""
    body = _body(status)
    for entity in body.get("servedEntities") or []:
        (entity.get("state") or {}).pop("deploymentStateMessage", None)
    for condition in body.get("conditions") or []:
        condition.pop("message", None)
    return body


def _condition(conditions: list[Condition] | None, kind: str) -> Condition | None:
    return next((c for c in conditions or [] if c.type == kind), None)
