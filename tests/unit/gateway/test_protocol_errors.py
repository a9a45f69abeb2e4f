"""Request validation, error mapping and the OpenAI response builders."""

from __future__ import annotations

from typing import Any

import pytest

from modelport.gateway.errors import GatewayError, from_upstream_status
from modelport.gateway.openai_format import ChunkWriter, Usage, embeddings_response
from modelport.gateway.protocol import ChatRequest, CompletionRequest, EmbeddingRequest, validate
from modelport.gatewayconfig import Task


@pytest.mark.parametrize(
    ("model", "body", "param", "phrase"),
    [
        (
            ChatRequest,
            {"messages": [{"role": "user", "content": "x"}], "foo": 1},
            "foo",
            "unknown field",
        ),
        (ChatRequest, {}, "messages", "missing required field"),
        (
            ChatRequest,
            {"messages": [{"role": "user", "content": "x"}], "top_p": 3},
            "top_p",
            "invalid value",
        ),
        (CompletionRequest, {"prompt": ""}, "prompt", "invalid value"),
        (EmbeddingRequest, {"input": "x", "encoding_format": "int8"}, "encoding_format", "invalid"),
    ],
)
def test_validation_names_the_field(
    model: Any, body: dict[str, Any], param: str, phrase: str
) -> None:
    with pytest.raises(GatewayError) as caught:
        validate(model, body)
    assert caught.value.status == 400 and caught.value.code == "INVALID_PARAMETER_VALUE"
    assert caught.value.param is not None and caught.value.param.startswith(param)
    assert phrase in caught.value.message


def test_completion_as_chat_rejects_what_chat_cannot_carry() -> None:
    chat = CompletionRequest.model_validate({"prompt": ["p"], "max_tokens": 3}).as_chat()
    assert chat.messages[0].content == "p" and chat.max_tokens == 3
    with pytest.raises(GatewayError):
        CompletionRequest.model_validate({"prompt": ["a", "b"]}).as_chat()
    with pytest.raises(GatewayError):
        CompletionRequest.model_validate({"prompt": "a", "echo": True}).as_chat()


def test_non_text_content_parts_are_rejected_by_translators() -> None:
    message = ChatRequest.model_validate(
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}
            ]
        }
    ).messages[0]
    with pytest.raises(GatewayError):
        message.text()


@pytest.mark.parametrize(
    ("upstream", "status", "code"),
    [
        (400, 400, "BAD_REQUEST"),
        (401, 502, "PERMISSION_DENIED"),
        (403, 502, "PERMISSION_DENIED"),
        (404, 404, "RESOURCE_DOES_NOT_EXIST"),
        (408, 504, "DEADLINE_EXCEEDED"),
        (413, 413, "BAD_REQUEST"),
        (422, 400, "BAD_REQUEST"),
        (429, 429, "REQUEST_LIMIT_EXCEEDED"),
        (500, 502, "INTERNAL_ERROR"),
        (503, 503, "TEMPORARILY_UNAVAILABLE"),
        (529, 503, "TEMPORARILY_UNAVAILABLE"),
        (504, 504, "DEADLINE_EXCEEDED"),
    ],
)
def test_upstream_status_mapping(upstream: int, status: int, code: str) -> None:
    error = from_upstream_status(upstream, "anthropic", "claude", "detail")
    assert (error.status, error.code) == (status, code)
    payload = error.payload()
    assert payload["error"]["code"] == code == payload["error_code"]
    assert "claude" in payload["message"]


def test_completions_chunks_and_usage_gate() -> None:
    writer = ChunkWriter(Task.COMPLETIONS, "id", 1, "m", include_usage=False)
    assert writer.start() == []
    import json

    text = json.loads(writer.text("ab")[0])
    assert text["object"] == "text_completion" and text["choices"][0]["text"] == "ab"
    assert writer.tool_call_start("0", "t", "f") == []
    assert writer.usage(Usage(1, 2)) == []


def test_embeddings_response_float() -> None:
    out = embeddings_response(model="m", vectors=[[1.0]], prompt_tokens=3, encoding_format=None)
    assert out["data"][0]["embedding"] == [1.0] and out["usage"]["total_tokens"] == 3
