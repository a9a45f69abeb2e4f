"""Provider fidelity, pure: images, JSON output, reasoning, documented fields only, and
streams that end before their final event. Table-driven over the providers."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from modelport.gateway.errors import GatewayError, from_upstream_status, valid_retry_after
from modelport.gateway.media import Fetched, is_public_address, parse_image_url, sniff_format
from modelport.gateway.providers import REGISTRY
from modelport.gateway.providers.base import Auth, Relayed
from modelport.gatewayconfig import EntityConfig, Task
from tests.unit.gateway.helpers import call, chunks, entity, sse_event

KEY = Auth({"apiKey": "test-key-not-real"})
AWS = Auth({"awsAccessKeyId": "AKIDNOTREAL", "awsSecretAccessKey": "secret-not-real"})
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 8).decode()
DATA_URL = f"data:image/png;base64,{PNG}"
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "place", "schema": SCHEMA}}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def entity_for(provider: str, **extra: Any) -> EntityConfig:
    if provider == "amazon-bedrock":
        extra.setdefault("bedrock", {"region": "us-east-1"})
        extra.setdefault("credentials", {"awsAccessKeyId": "a/i", "awsSecretAccessKey": "a/s"})
    if provider == "google-cloud-vertex-ai":
        extra.setdefault("vertex", {"projectId": "p", "region": "us-central1"})
        extra.setdefault("credentials", {"privateKey": "g/k"})
        extra.setdefault("baseUrl", "https://vertex.example.com")
    return entity(provider, **extra)


def sent(provider: str, body: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The JSON body the provider would send for ``body``."""
    ent = entity_for(provider, **extra)
    auth = Auth({**AWS.secrets, **KEY.secrets}, token="t")
    req = REGISTRY[ent.provider].build_request(call(ent, body), auth)
    return dict(json.loads(req.body or b"{}"))


def refused(provider: str, body: dict[str, Any], **extra: Any) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        sent(provider, body, **extra)
    assert caught.value.status == 400
    return caught.value


def user(*parts: Any) -> list[dict[str, Any]]:
    content = [{"type": "text", "text": p} if isinstance(p, str) else p for p in parts]
    return [{"role": "user", "content": content}]


def image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url, "detail": "high"}}


# --- images -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "source", "media_type"),
    [
        (DATA_URL, "data", "image/png"),
        ("data:IMAGE/JPEG;base64,/9j/", "data", "image/jpeg"),
        ("https://img.example.com/a/cat.JPG?size=2", "https", "image/jpeg"),
        ("https://img.example.com/cat", "https", None),
        ("gs://bucket/cat.webp", "gs", "image/webp"),
        ("s3://bucket/cat.gif", "s3", "image/gif"),
    ],
)
def test_image_urls_are_classified(url: str, source: str, media_type: str | None) -> None:
    img = parse_image_url(url, "p")
    assert (img.source, img.media_type) == (source, media_type)


@pytest.mark.parametrize(
    "url",
    ["data:text/plain;base64,aGk=", "data:image/png,raw", "data:image/png;base64,", "ftp://x"],
)
def test_bad_image_urls_are_400s_naming_the_part(url: str) -> None:
    with pytest.raises(GatewayError) as caught:
        sent("anthropic", {"messages": user("look", image(url))})
    assert caught.value.param == "messages.0.content.1.image_url.url"


