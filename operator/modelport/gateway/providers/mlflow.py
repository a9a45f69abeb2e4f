"""Custom models: the in-cluster Service of an MLflow scoring server.

MLflow's scoring server (the app ``mlflow models serve`` runs, rendered by
``modelport.runtimes.mlflow``) answers ``POST /invocations`` with the reference
service's formats and returns ``{"predictions": ...}``; the gateway relays both bodies
as they are (less its own ``client_request_id`` / ``usage_context``). A body that does
not fit the model's signature gets the server's 400, whose message names the column; it
reaches the client as ``BAD_REQUEST``. No credentials cross the cluster network, and
nothing streams.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from modelport.gateway.errors import BAD_REQUEST, GatewayError
from modelport.gateway.invocations import forwarded
from modelport.gateway.providers.base import (
    Auth,
    Call,
    Provider,
    Relayed,
    StreamTranslator,
    UpstreamRequest,
)
from modelport.gatewayconfig import Task

JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}
SCHEMA_REASON = "Error: "


class MlflowProvider(Provider):
    """Relays invocations to ``<baseUrl>/invocations``; token usage does not apply."""

    name = "mlflow"
    tasks = frozenset({Task.CUSTOM})

    def build_request(self, call: Call, auth: Auth) -> UpstreamRequest:
        """The client's body, to the scoring server's ``/invocations``."""
        del auth  # in-cluster: none
        url = self.base_url(call.entity) + "/invocations"
        return UpstreamRequest("POST", url, dict(JSON_HEADERS), orjson.dumps(forwarded(call.raw)))

    def parse_response(self, call: Call, body: bytes, headers: Mapping[str, str]) -> Relayed:
        """``{"predictions": ...}``, relayed byte for byte, never parsed for token usage
        (a custom model has none)."""
        return Relayed(body, None)

    def stream_translator(self, call: Call) -> StreamTranslator:
        """Custom models answer whole bodies only."""
        raise GatewayError(400, BAD_REQUEST, "a custom model's invocations do not stream")

    def error_message(self, status: int, body: bytes) -> str:
        """The scoring server's reason, without the input it echoes.

        Its schema errors read "Failed to predict data '<the rows>'. Error: Failed to enforce
        schema of data '<the rows>' with schema '…'. Error: Model is missing inputs
        ['sepal_length']." The rows are the caller's data, which must not reach a log line
        (or grow an error body with a large batch): the last "Error:" part names the column.
        """
        message = super().error_message(status, body)
        reason = message.rsplit(SCHEMA_REASON, 1)[-1].strip()
        return reason or message
