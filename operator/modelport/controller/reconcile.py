"""One reconcile of one endpoint: read, render, apply what differs, prune, keep the
gateway's ServiceAccount in the TokenReview binding (or out of it), observe, write
status if it changed, record events for transitions.

Level-based and idempotent: it reads the endpoint and its children fresh every time
and acts only on differences, so it is safe to run for any trigger (create, update,
resume, a child's or a Secret's change, the resync timer), any number of times.
Blocking (it uses `modelport.kube`): call it from sync Kopf handlers only.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError

from modelport.api import ServingEndpoint, ServingEndpointStatus, format_errors
from modelport.api.meta import Condition
from modelport.api.v1alpha1 import EndpointState
from modelport.kube import Kube, KubeError, NamespaceGoneError, needs_apply
from modelport.kube.binding import BindingResult, TokenReviewBinding
from modelport.kube.observe import observe_deployment
from modelport.render import Manifest, RenderError, endpoint_url, render
from modelport.render.config import SecretRef, secret_refs
from modelport.render.names import (
    entity_name,
    entity_selector,
    gateway_name,
    gateway_selector,
    gateway_service_account_name,
)
from modelport.settings import Settings
from modelport.status import DeploymentObservation, Observed, SecretProblem, compute_status

log = logging.getLogger("modelport.reconcile")

EndpointKey = tuple[str, str]


@dataclass
class Outcome:
    """What one reconcile did (for logs and tests)."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    status_written: bool = False
    writes: int = 0


@dataclass
class _Slot:
    lock: threading.Lock = field(default_factory=threading.Lock)
    waiting: int = 0


