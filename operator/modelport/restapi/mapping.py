"""The reference service's endpoint JSON <-> `ServingEndpoint`: one pure mapping, both ways.

The REST API, ``modelport import`` and ``modelport export`` all go through here, so an
endpoint created with the SDK, one imported from an exported JSON and one written as YAML
are the same object. The API models are the source of truth: their Python attribute
names *are* the service's snake_case names, so most of a body validates as it is; this
module only handles where the two shapes differ, found by walking the models' fields:

- **Secrets.** The service refers to a secret as the string ``{{secrets/<scope>/<key>}}``;
  Modelport as ``{secret_key_ref: {name, key}}``, a key of a Kubernetes Secret in the
  endpoint's namespace. Scope ``<scope>`` is the Secret ``kube_name(<scope>)``
  (lower-cased, ``_`` -> ``-``), key ``<key>`` is the data key, unchanged. Every field
  typed `SecretValue` converts both ways, so new providers need no code here.
  ``*_plaintext`` fields are refused with the command that creates the Secret instead;
  no message ever echoes a value (it might be a key pasted into the wrong field).
- **Served entities.** ``environment_vars`` is a map there (values may be secret
  references) and a list here; ``name`` may be left out there and gets the service's
  default; the legacy ``served_models`` (``model_name``/``model_version``) become entities.
- **Legacy fields.** ``config.auto_capture_config`` becomes
  ``ai_gateway.inference_table_config`` and a top-level ``rate_limits`` becomes
  ``ai_gateway.rate_limits``; routes' ``served_model_name`` becomes ``served_entity_name``.
- **What Modelport has no use for.** Read-only fields of an exported GET answer (``id``,
  ``state``, ``creator`` …) are dropped. ``route_optimized``, ``budget_policy_id``,
  ``usage_policy_id``, ``email_notifications`` and ``telemetry_config`` are kept, without
  effect, in the annotation :data:`REFERENCE_FIELDS_ANNOTATION`, so that an export gives
  them back.

Endpoint names follow Kubernetes (lower-case, ``-``): a name is normalised like a scope.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from modelport.api.aigateway import AiGatewayConfig, InferenceTableConfig
from modelport.api.entities import ServedEntity
from modelport.api.meta import DNS_SUBDOMAIN, ApiModel, SecretValue
from modelport.api.providers import AmazonBedrockConfig
from modelport.api.v1alpha1 import (
    GROUP,
    ObjectMeta,
    Route,
    ServingEndpoint,
    ServingEndpointSpec,
    TrafficConfig,
)

REFERENCE_FIELDS_ANNOTATION = f"{GROUP}/reference-fields"
"""JSON of the service's endpoint fields Modelport keeps but does not act on."""
CREATOR_ANNOTATION = f"{GROUP}/creator"
"""Who created the endpoint through the REST API (its ``creator``)."""

KEPT_FIELDS = (
    "route_optimized",
    "budget_policy_id",
    "usage_policy_id",
    "email_notifications",
    "telemetry_config",
)
# What an exported GET answer carries that only the service itself sets.
READ_ONLY_FIELDS = frozenset(
    {
        "id",
        "creator",
        "creation_timestamp",
        "last_updated_timestamp",
        "state",
        "pending_config",
        "permission_level",
        "endpoint_url",
        "data_plane_info",
        "task",
    }
)
_ENTITY_READ_ONLY = frozenset({"state", "creator", "creation_timestamp", "foundation_model"})
_ENTITY_REFUSED = {
    "instance_profile_arn": "AWS instance profiles do not exist on Kubernetes; give the "
    "inference pods credentials through environment_vars with secret references",
    "provisioned_model_units": "provisioned model units are not offered; size the entity "
    "with workload_size or min/max_provisioned_throughput",
}
_ENTITY_IGNORED = frozenset({"burst_scaling_enabled"})  # the HPA always scales up to its max
_BEDROCK_REFUSED = {
    "instance_profile_arn": "the gateway has no instance profile; set aws_access_key_id and "
    "aws_secret_access_key as secret references, or neither to use the pod's AWS identity",
    "uc_service_credential_name": "Unity Catalog credentials do not exist here; set "
    "aws_access_key_id and aws_secret_access_key as secret references",
}