def test_image_signatures_and_public_addresses() -> None:
    assert sniff_format(base64.b64decode(PNG)) == "image/png"
    assert sniff_format(b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert sniff_format(b"GIF89a...") == "image/gif"
    assert sniff_format(b"RIFF\0\0\0\0WEBPVP8 ") == "image/webp"
    assert sniff_format(b"<html>") is None
    for address in ("8.8.8.8", "2606:4700::1111"):
        assert is_public_address(address), address
    for address in (
        "10.96.0.1",  # a Service ClusterIP
        "10.245.0.7",  # a Pod
        "127.0.0.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # shared address space
        "192.168.1.1",
        "::1",
        "fd00::1",
        "::ffff:10.0.0.1",  # IPv4-mapped private
        "224.0.0.1",
        "not an address",
    ):
        assert not is_public_address(address), address


def test_anthropic_images_inline_and_by_link() -> None:
    body = sent("anthropic", {"messages": user("what?", image(DATA_URL), image("https://x/y.png"))})
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "what?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
    ]
    err = refused("anthropic", {"messages": user(image("data:image/bmp;base64,Qk0="))})
    assert "image/gif, image/jpeg, image/png, image/webp" in err.message
    refused("anthropic", {"messages": user(image("gs://b/o.png"))})


def test_bedrock_images_as_bytes_fetched_or_inline_and_s3() -> None:
    ent = entity_for("amazon-bedrock")
    c = call(
        ent,
        {
            "messages": user(
                image(DATA_URL), image("https://x/cat"), image("s3://b/k.jpeg"), image("gs://b/k")
            )
        },
    )
    provider = REGISTRY[ent.provider]
    assert [i.url for i in provider.remote_images(c)] == ["https://x/cat"]
    c.fetched["https://x/cat"] = Fetched("image/gif", b"GIF89a-bytes")
    with pytest.raises(GatewayError) as caught:  # gs:// is Google's, not AWS's
        provider.build_request(c, AWS)
    assert caught.value.param == "messages.0.content.3.image_url.url"
    c = call(
        ent, {"messages": user(image(DATA_URL), image("https://x/cat"), image("s3://b/k.jpeg"))}
    )
    c.fetched["https://x/cat"] = Fetched("image/gif", b"GIF89a-bytes")
    content = json.loads(provider.build_request(c, AWS).body or b"")["messages"][0]["content"]
    assert content == [
        {"image": {"format": "png", "source": {"bytes": PNG}}},
        {
            "image": {
                "format": "gif",
                "source": {"bytes": base64.b64encode(b"GIF89a-bytes").decode()},
            }
        },
        {"image": {"format": "jpeg", "source": {"s3Location": {"uri": "s3://b/k.jpeg"}}}},
    ]


def test_vertex_images_inline_and_file_data() -> None:
    body = sent(
        "google-cloud-vertex-ai",
        {
            "messages": user(
                "see", image(DATA_URL), image("https://x/a.webp"), image("gs://b/c.png")
            )
        },
    )
    assert body["contents"][0]["parts"] == [
        {"text": "see"},
        {"inlineData": {"mimeType": "image/png", "data": PNG}},
        {"fileData": {"mimeType": "image/webp", "fileUri": "https://x/a.webp"}},
        {"fileData": {"mimeType": "image/png", "fileUri": "gs://b/c.png"}},
    ]
    err = refused("google-cloud-vertex-ai", {"messages": user(image("https://x/no-extension"))})
    assert "extension" in err.message


def test_cohere_images_in_a_content_list() -> None:
    body = sent("cohere", {"messages": user("see", image(DATA_URL))})
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "see"},
        {"type": "image_url", "image_url": {"url": DATA_URL}},
    ]
    assert sent("cohere", {"messages": user("plain")})["messages"][0]["content"] == "plain"


@pytest.mark.parametrize("provider", ["openai", "custom", "self-hosted"])
def test_openai_compatible_upstreams_get_images_unchanged(provider: str) -> None:
    messages = user("see", image("https://x/y.png"))
    body = sent(provider, {"messages": messages}, baseUrl="https://u.example.com/v1")
    assert body["messages"] == messages


def test_images_where_a_provider_cannot_take_them_are_400s() -> None:
    err = refused("ai21labs", {"messages": user("see", image(DATA_URL))})
    assert err.param == "messages.0.content" and "does not take images" in err.message
    system = [{"role": "system", "content": [image(DATA_URL)]}, *user("hi")]
    for provider in ("anthropic", "google-cloud-vertex-ai", "amazon-bedrock", "cohere"):
        assert "system message" in refused(provider, {"messages": system}).message


