"""`ServingEndpoint` v1alpha1: the spec users write and the status the operator writes.

Parse a raw body (a Kopf `body`, a dict from the API) with `ServingEndpoint.parse`
(or `ServingEndpointSpec.model_validate(body["spec"])`); nothing after that should
read raw dicts. `format_errors` turns a pydantic error into the same
field-and-fix lines the apiserver prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import ConfigDict, Field, ValidationError, model_validator

from modelport.api.aigateway import AiGatewayConfig
from modelport.api.entities import CUSTOM_TASK, EntityTask, ServedEntity
from modelport.api.meta import (
    NAME,
    TEXT,
    URL,
    ApiModel,
    CelRule,
    Condition,
    cel_rules,
    list_map,
)

GROUP = "serving.modelport.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ServingEndpoint"
PLURAL = "servingendpoints"
SINGULAR = "servingendpoint"
SHORT_NAMES = ("sep",)
CATEGORIES = ("modelport",)
MAX_ENTITIES = 10

ReadyState = Literal["READY", "NOT_READY"]
ConfigUpdateState = Literal["NOT_UPDATING", "IN_PROGRESS", "UPDATE_FAILED"]
DeploymentState = Literal[
    "DEPLOYMENT_CREATING",
    "DEPLOYMENT_READY",
    "DEPLOYMENT_FAILED",
    "DEPLOYMENT_ABORTED",
    "DEPLOYMENT_RECOVERING",
]
ConditionType = Literal["Ready", "Progressing", "Degraded"]
ScaleState = Literal["ScaledToZero", "ScalingUp", "Running"]


class Tag(ApiModel):
    """A key/value tag, for search and cost attribution."""

    key: Annotated[str, Field(min_length=1, max_length=NAME)] = Field(description="Tag key.")
    value: Annotated[str, Field(max_length=NAME)] | None = Field(
        default=None, description="Tag value."
    )


class Route(ApiModel):
    """The share of traffic one served entity gets."""

    served_entity_name: Annotated[str, Field(min_length=1, max_length=63)] = Field(
        description="Name of an entry of spec.servedEntities."
    )
    traffic_percentage: Annotated[int, Field(ge=0, le=100)] = Field(
        description="Percent of requests sent to it, 0-100; all routes add up to 100."
    )


class TrafficConfig(ApiModel):
    """How requests are split across served entities."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                "self.routes.map(r, r.trafficPercentage).sum() == 100",
                "trafficConfig.routes[].trafficPercentage must add up to 100; adjust the "
                "percentages",
                ".routes",
            ),
            CelRule(
                "self.routes.all(r, self.routes.exists_one(s, "
                "s.servedEntityName == r.servedEntityName))",
                "trafficConfig.routes[].servedEntityName must be unique; merge the routes "
                "of the same entity into one",
                ".routes",
            ),
        )
    )

    routes: list[Route] = Field(
        min_length=1,
        max_length=MAX_ENTITIES,
        json_schema_extra=list_map("servedEntityName"),
        description="One route per served entity; the percentages add up to 100.",
    )

    @model_validator(mode="after")
    def _check_routes(self) -> Self:
        total = sum(r.traffic_percentage for r in self.routes)
        if total != 100:
            raise ValueError(
                f"trafficConfig.routes[].trafficPercentage must add up to 100 (got {total}); "
                "adjust the percentages"
            )
        names = [r.served_entity_name for r in self.routes]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(
                f"trafficConfig.routes[].servedEntityName must be unique ({', '.join(dupes)} "
                "repeated); merge the routes of the same entity into one"
            )
        return self


def _task_of(var: str) -> str:
    """CEL: the entity's task, or '' when a self-hosted entity leaves it to the catalog
    (an MLflow model by its engine or source is ml/v1/predict, as `effective_task`)."""
    mlflow = (
        f"((has({var}.runtime) && has({var}.runtime.engine) && "
        f"{var}.runtime.engine == 'mlflow') || {var}.entityName.startsWith('models:/') || "
        f"{var}.entityName.startsWith('runs:/'))"
    )
    return (
        f"(has({var}.externalModel) ? {var}.externalModel.task : "
        f"(has({var}.task) ? {var}.task : ({mlflow} ? '{CUSTOM_TASK}' : '')))"
    )