SECRET_REFERENCE = re.compile(r"^\{\{\s*secrets/([^/{}\s]+)/([^/{}\s]+)\s*\}\}$")
_DNS_SUBDOMAIN = re.compile(DNS_SUBDOMAIN)
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_CAMEL_WORD = re.compile(r"\b[a-z][a-z0-9]*(?:[A-Z][a-z0-9]*)+\b")
_ENTITY_NAME_INVALID = re.compile(r"[^A-Za-z0-9_-]+")
_HOW_TO_REFER = (
    "create the Secret (kubectl -n <namespace> create secret generic <scope> "
    "--from-literal=<key>=<value>) and refer to it as '{{secrets/<scope>/<key>}}'"
)


class MappingError(ValueError):
    """A body that cannot become a `ServingEndpoint`.

    ``errors`` holds one ``<field>: <message>`` line per problem, with the service's
    snake_case field paths; no line contains a value from the body.
    """

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


# --- names -------------------------------------------------------------------------------


def kube_name(value: str) -> str:
    """The Kubernetes name for a service name or secret scope: lower-cased, ``_`` -> ``-``.

    The service allows upper case and ``_`` where Kubernetes does not; two names that
    differ only there map to the same object (documented in the README).
    """
    return value.lower().replace("_", "-")


def endpoint_name(value: object, field: str = "name") -> str:
    """The `ServingEndpoint` name for the service's endpoint name ``value``.

    Raises MappingError when even the normalised name is not a DNS label of at most 63
    characters (what the endpoint's Service is called).
    """
    if not isinstance(value, str) or not value:
        raise MappingError([f"{field}: required; set the endpoint's name"])
    name = kube_name(value)
    if len(name) > 63 or not _DNS_LABEL.match(name):
        raise MappingError(
            [
                f"{field}: an endpoint name must be at most 63 letters, digits, '-' or '_', "
                "starting with a letter and ending with a letter or digit (Modelport stores "
                "it lower-cased with '-' for '_')"
            ]
        )
    return name


def secret_reference(name: str, key: str) -> str:
    """The service's reference to key ``key`` of Secret ``name``."""
    return f"{{{{secrets/{name}/{key}}}}}"


# --- the service's body -> ServingEndpoint -------------------------------------------------


def endpoint_from_reference(
    body: object, *, namespace: str | None = None, annotations: Mapping[str, str] | None = None
) -> ServingEndpoint:
    """A `ServingEndpoint` from the service's create request or an exported GET answer.

    ``annotations`` are added to the object's (e.g. the creator). Raises MappingError.
    """
    if not isinstance(body, Mapping):
        raise MappingError(["the body must be a JSON object describing one endpoint"])
    errors: list[str] = []
    try:
        name = endpoint_name(body.get("name"))
    except MappingError as exc:
        errors += exc.errors
        name = ""
    known = {"name", "config", "ai_gateway", "rate_limits", "tags", "description"}
    errors += [
        f"{key}: unknown field; remove it"
        for key in body
        if key not in known and key not in READ_ONLY_FIELDS and key not in KEPT_FIELDS
    ]
    config = body.get("config")
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise MappingError([*errors, "config: must be an object with served_entities"])
    spec: dict[str, Any] = {}
    for key in ("description", "tags"):
        if key in body:
            spec[key] = body[key]
    spec.update(_config_fields(config, errors, prefix="config."))
    gateway = _ai_gateway(body, config, errors)
    if gateway is not None:
        spec["ai_gateway"] = gateway
    kept = {k: body[k] for k in KEPT_FIELDS if k in body}
    if "route_optimized" in config and "route_optimized" not in kept:
        kept["route_optimized"] = config["route_optimized"]  # where MLflow's examples put it
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    extra = dict(annotations or {})
    if kept:
        extra[REFERENCE_FIELDS_ANNOTATION] = json.dumps(kept, sort_keys=True)
    if extra:
        metadata["annotations"] = extra
    parsed = _spec(spec, errors, under_config=True)
    return ServingEndpoint(metadata=ObjectMeta.model_validate(metadata), spec=parsed)