# --- JSON output --------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["anthropic", "amazon-bedrock"])
def test_json_output_through_a_forced_tool(provider: str) -> None:
    body = sent(provider, {"messages": user("where?"), "response_format": JSON_SCHEMA})
    if provider == "anthropic":
        (tool,) = body["tools"]
        assert (tool["name"], tool["input_schema"]) == ("place", SCHEMA)
        assert body["tool_choice"] == {"type": "tool", "name": "place"}
    else:
        (tool,) = body["toolConfig"]["tools"]
        assert (tool["toolSpec"]["name"], tool["toolSpec"]["inputSchema"]) == (
            "place",
            {"json": SCHEMA},
        )
        assert body["toolConfig"]["toolChoice"] == {"tool": {"name": "place"}}
    anything = sent(provider, {"messages": user("x"), "response_format": {"type": "json_object"}})
    assert "json_response" in json.dumps(anything)
    err = refused(
        provider, {"messages": user("x"), "response_format": JSON_SCHEMA, "tools": [TOOL]}
    )
    assert err.param == "response_format"
    array = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "array"}}}
    assert refused(provider, {"messages": user("x"), "response_format": array}).param == (
        "response_format.json_schema.schema"
    )


@pytest.mark.parametrize(
    ("provider", "reply"),
    [
        (
            "anthropic",
            {
                "content": [
                    {"type": "tool_use", "id": "t", "name": "place", "input": {"city": "Oslo"}}
                ],
                "stop_reason": "tool_use",
                "usage": {"input_tokens": 1, "output_tokens": 2},
            },
        ),
        (
            "amazon-bedrock",
            {
                "output": {
                    "message": {
                        "content": [
                            {
                                "toolUse": {
                                    "toolUseId": "t",
                                    "name": "place",
                                    "input": {"city": "Oslo"},
                                }
                            }
                        ]
                    }
                },
                "stopReason": "tool_use",
                "usage": {"inputTokens": 1, "outputTokens": 2},
            },
        ),
    ],
)
def test_forced_tool_answer_is_json_content(provider: str, reply: dict[str, Any]) -> None:
    ent = entity_for(provider)
    c = call(ent, {"messages": user("where?"), "response_format": JSON_SCHEMA})
    out = REGISTRY[ent.provider].parse_response(c, json.dumps(reply).encode(), {})
    assert isinstance(out, dict)
    message = out["choices"][0]["message"]
    assert json.loads(message["content"]) == {"city": "Oslo"} and "tool_calls" not in message
    assert out["choices"][0]["finish_reason"] == "stop"


def block_start(index: int, block: dict[str, Any]) -> tuple[str, bytes]:
    payload = {"type": "content_block_start", "index": index, "content_block": block}
    return sse_event("content_block_start", payload)


def block_delta(index: int, delta: dict[str, Any]) -> tuple[str, bytes]:
    payload = {"type": "content_block_delta", "index": index, "delta": delta}
    return sse_event("content_block_delta", payload)


MESSAGE_START = sse_event("message_start", {"type": "message_start", "message": {"usage": {}}})
MESSAGE_STOP = sse_event("message_stop", {"type": "message_stop"})


