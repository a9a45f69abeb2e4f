"""A custom model's invocations at the gateway: the body's shape, what goes upstream, and
what comes back (pure; the real scoring server is in tests/integration/runtimes)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from modelport.gateway.errors import GatewayError
from modelport.gateway.invocations import InvocationRequest
from modelport.gateway.protocol import validate
from modelport.gateway.providers import REGISTRY
from modelport.gateway.providers.base import Auth, Call, Relayed
from modelport.gatewayconfig import ConfigError, EntityConfig, GatewayConfig, ProviderName, Task

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6.0, 2.5]]
COLS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
RECORDS = [dict(zip(COLS, row, strict=True)) for row in ROWS]
ENTITY = EntityConfig.model_validate(
    {
        "name": "sk",
        "task": "ml/v1/predict",
        "provider": "mlflow",
        "modelName": "sk",
        "baseUrl": "http://ep-sk.team-a.svc.cluster.local:8000/",
    }
)


def call(body: dict[str, Any]) -> Call:
    request = validate(InvocationRequest, body).check()
    return Call(entity=ENTITY, task=Task.CUSTOM, raw=body, request=request)


@pytest.mark.parametrize(
    ("body", "rows"),
    [
        ({"dataframe_split": {"columns": COLS, "data": ROWS}}, 2),
        ({"dataframe_split": {"index": [7, 8], "columns": COLS, "data": ROWS}}, 2),
        ({"dataframe_records": RECORDS}, 2),
        ({"instances": RECORDS}, 2),
        ({"instances": {"sepal_length": [5.1, 6.3, 7.0]}}, 3),
        ({"inputs": ROWS, "params": {"scale": 2.0}}, 2),
        ({"inputs": {c: [r[i] for r in ROWS] for i, c in enumerate(COLS)}}, 2),
    ],
)
def test_four_formats_are_relayed_to_invocations_as_sent(body: dict[str, Any], rows: int) -> None:
    c = call(body)
    assert isinstance(c.request, InvocationRequest) and c.request.rows() == rows
    upstream = REGISTRY[ProviderName.MLFLOW].build_request(c, Auth({}))
    assert upstream.method == "POST"
    assert upstream.url == "http://ep-sk.team-a.svc.cluster.local:8000/invocations"
    assert upstream.headers["content-type"] == "application/json"
    assert upstream.body is not None and orjson.loads(upstream.body) == body


def test_the_reference_services_own_fields_stay_at_the_gateway() -> None:
    body = {"dataframe_records": RECORDS, "client_request_id": "abc", "usage_context": {"a": 1}}
    upstream = REGISTRY[ProviderName.MLFLOW].build_request(call(body), Auth({}))
    assert upstream.body is not None
    assert orjson.loads(upstream.body) == {"dataframe_records": RECORDS}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, ["exactly one of", "got none"]),
        ({"params": {"a": 1}}, ["exactly one of", "got none"]),
        ({"inputs": ROWS, "instances": ROWS}, ["exactly one of", "got instances, inputs"]),
    ],
)
def test_one_input_format_exactly(body: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(GatewayError) as refused:
        call(body)
    assert refused.value.status == 400 and refused.value.code == "BAD_REQUEST"
    for word in words:
        assert word in refused.value.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"dataframe_split": {"columns": COLS}}, "dataframe_split.data"),
        ({"dataframe_records": ROWS}, "dataframe_records.0"),
        ({"dataframe_record": RECORDS}, "dataframe_record"),
        ({"inputs": "a string"}, "inputs"),
        ({"inputs": ROWS, "params": [1]}, "params"),
    ],
)
def test_wrong_shapes_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as refused:
        call(body)
    assert refused.value.status == 400 and (refused.value.param or "").startswith(param)


def test_predictions_are_relayed_byte_for_byte_and_carry_no_usage() -> None:
    provider = REGISTRY[ProviderName.MLFLOW]
    body = b'{"predictions": [0, 2]}'
    relayed = provider.parse_response(call({"inputs": ROWS}), body, {})
    assert isinstance(relayed, Relayed) and relayed.body is body and relayed.usage is None


def test_schema_errors_name_the_column_and_not_the_callers_data() -> None:
    body = orjson.dumps(
        {
            "error_code": "INVALID_PARAMETER_VALUE",
            "message": "Failed to predict data '   sepal_lenght  secret_value_42\\n0 5.1 3'. "
            "\\nError: Failed to enforce schema of data '   sepal_lenght  secret_value_42' "
            "with schema '['sepal_length': double (required)]'. Error: Model is missing "
            "inputs ['sepal_length']. Note that there were extra inputs: ['sepal_lenght'].",
        }
    )
    message = REGISTRY[ProviderName.MLFLOW].error_message(400, body)
    assert message.startswith("Model is missing inputs ['sepal_length']")
    assert "secret_value_42" not in message
    plain = orjson.dumps({"error_code": "BAD_REQUEST", "message": "Invalid input."})
    assert REGISTRY[ProviderName.MLFLOW].error_message(400, plain) == "Invalid input."


def test_streams_are_refused() -> None:
    with pytest.raises(GatewayError, match="do not stream"):
        REGISTRY[ProviderName.MLFLOW].stream_translator(call({"inputs": ROWS}))


def test_an_llm_provider_cannot_serve_a_custom_model() -> None:
    from modelport.gateway.app import check_providers

    config = GatewayConfig.model_validate(
        {
            "endpointName": "ep",
            "entities": [
                {
                    "name": "x",
                    "task": "ml/v1/predict",
                    "provider": "self-hosted",
                    "modelName": "x",
                    "baseUrl": "http://x:8000/v1",
                }
            ],
        }
    )
    with pytest.raises(ConfigError, match="cannot serve task ml/v1/predict"):
        check_providers(config)


def test_the_rest_apis_openapi_documents_a_custom_models_formats() -> None:
    from modelport.restapi.openapi import document

    doc = document("iris", "ml/v1/predict")
    body = doc["paths"]["/serving-endpoints/iris/invocations"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/InvocationRequest"
    }
    fields = doc["components"]["schemas"]["InvocationRequest"]["properties"]
    assert {"dataframe_split", "dataframe_records", "instances", "inputs", "params"} <= set(fields)


def test_rate_limits_count_a_custom_models_calls_and_never_its_tokens() -> None:
    import asyncio

    from modelport import gatewayconfig as gc
    from modelport.gateway.context import RequestContext
    from modelport.gateway.ratelimit.limiter import RateLimiter
    from modelport.gateway.ratelimit.store import MemoryStore

    config = gc.AiGatewayConfig.model_validate(
        {"rateLimits": [{"calls": 2, "key": "endpoint"}, {"tokens": 1, "key": "endpoint"}]}
    )
    limiter = RateLimiter(config, "iris", MemoryStore())

    async def admit() -> int:
        ctx = RequestContext("iris", "/serving-endpoints/iris/invocations")
        ctx.tokens_apply = False  # as the gateway's parse sets it for ml/v1/predict
        try:
            await limiter.admit(ctx, call({"dataframe_records": RECORDS * 50}))
        except GatewayError as refused:
            return refused.status
        return 200

    async def three() -> list[int]:
        return [await admit() for _ in range(3)]

    # A token limit of 1 would refuse any text; a dataframe takes no tokens, two calls pass.
    assert asyncio.run(three()) == [200, 200, 429]