def spec_with_config(spec: ServingEndpointSpec, body: object) -> ServingEndpointSpec:
    """``spec`` with its served entities and traffic split replaced by a ``PUT …/config``
    body (the whole config is replaced, as the service does). Raises MappingError.

    The legacy ``auto_capture_config`` is refused here: payload logging belongs to the AI
    gateway (``PUT …/ai-gateway``, ``inference_table_config``).
    """
    if not isinstance(body, Mapping):
        raise MappingError(["the body must be a JSON object with served_entities"])
    errors: list[str] = []
    if "auto_capture_config" in body:
        errors.append(
            "auto_capture_config: set payload logging with PUT .../ai-gateway "
            "(inference_table_config) instead"
        )
    known = {"name", "served_entities", "served_models", "traffic_config", "config_version"}
    errors += [f"{key}: unknown field; remove it" for key in body if key not in known]
    fields = _config_fields(body, errors, prefix="")
    if not fields.get("served_entities") and not errors:
        errors.append("served_entities: set at least one served entity")
    data = _spec_input(spec, drop=("served_entities", "traffic_config"))
    return _spec(data | fields, errors, under_config=False)


def spec_with_ai_gateway(spec: ServingEndpointSpec, body: object) -> ServingEndpointSpec:
    """``spec`` with the AI gateway of a ``PUT …/ai-gateway`` body. The body replaces the
    service's fields; Modelport's ``auth`` is kept unless the body sets it."""
    if not isinstance(body, Mapping):
        raise MappingError(["the body must be a JSON object"])
    errors: list[str] = []
    gateway = _to_api(AiGatewayConfig, body, "", errors)
    kept = spec.ai_gateway.auth if spec.ai_gateway is not None else None
    if isinstance(gateway, dict) and "auth" not in gateway and kept is not None:
        gateway["auth"] = _input(kept)
    data = _spec_input(spec, drop=("ai_gateway",))
    return _spec(data | {"ai_gateway": gateway}, errors, under_config=False, path="")


def spec_with_rate_limits(spec: ServingEndpointSpec, body: object) -> ServingEndpointSpec:
    """``spec`` with the AI gateway's rate limits replaced by a legacy ``PUT …/rate-limits``
    body (keys ``user`` or ``endpoint``); an empty list removes them."""
    if not isinstance(body, Mapping) or not isinstance(body.get("rate_limits", []), list):
        raise MappingError(["rate_limits: must be a list of {calls, key, renewal_period}"])
    gateway = _input(spec.ai_gateway) if spec.ai_gateway is not None else {}
    gateway.pop("rate_limits", None)
    if body.get("rate_limits"):
        gateway["rate_limits"] = body["rate_limits"]
    data = _spec_input(spec, drop=("ai_gateway",))
    if gateway:
        data["ai_gateway"] = gateway
    return _spec(data, [], under_config=False, path="")


def spec_with_tags(spec: ServingEndpointSpec, body: object) -> ServingEndpointSpec:
    """``spec`` after a ``PATCH …/tags`` body: ``add_tags`` set (a key already there gets
    the new value), then ``delete_tags`` (keys) removed."""
    if not isinstance(body, Mapping):
        raise MappingError(["the body must be a JSON object with add_tags and/or delete_tags"])
    add, delete = body.get("add_tags") or [], body.get("delete_tags") or []
    errors: list[str] = []
    if not isinstance(add, list) or not all(isinstance(t, Mapping) for t in add):
        errors.append("add_tags: must be a list of {key, value}")
        add = []
    if not isinstance(delete, list) or not all(isinstance(k, str) for k in delete):
        errors.append("delete_tags: must be a list of tag keys")
        delete = []
    tags = {t.key: _input(t) for t in spec.tags or []}
    for tag in add:
        tags[str(tag.get("key"))] = dict(tag)
    for key in delete:
        tags.pop(key, None)
    data = _spec_input(spec, drop=("tags",))
    if tags:
        data["tags"] = list(tags.values())
    return _spec(data, errors, under_config=False, path="")


def _spec_input(spec: ServingEndpointSpec, drop: tuple[str, ...]) -> dict[str, Any]:
    """``spec`` as validation input, without the fields ``drop`` names."""
    data = _input(spec)
    for name in drop:
        data.pop(name, None)
    return data


def _input(model: BaseModel) -> dict[str, Any]:
    """A model as input that validates back to it (by attribute name, unset fields out)."""
    data: dict[str, Any] = model.model_dump(mode="json", by_alias=False, exclude_unset=True)
    return data


def _spec(
    data: dict[str, Any], errors: list[str], *, under_config: bool, path: str = ""
) -> ServingEndpointSpec:
    parsed = _validate(ServingEndpointSpec, data, errors, path, under_config=under_config)
    if errors or parsed is None:
        raise MappingError(errors)
    return parsed


