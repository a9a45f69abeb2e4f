"""Names and labels of an endpoint's children: deterministic, valid, at most 63 characters.

Every child name is a DNS-1035 label (what a Service name must be, and the strictest
of the kinds we create), so one function serves all kinds. A name that would be too
long, or that had to be altered to be valid (entity names may hold `_` and capitals),
gets a stable hash suffix of the *unaltered* parts, so two different entities never
map to the same child and the same entity always maps to the same one.
"""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 63
HASH_LEN = 8

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "modelport"
ENDPOINT_LABEL = "serving.modelport.io/endpoint"
ENTITY_LABEL = "serving.modelport.io/entity"
COMPONENT_LABEL = "serving.modelport.io/component"
CONFIG_HASH_ANNOTATION = "serving.modelport.io/config-hash"
GATEWAY = "gateway"
INFERENCE = "inference"

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def stable_hash(text: str, length: int = HASH_LEN) -> str:
    """A short hex digest of `text` that never changes between runs or versions."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def child_name(*parts: str) -> str:
    """`parts` joined by '-', made a valid DNS-1035 label of at most 63 characters.

    Used unchanged when it already is one; otherwise lower-cased, invalid characters
    replaced by '-', trimmed, and suffixed with a hash of the original.
    """
    raw = "-".join(parts)
    if len(raw) <= MAX_NAME and _DNS_LABEL.match(raw):
        return raw
    cleaned = re.sub(r"[^a-z0-9-]+", "-", raw.lower())
    cleaned = re.sub(r"-{2,}", "-", cleaned).strip("-")
    if not cleaned or not cleaned[0].isalpha():
        # A Service name must start with a letter.
        cleaned = f"m-{cleaned}".rstrip("-")
    keep = MAX_NAME - HASH_LEN - 1
    return f"{cleaned[:keep].rstrip('-')}-{stable_hash(raw)}"


def gateway_name(endpoint: str) -> str:
    """The ConfigMap and Deployment of the endpoint's gateway."""
    return child_name(endpoint, GATEWAY)


def gateway_service_account_name(endpoint: str) -> str:
    """The ServiceAccount of the gateway pods, when they verify ServiceAccount tokens
    (the TokenReview right is granted to it by name)."""
    return gateway_name(endpoint)


def gateway_scale_role_name(endpoint: str) -> str:
    """The Role (and its RoleBinding) that lets the gateway wake its entities that scale
    to zero: the scale subresource of their Deployments, nothing else."""
    return child_name(endpoint, GATEWAY, "scale")


def service_name(endpoint: str) -> str:
    """The Service in front of the gateway: the endpoint's URL host."""
    return child_name(endpoint)


def entity_name(endpoint: str, entity: str) -> str:
    """The Deployment and Service of a self-hosted entity.

    An entity literally called 'gateway' would collide with the gateway's children;
    it gets the hashed form instead.
    """
    name = child_name(endpoint, entity)
    if name == gateway_name(endpoint):
        cleaned = name[: MAX_NAME - HASH_LEN - 1].rstrip("-")
        return f"{cleaned}-{stable_hash('entity:' + endpoint + '/' + entity)}"
    return name


def label_value(value: str) -> str:
    """`value` when it is a valid label value, else a shortened, hashed stand-in."""
    if len(value) <= MAX_NAME and _LABEL_VALUE.match(value):
        return value
    return child_name(value)


def endpoint_labels(endpoint: str) -> dict[str, str]:
    """Labels every child of `endpoint` carries (and that pruning selects on)."""
    return {MANAGED_BY: MANAGER, ENDPOINT_LABEL: label_value(endpoint)}


def gateway_selector(endpoint: str) -> dict[str, str]:
    """Pod labels selecting the gateway pods (immutable once a Deployment exists)."""
    return {ENDPOINT_LABEL: label_value(endpoint), COMPONENT_LABEL: GATEWAY}


def entity_labels(endpoint: str, entity: str) -> dict[str, str]:
    """Labels of the children of one self-hosted entity."""
    return {**endpoint_labels(endpoint), ENTITY_LABEL: label_value(entity)}


def entity_selector(endpoint: str, entity: str) -> dict[str, str]:
    """Pod labels selecting one entity's inference pods."""
    return {
        ENDPOINT_LABEL: label_value(endpoint),
        ENTITY_LABEL: label_value(entity),
        COMPONENT_LABEL: INFERENCE,
    }