def message_end(stop: str) -> tuple[str, bytes]:
    return sse_event("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop}})


def test_forced_tool_streams_as_content() -> None:
    ent = entity_for("anthropic")
    translator = REGISTRY[ent.provider].stream_translator(
        call(ent, {"messages": user("x"), "response_format": JSON_SCHEMA, "stream": True})
    )
    events = [
        MESSAGE_START,
        block_start(0, {"type": "tool_use", "id": "t", "name": "place", "input": {}}),
        *[
            block_delta(0, {"type": "input_json_delta", "partial_json": piece})
            for piece in ('{"city"', ': "Oslo"}')
        ],
        message_end("tool_use"),
        MESSAGE_STOP,
    ]
    out = chunks([p for e in events for p in translator.feed(e)] + translator.finish())
    deltas = [c["choices"][0]["delta"] for c in out]
    assert "".join(d.get("content") or "" for d in deltas) == '{"city": "Oslo"}'
    assert not any("tool_calls" in d for d in deltas)
    assert out[-1]["choices"][0]["finish_reason"] == "stop"


def test_json_output_native_modes() -> None:
    vertex = sent("google-cloud-vertex-ai", {"messages": user("x"), "response_format": JSON_SCHEMA})
    assert vertex["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseJsonSchema": SCHEMA,
    }
    cohere = sent("cohere", {"messages": user("x"), "response_format": JSON_SCHEMA})
    assert cohere["response_format"] == {"type": "json_object", "json_schema": SCHEMA}
    plain = sent("cohere", {"messages": user("x"), "response_format": {"type": "json_object"}})
    assert plain["response_format"] == {"type": "json_object"}
    ai21 = sent("ai21labs", {"messages": user("x"), "response_format": {"type": "json_object"}})
    assert ai21["response_format"] == {"type": "json_object"}
    assert refused("ai21labs", {"messages": user("x"), "response_format": JSON_SCHEMA}).param == (
        "response_format"
    )
    for provider in ("anthropic", "cohere", "google-cloud-vertex-ai", "amazon-bedrock"):
        bad = {"messages": user("x"), "response_format": {"type": "yaml"}}
        assert refused(provider, bad).param == "response_format.type"
        no_schema = {"messages": user("x"), "response_format": {"type": "json_schema"}}
        assert refused(provider, no_schema).param == "response_format.json_schema.schema"


# --- reasoning -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_extra", "thinking", "max_tokens"),
    [
        ({"reasoning_effort": "low"}, {"type": "enabled", "budget_tokens": 2048}, 2048 + 4096),
        (
            {"reasoning_effort": "high", "max_completion_tokens": 6000},
            {"type": "enabled", "budget_tokens": 3000},
            6000,
        ),
        ({"reasoning_effort": "none"}, None, 4096),
        ({}, None, 4096),
    ],
)
def test_anthropic_thinking_budget(
    request_extra: dict[str, Any], thinking: dict[str, Any] | None, max_tokens: int
) -> None:
    body = sent("anthropic", {"messages": user("x"), **request_extra})
    assert body.get("thinking") == thinking and body["max_tokens"] == max_tokens


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"max_completion_tokens": 1000}, "max_completion_tokens"),
        ({"temperature": 0.2}, "temperature"),
        ({"top_k": 5}, "top_k"),
        ({"response_format": JSON_SCHEMA}, "response_format"),
        ({"tools": [TOOL], "tool_choice": "required"}, "tool_choice"),
    ],
)
@pytest.mark.parametrize("provider", ["anthropic", "amazon-bedrock"])
def test_claude_thinking_conflicts_are_400s(
    provider: str, extra: dict[str, Any], param: str
) -> None:
    body = {"messages": user("x"), "reasoning_effort": "medium", **extra}
    assert refused(provider, body).param == param


