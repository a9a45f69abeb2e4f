"""Vertex AI Gemini behind the gateway: a service-account key exchanged for a token at a
loopback token endpoint (the assertion's signature is verified), generateContent,
streamGenerateContent?alt=sse and text-embedding predict."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from google.auth import jwt

from tests.integration.gateway.fakes import (
    FakeProvider,
    Reply,
    RunningGateway,
    Seen,
    endpoint,
    json_reply,
    sse,
)
from tests.integration.gateway.test_openai_compatible import TOOLS, client

TOKEN = "ya29.test-token-not-real"
MODEL_PATH = "/v1/projects/test-project/locations/us-central1/publishers/google/models/gemini-test"
USAGE = {"promptTokenCount": 8, "candidatesTokenCount": 4, "totalTokenCount": 12}


@pytest.fixture
def vertex(
    provider: FakeProvider,
    gateway: Callable[..., RunningGateway],
    service_account_key: tuple[dict[str, str], bytes],
) -> RunningGateway:
    info, public = service_account_key
    token_url = provider.url + "/token"
    provider.token_requests = 0  # type: ignore[attr-defined]

    @provider.route("POST", "/token")
    def token(seen: Seen) -> Reply:
        form = seen.form()
        assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        claims = jwt.decode(form["assertion"], certs=public, audience=token_url)
        assert claims["iss"] == info["client_email"]
        assert claims["scope"] == "https://www.googleapis.com/auth/cloud-platform"
        provider.token_requests += 1  # type: ignore[attr-defined]
        return json_reply({"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"})

    def check(seen: Seen) -> dict[str, Any]:
        assert seen.headers.get("authorization") == f"Bearer {TOKEN}"
        return dict(seen.json())

    def candidate(parts: list[dict[str, Any]], reason: str | None) -> dict[str, Any]:
        c: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if reason:
            c["finishReason"] = reason
        return c

    @provider.route("POST", MODEL_PATH + ":generateContent")
    def generate(seen: Seen) -> Reply:
        body = check(seen)
        assert body["contents"][0]["role"] == "user"
        if body.get("tools"):
            parts = [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]
        else:
            parts = [{"text": "Ciao"}]
        return json_reply(
            {
                "candidates": [candidate(parts, "STOP")],
                "usageMetadata": USAGE,
                "modelVersion": "gemini-test",
            }
        )

    @provider.route("POST", MODEL_PATH + ":streamGenerateContent")
    def stream(seen: Seen) -> Reply:
        body = check(seen)
        assert seen.query.get("alt") == ["sse"], "streaming needs alt=sse"
        events: list[tuple[str | None, Any]] = [
            (None, {"candidates": [candidate([{"text": "Ci"}], None)]}),
            (None, {"candidates": [candidate([{"text": "ao"}], None)]}),
        ]
        if body.get("tools"):
            events.append(
                (
                    None,
                    {
                        "candidates": [
                            candidate(
                                [
                                    {
                                        "functionCall": {
                                            "name": "get_weather",
                                            "args": {"city": "Paris"},
                                        }
                                    }
                                ],
                                None,
                            )
                        ]
                    },
                )
            )
        events.append(
            (None, {"candidates": [candidate([{"text": ""}], "STOP")], "usageMetadata": USAGE})
        )
        return sse(events)

    @provider.route("POST", MODEL_PATH.replace("gemini-test", "text-embedding-005") + ":predict")
    def predict(seen: Seen) -> Reply:
        body = check(seen)
        return json_reply(
            {
                "predictions": [
                    {
                        "embeddings": {
                            "values": [0.5, float(i)],
                            "statistics": {"token_count": 3, "truncated": False},
                        }
                    }
                    for i, _ in enumerate(body["instances"])
                ]
            }
        )

    key = dict(info, token_uri=token_url)
    return gateway(
        endpoint(
            {
                "name": "gem",
                "task": "llm/v1/chat",
                "provider": "google-cloud-vertex-ai",
                "modelName": "gemini-test",
                "baseUrl": provider.url,
                "vertex": {"projectId": "test-project", "region": "us-central1"},
                "credentials": {"privateKey": "gcp/key.json"},
            }
        ),
        {"gcp/key.json": json.dumps(key)},
    )


def test_generate_content_with_token_exchange(
    vertex: RunningGateway, provider: FakeProvider
) -> None:
    c = client(vertex)
    for _ in range(3):
        reply = c.chat.completions.create(
            model="ep",
            temperature=0.2,
            max_tokens=64,
            messages=[
                {"role": "system", "content": "Be Italian."},
                {"role": "user", "content": "hi"},
            ],
        )
        assert reply.choices[0].message.content == "Ciao"
    assert provider.token_requests == 1, "the access token must be cached"  # type: ignore[attr-defined]
    assert reply.usage is not None and reply.usage.total_tokens == 12
    sent = provider.last(MODEL_PATH + ":generateContent").json()
    assert sent["systemInstruction"] == {"parts": [{"text": "Be Italian."}]}
    assert sent["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]
    assert sent["generationConfig"] == {"temperature": 0.2, "maxOutputTokens": 64}


def test_stream_generate_content_sse(vertex: RunningGateway) -> None:
    chunks = list(
        client(vertex).chat.completions.create(
            model="ep",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Ciao"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 8


def test_function_calls(vertex: RunningGateway, provider: FakeProvider) -> None:
    reply = client(vertex).chat.completions.create(
        model="ep",
        messages=[{"role": "user", "content": "weather?"}],
        tools=TOOLS,
        tool_choice="required",
    )
    call = reply.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    sent = provider.last(MODEL_PATH + ":generateContent").json()
    assert sent["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    # The tool result refers back to the call by name, as Gemini needs.
    client(vertex).chat.completions.create(
        model="ep",
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
    )
    contents = provider.last(MODEL_PATH + ":generateContent").json()["contents"]
    assert contents[1] == {
        "role": "model",
        "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}],
    }
    assert contents[2] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"content": "sunny"}}}],
    }

    streamed = list(
        client(vertex).chat.completions.create(
            model="ep", messages=[{"role": "user", "content": "weather?"}], tools=TOOLS, stream=True
        )
    )
    calls = [tc for c in streamed if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls and calls[0].function and calls[0].function.name == "get_weather"
    assert streamed[-1].choices[0].finish_reason == "tool_calls"


def test_text_embeddings(
    provider: FakeProvider,
    gateway: Callable[..., RunningGateway],
    vertex: RunningGateway,
    service_account_key: tuple[dict[str, str], bytes],
) -> None:
    info, _ = service_account_key
    gw = gateway(
        endpoint(
            {
                "name": "emb",
                "task": "llm/v1/embeddings",
                "provider": "google-cloud-vertex-ai",
                "modelName": "text-embedding-005",
                "baseUrl": provider.url,
                "vertex": {
                    "projectId": "test-project",
                    "region": "us-central1",
                    "tokenUrl": provider.url + "/token",
                },
                "credentials": {"privateKey": "gcp/key.json"},
            }
        ),
        {"gcp/key.json": json.dumps(info)},
    )
    out = client(gw).embeddings.create(model="ep", input=["a", "b"])
    assert [d.embedding for d in out.data] == [[0.5, 0.0], [0.5, 1.0]]
    assert out.usage.prompt_tokens == 6
    sent = provider.last(
        MODEL_PATH.replace("gemini-test", "text-embedding-005") + ":predict"
    ).json()
    assert sent == {"instances": [{"content": "a"}, {"content": "b"}]}
