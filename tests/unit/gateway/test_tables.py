"""Usage and payload rows, without a database: the stream aggregate, the recording tap,
the rows, the client's fields, the SQL's shape and the writer's bounded buffer."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import pytest

from modelport import gatewayconfig as gc
from modelport.gateway.context import Attempt, Principal, RequestContext, TokenUsage
from modelport.gateway.errors import GatewayError
from modelport.gateway.metrics import Metrics
from modelport.gateway.protocol import ChatRequest, take_client_fields
from modelport.gateway.tables import schema
from modelport.gateway.tables.aggregate import StreamAggregate
from modelport.gateway.tables.capture import Recorder
from modelport.gateway.tables.postgres import UnavailableError
from modelport.gateway.tables.records import (
    REQUEST_TOO_LARGE,
    RESPONSE_TOO_LARGE,
    InferenceRows,
    Row,
    usage_row,
)
from modelport.gateway.tables.writer import TableWriter
from modelport.gatewayconfig import Task
from tests.support import asynchronous
from tests.unit.gateway.helpers import call, entity


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    choice: dict[str, Any] = {"index": extra.pop("index", 0), "finish_reason": finish}
    if delta is not None:
        choice["delta"] = delta
    choice.update(extra.pop("choice", {}))
    body = {"id": "c1", "object": "chat.completion.chunk", "created": 5, "model": "m", **extra}
    body["choices"] = [choice]
    return json.dumps(body).encode()


def aggregate(payloads: list[bytes]) -> dict[str, Any]:
    agg = StreamAggregate()
    for p in payloads:
        agg.add(json.loads(p))
    return agg.result()


# --- the stream aggregate -----------------------------------------------------------


def test_a_chat_stream_becomes_one_completion() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    result = aggregate(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}, choice={"logprobs": {"content": [{"token": "Hel"}]}}),
            chunk({}, "stop", choice={"logprobs": {"content": [{"token": "lo"}]}}),
            json.dumps(
                {"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": usage}
            ).encode(),
        ]
    )
    assert result == {
        "id": "c1",
        "object": "chat.completion",
        "created": 5,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello"},
                "logprobs": {"content": [{"token": "Hel"}, {"token": "lo"}]},
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
    }


def test_tool_calls_and_several_choices_are_put_together() -> None:
    result = aggregate(
        [
            chunk({"role": "assistant", "content": None}),
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "t1", "type": "function", "function": {"name": "f"}}
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
            chunk({"content": "other"}, index=1),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
            chunk({}, "tool_calls"),
            chunk({}, "length", index=1),
        ]
    )
    first, second = result["choices"]
    assert first["message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
        ],
    }
    assert first["finish_reason"] == "tool_calls"
    assert second["message"] == {"role": "assistant", "content": "other"}
    assert second["finish_reason"] == "length"


def test_a_completions_stream_becomes_one_text_completion() -> None:
    def text(t: str, finish: str | None = None) -> bytes:
        return json.dumps(
            {
                "id": "x",
                "object": "text_completion",
                "choices": [{"index": 0, "text": t, "finish_reason": finish, "logprobs": None}],
            }
        ).encode()

    result = aggregate([text("Once"), text(" upon"), text("", "length")])
    assert result["object"] == "text_completion"
    assert result["choices"] == [
        {"index": 0, "text": "Once upon", "logprobs": None, "finish_reason": "length"}
    ]


def test_odd_chunks_are_skipped_not_fatal() -> None:
    agg = StreamAggregate()
    for odd in ([], "x", {"choices": "no"}, {"choices": [{"index": "a"}, 3]}):
        agg.add(odd)
    agg.add(json.loads(chunk({"content": "ok"})))
    assert agg.result()["choices"][0]["message"]["content"] == "ok"


# --- the recording tap -------------------------------------------------------------


def ctx_for(body: dict[str, Any], **fields: Any) -> tuple[RequestContext, Any]:
    c = call(entity("self-hosted", baseUrl="http://x/v1"), body)
    ctx = RequestContext("ep", "/v1/chat/completions", task=Task.CHAT, **fields)
    ctx.request, ctx.stream = c.request, c.stream
    ctx.request_body = json.dumps(body).encode()
    return ctx, c


def inference(**over: Any) -> gc.InferenceTable:
    return gc.InferenceTable.model_validate({"table": "t", **over})


def test_a_stream_is_counted_and_aggregated_until_the_limit() -> None:
    rows = InferenceRows(inference(maxPayloadBytes=300), "team-a")
    ctx, c = ctx_for({"messages": [{"role": "user", "content": "hi"}], "stream": True})
    tap = Recorder(characters=True, payloads=rows).open(ctx, c)
    assert tap is not None and ctx.relayed is not None and ctx.relayed.sampled
    first = chunk({"content": "abc"})
    assert tap.chunk(first) is first  # passed on as it is: no copy
    assert ctx.relayed.stream is not None
    for _ in range(5):
        tap.chunk(chunk({"content": "defgh"}))
    assert ctx.relayed.output_characters == 3 + 25
    assert ctx.relayed.stream is None and ctx.relayed.too_large
    assert ctx.relayed.response_bytes == len(first) + 5 * len(chunk({"content": "defgh"}))
    ctx.status = 200
    row = rows.row(ctx)
    assert row is not None
    names = [col.name for col in schema.INFERENCE_COLUMNS]
    values = dict(zip(names, row, strict=True))
    assert values["response"] is None and values["logging_error_codes"] == RESPONSE_TOO_LARGE
    assert values["request"] == ctx.request_body and rows.not_stored == 1


def test_without_payloads_or_usage_rows_no_tap_is_opened() -> None:
    ctx, c = ctx_for({"messages": [{"role": "user", "content": "hi"}]})
    never = InferenceRows(inference(samplingFraction=0.0), "ns")
    assert Recorder(characters=False, payloads=never).open(ctx, c) is None
    assert ctx.relayed is not None and not ctx.relayed.sampled
    assert never.row(ctx) is None


def test_a_whole_body_is_kept_by_reference() -> None:
    ctx, c = ctx_for({"messages": [{"role": "user", "content": "hi"}]})
    tap = Recorder(characters=True, payloads=None).open(ctx, c)
    assert tap is not None
    body = b'{"choices":[{"message":{"content":"Hello"}}]}'
    assert tap.body(body) is body
    assert ctx.relayed is not None and ctx.relayed.body is body


def test_sampling_draws_once_per_request() -> None:
    draws = iter([0.1, 0.9, 0.5])
    rows = InferenceRows(inference(samplingFraction=0.5), "ns", random=lambda: next(draws))
    assert [rows.sampled(), rows.sampled(), rows.sampled()] == [True, False, False]


def test_a_request_over_the_limit_is_marked_not_stored() -> None:
    rows = InferenceRows(inference(maxPayloadBytes=10), "ns")
    ctx, _ = ctx_for({"messages": [{"role": "user", "content": "far too long for ten"}]})
    ctx.status, ctx.error_code = 502, "BAD_GATEWAY"
    row = rows.row(ctx)  # no tap: refused before an answer, drawn now
    assert row is not None
    values = dict(zip([col.name for col in schema.INFERENCE_COLUMNS], row, strict=True))
    assert values["request"] is None and values["request_bytes"] == len(ctx.request_body or b"")
    assert values["logging_error_codes"] == REQUEST_TOO_LARGE
    assert values["status_code"] == 502 and values["response"] is None


# --- rows ---------------------------------------------------------------------------


def test_a_usage_row_has_every_column() -> None:
    ctx, c = ctx_for({"messages": [{"role": "user", "content": "four"}]})
    ctx.principal = Principal("service_principal", "nightly", method="api_key")
    ctx.attempts = [Attempt("a", ctx.started), Attempt("b", ctx.started)]
    ctx.status, ctx.first_byte, ctx.ended = 200, ctx.started + 0.25, ctx.started + 0.5
    ctx.usage = TokenUsage(4, 9, estimated=True)
    ctx.client_request_id, ctx.usage_context = "crid", {"team": "x"}
    tap = Recorder(characters=True, payloads=None).open(ctx, c)
    assert tap is not None
    tap.body(b'{"choices":[{"message":{"content":"twelve chars"}}]}')
    row = usage_row(ctx, "team-a")
    assert len(row) == len(schema.USAGE_COLUMNS)
    values = dict(zip([c.name for c in schema.USAGE_COLUMNS], row, strict=True))
    assert values == {
        "request_id": ctx.request_id,
        "client_request_id": "crid",
        "request_time": ctx.started_at,
        "endpoint_namespace": "team-a",
        "endpoint_name": "ep",
        "served_entity": "b",
        "requester": "nightly",
        "requester_type": "service_principal",
        "task": "llm/v1/chat",
        "status_code": 200,
        "error_code": None,
        "input_token_count": 4,
        "output_token_count": 9,
        "token_counts_estimated": True,
        "input_character_count": 4,
        "output_character_count": 12,
        "request_streaming": False,
        "usage_context": '{"team":"x"}',
        "time_to_first_token_ms": 250.0,
        "duration_ms": 500.0,
        "fallback_attempts": 1,
        "trace_id": None,
    }


def test_a_refused_request_is_a_row_too() -> None:
    ctx = RequestContext("ep", "/v1/chat/completions")
    ctx.status, ctx.error_code = 401, "UNAUTHENTICATED"
    values = dict(zip([c.name for c in schema.USAGE_COLUMNS], usage_row(ctx, ""), strict=True))
    assert values["requester"] is None and values["served_entity"] is None
    assert values["input_token_count"] == 0 and values["input_character_count"] == 0
    assert values["status_code"] == 401 and values["fallback_attempts"] == 0


# --- the client's fields ------------------------------------------------------------


def test_client_fields_are_taken_out_of_the_body() -> None:
    body = {"messages": [], "client_request_id": "r-1", "usage_context": {"project": "a"}}
    assert take_client_fields(body) == ("r-1", {"project": "a"})
    assert body == {"messages": []}
    assert take_client_fields({"messages": []}) == (None, None)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"client_request_id": 7}, "client_request_id"),
        ({"client_request_id": "x" * 257}, "client_request_id"),
        ({"client_request_id": "a\x00b"}, "client_request_id"),
        ({"usage_context": ["a"]}, "usage_context"),
        ({"usage_context": {f"k{i}": "v" for i in range(21)}}, "usage_context"),
        ({"usage_context": {"team": 3}}, "usage_context.team"),
        ({"usage_context": {"team": "x" * 1025}}, "usage_context.team"),
        ({"usage_context": {"k" * 129: "v"}}, "usage_context." + "k" * 128),
    ],
)
def test_bad_client_fields_name_the_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as caught:
        take_client_fields({"messages": [], **fields})
    assert caught.value.status == 400 and caught.value.param == param
    assert param.split(".")[0] in caught.value.message


def test_the_request_models_still_refuse_unknown_fields() -> None:
    with pytest.raises(GatewayError):
        from modelport.gateway.protocol import validate

        validate(ChatRequest, {"messages": [{"role": "user"}], "client_request_idd": "x"})


# --- SQL and config -----------------------------------------------------------------


def test_one_insert_statement_takes_a_whole_batch() -> None:
    table = schema.Table("inference", "chat_payload", "serving")
    sql = schema.insert_sql(table)
    assert sql.startswith('INSERT INTO "serving"."chat_payload"')
    assert f"${len(schema.INFERENCE_COLUMNS)}::" in sql
    assert f"${len(schema.INFERENCE_COLUMNS) + 1}" not in sql
    assert sql.endswith("ON CONFLICT (request_id) DO NOTHING")
    step, trace_id = schema.migrations(schema.usage_table())
    assert "modelport_usage_requester_time" in step and "CREATE TABLE IF NOT EXISTS" in step
    # A table made before the trace id gets the column; a new one has it already.
    assert '"trace_id" text' in step
    assert trace_id.endswith("ADD COLUMN IF NOT EXISTS trace_id text")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"table": "Chat-Payload"}, "table"),
        ({"table": "t", "schema": "1x"}, "schema"),
        ({"table": "t", "sink": "postgres"}, "postgresDsn"),
        ({"table": "t", "sink": "postgres", "postgresDsn": "../etc/dsn"}, "relative"),
        ({"table": "t", "samplingFraction": 1.5}, "samplingFraction"),
    ],
)
def test_the_inference_table_config_is_checked(data: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        gc.InferenceTable.model_validate(data)


# --- the writer ---------------------------------------------------------------------


class MemoryTarget:
    """Rows in a list; ``down`` makes writes fail as an unreachable database would."""

    name = "memory"

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.down = False
        self.batches: list[int] = []

    async def prepare(self) -> None:
        if self.down:
            raise UnavailableError("down")

    async def write(self, rows: Sequence[Row]) -> int:
        if self.down:
            raise UnavailableError("connection refused")
        self.batches.append(len(rows))
        self.rows.extend(rows)
        return 0

    async def trim(self, now: dt.datetime) -> int:
        return 0

    async def close(self) -> None:
        pass


def finished(n: int) -> RequestContext:
    ctx = RequestContext("ep", "/v1/chat/completions", request_id=f"r{n}")
    ctx.status = 200
    return ctx


@asynchronous
async def test_the_writer_batches_and_never_holds_more_than_its_bound() -> None:
    target = MemoryTarget()
    metrics = Metrics()
    writer = TableWriter(
        lambda ctx: (ctx.request_id,),
        target,
        counters=metrics.table("t"),
        max_rows=10,
        batch_rows=4,
        flush_seconds=0.05,
        max_backoff_seconds=0.05,
        trim_every_seconds=0,
    )
    await writer.start()
    for i in range(8):
        writer.submit(finished(i))
    await _until(lambda: len(target.rows) == 8)
    assert max(target.batches) <= 4
    target.down = True
    for i in range(8, 30):
        writer.submit(finished(i))  # returns at once, whatever the target does
    assert writer.queued == 10 and writer.dropped == 12
    target.down = False
    await _until(lambda: writer.queued == 0)
    assert [r[0] for r in target.rows] == [f"r{i}" for i in range(18)]
    await writer.aclose()
    body = metrics.render()[0].decode()
    assert 'modelport_gateway_table_rows_total{result="written",table="t"} 18.0' in body
    assert 'modelport_gateway_table_rows_total{result="dropped_queue_full",table="t"} 12.0' in body


@asynchronous
async def test_the_byte_bound_holds_payload_rows() -> None:
    target = MemoryTarget()
    target.down = True
    writer = TableWriter(
        lambda ctx: (ctx.request_id, b"x" * 400),
        target,
        row_bytes=lambda row: len(row[1]),
        max_bytes=1000,
        trim_every_seconds=0,
    )
    for i in range(5):
        writer.submit(finished(i))
    assert writer.queued == 2 and writer.dropped == 3


@asynchronous
async def test_shutdown_drains_then_counts_what_is_left() -> None:
    target = MemoryTarget()
    writer = TableWriter(
        lambda ctx: (ctx.request_id,), target, flush_seconds=60, trim_every_seconds=0
    )
    await writer.start()
    for i in range(3):
        writer.submit(finished(i))
    await writer.aclose(drain_seconds=5)
    assert len(target.rows) == 3 and writer.dropped == 0
    stuck = MemoryTarget()
    stuck.down = True
    writer = TableWriter(lambda ctx: (ctx.request_id,), stuck, trim_every_seconds=0)
    await writer.start()
    writer.submit(finished(1))
    await writer.aclose(drain_seconds=0.2)
    assert writer.dropped == 1 and writer.queued == 0


async def _until(check: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)
