"""Building blocks shared by every API model: the base class, CEL rules, secret refs.

Python attributes are snake_case; the wire (and the CRD) is camelCase, produced by
one alias generator, so a field is never spelled twice. Validation rules that the
apiserver must enforce are declared next to the model as `CelRule`s; the CRD
generator copies them into `x-kubernetes-validations`, and each model repeats the
rule in Python (a `model_validator`) so that the operator reports the same error
for a body that reached it some other way. The shared table of invalid endpoints
in `tests/unit/api/cases.py` is run against both, which keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# Every string that CEL reads must have a maxLength, or the apiserver estimates its
# cost from the 3 MiB request limit and refuses the CRD; bounds are generous.
SHORT = 63
NAME = 253
TEXT = 4096
URL = 2048

# A Kubernetes object name (DNS-1123 subdomain), as used for Secrets and PVCs.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A key inside a Secret's data.
DATA_KEY = r"^[-._a-zA-Z0-9]+$"
HTTP_URL = r"^https?://[^\s]+$"


@dataclass(frozen=True)
class CelRule:
    """One `x-kubernetes-validations` entry.

    `message` is what `kubectl apply` prints: it names the field and the fix.
    `field_path` (relative to the object the rule sits on, e.g. `.openaiApiBase`)
    makes the apiserver report the error at that field instead of at the object.
    """

    rule: str
    message: str
    field_path: str | None = None

    def to_schema(self) -> dict[str, str]:
        """The rule as it appears in the CRD."""
        out = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


def cel_rules(*rules: CelRule) -> dict[str, Any]:
    """`json_schema_extra` for a model carrying `rules` (read by the CRD generator)."""
    return {"x-kubernetes-validations": [r.to_schema() for r in rules]}


class ApiModel(BaseModel):
    """Base of every model in the API: camelCase on the wire, unknown fields refused.

    `extra="forbid"` mirrors the apiserver's strict field validation, and is what
    turns a would-be plaintext key (`openaiApiKeyPlaintext`) into an error rather
    than a silently dropped field.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        frozen=True,
        # Strict like the apiserver: "yes" is not a boolean and "5" is not an integer.
        strict=True,
    )

    def to_body(self) -> dict[str, Any]:
        """The model as a Kubernetes body: camelCase, unset fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def list_map(*keys: str) -> dict[str, Any]:
    """Schema extras that make a list a map keyed by `keys` (server-side apply merges
    entries by key, and the apiserver itself refuses duplicate keys)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


class SecretKeySelector(ApiModel):
    """A key of a Secret in the endpoint's namespace."""

    name: Annotated[str, Field(max_length=NAME, pattern=DNS_SUBDOMAIN)] = Field(
        description="Name of the Secret, in the ServingEndpoint's namespace."
    )
    key: Annotated[str, Field(min_length=1, max_length=NAME, pattern=DATA_KEY)] = Field(
        description="Key inside the Secret's data whose value is used."
    )


class SecretValue(ApiModel):
    """A credential, read from a Secret. There is no plaintext form on purpose: keys
    must never sit in a custom resource that Argo CD, `kubectl get -o yaml` and
    etcd backups all show."""

    secret_key_ref: SecretKeySelector = Field(
        description="The Secret key holding the value. The gateway mounts it as a file "
        "and re-reads it when the Secret changes, so rotation needs no restart."
    )


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """A standard Kubernetes condition (the shape of metav1.Condition)."""

    type: Annotated[str, Field(min_length=1, max_length=316)] = Field(
        description="Kind of condition: Ready, Progressing or Degraded."
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: Annotated[str, Field(max_length=1024)] = Field(
        default="",
        description="One CamelCase word saying why the condition is in its status.",
    )
    message: Annotated[str, Field(max_length=32768)] = Field(
        default="", description="A human-readable explanation, naming the field and the fix."
    )
    observed_generation: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="The metadata.generation the condition was computed from.",
    )
    last_transition_time: datetime | None = Field(
        default=None, strict=False, description="When the status last changed."
    )