class Reconciler:
    """Reconciles endpoints; one per operator process, shared by every handler."""

    def __init__(self, kube: Kube, settings: Settings) -> None:
        self.kube = kube
        self.settings = settings
        self.binding = TokenReviewBinding(kube, settings.gateway_tokenreview_binding)
        self._slots: dict[EndpointKey, _Slot] = defaultdict(_Slot)
        self._slots_lock = threading.Lock()
        # Endpoint -> names of the Secrets it refers to, so a Secret's change can
        # find the endpoints to re-check without listing every endpoint.
        self._secrets: dict[EndpointKey, frozenset[str]] = {}

    def endpoints_using_secret(self, namespace: str, secret: str) -> list[str]:
        """Names of the endpoints in `namespace` that refer to Secret `secret`."""
        with self._slots_lock:
            return sorted(
                name
                for (ns, name), secrets in self._secrets.items()
                if ns == namespace and secret in secrets
            )

    def known_endpoints(self) -> list[EndpointKey]:
        """(namespace, name) of every endpoint reconciled so far and not deleted."""
        with self._slots_lock:
            return sorted(self._secrets)

    def reconcile(self, namespace: str, name: str, *, coalesce: bool = False) -> Outcome | None:
        """Reconcile one endpoint. With `coalesce`, return at once (None) when another
        reconcile of it is already waiting to start: that one will see this change."""
        with self._exclusive((namespace, name), coalesce) as acquired:
            if not acquired:
                return None
            before = self.kube.writes
            outcome = self._reconcile(namespace, name)
            if outcome is not None:
                outcome.writes = self.kube.writes - before
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
            return outcome

    @contextmanager
    def _exclusive(self, key: EndpointKey, coalesce: bool) -> Iterator[bool]:
        with self._slots_lock:
            slot = self._slots[key]
            if coalesce and slot.waiting:
                yield False
                return
            slot.waiting += 1
        with slot.lock:
            with self._slots_lock:
                slot.waiting -= 1
            yield True

    def _reconcile(self, namespace: str, name: str) -> Outcome | None:
        raw = self.kube.get_endpoint(namespace, name)
        if raw is None or raw.get("metadata", {}).get("deletionTimestamp"):
            # Deleted: garbage collection removes the children through owner refs; the
            # binding is cluster-scoped and owned by no endpoint, so its subject is ours
            # to remove (the deletion of the children brings us here).
            with self._slots_lock:
                self._secrets.pop((namespace, name), None)
            self._bind(namespace, name, None)
            return None
        try:
            endpoint = ServingEndpoint.parse(raw)
        except ValidationError as exc:
            with self._slots_lock:
                self._secrets[(namespace, name)] = frozenset()
            return self._invalid(namespace, name, raw, "; ".join(format_errors(exc)))
        refs = secret_refs(endpoint, self.settings.rate_limiting, self.settings.usage_database)
        with self._slots_lock:
            self._secrets[(namespace, name)] = frozenset(r.name for r in refs)

        outcome = Outcome()
        children = self.kube.children(namespace, name)
        spec_error: str | None = None
        token_review: str | None = None
        rate_limits: str | None = None
        try:
            rendered = render(endpoint, self.settings)
        except RenderError as exc:
            spec_error = str(exc)
        else:
            rate_limits = rendered.rate_limit_warning
            try:
                self._apply(endpoint, rendered.children, children, outcome)
            except NamespaceGoneError as exc:
                log.info("namespace of %s/%s is going away; not applying: %s", namespace, name, exc)
                return outcome
            except KubeError as exc:
                if exc.status not in (400, 422):
                    raise  # transient: the handler retries
                # The apiserver refused what the spec produced (e.g. a runtime field
                # it cannot accept): retrying cannot help, the user must change it.
                spec_error = f"the apiserver refused a child of this endpoint: {exc}"
            token_review = self._bind(namespace, name, rendered.service_account)

        observed = self._observe(endpoint, children, refs, spec_error, token_review)
        observed = dataclasses.replace(observed, rate_limit_problem=rate_limits)
        now = datetime.now(UTC).replace(microsecond=0)
        status = compute_status(endpoint, observed, endpoint.status, now)
        if _body(status) != _body(endpoint.status):
            self.kube.apply_status(namespace, name, _body(status))
            outcome.status_written = True
        self._events(endpoint, status, outcome)
        return outcome

    def _apply(
        self,
        endpoint: ServingEndpoint,
        desired: list[Manifest],
        children: dict[tuple[str, str], dict[str, Any]],
        outcome: Outcome,
    ) -> None:
        """Apply the children that differ from `desired`; prune the undesired ones."""
        wanted = set()
        for manifest in desired:
            key = (manifest["kind"], manifest["metadata"]["name"])
            wanted.add(key)
            live = children.get(key)
            if needs_apply(manifest, live):
                children[key] = self.kube.apply(manifest)
                (outcome.created if live is None else outcome.updated).append(" ".join(key))
        uid = endpoint.metadata.uid
        for key, live in list(children.items()):
            owners = live.get("metadata", {}).get("ownerReferences") or []
            # Only what this very endpoint owns: a namesake's leftovers are the
            # garbage collector's, and someone else's objects are not ours to delete.
            if key not in wanted and any(o.get("uid") == uid for o in owners):
                self.kube.delete(
                    key[0], endpoint.metadata.namespace or "", key[1], live["metadata"]["uid"]
                )
                outcome.pruned.append(" ".join(key))
                del children[key]

    def _bind(self, namespace: str, name: str, account: str | None) -> str | None:
        """Put the gateway's ServiceAccount into the TokenReview binding when it verifies
        ServiceAccount tokens, out of it when not; why it could not be, or None."""
        wanted = account is not None
        account = account or gateway_service_account_name(name)
        result: BindingResult = self.binding.sync(namespace, account, present=wanted)
        if result.ok:
            return None
        if not wanted:
            # A leftover subject (refused removal) harms no caller of this endpoint:
            # worth a log line, not a Degraded endpoint.
            log.warning(
                "could not remove %s/%s from ClusterRoleBinding %s: %s",
                namespace,
                account,
                result.binding,
                result.detail,
            )
            return None
        return result.problem(namespace, account)

    def _observe(
        self,
        endpoint: ServingEndpoint,
        children: dict[tuple[str, str], dict[str, Any]],
        refs: list[SecretRef],
        spec_error: str | None,
        token_review_problem: str | None = None,
    ) -> Observed:
        namespace = endpoint.metadata.namespace or ""
        name = endpoint.metadata.name
        gateway = self._deployment(
            children.get(("Deployment", gateway_name(name))), namespace, gateway_selector(name)
        )
        entities: dict[str, DeploymentObservation | None] = {}
        for entity in endpoint.spec.served_entities:
            if entity.is_self_hosted:
                entities[entity.name] = self._deployment(
                    children.get(("Deployment", entity_name(name, entity.name))),
                    namespace,
                    entity_selector(name, entity.name),
                )
        problems = []
        states: dict[tuple[str, str], str] = {}
        for ref in refs:
            if (ref.name, ref.key) not in states:
                states[(ref.name, ref.key)] = self.kube.secret_key_state(
                    namespace, ref.name, ref.key
                )
            state = states[(ref.name, ref.key)]
            if state != "ok":
                missing: Literal["secret", "key"] = "secret" if state == "missing-secret" else "key"
                problems.append(
                    SecretProblem(
                        ref.entity, ref.field, ref.name, ref.key, missing, ref.consequence
                    )
                )
        return Observed(
            namespace=namespace,
            url=endpoint_url(name, namespace),
            gateway=gateway,
            entities=entities,
            secret_problems=problems,
            spec_error=spec_error,
            token_review_problem=token_review_problem,
        )

    def _deployment(
        self, live: dict[str, Any] | None, namespace: str, selector: dict[str, str]
    ) -> DeploymentObservation | None:
        first = observe_deployment(live, [])
        if first is None or (first.rolled_out and first.serving):
            return first  # nothing to explain: skip listing pods
        return observe_deployment(live, self.kube.pods(namespace, selector))

    def _events(
        self,
        endpoint: ServingEndpoint,
        status: ServingEndpointStatus,
        outcome: Outcome,
    ) -> None:
        """Events for what a user should see: changes applied, rollout done, failures."""
        meta = endpoint.metadata
        previous = endpoint.status
        generation = meta.generation or 0

        def event(kind: Literal["Normal", "Warning"], reason: str, message: str) -> None:
            self.kube.event(meta.namespace or "", meta.name, meta.uid or "", kind, reason, message)

        changed = outcome.created + outcome.updated
        if changed or outcome.pruned:
            parts = []
            if outcome.created:
                parts.append(f"created {', '.join(outcome.created)}")
            if outcome.updated:
                parts.append(f"updated {', '.join(outcome.updated)}")
            if outcome.pruned:
                parts.append(f"deleted {', '.join(outcome.pruned)}")
            if previous is None or previous.observed_generation is None:
                event("Normal", "Created", f"generation {generation}: {'; '.join(parts)}")
            elif previous.observed_generation == generation:
                event("Normal", "Repaired", f"restored the desired state: {'; '.join(parts)}")
            else:
                event("Normal", "Updated", f"generation {generation}: {'; '.join(parts)}")

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
            event("Normal", "RolloutComplete", f"generation {generation} is serving: {traffic}")

        degraded = _condition(status.conditions, "Degraded")
        old = _condition(previous.conditions if previous else None, "Degraded")
        newly_degraded = degraded is not None and degraded.status == "True"
        if degraded is not None and newly_degraded and (old is None or old != degraded):
            # The condition's reason names the first cause: SpecInvalid, SecretMissing,
            # RolloutFailed or TokenReviewUnavailable.
            event("Warning", degraded.reason, degraded.message)

    def _invalid(self, namespace: str, name: str, raw: dict[str, Any], message: str) -> Outcome:
        """A body that does not parse (it slipped past admission): say so in status."""
        outcome = Outcome()
        try:
            previous = ServingEndpointStatus.model_validate(raw.get("status") or {})
        except ValidationError:
            previous = ServingEndpointStatus()
        generation = int(raw.get("metadata", {}).get("generation") or 0)
        text = f"spec is invalid: {message}; fix the spec (kubectl edit servingendpoint {name})"
        now = datetime.now(UTC).replace(microsecond=0)
        old = _condition(previous.conditions, "Degraded")
        since = old.last_transition_time if old and old.status == "True" else None
        conditions = [c for c in previous.conditions or [] if c.type != "Degraded"]
        conditions.append(
            Condition(
                type="Degraded",
                status="True",
                reason="SpecInvalid",
                message=text,
                observed_generation=generation,
                last_transition_time=since or now,
            )
        )
        status = previous.model_copy(
            update={
                "observed_generation": generation,
                "state": EndpointState(
                    ready=previous.state.ready if previous.state else "NOT_READY",
                    config_update="UPDATE_FAILED",
                ),
                "conditions": conditions,
            }
        )
        if _body(status) != _body(previous):
            self.kube.apply_status(namespace, name, _body(status))
            outcome.status_written = True
            if old is None or old.message != text:
                uid = str(raw.get("metadata", {}).get("uid") or "")
                self.kube.event(namespace, name, uid, "Warning", "SpecInvalid", text)
        return outcome


def _body(status: ServingEndpointStatus | None) -> dict[str, Any]:
    return status.to_body() if status is not None else {}


def _condition(conditions: list[Condition] | None, kind: str) -> Condition | None:
    return next((c for c in conditions or [] if c.type == kind), None)