def test_reasoning_effort_for_the_other_providers() -> None:
    bedrock = sent("amazon-bedrock", {"messages": user("x"), "reasoning_effort": "minimal"})
    assert bedrock["additionalModelRequestFields"] == {
        "thinking": {"type": "enabled", "budget_tokens": 1024}
    }
    assert bedrock["inferenceConfig"] == {"maxTokens": 1024 + 4096}
    llama = {"region": "us-east-1", "bedrockProvider": "meta"}
    body = {"messages": user("x"), "reasoning_effort": "low"}
    assert refused("amazon-bedrock", body, bedrock=llama).param == "reasoning_effort"
    none = {"messages": user("x"), "reasoning_effort": "none"}
    assert "additionalModelRequestFields" not in sent("amazon-bedrock", none, bedrock=llama)
    vertex = sent("google-cloud-vertex-ai", {"messages": user("x"), "reasoning_effort": "medium"})
    assert vertex["generationConfig"]["thinkingConfig"] == {
        "thinkingBudget": 8192,
        "includeThoughts": True,
    }
    off = sent("google-cloud-vertex-ai", {"messages": user("x"), "reasoning_effort": "none"})
    assert off["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 0}
    cohere = sent("cohere", {"messages": user("x"), "reasoning_effort": "high"})
    assert cohere["thinking"] == {"type": "enabled", "token_budget": 16384}
    assert sent("cohere", {"messages": user("x"), "reasoning_effort": "none"})["thinking"] == {
        "type": "disabled"
    }
    assert refused("ai21labs", {"messages": user("x"), "reasoning_effort": "low"}).param == (
        "reasoning_effort"
    )
    for provider in ("anthropic", "cohere", "google-cloud-vertex-ai"):
        assert refused(provider, {"messages": user("x"), "reasoning_effort": "max"}).param == (
            "reasoning_effort"
        )
    openai = sent("openai", {"messages": user("x"), "reasoning_effort": "high", "seed": 3})
    assert (openai["reasoning_effort"], openai["seed"]) == ("high", 3)


@pytest.mark.parametrize(
    ("provider", "reply"),
    [
        (
            "anthropic",
            {
                "content": [
                    {"type": "thinking", "thinking": "Hmm.", "signature": "sig"},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "text", "text": "42"},
                ],
                "stop_reason": "end_turn",
                "usage": {},
            },
        ),
        (
            "amazon-bedrock",
            {
                "output": {
                    "message": {
                        "content": [
                            {
                                "reasoningContent": {
                                    "reasoningText": {"text": "Hmm.", "signature": "s"}
                                }
                            },
                            {"text": "42"},
                        ]
                    }
                },
                "stopReason": "end_turn",
                "usage": {},
            },
        ),
        (
            "google-cloud-vertex-ai",
            {
                "candidates": [
                    {
                        "content": {"parts": [{"text": "Hmm.", "thought": True}, {"text": "42"}]},
                        "finishReason": "STOP",
                    }
                ]
            },
        ),
        (
            "cohere",
            {
                "message": {
                    "content": [
                        {"type": "thinking", "thinking": "Hmm."},
                        {"type": "text", "text": "42"},
                    ]
                },
                "finish_reason": "COMPLETE",
            },
        ),
    ],
)
def test_reasoning_text_comes_back_as_reasoning_content(
    provider: str, reply: dict[str, Any]
) -> None:
    ent = entity_for(provider)
    c = call(ent, {"messages": user("x"), "reasoning_effort": "low"})
    out = REGISTRY[ent.provider].parse_response(c, json.dumps(reply).encode(), {})
    assert isinstance(out, dict)
    message = out["choices"][0]["message"]
    assert (message["content"], message["reasoning_content"]) == ("42", "Hmm.")


def test_reasoning_streams_as_reasoning_content() -> None:
    ent = entity_for("anthropic")
    translator = REGISTRY[ent.provider].stream_translator(
        call(ent, {"messages": user("x"), "stream": True, "reasoning_effort": "low"})
    )
    events = [
        MESSAGE_START,
        block_start(0, {"type": "thinking", "thinking": ""}),
        block_delta(0, {"type": "thinking_delta", "thinking": "Hmm."}),
        block_delta(0, {"type": "signature_delta", "signature": "s"}),
        block_delta(1, {"type": "text_delta", "text": "42"}),
        message_end("end_turn"),
        MESSAGE_STOP,
    ]
    deltas = [
        c["choices"][0]["delta"]
        for c in chunks([p for e in events for p in translator.feed(e)] + translator.finish())
    ]
    assert {"reasoning_content": "Hmm."} in deltas and {"content": "42"} in deltas
    assert not any("signature" in json.dumps(d) for d in deltas)


# --- newer parameters and documented fields only --------------------------------------


