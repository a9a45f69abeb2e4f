"""Cohere v2 chat (and its typed stream events) and embed behind the gateway."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.gateway.fakes import (
    FakeProvider,
    Reply,
    RunningGateway,
    Seen,
    endpoint,
    json_reply,
    sse,
)
from tests.integration.gateway.test_openai_compatible import KEY, TOOLS, client

USAGE = {
    "billed_units": {"input_tokens": 5, "output_tokens": 3},
    "tokens": {"input_tokens": 70, "output_tokens": 3},
}


def ev(kind: str, **fields: Any) -> tuple[str, Any]:
    return kind, {"type": kind, **fields}


@pytest.fixture
def cohere(provider: FakeProvider, gateway: Callable[..., RunningGateway]) -> RunningGateway:
    @provider.route("POST", "/v2/chat")
    def chat(seen: Seen) -> Reply:
        assert seen.headers.get("authorization") == f"Bearer {KEY}"
        body = seen.json()
        assert body["model"] == "command-test" and body["messages"]
        tools = bool(body.get("tools"))
        if body.get("stream"):
            events = [ev("message-start", id="m1", delta={"message": {"role": "assistant"}})]
            if tools:
                events += [
                    ev("tool-plan-delta", delta={"message": {"tool_plan": "I will look"}}),
                    ev(
                        "tool-call-start",
                        index=0,
                        delta={
                            "message": {
                                "tool_calls": {
                                    "id": "tc_1",
                                    "type": "function",
                                    "function": {"name": "get_weather", "arguments": ""},
                                }
                            }
                        },
                    ),
                    ev(
                        "tool-call-delta",
                        index=0,
                        delta={
                            "message": {
                                "tool_calls": {"function": {"arguments": '{"city": "Paris"}'}}
                            }
                        },
                    ),
                    ev("tool-call-end", index=0),
                ]
                reason = "TOOL_CALL"
            else:
                events.append(
                    ev(
                        "content-start",
                        index=0,
                        delta={"message": {"content": {"type": "text", "text": ""}}},
                    )
                )
                events += [
                    ev("content-delta", index=0, delta={"message": {"content": {"text": t}}})
                    for t in ("Hal", "lo")
                ]
                events.append(ev("content-end", index=0))
                reason = "COMPLETE"
            events.append(ev("message-end", delta={"finish_reason": reason, "usage": USAGE}))
            return sse(events)
        message: dict[str, Any] = {"role": "assistant"}
        if tools:
            message["tool_plan"] = "I will look"
            message["tool_calls"] = [
                {
                    "id": "tc_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ]
            reason = "TOOL_CALL"
        else:
            message["content"] = [{"type": "text", "text": "Hallo"}]
            reason = "COMPLETE"
        return json_reply({"id": "r1", "finish_reason": reason, "message": message, "usage": USAGE})

    @provider.route("POST", "/v2/embed")
    def embed(seen: Seen) -> Reply:
        assert seen.headers.get("authorization") == f"Bearer {KEY}"
        body = seen.json()
        assert body["input_type"] and body["embedding_types"] == ["float"]
        return json_reply(
            {
                "id": "e1",
                "texts": body["texts"],
                "embeddings": {"float": [[0.1, 0.2] for _ in body["texts"]]},
                "meta": {"billed_units": {"input_tokens": 2}},
            }
        )

    return gateway(
        endpoint(
            {
                "name": "co",
                "task": "llm/v1/chat",
                "provider": "cohere",
                "modelName": "command-test",
                "baseUrl": provider.url,
                "credentials": {"apiKey": "k/co"},
            }
        ),
        {"k/co": KEY},
    )


def test_chat_and_stream(cohere: RunningGateway, provider: FakeProvider) -> None:
    c = client(cohere)
    reply = c.chat.completions.create(
        model="ep",
        top_p=0.5,
        stop="END",
        messages=[
            {"role": "developer", "content": "Be German."},
            {"role": "user", "content": "hi"},
        ],
    )
    assert reply.choices[0].message.content == "Hallo"
    assert reply.usage is not None and reply.usage.prompt_tokens == 70  # the model's own count
    sent = provider.last("/v2/chat").json()
    assert sent["messages"][0] == {"role": "system", "content": "Be German."}
    assert (sent["p"], sent["stop_sequences"]) == (0.5, ["END"])

    chunks = list(
        c.chat.completions.create(
            model="ep",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "Hallo"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def test_tool_calls(cohere: RunningGateway, provider: FakeProvider) -> None:
    c = client(cohere)
    reply = c.chat.completions.create(
        model="ep", messages=[{"role": "user", "content": "w?"}], tools=TOOLS
    )
    call = reply.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.id == "tc_1" and call.function.arguments == '{"city": "Paris"}'  # type: ignore[union-attr]
    assert reply.choices[0].finish_reason == "tool_calls"
    c.chat.completions.create(
        model="ep",
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "w?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "tc_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "tc_1", "content": "sunny"},
        ],
    )
    sent = provider.last("/v2/chat").json()["messages"]
    assert sent[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert sent[2] == {"role": "tool", "tool_call_id": "tc_1", "content": "sunny"}
    streamed = list(
        c.chat.completions.create(
            model="ep", tools=TOOLS, stream=True, messages=[{"role": "user", "content": "w?"}]
        )
    )
    args = "".join(
        tc.function.arguments or ""
        for ch in streamed
        if ch.choices
        for tc in ch.choices[0].delta.tool_calls or []
        if tc.function
    )
    assert args == '{"city": "Paris"}'


def test_embed(
    provider: FakeProvider, cohere: RunningGateway, gateway: Callable[..., RunningGateway]
) -> None:
    gw = gateway(
        endpoint(
            {
                "name": "co",
                "task": "llm/v1/embeddings",
                "provider": "cohere",
                "modelName": "embed-test",
                "baseUrl": provider.url,
                "credentials": {"apiKey": "k/co"},
            }
        ),
        {"k/co": KEY},
    )
    out = client(gw).embeddings.create(model="ep", input=["x", "y"])
    assert len(out.data) == 2 and [round(v, 4) for v in out.data[1].embedding] == [0.1, 0.2]
    assert out.usage.prompt_tokens == 2
    assert provider.last("/v2/embed").json()["texts"] == ["x", "y"]