class ServingEndpointSpec(ApiModel):
    """What the endpoint serves and how: entities, traffic split and gateway features."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                "self.servedEntities.all(e, self.servedEntities.exists_one(f, f.name == e.name))",
                "spec.servedEntities[].name must be unique; rename one of the entities",
                ".servedEntities",
            ),
            CelRule(
                "!has(self.trafficConfig) || self.trafficConfig.routes.all(r, "
                "self.servedEntities.exists(e, e.name == r.servedEntityName))",
                "spec.trafficConfig.routes[].servedEntityName must name an entry of "
                "spec.servedEntities; fix the name or add the entity",
                ".trafficConfig",
            ),
            CelRule(
                "size(self.servedEntities) <= 1 || (has(self.trafficConfig) && "
                "self.servedEntities.all(e, self.trafficConfig.routes.exists(r, "
                "r.servedEntityName == e.name)))",
                "spec.trafficConfig.routes needs a route for every entity when there are "
                "several servedEntities; add {servedEntityName, trafficPercentage} for each",
                ".trafficConfig",
            ),
            CelRule(
                f"self.servedEntities.all(a, self.servedEntities.all(b, {_task_of('a')} == '' "
                f"|| {_task_of('b')} == '' || {_task_of('a')} == {_task_of('b')}))",
                "spec.servedEntities[].externalModel.task (or task) must be the same for all "
                "entities of an endpoint; split differing tasks into separate endpoints",
                ".servedEntities",
            ),
        )
    )

    description: Annotated[str, Field(max_length=TEXT)] | None = Field(
        default=None, description="What the endpoint is for."
    )
    tags: list[Tag] | None = Field(
        default=None, max_length=50, description="Key/value tags of the endpoint."
    )
    served_entities: list[ServedEntity] = Field(
        min_length=1,
        max_length=MAX_ENTITIES,
        json_schema_extra=list_map("name"),
        description="The models behind the endpoint, 1 to 10, with unique names. With "
        "several, trafficConfig.routes must give each a share.",
    )
    traffic_config: TrafficConfig | None = Field(
        default=None,
        description="The traffic split; optional with one entity (it gets 100%).",
    )
    ai_gateway: AiGatewayConfig | None = Field(
        default=None,
        description="Usage tracking, payload logging, rate limits, guardrails, fallback and "
        "who may call (auth).",
    )

    @model_validator(mode="after")
    def _check_endpoint(self) -> Self:
        names = [e.name for e in self.served_entities]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(
                f"spec.servedEntities[].name must be unique ({', '.join(dupes)} repeated); "
                "rename one of the entities"
            )
        routed = [r.served_entity_name for r in self.routes()]
        if unknown := [n for n in routed if n not in names]:
            raise ValueError(
                f"spec.trafficConfig.routes[].servedEntityName {', '.join(unknown)} must name "
                "an entry of spec.servedEntities; fix the name or add the entity"
            )
        if unrouted := [n for n in names if n not in routed]:
            raise ValueError(
                f"spec.trafficConfig.routes needs a route for every entity when there are "
                f"several servedEntities (missing: {', '.join(unrouted)}); add "
                "{servedEntityName, trafficPercentage} for each"
            )
        tasks = sorted({t for e in self.served_entities if (t := e.effective_task)})
        if len(tasks) > 1:
            raise ValueError(
                f"spec.servedEntities[].externalModel.task (or task) must be the same for all "
                f"entities of an endpoint (got {', '.join(tasks)}); split differing tasks "
                "into separate endpoints"
            )
        return self

    def routes(self) -> list[Route]:
        """The effective routes: the configured ones, or 100% to a single entity."""
        if self.traffic_config is not None:
            return list(self.traffic_config.routes)
        if len(self.served_entities) == 1:
            return [Route(served_entity_name=self.served_entities[0].name, traffic_percentage=100)]
        return []

    @property
    def task(self) -> EntityTask | None:
        """The endpoint's task (None when every entity leaves it to the catalog)."""
        return next((t for e in self.served_entities if (t := e.effective_task)), None)

    def entity(self, name: str) -> ServedEntity:
        """The served entity called `name`."""
        for entity in self.served_entities:
            if entity.name == name:
                return entity
        raise KeyError(name)


# --- status (written by the operator only) ----------------------------------------


class EndpointState(ApiModel):
    """Overall state, as the reference service reports it."""

    ready: ReadyState = Field(description="READY when the endpoint answers requests.")
    config_update: ConfigUpdateState = Field(
        description="NOT_UPDATING, IN_PROGRESS (a new config is rolling out) or "
        "UPDATE_FAILED (it failed; the previous config keeps serving)."
    )


class EndpointConfig(ApiModel):
    """A config of the endpoint as rolled out (status.config / status.pendingConfig)."""

    served_entities: list[ServedEntity] = Field(
        default_factory=list, max_length=MAX_ENTITIES, description="The served entities."
    )
    traffic_config: TrafficConfig | None = Field(default=None, description="The traffic split.")
    config_version: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="metadata.generation of the spec this config came from."
    )
    start_time: datetime | None = Field(
        default=None, strict=False, description="When the rollout of this config started."
    )