def test_parallel_tool_calls_mapped_or_refused() -> None:
    body = {"messages": user("x"), "tools": [TOOL], "parallel_tool_calls": False}
    assert sent("anthropic", body)["tool_choice"] == {
        "type": "auto",
        "disable_parallel_tool_use": True,
    }
    for provider in ("amazon-bedrock", "google-cloud-vertex-ai", "cohere", "ai21labs"):
        assert refused(provider, body).param == "parallel_tool_calls"
        assert sent(provider, {**body, "parallel_tool_calls": True})


def test_choices_and_tool_choices_a_provider_cannot_honour_are_refused() -> None:
    # Vertex would generate n candidates and the gateway return one; Converse cannot
    # forbid tools in a conversation that already used them.
    assert refused("google-cloud-vertex-ai", {"messages": user("x"), "n": 2}).param == "n"
    turns = [
        *user("go"),
        {
            "role": "assistant",
            "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f"}}],
        },
        {"role": "tool", "tool_call_id": "t", "content": "done"},
    ]
    none = {"tools": [TOOL], "tool_choice": "none"}
    assert refused("amazon-bedrock", {"messages": turns, **none}).param == "tool_choice"
    assert "toolConfig" not in sent("amazon-bedrock", {"messages": user("x"), **none})


def test_ai21_gets_only_its_documented_fields() -> None:
    body = sent(
        "ai21labs",
        {
            "model": "ep",
            "messages": [
                {"role": "developer", "content": "be brief", "name": "ops"},
                {"role": "user", "content": "hi"},
            ],
            "stream": True,
            "stream_options": {"include_usage": True},
            "tools": [TOOL],
            "tool_choice": "auto",
            "parallel_tool_calls": True,
            "max_completion_tokens": 99,
            "temperature": 0.3,
            "top_p": 0.9,
            "stop": ["END"],
            "n": 2,
            "user": "u-1",
            "metadata": {"k": "v"},
            "store": False,
        },
    )
    assert set(body) == {
        "model",
        "messages",
        "tools",
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "n",
        "stream",
    }
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert body["max_tokens"] == 99
    for extra, param in [
        ({"seed": 1}, "seed"),
        ({"tool_choice": "required", "tools": [TOOL]}, "tool_choice"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"logprobs": True}, "logprobs"),
    ]:
        assert refused("ai21labs", {"messages": user("x"), **extra}).param == param


# --- streams that end early -----------------------------------------------------------------


STREAM_OPENINGS: list[tuple[str, dict[str, Any], list[tuple[str, bytes]]]] = [
    ("anthropic", {}, [sse_event("message_start", {"type": "message_start", "message": {}})]),
    ("cohere", {}, [sse_event("message-start", {"type": "message-start"})]),
    ("amazon-bedrock", {}, [("messageStart", b'{"role": "assistant"}')]),
    (
        "google-cloud-vertex-ai",
        {},
        [("", json.dumps({"candidates": [{"content": {"parts": [{"text": "Hal"}]}}]}).encode())],
    ),
    *[
        (
            provider,
            {"baseUrl": "https://u.example.com/v1"},
            [
                (
                    "",
                    json.dumps(
                        {
                            "choices": [
                                {"index": 0, "delta": {"content": "Hal"}, "finish_reason": None}
                            ]
                        }
                    ).encode(),
                )
            ],
        )
        for provider in ("openai", "ai21labs", "databricks-model-serving", "custom", "self-hosted")
    ],
]


@pytest.mark.parametrize(("provider", "extra", "events"), STREAM_OPENINGS)
def test_a_stream_ended_before_its_final_event_is_an_error(
    provider: str, extra: dict[str, Any], events: list[tuple[str, bytes]]
) -> None:
    ent = entity_for(provider, **extra)
    translator = REGISTRY[ent.provider].stream_translator(
        call(ent, {"messages": user("x"), "stream": True})
    )
    for event in events:
        translator.feed(event)
    with pytest.raises(GatewayError) as caught:
        translator.finish()
    assert caught.value.status == 502 and "before finishing" in caught.value.message