def default_entity_name(entity: Mapping[str, Any]) -> str | None:
    """The service's default name of a served entity that names none: the external model's
    name with ``.`` and ``:`` as ``-``, else ``<model>-<version>`` (the last part of a
    catalog or URI name), with what an entity name cannot hold as ``-``."""
    external = entity.get("external_model")
    if isinstance(external, Mapping) and isinstance(external.get("name"), str):
        raw = re.sub(r"[.:]", "-", external["name"])
    elif isinstance(entity.get("entity_name"), str):
        source = entity["entity_name"].rstrip("/")
        # A URI's last path segment (hf://org/Llama-3.1-8B), a catalog name's last part.
        model = source.rsplit("/", 1)[-1] if "://" in source else source.rsplit(".", 1)[-1]
        version = entity.get("entity_version")
        raw = f"{model}-{version}" if isinstance(version, str | int) and version != "" else model
    else:
        return None
    return _ENTITY_NAME_INVALID.sub("-", raw).strip("-")[:63] or None


def _config_fields(config: Mapping[str, Any], errors: list[str], *, prefix: str) -> dict[str, Any]:
    """``served_entities`` and ``traffic_config`` of a config body, as API input; ``prefix``
    is where the body sits (``config.`` in a create request), for messages."""
    out: dict[str, Any] = {}
    entities = config.get("served_entities")
    legacy = config.get("served_models")
    if entities is not None and legacy is not None:
        errors.append(f"{prefix}served_models: set served_entities or served_models, not both")
    if legacy is not None and entities is None:
        entities = [_served_model(m) for m in legacy] if isinstance(legacy, list) else legacy
    if entities is not None:
        path = f"{prefix}served_entities"
        if isinstance(entities, list):
            out["served_entities"] = [
                _to_api(ServedEntity, e, f"{path}[{i}]", errors) for i, e in enumerate(entities)
            ]
        else:
            out["served_entities"] = entities  # the model reports the type
    if "traffic_config" in config:
        out["traffic_config"] = _to_api(
            TrafficConfig, config["traffic_config"], f"{prefix}traffic_config", errors
        )
    if prefix != "config.":
        return out
    unknown = set(config) - {
        "name",
        "served_entities",
        "served_models",
        "traffic_config",
        "auto_capture_config",
        "config_version",
        "route_optimized",
    }
    errors += [f"config.{key}: unknown field; remove it" for key in sorted(unknown)]
    return out


def _served_model(model: object) -> object:
    """A legacy served model as a served entity (``model_name`` -> ``entity_name``)."""
    if not isinstance(model, Mapping):
        return model
    renamed = {"model_name": "entity_name", "model_version": "entity_version"}
    return {renamed.get(k, k): v for k, v in model.items()}


def _ai_gateway(body: Mapping[str, Any], config: Mapping[str, Any], errors: list[str]) -> object:
    """``ai_gateway``, with the legacy ``rate_limits`` and ``auto_capture_config`` folded in."""
    gateway = body.get("ai_gateway")
    if gateway is not None and not isinstance(gateway, Mapping):
        errors.append("ai_gateway: must be an object")
        return None
    merged: dict[str, Any] = dict(gateway or {})
    if "rate_limits" in body:
        if "rate_limits" in merged:
            errors.append("rate_limits: set ai_gateway.rate_limits or rate_limits, not both")
        merged["rate_limits"] = body["rate_limits"]
    capture = config.get("auto_capture_config")
    if capture is not None:
        if "inference_table_config" in merged:
            errors.append(
                "config.auto_capture_config: set ai_gateway.inference_table_config or "
                "config.auto_capture_config, not both"
            )
        if isinstance(capture, Mapping):
            fields = set(InferenceTableConfig.model_fields) - {"sink"}
            merged["inference_table_config"] = {k: v for k, v in capture.items() if k in fields}
    if not merged:
        return None
    return _to_api(AiGatewayConfig, merged, "ai_gateway", errors)


# --- the generic walk over the API models ------------------------------------------------

_Kind = tuple[str, type[ApiModel] | None]


def _field_kinds(cls: type[BaseModel]) -> dict[str, _Kind]:
    """Each field of ``cls``: ``secret``, ``model`` or ``models`` (with its model class), or
    ``value``."""
    cached: dict[str, _Kind] | None = _KINDS.get(cls)
    if cached is None:
        cached = {name: _kind(info.annotation) for name, info in cls.model_fields.items()}
        _KINDS[cls] = cached
    return cached


