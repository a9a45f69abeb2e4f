"""Loopback fakes of the translating providers that answer images, JSON output and
reasoning in each provider's documented shape, and a gateway in front of any provider.

Each fake checks the documented request shape of the feature (image blocks and their
sources, the forced tool or JSON mode, the thinking settings) and answers accordingly:
``saw N images`` for a plain question, :data:`ANSWER` for JSON output, and
:data:`THOUGHT` as the reasoning when reasoning was asked for.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from modelport.gateway.fetch import FetchPolicy, ImageFetcher
from tests.integration.gateway.fakes import (
    FakeProvider,
    Reply,
    RunningGateway,
    Seen,
    bedrock_event,
    endpoint,
    json_reply,
    sse,
)
from tests.integration.gateway.openai_fake import JSON_ANSWER, check_ai21, serve_openai
from tests.integration.gateway.test_anthropic import check_messages_request, message
from tests.integration.gateway.test_bedrock import (
    AKID,
    MODEL,
    MODEL_PATH,
    REGION,
    SECRET,
    converse_check,
)
from tests.integration.gateway.test_openai_compatible import KEY

PNG = b"\x89PNG\r\n\x1a\n" + bytes(24)
PNG_B64 = base64.b64encode(PNG).decode()
DATA_URL = f"data:image/png;base64,{PNG_B64}"
LINK = "https://images.example.com/cat.png"
ANSWER = json.loads(JSON_ANSWER)
THOUGHT = "The capital of France is Paris."
VERTEX_PATH = "/v1/projects/test-project/locations/us-central1/publishers/google/models/gemini-test"
TRANSLATED = ["anthropic", "amazon-bedrock", "google-cloud-vertex-ai", "cohere"]


# --- the providers' fakes -----------------------------------------------------------------


def serve_anthropic(fake: FakeProvider) -> None:
    @fake.route("POST", "/v1/messages")
    def messages(seen: Seen) -> Reply:
        body = check_messages_request(seen)
        images = 0
        for turn in body["messages"]:
            for block in turn["content"]:
                if block["type"] != "image":
                    continue
                source = block["source"]
                if source["type"] == "base64":
                    assert source["media_type"] in (
                        "image/jpeg",
                        "image/png",
                        "image/gif",
                        "image/webp",
                    )
                    assert base64.b64decode(source["data"]) == PNG
                else:
                    assert source == {"type": "url", "url": LINK}, source
                images += 1
        content: list[dict[str, Any]]
        choice = body.get("tool_choice") or {}
        if choice.get("type") == "tool":
            (tool,) = body["tools"]
            assert tool["name"] == choice["name"] and tool["input_schema"]["type"] == "object"
            content = [{"type": "tool_use", "id": "toolu_j", "name": tool["name"], "input": ANSWER}]
            stop = "tool_use"
        else:
            content, stop = [{"type": "text", "text": f"saw {images} images"}], "end_turn"
        thinking = body.get("thinking")
        if thinking:
            assert thinking["type"] == "enabled"
            assert 1024 <= thinking["budget_tokens"] < body["max_tokens"]
            assert "temperature" not in body and "top_k" not in body
            content.insert(0, {"type": "thinking", "thinking": THOUGHT, "signature": "sig-x"})
        if body.get("stream"):
            return sse(anthropic_events(content, stop))
        return json_reply(message(content, stop))


def anthropic_events(content: list[dict[str, Any]], stop: str) -> list[tuple[str, Any]]:
    start = {"type": "message_start", "message": {**message([], stop), "stop_reason": None}}
    events: list[tuple[str, Any]] = [("message_start", start)]
    for index, block in enumerate(content):
        kind = block["type"]
        empty = {**block, "input": {}} if kind == "tool_use" else {**block, kind: ""}
        if kind == "thinking":
            empty["signature"] = ""
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": empty},
            )
        )
        if kind == "text":
            deltas = [{"type": "text_delta", "text": block["text"]}]
        elif kind == "thinking":
            deltas = [
                {"type": "thinking_delta", "thinking": block["thinking"]},
                {"type": "signature_delta", "signature": block["signature"]},
            ]
        else:
            text = json.dumps(block["input"])
            deltas = [
                {"type": "input_json_delta", "partial_json": text[:9]},
                {"type": "input_json_delta", "partial_json": text[9:]},
            ]
        for delta in deltas:
            events.append(
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop},
                "usage": {"output_tokens": 9},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


BEDROCK_SIGNATURES = {"png": b"\x89PNG", "jpeg": b"\xff\xd8\xff", "gif": b"GIF8", "webp": b"RIFF"}


def serve_bedrock(fake: FakeProvider) -> None:
    def answer(seen: Seen) -> tuple[list[dict[str, Any]], str]:
        body = converse_check(seen, fake.url)
        images = 0
        for turn in body["messages"]:
            for block in turn["content"]:
                if "image" in block:
                    image = block["image"]
                    data = base64.b64decode(image["source"]["bytes"])
                    assert data.startswith(BEDROCK_SIGNATURES[image["format"]]), image["format"]
                    images += 1
        config = body.get("toolConfig") or {}
        forced = (config.get("toolChoice") or {}).get("tool")
        content: list[dict[str, Any]]
        if forced:
            (tool,) = config["tools"]
            spec = tool["toolSpec"]
            assert (
                spec["name"] == forced["name"] and spec["inputSchema"]["json"]["type"] == "object"
            )
            content = [
                {"toolUse": {"toolUseId": "tooluse_j", "name": spec["name"], "input": ANSWER}}
            ]
            stop = "tool_use"
        else:
            content, stop = [{"text": f"saw {images} images"}], "end_turn"
        thinking = (body.get("additionalModelRequestFields") or {}).get("thinking")
        if thinking:
            assert thinking["type"] == "enabled"
            assert 1024 <= thinking["budget_tokens"] < body["inferenceConfig"]["maxTokens"]
            reasoning = {"reasoningText": {"text": THOUGHT, "signature": "sig-x"}}
            content.insert(0, {"reasoningContent": reasoning})
        return content, stop

    @fake.route("POST", MODEL_PATH + "/converse")
    def converse(seen: Seen) -> Reply:
        content, stop = answer(seen)
        return json_reply(
            {
                "output": {"message": {"role": "assistant", "content": content}},
                "stopReason": stop,
                "usage": {"inputTokens": 5, "outputTokens": 6, "totalTokens": 11},
            }
        )

    @fake.route("POST", MODEL_PATH + "/converse-stream")
    def converse_stream(seen: Seen) -> Reply:
        content, stop = answer(seen)
        frames = [bedrock_event("messageStart", {"role": "assistant"})]
        for index, block in enumerate(content):
            deltas: list[dict[str, Any]]
            if "text" in block:
                deltas = [{"text": block["text"]}]
            elif "reasoningContent" in block:
                deltas = [
                    {"reasoningContent": {"text": THOUGHT}},
                    {"reasoningContent": {"signature": "s"}},
                ]
            else:
                use = block["toolUse"]
                start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
                frames.append(
                    bedrock_event("contentBlockStart", {"contentBlockIndex": index, "start": start})
                )
                text = json.dumps(use["input"])
                deltas = [{"toolUse": {"input": text[:7]}}, {"toolUse": {"input": text[7:]}}]
            for delta in deltas:
                frames.append(
                    bedrock_event("contentBlockDelta", {"contentBlockIndex": index, "delta": delta})
                )
            frames.append(bedrock_event("contentBlockStop", {"contentBlockIndex": index}))
        frames.append(bedrock_event("messageStop", {"stopReason": stop}))
        usage = {"inputTokens": 5, "outputTokens": 6, "totalTokens": 11}
        frames.append(bedrock_event("metadata", {"usage": usage, "metrics": {"latencyMs": 1}}))
        return Reply(chunks=frames, content_type="application/vnd.amazon.eventstream")

    @fake.route("GET", "/cat.png")
    def cat(seen: Seen) -> Reply:
        return Reply(body=PNG, content_type="image/png")


def serve_vertex(fake: FakeProvider) -> None:
    @fake.route("POST", "/token")
    def token(seen: Seen) -> Reply:
        assert seen.form()["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        return json_reply({"access_token": "ya29.not-real", "expires_in": 3599})

    def answer(seen: Seen) -> list[dict[str, Any]]:
        assert seen.headers.get("authorization") == "Bearer ya29.not-real"
        body = seen.json()
        images = 0
        for turn in body["contents"]:
            for part in turn["parts"]:
                if "inlineData" in part:
                    assert part["inlineData"]["mimeType"] == "image/png"
                    assert base64.b64decode(part["inlineData"]["data"]) == PNG
                    images += 1
                elif "fileData" in part:
                    assert part["fileData"] == {"mimeType": "image/png", "fileUri": LINK}
                    images += 1
        config = body.get("generationConfig") or {}
        parts: list[dict[str, Any]] = []
        thinking = config.get("thinkingConfig")
        if thinking:
            assert thinking["thinkingBudget"] > 0 and thinking["includeThoughts"] is True
            parts.append({"text": THOUGHT, "thought": True})
        if config.get("responseMimeType") == "application/json":
            schema = config.get("responseJsonSchema")
            assert schema is None or schema["type"] == "object"
            parts.append({"text": JSON_ANSWER})
        else:
            assert "responseJsonSchema" not in config
            parts.append({"text": f"saw {images} images"})
        return parts

    usage = {"promptTokenCount": 8, "candidatesTokenCount": 4, "totalTokenCount": 12}

    @fake.route("POST", VERTEX_PATH + ":generateContent")
    def generate(seen: Seen) -> Reply:
        candidate = {"content": {"role": "model", "parts": answer(seen)}, "finishReason": "STOP"}
        return json_reply({"candidates": [candidate], "usageMetadata": usage})

    @fake.route("POST", VERTEX_PATH + ":streamGenerateContent")
    def stream(seen: Seen) -> Reply:
        assert seen.query.get("alt") == ["sse"]
        parts = answer(seen)
        events: list[tuple[str | None, Any]] = [
            (None, {"candidates": [{"content": {"role": "model", "parts": [p]}}]}) for p in parts
        ]
        last = {"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP"}
        events.append((None, {"candidates": [last], "usageMetadata": usage}))
        return sse(events)


def serve_cohere(fake: FakeProvider) -> None:
    def answer(seen: Seen) -> list[dict[str, Any]]:
        assert seen.headers.get("authorization") == f"Bearer {KEY}"
        body = seen.json()
        images = 0
        for m in body["messages"]:
            if isinstance(m.get("content"), list):
                assert m["role"] == "user"
                for block in m["content"]:
                    assert block["type"] in ("text", "image_url")
                    if block["type"] == "image_url":
                        assert block["image_url"]["url"] in (DATA_URL, LINK)
                        images += 1
        content: list[dict[str, Any]] = []
        thinking = body.get("thinking")
        if thinking:
            assert thinking["type"] == "enabled" and thinking["token_budget"] > 0
            content.append({"type": "thinking", "thinking": THOUGHT})
        fmt = body.get("response_format")
        if fmt:
            assert fmt["type"] == "json_object"
            assert "json_schema" not in fmt or fmt["json_schema"]["type"] == "object"
            content.append({"type": "text", "text": JSON_ANSWER})
        else:
            content.append({"type": "text", "text": f"saw {images} images"})
        return content

    usage = {"tokens": {"input_tokens": 7, "output_tokens": 3}}

    @fake.route("POST", "/v2/chat")
    def chat(seen: Seen) -> Reply:
        content = answer(seen)
        if not seen.json().get("stream"):
            return json_reply(
                {
                    "id": "r",
                    "finish_reason": "COMPLETE",
                    "message": {"role": "assistant", "content": content},
                    "usage": usage,
                }
            )
        events: list[tuple[str | None, Any]] = [
            ("message-start", {"type": "message-start", "id": "r", "delta": {"message": {}}})
        ]
        for index, block in enumerate(content):
            kind = block["type"]
            events.append(
                (
                    "content-delta",
                    {
                        "type": "content-delta",
                        "index": index,
                        "delta": {"message": {"content": {kind: block[kind]}}},
                    },
                )
            )
        end = {"type": "message-end", "delta": {"finish_reason": "COMPLETE", "usage": usage}}
        events.append(("message-end", end))
        return sse(events)


def start_gateway(
    name: str, fake: FakeProvider, gateway: Callable[..., RunningGateway], key: dict[str, str]
) -> RunningGateway:
    """A gateway for one entity of provider ``name``, its fake registered on ``fake``."""
    entity: dict[str, Any] = {
        "name": "e1",
        "task": "llm/v1/chat",
        "provider": name,
        "modelName": "up-model",
        "baseUrl": fake.url,
        "credentials": {"apiKey": "k/key"},
    }
    secrets = {"k/key": KEY}
    if name == "anthropic":
        serve_anthropic(fake)
        entity["modelName"] = "claude-test"
    elif name == "amazon-bedrock":
        serve_bedrock(fake)
        entity["modelName"] = MODEL
        entity["bedrock"] = {"region": REGION, "bedrockProvider": "anthropic"}
        entity["credentials"] = {"awsAccessKeyId": "aws/id", "awsSecretAccessKey": "aws/secret"}
        secrets = {"aws/id": AKID, "aws/secret": SECRET}
    elif name == "google-cloud-vertex-ai":
        serve_vertex(fake)
        entity["modelName"] = "gemini-test"
        entity["vertex"] = {
            "projectId": "test-project",
            "region": "us-central1",
            "tokenUrl": fake.url + "/token",
        }
        entity["credentials"] = {"privateKey": "gcp/key.json"}
        secrets = {"gcp/key.json": json.dumps(key)}
    elif name == "cohere":
        serve_cohere(fake)
        entity["modelName"] = "command-test"
    else:  # OpenAI-compatible: the body goes up as the client sent it
        entity["baseUrl"] = fake.url + "/v1"
        check = check_ai21 if name == "ai21labs" else (lambda seen: None)
        serve_openai(fake, "/v1", check, model="up-model", usage_on_last_chunk=name == "ai21labs")
    gw = gateway(endpoint(entity), secrets)
    # Bedrock fetches links itself; the fake serving the image is on loopback over http.
    gw.app.upstream.images = ImageFetcher(FetchPolicy(https_only=False, public_only=False))
    return gw