def test_pass_through_checks_every_event() -> None:
    ent = entity_for("openai")

    def translator(**body: Any) -> Any:
        return REGISTRY[ent.provider].stream_translator(
            call(ent, {"messages": user("x"), "stream": True, **body})
        )

    def choice(index: int, finish: str | None) -> tuple[str, bytes]:
        delta = {"index": index, "delta": {"content": "a"}, "finish_reason": finish}
        return "", json.dumps({"choices": [delta]}).encode()

    two = translator(n=2)
    for event in (choice(0, None), choice(1, None), choice(0, "stop")):
        two.feed(event)
    with pytest.raises(GatewayError):  # choice 1 never finished
        two.finish()
    two.feed(choice(1, "length"))
    assert two.finish() == []

    for bad, words in [
        (b"<html>502 Bad Gateway</html>", "not JSON"),
        (b'["a list"]', "not JSON"),
        (b'{"error": {"message": "overloaded"}}', "overloaded"),
    ]:
        with pytest.raises(GatewayError) as caught:
            translator().feed(("", bad))
        assert caught.value.status == 502 and words in caught.value.message
    usage_only = b'{"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}'
    hidden = translator()
    assert hidden.feed(("", usage_only)) == []
    assert hidden.usage is not None and hidden.usage.completion_tokens == 4


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"[1, 2]", b""])
def test_pass_through_relays_only_json_objects(body: bytes) -> None:
    ent = entity_for("openai")
    provider = REGISTRY[ent.provider]
    with pytest.raises(GatewayError) as caught:
        provider.parse_response(call(ent, {"messages": user("x")}), body, {})
    assert caught.value.status == 502
    good = b'{"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}'
    relayed = provider.parse_response(call(ent, {"messages": user("x")}), good, {})
    assert isinstance(relayed, Relayed) and relayed.body is good
    assert relayed.usage is not None and relayed.usage.completion_tokens == 2


def test_vertex_stream_with_its_finish_reason_ends_cleanly() -> None:
    ent = entity_for("google-cloud-vertex-ai")
    translator = REGISTRY[ent.provider].stream_translator(
        call(ent, {"messages": user("x"), "stream": True}, include_usage=True)
    )
    last = {
        "candidates": [{"content": {"parts": [{"text": "!"}]}, "finishReason": "MAX_TOKENS"}],
        "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 3},
    }
    translator.feed(("", json.dumps(last).encode()))
    out = chunks(translator.finish())
    assert out[0]["choices"][0]["finish_reason"] == "length"
    assert out[1]["usage"]["total_tokens"] == 5


# --- upstream errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "relayed"),
    [
        ("7", "7"),
        (" 120 ", "120"),
        ("Wed, 21 Oct 2026 07:28:00 GMT", "Wed, 21 Oct 2026 07:28:00 GMT"),
        ("soon", None),
        ("-1", None),
        ("1\r\nSet-Cookie: x", None),
        (None, None),
    ],
)
def test_retry_after_is_relayed_when_valid(value: str | None, relayed: str | None) -> None:
    assert valid_retry_after(value) == relayed
    error = from_upstream_status(429, "openai", "e1", "slow down", retry_after=value)
    assert error.status == 429
    assert dict(error.headers).get(b"retry-after") == (relayed.encode() if relayed else None)


def test_bedrock_without_keys_is_a_valid_entity_signed_by_the_pod_identity() -> None:
    ent = entity_for("amazon-bedrock", credentials={}, bedrock={"region": "eu-west-1"})
    assert REGISTRY[ent.provider].aws_identity_region(ent) == "eu-west-1"
    assert REGISTRY[ent.provider].aws_identity_region(entity_for("amazon-bedrock")) is None
    with pytest.raises(ValueError, match="go together"):
        entity_for("amazon-bedrock", credentials={"awsAccessKeyId": "a/i"})
    assert Task.CHAT in REGISTRY[ent.provider].tasks
