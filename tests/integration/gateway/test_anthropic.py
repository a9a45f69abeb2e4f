"""Anthropic Messages API behind the gateway, checked by a loopback fake of its wire format."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import openai
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
from tests.integration.gateway.test_openai_compatible import KEY, TOOLS, aclient, client


def check_messages_request(seen: Seen) -> dict[str, Any]:
    assert seen.method == "POST" and seen.path == "/v1/messages"
    assert seen.headers.get("x-api-key") == KEY, "x-api-key missing"
    assert seen.headers.get("anthropic-version") == "2023-06-01"
    assert "authorization" not in seen.headers
    body = seen.json()
    assert body["model"] == "claude-test"
    assert isinstance(body["max_tokens"], int), "max_tokens is required"
    assert body["messages"][0]["role"] == "user"
    roles = [m["role"] for m in body["messages"]]
    assert all(r in ("user", "assistant") for r in roles), f"bad roles {roles}"
    assert all(a != b for a, b in itertools.pairwise(roles)), "roles must alternate"
    for tool in body.get("tools", []):
        assert "input_schema" in tool and "name" in tool
    return dict(body)


def message(content: list[dict[str, Any]], stop: str) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 21, "output_tokens": 9},
    }


def stream_events(tools: bool) -> list[tuple[str, Any]]:
    start = {
        "type": "message_start",
        "message": {
            **message([], "end_turn"),
            "stop_reason": None,
            "usage": {"input_tokens": 21, "output_tokens": 1},
        },
    }
    events: list[tuple[str, Any]] = [("message_start", start), ("ping", {"type": "ping"})]
    if tools:
        events += [
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "Checking."},
                },
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 1,
                    "content_block": {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {},
                    },
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": '{"city": '},
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'},
                },
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ]
        stop = "tool_use"
    else:
        events.append(
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            )
        )
        for piece in ("Hel", "lo"):
            events.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                )
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
        stop = "end_turn"
    events += [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 9},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return events


@pytest.fixture
def anthropic(provider: FakeProvider, gateway: Callable[..., RunningGateway]) -> RunningGateway:
    @provider.route("POST", "/v1/messages")
    def messages(seen: Seen) -> Reply:
        body = check_messages_request(seen)
        tools = bool(body.get("tools"))
        if body.get("stream"):
            return sse(stream_events(tools))
        if tools:
            content = [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ]
            return json_reply(message(content, "tool_use"))
        return json_reply(message([{"type": "text", "text": "Hello"}], "end_turn"))

    return gateway(
        endpoint(
            {
                "name": "claude",
                "task": "llm/v1/chat",
                "provider": "anthropic",
                "modelName": "claude-test",
                "baseUrl": provider.url,
                "credentials": {"apiKey": "k/anthropic"},
            }
        ),
        {"k/anthropic": KEY},
    )


def test_chat_lifts_system_and_defaults_max_tokens(
    anthropic: RunningGateway, provider: FakeProvider
) -> None:
    c = client(anthropic)
    raw = c.chat.completions.with_raw_response.create(
        model="ep",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
    )
    assert raw.headers["served-model-name"] == "claude"
    reply = raw.parse()
    assert reply.choices[0].message.content == "Hello"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (
        21,
        9,
        30,
    )
    sent = provider.last("/v1/messages").json()
    assert sent["system"] == "Be brief."
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert sent["max_tokens"] == 4096

    c.chat.completions.create(
        model="ep",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=77,
        temperature=0.5,
        stop=["END"],
    )
    sent = provider.last("/v1/messages").json()
    assert (sent["max_tokens"], sent["temperature"], sent["stop_sequences"]) == (77, 0.5, ["END"])


def test_streaming_with_usage(anthropic: RunningGateway) -> None:
    chunks = list(
        client(anthropic).chat.completions.create(
            model="ep",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 30
    # Without include_usage there is no usage chunk.
    plain = list(
        client(anthropic).chat.completions.create(
            model="ep", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert all(c.usage is None for c in plain) and all(c.choices for c in plain)


def test_tool_calls_and_tool_results(anthropic: RunningGateway, provider: FakeProvider) -> None:
    c = client(anthropic)
    reply = c.chat.completions.create(
        model="ep",
        messages=[{"role": "user", "content": "weather?"}],
        tools=TOOLS,
        tool_choice="required",
    )
    call = reply.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert (call.id, call.function.name) == ("toolu_1", "get_weather")  # type: ignore[union-attr]
    assert call.function.arguments == '{"city":"Paris"}'  # type: ignore[union-attr]
    assert reply.choices[0].finish_reason == "tool_calls"
    sent = provider.last("/v1/messages").json()
    assert sent["tool_choice"] == {"type": "any"}
    assert sent["tools"][0]["input_schema"]["properties"]["city"] == {"type": "string"}

    # The tool result goes back as a tool_result block in a user turn.
    c.chat.completions.create(
        model="ep",
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        ],
    )
    turns = provider.last("/v1/messages").json()["messages"]
    assert turns[1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
        ],
    }
    assert turns[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}],
    }

    async def stream_tools() -> None:
        ac = aclient(anthropic)
        stream = await ac.chat.completions.create(
            model="ep", messages=[{"role": "user", "content": "weather?"}], tools=TOOLS, stream=True
        )
        args, names, text = "", [], ""
        async for ch in stream:
            delta = ch.choices[0].delta
            text += delta.content or ""
            for tc in delta.tool_calls or []:
                if tc.function and tc.function.name:
                    names.append(tc.function.name)
                args += (tc.function.arguments or "") if tc.function else ""
        assert (text, names, args) == ("Checking.", ["get_weather"], '{"city": "Paris"}')
        await ac.close()

    asyncio.run(stream_tools())


def test_completions_task_through_messages(
    provider: FakeProvider, gateway: Callable[..., RunningGateway]
) -> None:
    @provider.route("POST", "/v1/messages")
    def messages(seen: Seen) -> Reply:
        body = check_messages_request(seen)
        if body.get("stream"):
            return sse(stream_events(False))
        return json_reply(message([{"type": "text", "text": "Hello"}], "max_tokens"))

    gw = gateway(
        endpoint(
            {
                "name": "claude",
                "task": "llm/v1/completions",
                "provider": "anthropic",
                "modelName": "claude-test",
                "baseUrl": provider.url,
                "credentials": {"apiKey": "k/a"},
            }
        ),
        {"k/a": KEY},
    )
    done = client(gw).completions.create(model="ep", prompt="Say hello", max_tokens=5)
    assert done.choices[0].text == "Hello" and done.choices[0].finish_reason == "length"
    assert done.usage is not None and done.usage.total_tokens == 30
    streamed = list(client(gw).completions.create(model="ep", prompt="Say hello", stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == "Hello"


@pytest.mark.parametrize(
    ("status", "kind", "expect_status", "expect_code"),
    [
        (400, "invalid_request_error", 400, "BAD_REQUEST"),
        (401, "authentication_error", 502, "PERMISSION_DENIED"),
        (429, "rate_limit_error", 429, "REQUEST_LIMIT_EXCEEDED"),
        (529, "overloaded_error", 503, "TEMPORARILY_UNAVAILABLE"),
        (500, "api_error", 502, "INTERNAL_ERROR"),
    ],
)
def test_upstream_errors_map_and_never_leak_the_key(
    status: int,
    kind: str,
    expect_status: int,
    expect_code: str,
    provider: FakeProvider,
    gateway: Callable[..., RunningGateway],
) -> None:
    @provider.route("POST", "/v1/messages")
    def fail(seen: Seen) -> Reply:
        # A provider that echoes the key it was given must not make the gateway leak it.
        return json_reply(
            {"type": "error", "error": {"type": kind, "message": f"bad key {KEY} or request"}},
            status,
        )

    gw = gateway(
        endpoint(
            {
                "name": "claude",
                "task": "llm/v1/chat",
                "provider": "anthropic",
                "modelName": "claude-test",
                "baseUrl": provider.url,
                "credentials": {"apiKey": "k/a"},
            }
        ),
        {"k/a": KEY},
    )
    with pytest.raises(openai.APIStatusError) as caught:
        client(gw).chat.completions.create(model="ep", messages=[{"role": "user", "content": "hi"}])
    err = caught.value
    assert err.status_code == expect_status
    body = err.response.json()
    assert body["error_code"] == expect_code and body["error"]["code"] == expect_code
    assert KEY not in err.response.text and "[REDACTED]" in body["message"]


def test_unsupported_parameter_is_a_400(anthropic: RunningGateway) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(anthropic).chat.completions.create(
            model="ep", messages=[{"role": "user", "content": "hi"}], n=2
        )
    body = caught.value.response.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE" and body["error"]["param"] == "n"
