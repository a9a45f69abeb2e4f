"""The request bodies of a custom model's ``/serving-endpoints/<ep>/invocations``.

The reference service's scoring formats, which MLflow's scoring server reads too::

    {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3, 4]]}}
    {"dataframe_records": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]}
    {"instances": [[1, 2], [3, 4]]}            # TF-serving style rows (or named tensors)
    {"inputs": {"a": [1, 3], "b": [2, 4]}}     # tensor input (or a list)
    ... plus optional "params": {...}          # the model's inference parameters

The gateway checks only the *shape* here: exactly one input format, of the right JSON
type. The model's signature (column names, types) is the model's to enforce: the
scoring server answers a mismatch with a 400 naming the column, which the gateway
relays as ``BAD_REQUEST``. ``client_request_id`` and ``usage_context`` are the reference
service's fields for usage and inference tables; they stay at the gateway and are not
sent to the model.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from modelport.gateway.errors import BAD_REQUEST, GatewayError

INPUT_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
GATEWAY_FIELDS = ("client_request_id", "usage_context")
"""Fields the gateway reads and does not forward to the model."""


class DataframeSplit(BaseModel):
    """pandas' ``split`` orientation: columns, rows of values, an optional index."""

    model_config = ConfigDict(extra="forbid")

    columns: list[str | int] | None = None
    data: list[Any]
    index: list[Any] | None = None


class InvocationRequest(BaseModel):
    """``POST /serving-endpoints/<ep>/invocations`` of a custom model."""

    model_config = ConfigDict(extra="forbid")

    dataframe_split: DataframeSplit | None = None
    dataframe_records: list[dict[str, Any]] | None = None
    instances: list[Any] | dict[str, Any] | None = None
    inputs: list[Any] | dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    client_request_id: str | None = Field(default=None, max_length=256)
    usage_context: dict[str, Any] | None = None

    @property
    def model(self) -> None:
        """No entity is named in a custom model's body: the traffic split chooses."""
        return None

    def check(self) -> InvocationRequest:
        """Exactly one input format, or a 400 that names them."""
        given = [name for name in INPUT_FORMATS if getattr(self, name) is not None]
        if len(given) != 1:
            found = f"got {', '.join(given)}" if given else "got none"
            raise GatewayError(
                400,
                BAD_REQUEST,
                f"the body must hold exactly one of {', '.join(INPUT_FORMATS)} ({found}); "
                'e.g. {"dataframe_records": [{"column": 1.0}]}',
            )
        return self

    def rows(self) -> int:
        """How many records the request scores: a custom model's unit of usage."""
        if self.dataframe_split is not None:
            return len(self.dataframe_split.data)
        if self.dataframe_records is not None:
            return len(self.dataframe_records)
        value = self.instances if self.instances is not None else self.inputs
        if isinstance(value, dict):
            # Named tensors (or columns): the first one's length is the batch size.
            first = next(iter(value.values()), None)
            return len(first) if isinstance(first, list) else 1
        return len(value) if isinstance(value, list) else 1


def forwarded(raw: dict[str, Any]) -> dict[str, Any]:
    """The body the model gets: the client's, less the gateway's own fields."""
    if not any(name in raw for name in GATEWAY_FIELDS):
        return raw
    return {k: v for k, v in raw.items() if k not in GATEWAY_FIELDS}
