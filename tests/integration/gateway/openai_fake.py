"""A fake OpenAI-format upstream (OpenAI, Azure, AI21, Databricks, custom, vLLM)."""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from typing import Any

from tests.integration.gateway.fakes import FakeProvider, Reply, Seen, json_reply, sse

Check = Callable[[Seen], None]
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
JSON_ANSWER = '{"city": "Paris", "country": "France"}'
"""The answer to a request for JSON output (any object, or a schema with these fields)."""
AI21_FIELDS = {
    "model",
    "messages",
    "tools",
    "documents",
    "response_format",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "n",
    "stream",
}
"""The request fields AI21's chat API documents (Jamba chat request reference)."""


def check_ai21(seen: Seen) -> None:
    """AI21's documented request: known fields only, string contents, its four roles."""
    body = seen.json()
    extra = set(body) - AI21_FIELDS
    assert not extra, f"fields AI21 does not document: {sorted(extra)}"
    for m in body["messages"]:
        assert m["role"] in ("system", "user", "assistant", "tool"), m["role"]
        assert isinstance(m["content"], str), "AI21 message content is a string"
        assert set(m) <= {"role", "content", "tool_calls", "tool_call_id"}, sorted(m)
    fmt = body.get("response_format")
    assert fmt in (None, {"type": "text"}, {"type": "json_object"}), fmt
    assert body.get("max_tokens", 1) <= 4096, "Jamba's max_tokens is at most 4096"


def serve_openai(
    fake: FakeProvider,
    prefix: str,
    check: Check,
    *,
    model: str | None,
    chunk_delay: float = 0.0,
    usage_on_last_chunk: bool = False,
) -> None:
    """Register chat, completions and embeddings under `prefix` (e.g. '/v1').

    ``usage_on_last_chunk``: the stream's finish chunk carries the usage, unasked (AI21),
    instead of a separate chunk when ``stream_options.include_usage`` asks for it.
    """

    def common(seen: Seen) -> dict[str, Any]:
        assert seen.method == "POST"
        assert seen.headers.get("content-type", "").startswith("application/json")
        check(seen)
        body = seen.json()
        if model is None:
            assert "model" not in body, "the path names the model; the body must not"
        else:
            assert body.get("model") == model, f"model {body.get('model')!r} != {model!r}"
        return dict(body)

    @fake.route("POST", f"{prefix}/chat/completions")
    def chat(seen: Seen) -> Reply:
        body = common(seen)
        assert body["messages"], "messages is required"
        tools = body.get("tools")
        if body.get("stream"):
            return sse(_chat_stream(body, tools, usage_on_last_chunk), delay=chunk_delay)
        wants_json = (body.get("response_format") or {}).get("type", "text") != "text"
        text = JSON_ANSWER if wants_json else "Hello from upstream"
        message: dict[str, Any] = {"role": "assistant", "content": text}
        finish = "stop"
        if tools:
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            }
            finish = "tool_calls"
        return json_reply(
            {
                "id": "chatcmpl-up",
                "object": "chat.completion",
                "created": 1,
                "model": body.get("model", "x"),
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": USAGE,
            }
        )

    @fake.route("POST", f"{prefix}/completions")
    def completions(seen: Seen) -> Reply:
        body = common(seen)
        assert body["prompt"], "prompt is required"
        if body.get("stream"):
            events: list[tuple[str | None, Any]] = [
                (None, _text_chunk(t, None)) for t in ("Once", " upon")
            ]
            events.append((None, _text_chunk("", "length")))
            if (body.get("stream_options") or {}).get("include_usage"):
                events.append(
                    (
                        None,
                        {
                            "id": "c",
                            "object": "text_completion",
                            "created": 1,
                            "model": "m",
                            "choices": [],
                            "usage": USAGE,
                        },
                    )
                )
            events.append((None, "[DONE]"))
            return sse(events, delay=chunk_delay)
        return json_reply(
            {
                "id": "cmpl-up",
                "object": "text_completion",
                "created": 1,
                "model": body.get("model", "x"),
                "choices": [
                    {"index": 0, "text": "Once upon", "logprobs": None, "finish_reason": "length"}
                ],
                "usage": USAGE,
            }
        )

    @fake.route("POST", f"{prefix}/embeddings")
    def embeddings(seen: Seen) -> Reply:
        body = common(seen)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        vectors = [[0.5, -0.25, float(i)] for i in range(len(inputs))]
        data = []
        for i, v in enumerate(vectors):
            emb: Any = v
            if body.get("encoding_format") == "base64":
                emb = base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        return json_reply(
            {
                "object": "list",
                "data": data,
                "model": "emb",
                "usage": {"prompt_tokens": 4, "total_tokens": 4},
            }
        )


def _text_chunk(text: str, finish: str | None) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "text_completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
    }


def _chunk(
    delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-up",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        chunk["usage"] = usage
    return chunk


def _chat_stream(
    body: dict[str, Any], tools: Any, usage_on_last_chunk: bool = False
) -> list[tuple[str | None, Any]]:
    events: list[tuple[str | None, Any]] = [(None, _chunk({"role": "assistant", "content": ""}))]
    if tools:
        events.append(
            (
                None,
                _chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": ""},
                            }
                        ]
                    }
                ),
            )
        )
        events.append(
            (
                None,
                _chunk(
                    {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":"Paris"}'}}]}
                ),
            )
        )
        events.append((None, _chunk({}, "tool_calls", USAGE if usage_on_last_chunk else None)))
    else:
        wants_json = (body.get("response_format") or {}).get("type", "text") != "text"
        pieces = (JSON_ANSWER[:10], JSON_ANSWER[10:]) if wants_json else ("Hel", "lo", " there")
        for piece in pieces:
            events.append((None, _chunk({"content": piece})))
        events.append((None, _chunk({}, "stop", USAGE if usage_on_last_chunk else None)))
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append(
            (
                None,
                {
                    "id": "chatcmpl-up",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": "m",
                    "choices": [],
                    "usage": USAGE,
                },
            )
        )
    events.append((None, "[DONE]"))
    return events