class EntityDeploymentState(ApiModel):
    """The rollout state of one served entity."""

    deployment: DeploymentState = Field(
        description="DEPLOYMENT_CREATING, DEPLOYMENT_READY, DEPLOYMENT_FAILED, "
        "DEPLOYMENT_ABORTED or DEPLOYMENT_RECOVERING."
    )
    deployment_state_message: Annotated[str, Field(max_length=TEXT)] = Field(
        default="", description="Why, in words (empty when ready)."
    )


class EntityScale(ApiModel):
    """Modelport extension: the replicas of a self-hosted entity, which the operator's
    autoscaler sets from the requests in flight (see README, "Autoscaling")."""

    state: ScaleState = Field(
        description="ScaledToZero (no replica: the next request starts one), ScalingUp "
        "(replicas wanted are not all ready yet) or Running (every replica wanted is ready)."
    )
    replicas: Annotated[int, Field(ge=0)] = Field(description="Replicas wanted now.")
    ready_replicas: Annotated[int, Field(ge=0)] = Field(
        description="Replicas ready to answer requests."
    )


class ServedEntityStatus(ApiModel):
    """The observed state of one served entity."""

    name: Annotated[str, Field(max_length=63)] = Field(description="The entity's name.")
    state: EntityDeploymentState = Field(description="Its rollout state.")
    scale: EntityScale | None = Field(
        default=None, description="Modelport extension, self-hosted entities: its replicas."
    )


class ServingEndpointStatus(ApiModel):
    """The observed state of the endpoint, written by the operator."""

    observed_generation: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="The metadata.generation this status describes."
    )
    url: Annotated[str, Field(max_length=URL)] | None = Field(
        default=None, description="The endpoint's in-cluster URL (OpenAI base URL: <url>/v1)."
    )
    state: EndpointState | None = Field(default=None, description="Ready and rollout state.")
    config: EndpointConfig | None = Field(default=None, description="The config now serving.")
    pending_config: EndpointConfig | None = Field(
        default=None, description="The config being rolled out, while one is."
    )
    served_entities: list[ServedEntityStatus] | None = Field(
        default=None,
        max_length=MAX_ENTITIES,
        json_schema_extra=list_map("name"),
        description="The state of each served entity.",
    )
    traffic: list[Route] | None = Field(
        default=None,
        max_length=MAX_ENTITIES,
        json_schema_extra=list_map("servedEntityName"),
        description="The traffic split now in effect.",
    )
    replica_summary: Annotated[str, Field(max_length=TEXT)] | None = Field(
        default=None,
        description="Modelport extension: the self-hosted entities' replicas in one line, "
        "ready/wanted, e.g. 'llama 0/0 (scaled to zero)' (kubectl get's REPLICAS column).",
    )
    conditions: list[Condition] | None = Field(
        default=None,
        max_length=16,
        json_schema_extra=list_map("type"),
        description="Standard conditions: Ready, Progressing and Degraded.",
    )


class ObjectMeta(ApiModel):
    """The part of metadata the operator reads; the rest is kept as it came."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="Name of the endpoint.")
    namespace: str | None = Field(default=None, description="Its namespace.")
    uid: str | None = Field(default=None, description="Its UID, for owner references.")
    generation: int | None = Field(default=None, description="Spec generation.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")


class ServingEndpoint(ApiModel):
    """A model serving endpoint: one OpenAI-compatible URL in front of self-hosted
    models and external providers, with traffic weights, fallback, rate limits, usage
    tracking and payload logging."""

    api_version: Literal["serving.modelport.io/v1alpha1"] = Field(
        default="serving.modelport.io/v1alpha1", description="serving.modelport.io/v1alpha1."
    )
    kind: Literal["ServingEndpoint"] = Field(
        default="ServingEndpoint", description="ServingEndpoint."
    )
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: ServingEndpointSpec = Field(description="What the endpoint serves.")
    status: ServingEndpointStatus | None = Field(
        default=None, description="What the operator observed."
    )

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> ServingEndpoint:
        """Parse a raw API body; raises `pydantic.ValidationError` (see `format_errors`).

        `body` may be any mapping (a Kopf `Body` is a read-only view): it is copied
        into plain dicts and lists first, which strict validation requires.
        """
        return cls.model_validate(_plain(body))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def format_errors(error: ValidationError) -> list[str]:
    """One line per error: `<camelCase path>: <message>`, in the apiserver's style.

    Input values are left out on purpose, so that an error never echoes a value that
    might be a secret pasted into the wrong field.
    """
    lines = []
    for err in error.errors(include_input=False, include_url=False):
        path = ""
        for part in err["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {message}" if path else message)
    return lines
