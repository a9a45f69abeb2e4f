"""Traces, pure parts: W3C trace context, sampling, the spans of a finished request, the
access log line and the trace id in the usage row."""

from __future__ import annotations

import pytest

from modelport import gatewayconfig as gc
from modelport.gateway.accesslog import access_line
from modelport.gateway.context import Attempt, Principal, RequestContext, TokenUsage, TraceIds
from modelport.gateway.protocol import ChatRequest
from modelport.gateway.tables import schema
from modelport.gateway.tables.records import usage_row
from modelport.gateway.tracing.ids import (
    new_span_id,
    new_trace_id,
    parse_traceparent,
    sampled_by_ratio,
    traceparent,
)
from modelport.gateway.tracing.spans import request_spans

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"00-{TRACE}-{PARENT}-01", (TRACE, PARENT, True)),
        (f"00-{TRACE}-{PARENT}-00", (TRACE, PARENT, False)),
        (f"00-{TRACE.upper()}-{PARENT}-01", (TRACE, PARENT, True)),
        (f"01-{TRACE}-{PARENT}-01-future", (TRACE, PARENT, True)),  # a later version's extra
        (f"00-{TRACE}-{PARENT}-01-extra", None),  # version 00 has exactly four parts
        (f"ff-{TRACE}-{PARENT}-01", None),
        (f"00-{'0' * 32}-{PARENT}-01", None),
        (f"00-{TRACE}-{'0' * 16}-01", None),
        (f"00-{TRACE[:-1]}x-{PARENT}-01", None),
        ("garbage", None),
        ("", None),
    ],
)
def test_traceparent_is_parsed_as_the_w3c_recommendation_says(
    header: str, expected: tuple[str, str, bool] | None
) -> None:
    assert parse_traceparent(header) == expected


def test_new_ids_round_trip_through_the_header() -> None:
    trace_id, span_id = new_trace_id(), new_span_id()
    assert len(trace_id) == 32 and len(span_id) == 16
    assert parse_traceparent(traceparent(trace_id, span_id, False)) == (trace_id, span_id, False)


def test_sampling_by_ratio_is_decided_by_the_trace_id() -> None:
    assert sampled_by_ratio("f" * 32, 1.0) and not sampled_by_ratio("0" * 31 + "1", 0.0)
    assert sampled_by_ratio("f" * 16 + "0" * 15 + "1", 0.5)  # low half small: kept
    assert not sampled_by_ratio("0" * 16 + "f" * 16, 0.5)
    kept = sum(sampled_by_ratio(new_trace_id(), 0.25) for _ in range(4000))
    assert 800 < kept < 1200


def finished(**fields: object) -> RequestContext:
    ctx = RequestContext("chat", "/v1/chat/completions", started=100.0, started_at=1_700_000_000.0)
    ctx.task = gc.Task.CHAT
    ctx.model = "chat"
    ctx.stream = True
    ctx.trace = TraceIds(TRACE, "a" * 16, PARENT, True)
    ctx.principal = Principal("service_principal", "system:serviceaccount:team-a:app")
    ctx.request = ChatRequest.model_validate(
        {"model": "chat", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 9}
    )
    for name, value in fields.items():
        setattr(ctx, name, value)
    return ctx


ENTITIES = {
    "gpt": gc.EntityConfig.model_validate(
        {
            "name": "gpt",
            "task": "llm/v1/chat",
            "provider": "openai",
            "modelName": "gpt-4o",
            "openai": {
                "apiType": "azure",
                "apiVersion": "2024-06-01",
                "deploymentName": "gpt",
            },
            "baseUrl": "https://example.openai.azure.com",
            "credentials": {"apiKey": "k/openai"},
        }
    ),
    "llama": gc.EntityConfig.model_validate(
        {
            "name": "llama",
            "task": "llm/v1/chat",
            "provider": "self-hosted",
            "modelName": "llama-8b",
            "baseUrl": "http://chat-llama.team-a.svc.cluster.local:8000/v1",
        }
    ),
}


def test_fallback_spans_nest_and_carry_genai_attributes() -> None:
    ctx = finished(
        attempts=[
            Attempt("llama", 100.0, 100.0, 503, "TEMPORARILY_UNAVAILABLE", "not_ready"),
            Attempt("gpt", 100.01, 100.5, 200, None, None, "b" * 16),
        ],
        first_byte=100.2,
        ended=100.5,
        status=200,
        usage=TokenUsage(12, 30),
    )
    server, skipped, attempt, call = request_spans(ctx, ENTITIES)
    assert (server.kind, server.span_id, server.parent_span_id) == ("server", "a" * 16, PARENT)
    assert server.start == 1_700_000_000.0 and server.end == pytest.approx(1_700_000_000.5)
    assert server.events[0].name == "gen_ai.first_token"
    assert server.events[0].time == pytest.approx(1_700_000_000.2)
    assert server.attributes["gen_ai.usage.output_tokens"] == 30
    assert server.attributes["modelport.principal"] == "service_principal:" + (
        "system:serviceaccount:team-a:app"
    )
    assert server.error is None
    # The skipped entity: an attempt span saying why, and no upstream call.
    assert skipped.attributes["modelport.attempt.skipped"] == "not_ready"
    assert skipped.error == "TEMPORARILY_UNAVAILABLE"
    assert attempt.parent_span_id == server.span_id
    assert (call.kind, call.span_id, call.parent_span_id) == ("client", "b" * 16, attempt.span_id)
    assert call.name == "chat gpt-4o"
    assert call.attributes == {
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "azure.ai.openai",
        "gen_ai.system": "azure.ai.openai",
        "server.address": "example.openai.azure.com",
        "gen_ai.request.max_tokens": 9,
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 30,
    }


def test_a_refused_request_is_one_span_and_a_5xx_an_error() -> None:
    (refused,) = request_spans(finished(status=429, error_code="REQUEST_LIMIT_EXCEEDED"), {})
    assert refused.attributes["error.type"] == "REQUEST_LIMIT_EXCEEDED"
    assert refused.error is None  # a 4xx is the caller's, not the server's, error
    (failed,) = request_spans(finished(status=502, error_code="BAD_GATEWAY"), {})
    assert failed.error == "HTTP 502"
    assert request_spans(finished(trace=None), ENTITIES) == []


def test_the_access_log_line_joins_request_trace_and_usage() -> None:
    ctx = finished(
        attempts=[Attempt("gpt", 100.0, 100.5, 200)],
        first_byte=100.25,
        ended=100.5,
        status=200,
        usage=TokenUsage(12, 30, estimated=True),
    )
    line = access_line(ctx)
    assert line.startswith(f"request={ctx.request_id} trace={TRACE} route=/v1/chat/completions")
    assert "principal=service_principal:system:serviceaccount:team-a:app" in line
    assert "entity=gpt status=200 duration_ms=500.0 ttft_ms=250.0 tokens=12/30~" in line
    untraced = access_line(finished(trace=None, principal=None, status=401, error_code="X"))
    assert "trace=- " in untraced and "principal=anonymous" in untraced
    assert untraced.endswith("error=X")


def test_the_usage_row_carries_the_trace_id() -> None:
    names = [c.name for c in schema.USAGE_COLUMNS]
    row = usage_row(finished(status=200, ended=100.5), "team-a")
    assert row[names.index("trace_id")] == TRACE
    assert usage_row(finished(trace=None, status=200), "team-a")[names.index("trace_id")] is None
