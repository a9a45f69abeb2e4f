"""An endpoint, its events and its entities as the console shows them. Pure.

State and config update are the REST API's (:func:`modelport.restapi.views.state_of`):
until the operator has seen the latest spec, the update reads ``IN_PROGRESS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modelport.api.v1alpha1 import ServingEndpoint
from modelport.restapi.mapping import CREATOR_ANNOTATION
from modelport.restapi.views import state_of

MAX_EVENTS = 20


@dataclass(frozen=True)
class EntityView:
    """One served entity: what it is, its share of traffic, its rollout state."""

    name: str
    what: str
    """``openai: gpt-4o`` for an external model, ``self-hosted: <entityName>`` else."""
    traffic: int
    deployment: str
    message: str


@dataclass(frozen=True)
class ConditionView:
    type: str
    status: str
    reason: str
    message: str
    since: str


@dataclass(frozen=True)
class EventView:
    time: str
    type: str
    reason: str
    message: str
    count: int


@dataclass(frozen=True)
class EndpointView:
    """What the list and the detail page show of one endpoint."""

    namespace: str
    name: str
    ready: str
    config_update: str
    url: str
    task: str
    creator: str
    entities: list[EntityView]
    conditions: list[ConditionView]

    @property
    def key(self) -> str:
        """``<namespace>/<name>``."""
        return f"{self.namespace}/{self.name}"


def endpoint_view(endpoint: ServingEndpoint) -> EndpointView:
    """The view of ``endpoint`` as the apiserver returned it."""
    meta, spec, status = endpoint.metadata, endpoint.spec, endpoint.status
    ready, update = state_of(endpoint)
    states = {s.name: s.state for s in (status.served_entities or [])} if status else {}
    # The split in effect (status), else the one asked for (spec).
    live = (
        {r.served_entity_name: r.traffic_percentage for r in (status.traffic or [])}
        if (status)
        else {}
    )
    wanted = {r.served_entity_name: r.traffic_percentage for r in spec.routes()}
    entities = []
    for entity in spec.served_entities:
        state = states.get(entity.name)
        external = entity.external_model
        what = (
            f"{external.provider}: {external.name}"
            if external is not None
            else f"self-hosted: {entity.entity_name}"
        )
        entities.append(
            EntityView(
                name=entity.name,
                what=what,
                traffic=live.get(entity.name, wanted.get(entity.name, 0)),
                deployment=state.deployment if state else "DEPLOYMENT_CREATING",
                message=state.deployment_state_message if state else "",
            )
        )
    conditions = [
        ConditionView(c.type, c.status, c.reason, c.message, _time(c.last_transition_time))
        for c in (status.conditions or [] if status else [])
    ]
    annotations = meta.annotations or {}
    return EndpointView(
        namespace=meta.namespace or "default",
        name=meta.name,
        ready=ready,
        config_update=update,
        url=(status.url if status and status.url else ""),
        task=str(spec.task),
        creator=annotations.get(CREATOR_ANNOTATION, ""),
        entities=entities,
        conditions=conditions,
    )


def event_views(events: list[dict[str, Any]]) -> list[EventView]:
    """The newest :data:`MAX_EVENTS` events, newest first."""

    def when(event: dict[str, Any]) -> str:
        return str(
            event.get("lastTimestamp")
            or event.get("eventTime")
            or event.get("metadata", {}).get("creationTimestamp")
            or ""
        )

    ordered = sorted(events, key=when, reverse=True)[:MAX_EVENTS]
    return [
        EventView(
            time=when(e).replace("T", " ").removesuffix("Z"),
            type=str(e.get("type") or ""),
            reason=str(e.get("reason") or ""),
            message=str(e.get("message") or ""),
            count=int(e.get("count") or 1),
        )
        for e in ordered
    ]


def _time(value: datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value).replace("T", " ").removesuffix("Z")
