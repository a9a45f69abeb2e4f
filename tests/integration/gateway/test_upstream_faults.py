"""Upstream faults told truthfully, for every provider, as the openai SDK sees them.

- A stream that ends before its final event (the body ended cleanly; or the upstream,
  delimiting its body by closing the connection, closed it in the middle of an event)
  is an error event, never a made-up finish and a clean ``[DONE]``.
- An upstream 429's ``Retry-After`` reaches the client.
- A 200 whose body is not JSON, from a pass-through provider, is a 502 in our shape.
- A body broken off after the headers is a 502 saying so, not a 503 "cannot reach".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest

from tests.integration.gateway.fakes import (
    FakeProvider,
    Reply,
    RunningGateway,
    Seen,
    bedrock_event,
    json_reply,
)
from tests.integration.gateway.feature_fakes import VERTEX_PATH
from tests.integration.gateway.test_bedrock import MODEL_PATH
from tests.integration.gateway.test_openai_compatible import client

CHAT: Any = [{"role": "user", "content": "hi"}]
SSE = "text/event-stream"
EVENT_STREAM = "application/vnd.amazon.eventstream"


def sse_event(data: Any, name: str | None = None) -> bytes:
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


OPENAI_CHUNK = sse_event(
    {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "Hal"}, "finish_reason": None}],
    }
)
OPENAI_LAST = sse_event(
    {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
)

# Per provider: the streaming path, its content type, the events of an answer begun but
# not finished, and the event that would have finished it.
STREAMS: dict[str, tuple[str, str, list[bytes], bytes]] = {
    "anthropic": (
        "/v1/messages",
        SSE,
        [
            sse_event({"type": "message_start", "message": {"usage": {}}}, "message_start"),
            sse_event(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "Hal"},
                },
                "content_block_delta",
            ),
        ],
        sse_event({"type": "message_stop"}, "message_stop"),
    ),
    "cohere": (
        "/v2/chat",
        SSE,
        [
            sse_event({"type": "message-start", "delta": {"message": {}}}, "message-start"),
            sse_event(
                {
                    "type": "content-delta",
                    "index": 0,
                    "delta": {"message": {"content": {"text": "Hal"}}},
                },
                "content-delta",
            ),
        ],
        sse_event(
            {"type": "message-end", "delta": {"finish_reason": "COMPLETE", "usage": {}}},
            "message-end",
        ),
    ),
    "amazon-bedrock": (
        MODEL_PATH + "/converse-stream",
        EVENT_STREAM,
        [
            bedrock_event("messageStart", {"role": "assistant"}),
            bedrock_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hal"}}),
        ],
        bedrock_event("messageStop", {"stopReason": "end_turn"}),
    ),
    "google-cloud-vertex-ai": (
        VERTEX_PATH + ":streamGenerateContent",
        SSE,
        [sse_event({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hal"}]}}]})],
        sse_event(
            {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [{"text": "lo"}]},
                        "finishReason": "STOP",
                    }
                ]
            }
        ),
    ),
    **{
        name: ("/v1/chat/completions", SSE, [OPENAI_CHUNK], OPENAI_LAST)
        for name in ("openai", "ai21labs", "custom", "self-hosted")
    },
    "databricks-model-serving": (
        "/v1/serving-endpoints/up-model/invocations",
        SSE,
        [OPENAI_CHUNK],
        OPENAI_LAST,
    ),
}


def streamed_error(gw: RunningGateway) -> openai.APIError:
    """The error the SDK raises while reading a streamed answer."""
    with pytest.raises(openai.APIError) as caught:
        for _ in client(gw).chat.completions.create(model="ep", messages=CHAT, stream=True):
            pass
    return caught.value


def bad_gateway(gw: RunningGateway) -> dict[str, Any]:
    """The body of the 502 a non-streamed request gets."""
    with pytest.raises(openai.APIStatusError) as caught:
        client(gw).chat.completions.create(model="ep", messages=CHAT)
    assert caught.value.status_code == 502
    assert "<html>" not in caught.value.response.text
    body: dict[str, Any] = caught.value.response.json()
    return body


@pytest.mark.parametrize("cut", ["clean end", "mid-event, connection closed"])
@pytest.mark.parametrize("name", sorted(STREAMS))
def test_a_stream_that_ends_early_is_an_error(
    name: str, cut: str, provider_gateway: Callable[[str], RunningGateway], provider: FakeProvider
) -> None:
    path, content_type, begun, last = STREAMS[name]
    gw = provider_gateway(name)

    @provider.route("POST", path)
    def cut_short(seen: Seen) -> Reply:
        if cut == "clean end":
            return Reply(chunks=begun, content_type=content_type)
        return Reply(chunks=[*begun, last[:-7]], content_type=content_type, close_delimited=True)

    error = streamed_error(gw)
    assert "incomplete" in str(error), str(error)

    @provider.route("POST", path)
    def whole(seen: Seen) -> Reply:
        return Reply(chunks=[*begun, last], content_type=content_type, close_delimited=True)

    chunks = list(client(gw).chat.completions.create(model="ep", messages=CHAT, stream=True))
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("name", ["openai", "anthropic"])
def test_upstream_retry_after_reaches_the_client(
    name: str,
    stream: bool,
    provider_gateway: Callable[[str], RunningGateway],
    provider: FakeProvider,
) -> None:
    gw = provider_gateway(name)
    path = "/v1/messages" if name == "anthropic" else "/v1/chat/completions"

    @provider.route("POST", path)
    def limited(seen: Seen) -> Reply:
        error = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
        return json_reply(error, 429, **{"Retry-After": "7"})

    with pytest.raises(openai.RateLimitError) as caught:
        if stream:
            list(client(gw).chat.completions.create(model="ep", messages=CHAT, stream=True))
        else:
            client(gw).chat.completions.create(model="ep", messages=CHAT)
    response = caught.value.response
    assert response.headers["retry-after"] == "7"
    assert response.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"


@pytest.mark.parametrize("stream", [False, True])
def test_a_pass_through_200_that_is_not_json_is_a_502(
    stream: bool, provider_gateway: Callable[[str], RunningGateway], provider: FakeProvider
) -> None:
    gw = provider_gateway("openai")

    @provider.route("POST", "/v1/chat/completions")
    def proxy_page(seen: Seen) -> Reply:
        if stream:
            return Reply(chunks=[b"data: <html>Bad gateway</html>\n\n"], content_type=SSE)
        return Reply(body=b"<html>Bad gateway</html>", content_type="text/html")

    if stream:
        assert "not JSON" in str(streamed_error(gw))
        return
    body = bad_gateway(gw)
    assert body["error_code"] == "INTERNAL_ERROR" and "not JSON" in body["message"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("name", ["openai", "anthropic", "amazon-bedrock"])
def test_a_body_broken_off_is_a_502_not_a_503(
    name: str,
    stream: bool,
    provider_gateway: Callable[[str], RunningGateway],
    provider: FakeProvider,
) -> None:
    gw = provider_gateway(name)
    path, content_type, begun, _ = STREAMS[name]
    if not stream:
        path = path.replace("/converse-stream", "/converse")

    @provider.route("POST", path)
    def broken(seen: Seen) -> Reply:
        if stream:  # chunked, and the connection closes before the last chunk
            return Reply(chunks=begun, content_type=content_type, abort=True)
        return Reply(body=b'{"id": "x", "choi', declared_length=4096)

    if stream:
        assert "broke off its answer" in str(streamed_error(gw))
        return
    assert "broke off its answer" in bad_gateway(gw)["message"]