_KINDS: dict[type[BaseModel], dict[str, _Kind]] = {}
M = TypeVar("M", bound=BaseModel)


def _kind(annotation: Any) -> _Kind:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _kind(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        return _kind(inner[0]) if len(inner) == 1 else ("value", None)
    if origin is list:
        item_kind, model = _kind(get_args(annotation)[0])
        return ("models", model) if item_kind == "model" else ("value", None)
    if isinstance(annotation, type) and issubclass(annotation, ApiModel):
        return ("secret", None) if annotation is SecretValue else ("model", annotation)
    return ("value", None)


def _to_api(cls: type[ApiModel], data: object, path: str, errors: list[str]) -> object:
    """``data`` (the service's shape of a ``cls``) as input for ``cls.model_validate``."""
    if not isinstance(data, Mapping):
        return data  # the model says what it should have been
    adapt = _INBOUND.get(cls)
    source: Mapping[str, Any] = adapt(data, path, errors) if adapt else data
    kinds = _field_kinds(cls)
    out: dict[str, Any] = {}
    for key, value in source.items():
        where = f"{path}.{key}" if path else key
        base = key.removesuffix("_plaintext")
        if key != base and kinds.get(base, ("",))[0] == "secret":
            errors.append(
                f"{where}: plaintext credentials are not accepted (they would be stored in "
                f"the endpoint for anyone who can read it); {_HOW_TO_REFER}, then set {base}"
            )
            continue
        kind, model = kinds.get(key, ("value", None))
        if kind == "secret":
            out[key] = _secret_in(value, where, errors)
        elif kind == "model" and model is not None:
            out[key] = _to_api(model, value, where, errors)
        elif kind == "models" and model is not None and isinstance(value, list):
            out[key] = [_to_api(model, v, f"{where}[{i}]", errors) for i, v in enumerate(value)]
        else:
            out[key] = value
    return out


def _secret_in(value: object, where: str, errors: list[str]) -> object:
    """A secret reference string as ``{secret_key_ref: {name, key}}``."""
    if isinstance(value, Mapping):
        return value  # already Modelport's shape
    match = SECRET_REFERENCE.match(value) if isinstance(value, str) else None
    if match is None:
        errors.append(
            f"{where}: expected a secret reference '{{{{secrets/<scope>/<key>}}}}' (key <key> "
            f"of the Kubernetes Secret <scope> in the endpoint's namespace); {_HOW_TO_REFER}"
        )
        return None
    scope, key = match.groups()
    name = kube_name(scope)
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        errors.append(
            f"{where}: secret scope {scope!r} is not a valid Kubernetes Secret name even "
            "lower-cased with '-' for '_'; use letters, digits, '-', '_' and '.'"
        )
    return {"secret_key_ref": {"name": name, "key": key}}


def _entity_in(data: Mapping[str, Any], path: str, errors: list[str]) -> Mapping[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in _ENTITY_READ_ONLY or key in _ENTITY_IGNORED:
            continue
        if key in _ENTITY_REFUSED:
            errors.append(f"{path}.{key}: {_ENTITY_REFUSED[key]}")
            continue
        out[key] = value
    env = out.get("environment_vars")
    if isinstance(env, Mapping):
        out["environment_vars"] = [
            _env_var(name, value, f"{path}.environment_vars.{name}", errors)
            for name, value in env.items()
        ]
    if "name" not in out and (name := default_entity_name(out)):
        out["name"] = name
    return out


def _env_var(name: str, value: object, where: str, errors: list[str]) -> dict[str, Any]:
    if isinstance(value, str) and value.lstrip().startswith("{{"):
        ref = _secret_in(value, where, errors)
        if isinstance(ref, Mapping):
            return {"name": name, **ref}
    return {"name": name, "value": value}


def _route_in(data: Mapping[str, Any], path: str, errors: list[str]) -> Mapping[str, Any]:
    if "served_model_name" not in data:
        return data
    out = {k: v for k, v in data.items() if k != "served_model_name"}
    if "served_entity_name" in out:
        errors.append(f"{path}: set served_entity_name or served_model_name, not both")
    else:
        out["served_entity_name"] = data["served_model_name"]
    return out


def _bedrock_in(data: Mapping[str, Any], path: str, errors: list[str]) -> Mapping[str, Any]:
    for key, why in _BEDROCK_REFUSED.items():
        if data.get(key) is not None:
            errors.append(f"{path}.{key}: {why}")
    return {k: v for k, v in data.items() if k not in _BEDROCK_REFUSED}


_Adapter = Callable[[Mapping[str, Any], str, list[str]], Mapping[str, Any]]
_INBOUND: dict[type[ApiModel], _Adapter] = {
    ServedEntity: _entity_in,
    Route: _route_in,
    AmazonBedrockConfig: _bedrock_in,
}


def _validate(
    cls: type[M], data: object, errors: list[str], path: str, *, under_config: bool
) -> M | None:
    """``cls`` from ``data``, its errors appended in the service's words (never a value).
    ``under_config``: the spec's entities and traffic sit under ``config.`` in the body."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_input=False, include_url=False):
            where = _path(path, err["loc"], under_config)
            message = reference_words(err["msg"].removeprefix("Value error, "))
            errors.append(f"{where}: {message}" if where else message)
        return None


def _path(prefix: str, loc: tuple[int | str, ...], under_config: bool) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    if not under_config:
        return out
    for field in ("served_entities", "traffic_config"):
        if out == field or out.startswith((f"{field}.", f"{field}[")):
            return f"config.{out}"
    return out


_SPEC_PATHS = {
    "spec.served_entities": "config.served_entities",
    "spec.traffic_config": "config.traffic_config",
    "spec.ai_gateway": "ai_gateway",
    "trafficConfig.": "traffic_config.",
}


def reference_words(message: str) -> str:
    """A message of the API models (camelCase fields) in the service's snake_case words."""
    text = _CAMEL_WORD.sub(lambda m: _snake(m.group(0)), message)
    for ours, theirs in _SPEC_PATHS.items():
        text = text.replace(ours, theirs)
    return text.replace("{secret_key_ref: {name, key}}", "'{{secrets/<scope>/<key>}}'")


def _snake(word: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", word).lower()


# --- ServingEndpoint -> the service's body ------------------------------------------------


def endpoint_to_reference(endpoint: ServingEndpoint) -> dict[str, Any]:
    """The service's create request for ``endpoint`` (what ``modelport export`` writes and
    ``POST /api/2.0/serving-endpoints`` accepts). Fields that were never set stay out."""
    spec = endpoint.spec
    body: dict[str, Any] = {"name": endpoint.metadata.name}
    config: dict[str, Any] = {
        "served_entities": [model_to_reference(e) for e in spec.served_entities]
    }
    if spec.traffic_config is not None:
        config["traffic_config"] = model_to_reference(spec.traffic_config)
    body["config"] = config
    if spec.ai_gateway is not None:
        body["ai_gateway"] = model_to_reference(spec.ai_gateway)
    if spec.tags is not None:
        body["tags"] = [model_to_reference(t) for t in spec.tags]
    if spec.description is not None:
        body["description"] = spec.description
    body.update(kept_fields(endpoint))
    return body


def kept_fields(endpoint: ServingEndpoint) -> dict[str, Any]:
    """The service's fields kept in :data:`REFERENCE_FIELDS_ANNOTATION` (an unreadable
    annotation, edited by hand, counts as none)."""
    raw = endpoint.metadata.annotations.get(REFERENCE_FIELDS_ANNOTATION)
    try:
        kept = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return {k: kept[k] for k in KEPT_FIELDS if isinstance(kept, dict) and k in kept}


def model_to_reference(model: ApiModel) -> dict[str, Any]:
    """One API model in the service's snake_case shape: secrets as references,
    environment variables as a map, unset fields left out."""
    kinds = _field_kinds(type(model))
    out: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if name not in model.model_fields_set or value is None:
            continue
        kind, _ = kinds[name]
        if kind == "secret":
            ref = value.secret_key_ref
            out[name] = secret_reference(ref.name, ref.key)
        elif kind == "model":
            out[name] = model_to_reference(value)
        elif kind == "models":
            out[name] = [model_to_reference(v) for v in value]
        elif isinstance(value, ApiModel | list | dict):
            out[name] = _plain(value)
        else:
            out[name] = value
    if isinstance(model, ServedEntity) and model.environment_vars is not None:
        out["environment_vars"] = {
            v.name: v.value
            if v.secret_key_ref is None
            else secret_reference(v.secret_key_ref.name, v.secret_key_ref.key)
            for v in model.environment_vars
        }
    return out


def _plain(value: Any) -> Any:
    """JSON-ready plain data for a value no field kind covers (lists of strings, maps)."""
    if isinstance(value, ApiModel):
        return model_to_reference(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
