"""A `ServingEndpoint` and its status as the reference service answers GET and list.

Pure: everything comes from the object as the apiserver returned it. The operator writes
``status.state``, ``status.config`` (the config now serving), ``status.pendingConfig``
(the one rolling out) and each entity's deployment state; this module only renames.
One thing it adds: until the operator has observed the latest spec
(``status.observedGeneration`` < ``metadata.generation``), the spec *is* the pending
config and the update is ``IN_PROGRESS``. Without that, a client polling right after
``PUT …/config`` would read the previous rollout's ``NOT_UPDATING`` and stop waiting
before anything happened (the SDK's waiters do exactly that).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from modelport.api.v1alpha1 import (
    ConfigUpdateState,
    EndpointConfig,
    ReadyState,
    ServingEndpoint,
)
from modelport.restapi.mapping import CREATOR_ANNOTATION, kept_fields, model_to_reference

log = logging.getLogger("modelport.restapi")


def parse_or_none(raw: dict[str, Any]) -> ServingEndpoint | None:
    """An endpoint as the apiserver returned it, or None (logged) when it does not parse:
    one endpoint a newer CRD wrote must not break a listing of all of them."""
    try:
        return ServingEndpoint.parse(raw)
    except ValidationError:
        log.warning("skipping endpoint %s: it does not parse", raw.get("metadata", {}).get("name"))
        return None


def state_of(endpoint: ServingEndpoint) -> tuple[ReadyState, ConfigUpdateState]:
    """``(ready, config_update)``: the operator's, or ``IN_PROGRESS`` while it has not yet
    observed the latest spec (see the module's docstring)."""
    status = endpoint.status
    ready: ReadyState = "NOT_READY"
    if status is not None and status.state is not None:
        ready = status.state.ready
    if not _observed(endpoint) or status is None or status.state is None:
        return ready, "IN_PROGRESS"
    return ready, status.state.config_update


def summary(endpoint: ServingEndpoint) -> dict[str, Any]:
    """An entry of ``GET /api/2.0/serving-endpoints`` (the configured entities, in brief)."""
    out = _common(endpoint)
    out["config"] = {
        "served_entities": [
            {
                k: v
                for k, v in model_to_reference(entity).items()
                if k in ("name", "entity_name", "entity_version", "external_model")
            }
            for entity in endpoint.spec.served_entities
        ]
    }
    return out


def detailed(endpoint: ServingEndpoint) -> dict[str, Any]:
    """``GET /api/2.0/serving-endpoints/{name}``: state, the config serving now and the one
    rolling out, each entity with its deployment state."""
    out = _common(endpoint)
    status = endpoint.status
    states = {s.name: s.state for s in (status.served_entities or [])} if status else {}
    live = status.config if status else None
    pending = status.pending_config if status else None
    if not _observed(endpoint):
        # The operator has not seen this spec yet: it is what will roll out next.
        pending = EndpointConfig(
            served_entities=list(endpoint.spec.served_entities),
            traffic_config=endpoint.spec.traffic_config,
            config_version=endpoint.metadata.generation,
        )
    if live is not None and live.served_entities:
        out["config"] = _config(live, states, "DEPLOYMENT_READY")
    if pending is not None and pending.served_entities:
        out["pending_config"] = _config(pending, states, "DEPLOYMENT_CREATING")
        if pending.start_time is not None:
            out["pending_config"]["start_time"] = millis(pending.start_time)
    return out


def millis(moment: datetime | str) -> int:
    """Milliseconds since the epoch, as the service reports times (an RFC 3339 string, as
    in metadata, is parsed first)."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return int(moment.timestamp() * 1000)


def _observed(endpoint: ServingEndpoint) -> bool:
    status = endpoint.status
    generation = endpoint.metadata.generation
    return (
        status is not None
        and status.observed_generation is not None
        and (generation is None or status.observed_generation >= generation)
    )


def _common(endpoint: ServingEndpoint) -> dict[str, Any]:
    """What the list and the GET answer share."""
    meta = endpoint.metadata
    extra = meta.model_extra or {}
    ready, update = state_of(endpoint)
    out: dict[str, Any] = {"name": meta.name}
    if meta.uid:
        out["id"] = meta.uid
    if creator := meta.annotations.get(CREATOR_ANNOTATION):
        out["creator"] = creator
    if created := extra.get("creationTimestamp"):
        out["creation_timestamp"] = millis(created)
    if updated := _last_update(extra.get("managedFields")):
        out["last_updated_timestamp"] = updated
    out["state"] = {"ready": ready, "config_update": update}
    spec = endpoint.spec
    if spec.ai_gateway is not None:
        out["ai_gateway"] = model_to_reference(spec.ai_gateway)
    if spec.tags:
        out["tags"] = [model_to_reference(t) for t in spec.tags]
    if spec.description is not None:
        out["description"] = spec.description
    if spec.task is not None:
        out["task"] = spec.task
    out.update(kept_fields(endpoint))
    return out


def _config(config: EndpointConfig, states: dict[str, Any], default_state: str) -> dict[str, Any]:
    entities = []
    for entity in config.served_entities:
        view = model_to_reference(entity)
        state = states.get(entity.name)
        view["state"] = (
            {
                "deployment": state.deployment,
                "deployment_state_message": state.deployment_state_message,
            }
            if state is not None
            else {"deployment": default_state, "deployment_state_message": ""}
        )
        entities.append(view)
    out: dict[str, Any] = {"served_entities": entities}
    if config.traffic_config is not None:
        out["traffic_config"] = model_to_reference(config.traffic_config)
    if config.config_version is not None:
        out["config_version"] = config.config_version
    return out


def _last_update(managed: object) -> int | None:
    """The latest change of the object's spec or metadata (``managedFields`` times; the
    operator's status writes, on the status subresource, do not count)."""
    if not isinstance(managed, list):
        return None
    times = [
        millis(entry["time"])
        for entry in managed
        if isinstance(entry, dict) and entry.get("time") and not entry.get("subresource")
    ]
    return max(times) if times else None
