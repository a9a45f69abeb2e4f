"""Traces of a running gateway, received by a loopback OTLP receiver: the spans of a
streamed request with the GenAI attributes, the caller's trace continued and passed on
to an in-cluster model, fallback's attempts, the access log, and nothing at all when no
collector is configured."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.integration.gateway.fakes import (
    FakeProvider,
    RunningGateway,
    endpoint,
    json_reply,
    vllm,
)
from tests.integration.gateway.openai_fake import USAGE, serve_openai
from tests.integration.gateway.test_openai_compatible import client
from tests.otlp import OtlpReceiver, ReceivedSpan

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver().start()
    try:
        yield server
    finally:
        server.stop()


def traced(receiver: OtlpReceiver, *entities: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return endpoint(*entities, tracing={"endpoint": receiver.endpoint}, accessLog=True, **extra)


def by_kind(spans: list[ReceivedSpan], kind: str) -> list[ReceivedSpan]:
    return sorted((s for s in spans if s.kind == kind), key=lambda s: s.start_ns)


def test_a_streamed_request_is_a_trace_with_genai_attributes(
    provider: FakeProvider,
    gateway: Callable[..., RunningGateway],
    receiver: OtlpReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    serve_openai(provider, "/v1", lambda seen: None, model="smollm2")
    gw = gateway(traced(receiver, vllm("local", provider.url + "/v1", "smollm2"), name="chat"))
    caplog.set_level(logging.INFO, logger="modelport.gateway.access")
    stream = client(gw).chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "Hello"}],
        stream=True,
        max_tokens=20,
        temperature=0.5,
        extra_headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text

    spans = receiver.wait(3)
    assert {s.trace_id for s in spans} == {CALLER_TRACE}  # the caller's trace, continued
    (server,) = by_kind(spans, "server")
    (attempt,) = by_kind(spans, "internal")
    (call,) = by_kind(spans, "client")
    assert server.parent_span_id == CALLER_SPAN
    assert attempt.parent_span_id == server.span_id
    assert call.parent_span_id == attempt.span_id
    assert server.name == "POST /v1/chat/completions"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["gen_ai.operation.name"] == "chat"
    assert server.attributes["gen_ai.request.model"] == "chat"
    assert "gen_ai.first_token" in server.events
    assert call.name == "chat smollm2"
    assert call.attributes["gen_ai.operation.name"] == "chat"
    assert call.attributes["gen_ai.request.model"] == "smollm2"
    assert call.attributes["gen_ai.provider.name"] == "modelport.self_hosted"
    assert call.attributes["gen_ai.request.max_tokens"] == 20
    assert call.attributes["gen_ai.request.temperature"] == 0.5
    assert call.attributes["gen_ai.usage.input_tokens"] == USAGE["prompt_tokens"]
    assert call.attributes["gen_ai.usage.output_tokens"] == USAGE["completion_tokens"]
    assert call.attributes["server.address"] == "127.0.0.1"
    assert server.start_ns <= attempt.start_ns <= attempt.end_ns <= server.end_ns
    assert server.resource["service.name"] == "modelport-gateway"
    assert server.resource["modelport.endpoint"] == "chat"

    # The in-cluster model got the trace, with the upstream call's span as its parent.
    (sent,) = [s for s in provider.seen if s.path == "/v1/chat/completions"]
    assert sent.headers["traceparent"] == f"00-{CALLER_TRACE}-{call.span_id}-01"
    # The access log line names the request's trace.
    lines = [r.getMessage() for r in caplog.records if r.name == "modelport.gateway.access"]
    assert any(f"trace={CALLER_TRACE}" in line and "status=200" in line for line in lines)


def test_fallback_shows_each_attempt_and_external_providers_get_no_traceparent(
    provider: FakeProvider,
    gateway: Callable[..., RunningGateway],
    receiver: OtlpReceiver,
) -> None:
    provider.route("POST", "/down/chat/completions")(
        lambda seen: json_reply({"error": {"message": "overloaded"}}, 503)
    )
    serve_openai(provider, "/v1", lambda seen: None, model="gpt-4o")
    failing = vllm("first", provider.url + "/down")
    external = {
        "name": "second",
        "task": "llm/v1/chat",
        "provider": "openai",
        "modelName": "gpt-4o",
        "baseUrl": provider.url + "/v1",
        "credentials": {"apiKey": "keys/openai"},
    }
    config = traced(
        receiver,
        failing,
        external,
        routes=[
            {"servedEntityName": "first", "trafficPercentage": 100},
            {"servedEntityName": "second", "trafficPercentage": 0},
        ],
        aiGateway={"fallbackEnabled": True, "auth": {"enabled": False}},
    )
    gw = gateway(config, {"keys/openai": "sk-test-key"})
    answer = client(gw).chat.completions.create(
        model="ep", messages=[{"role": "user", "content": "Hi"}]
    )
    assert answer.choices[0].message.content

    spans = receiver.wait(5)
    (server,) = by_kind(spans, "server")
    attempts = by_kind(spans, "internal")
    calls = by_kind(spans, "client")
    assert [a.attributes["modelport.served_entity"] for a in attempts] == ["first", "second"]
    assert [c.attributes["gen_ai.provider.name"] for c in calls] == [
        "modelport.self_hosted",
        "openai",
    ]
    assert calls[0].status_code == 2 and calls[0].attributes["error.type"]  # ERROR
    assert calls[1].status_code == 0 and calls[1].attributes["gen_ai.usage.output_tokens"] > 0
    assert server.attributes["modelport.served_entity"] == "second"
    assert server.status_code == 0
    sent = {s.path: s.headers for s in provider.seen}
    assert sent["/down/chat/completions"]["traceparent"].split("-")[2] == calls[0].span_id
    assert "traceparent" not in sent["/v1/chat/completions"]  # never to an external provider


def test_without_a_collector_nothing_is_traced(
    provider: FakeProvider, gateway: Callable[..., RunningGateway]
) -> None:
    serve_openai(provider, "/v1", lambda seen: None, model="smollm2")
    gw = gateway(endpoint(vllm("local", provider.url + "/v1", "smollm2"), name="chat"))
    pipeline = gw.app.pipeline
    assert pipeline.openers == () and pipeline.attempt_hooks == () and pipeline.sinks == ()
    response = httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": "chat", "messages": [{"role": "user", "content": "Hi"}]},
        headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
        timeout=20,
    )
    assert response.status_code == 200
    (sent,) = [s for s in provider.seen if s.path == "/v1/chat/completions"]
    assert "traceparent" not in sent.headers
