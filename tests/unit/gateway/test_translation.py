"""Pure request/response translation of every provider, table-driven."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import jwt

from modelport.gateway.errors import GatewayError
from modelport.gateway.protocol import ChatRequest
from modelport.gateway.providers import REGISTRY
from modelport.gateway.providers.anthropic import messages_body
from modelport.gateway.providers.base import Auth
from modelport.gateway.providers.bedrock import converse_body
from modelport.gateway.providers.cohere import chat_body
from modelport.gateway.providers.vertex import generate_body
from modelport.gatewayconfig import ProviderName, Task
from tests.unit.gateway.helpers import call, chunks, entity, sse_event

KEY = Auth({"apiKey": "test-key-not-real"})
USER = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
TOOL_TURNS = [
    {"role": "user", "content": "go"},
    {
        "role": "assistant",
        "content": "ok",
        "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "t1", "content": "done"},
]


def test_every_provider_is_registered() -> None:
    assert set(REGISTRY) == set(ProviderName)


# --- OpenAI-compatible: URL and auth only ---------------------------------------------


@pytest.mark.parametrize(
    ("provider", "extra", "url", "headers"),
    [
        (
            "openai",
            {},
            "https://api.openai.com/v1/chat/completions",
            {"authorization": "Bearer test-key-not-real"},
        ),
        (
            "openai",
            {"openai": {"organization": "org-1"}},
            "https://api.openai.com/v1/chat/completions",
            {"authorization": "Bearer test-key-not-real", "openai-organization": "org-1"},
        ),
        (
            "openai",
            {
                "baseUrl": "https://res.openai.azure.com",
                "openai": {"apiType": "azure", "apiVersion": "2024-10-21", "deploymentName": "dep"},
            },
            "https://res.openai.azure.com/openai/deployments/dep/chat/completions?api-version=2024-10-21",
            {"api-key": "test-key-not-real"},
        ),
        (
            "ai21labs",
            {},
            "https://api.ai21.com/studio/v1/chat/completions",
            {"authorization": "Bearer test-key-not-real"},
        ),
        (
            "databricks-model-serving",
            {"baseUrl": "https://ws.example.com"},
            "https://ws.example.com/serving-endpoints/m-1/invocations",
            {"authorization": "Bearer test-key-not-real"},
        ),
        (
            "custom",
            {"baseUrl": "https://llm.example.com/v1", "custom": {"apiKeyHeader": "X-Key"}},
            "https://llm.example.com/v1/chat/completions",
            {"x-key": "test-key-not-real"},
        ),
        (
            "self-hosted",
            {"baseUrl": "http://svc:8000/v1", "credentials": {}},
            "http://svc:8000/v1/chat/completions",
            {},
        ),
    ],
)
def test_openai_compatible_requests(
    provider: str, extra: dict[str, Any], url: str, headers: dict[str, str]
) -> None:
    ent = entity(provider, **extra)
    req = REGISTRY[ent.provider].build_request(call(ent, {"model": "ep", "messages": USER}), KEY)
    assert req.url == url
    assert {k: v for k, v in req.headers.items() if k != "content-type"} == headers
    body = json.loads(req.body or b"")
    if provider == "databricks-model-serving":
        assert "model" not in body
    else:
        assert body["model"] == "m-1"


def test_entra_token_request_uses_the_override() -> None:
    ent = entity(
        "openai",
        baseUrl="https://r.example.com",
        credentials={"clientSecret": "k/s"},
        openai={
            "apiType": "azuread",
            "apiVersion": "v",
            "deploymentName": "d",
            "tenantId": "t",
            "clientId": "c",
            "tokenUrl": "http://127.0.0.1:1/tok",
        },
    )
    tok = REGISTRY[ent.provider].token_request(ent, Auth({"clientSecret": "s3cret-not-real"}))
    assert tok is not None and tok.url == "http://127.0.0.1:1/tok"
    assert b"grant_type=client_credentials" in (tok.body or b"")


# --- Anthropic --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_body", "expected"),
    [
        (
            {"messages": USER},
            {
                "max_tokens": 4096,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            },
        ),
        (
            {
                "messages": [
                    {"role": "system", "content": "a"},
                    {"role": "developer", "content": "b"},
                    *USER,
                ],
                "max_completion_tokens": 9,
                "top_k": 3,
                "stop": "X",
            },
            {"system": "a\n\nb", "max_tokens": 9, "top_k": 3, "stop_sequences": ["X"]},
        ),
        (
            {
                "messages": USER,
                "tools": [TOOL],
                "tool_choice": "auto",
                "parallel_tool_calls": False,
            },
            {
                "tools": [{"name": "f", "input_schema": {"type": "object"}}],
                "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
            },
        ),
        (
            {
                "messages": USER,
                "tools": [TOOL],
                "tool_choice": {"type": "function", "function": {"name": "f"}},
            },
            {"tool_choice": {"type": "tool", "name": "f"}},
        ),
        (
            {"messages": TOOL_TURNS},
            {
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "go"}]},
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "text", "text": "ok"},
                            {"type": "tool_use", "id": "t1", "name": "f", "input": {"x": 1}},
                        ],
                    },
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": "t1", "content": "done"}
                        ],
                    },
                ]
            },
        ),
    ],
)
def test_anthropic_request(request_body: dict[str, Any], expected: dict[str, Any]) -> None:
    body = json.loads(
        messages_body(ChatRequest.model_validate(request_body), "claude", stream=False)
    )
    assert body["model"] == "claude"
    for key, value in expected.items():
        assert body[key] == value, key


@pytest.mark.parametrize(
    ("request_body", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"temperature": 1.5}, "temperature"),
        ({"response_format": {"type": "json_object"}, "tools": [TOOL]}, "response_format"),
        ({"seed": 1}, "seed"),
        ({"service_tier": "flex"}, "service_tier"),
    ],
)
def test_anthropic_unsupported(request_body: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as caught:
        messages_body(
            ChatRequest.model_validate({"messages": USER, **request_body}), "c", stream=False
        )
    assert caught.value.status == 400 and caught.value.param == param


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("stop_sequence", "stop"),
        ("refusal", "content_filter"),
    ],
)
def test_anthropic_finish_reasons(stop: str, finish: str) -> None:
    ent = entity("anthropic")
    body = json.dumps(
        {
            "content": [{"type": "text", "text": "x"}],
            "stop_reason": stop,
            "usage": {"input_tokens": 3, "output_tokens": 2, "cache_read_input_tokens": 5},
        }
    ).encode()
    out = REGISTRY[ent.provider].parse_response(call(ent, {"messages": USER}), body, {})
    assert isinstance(out, dict)
    assert out["choices"][0]["finish_reason"] == finish
    assert out["usage"] == {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10}


def test_anthropic_stream_sequence() -> None:
    ent = entity("anthropic")
    translator = REGISTRY[ent.provider].stream_translator(
        call(ent, {"messages": USER, "stream": True}, include_usage=True)
    )
    events = [
        sse_event(
            "message_start",
            {
                "type": "message_start",
                "message": {"usage": {"input_tokens": 4, "output_tokens": 1}},
            },
        ),
        sse_event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        sse_event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hi"},
            },
        ),
        sse_event("ping", {"type": "ping"}),
        sse_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 6},
            },
        ),
        sse_event("message_stop", {"type": "message_stop"}),
    ]
    out = chunks([p for e in events for p in translator.feed(e)] + translator.finish())
    assert out[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert out[1]["choices"][0]["delta"] == {"content": "Hi"}
    assert out[2]["choices"][0]["finish_reason"] == "stop"
    assert out[3]["choices"] == [] and out[3]["usage"]["total_tokens"] == 10
    assert all(c["id"] == "resp-1" and c["object"] == "chat.completion.chunk" for c in out)


# --- Cohere ----------------------------------------------------------------------------


def test_cohere_request() -> None:
    body = json.loads(
        chat_body(
            ChatRequest.model_validate(
                {
                    "messages": TOOL_TURNS,
                    "tools": [TOOL],
                    "tool_choice": "required",
                    "top_p": 0.3,
                    "top_k": 5,
                    "seed": 2,
                }
            ),
            "command",
            stream=True,
        )
    )
    assert (body["p"], body["k"], body["seed"], body["stream"]) == (0.3, 5, 2, True)
    assert body["tool_choice"] == "REQUIRED"
    assert body["messages"][1] == {
        "role": "assistant",
        "tool_plan": "ok",
        "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
        ],
    }
    assert body["messages"][2] == {"role": "tool", "tool_call_id": "t1", "content": "done"}


def test_cohere_embed_request_and_base64() -> None:
    ent = entity("cohere", task=Task.EMBEDDINGS)
    c = call(ent, {"input": ["a"], "encoding_format": "base64"})
    req = REGISTRY[ent.provider].build_request(c, KEY)
    assert req.url == "https://api.cohere.com/v2/embed"
    out = REGISTRY[ent.provider].parse_response(
        c,
        json.dumps(
            {"embeddings": {"float": [[1.0, 2.0]]}, "meta": {"billed_units": {"input_tokens": 1}}}
        ).encode(),
        {},
    )
    assert isinstance(out, dict)
    import base64
    import struct

    assert struct.unpack("<2f", base64.b64decode(out["data"][0]["embedding"])) == (1.0, 2.0)


# --- Bedrock -----------------------------------------------------------------------------


def test_bedrock_converse_body() -> None:
    body = json.loads(
        converse_body(
            ChatRequest.model_validate(
                {
                    "messages": [{"role": "system", "content": "s"}, *TOOL_TURNS],
                    "tools": [TOOL],
                    "tool_choice": "required",
                    "max_tokens": 5,
                    "top_k": 2,
                }
            )
        )
    )
    assert body["system"] == [{"text": "s"}]
    assert body["inferenceConfig"] == {"maxTokens": 5}
    assert body["additionalModelRequestFields"] == {"top_k": 2}
    assert body["toolConfig"]["toolChoice"] == {"any": {}}
    assert body["messages"][1]["content"][1] == {
        "toolUse": {"toolUseId": "t1", "name": "f", "input": {"x": 1}}
    }
    assert body["messages"][2] == {
        "role": "user",
        "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "done"}]}}],
    }


def test_bedrock_signature_scope_and_encoded_model_id() -> None:
    ent = entity(
        "amazon-bedrock",
        modelName="anthropic.claude-v2:1",
        bedrock={"region": "ap-south-1"},
        credentials={
            "awsAccessKeyId": "a/i",
            "awsSecretAccessKey": "a/s",
            "awsSessionToken": "a/t",
        },
    )
    auth = Auth(
        {
            "awsAccessKeyId": "AKIDNOTREAL",
            "awsSecretAccessKey": "x" * 8,
            "awsSessionToken": "session-not-real",
        }
    )
    req = REGISTRY[ent.provider].build_request(call(ent, {"messages": USER, "stream": True}), auth)
    assert req.url == (
        "https://bedrock-runtime.ap-south-1.amazonaws.com/model/"
        "anthropic.claude-v2%3A1/converse-stream"
    )
    assert "/ap-south-1/bedrock/aws4_request" in req.headers["Authorization"]
    assert req.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDNOTREAL/")
    assert req.headers["X-Amz-Security-Token"] == "session-not-real"


# --- Vertex ------------------------------------------------------------------------------


def test_vertex_generate_body() -> None:
    body = json.loads(
        generate_body(
            ChatRequest.model_validate(
                {
                    "messages": [{"role": "system", "content": "s"}, *TOOL_TURNS],
                    "tools": [TOOL],
                    "tool_choice": {"type": "function", "function": {"name": "f"}},
                    "n": 1,
                    "response_format": {"type": "json_object"},
                }
            )
        )
    )
    assert body["systemInstruction"] == {"parts": [{"text": "s"}]}
    assert body["generationConfig"] == {"responseMimeType": "application/json"}
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}
    }
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][2]["parts"] == [
        {"functionResponse": {"name": "f", "response": {"content": "done"}}}
    ]


def test_vertex_tool_message_without_its_call_is_a_400() -> None:
    with pytest.raises(GatewayError) as caught:
        generate_body(
            ChatRequest.model_validate(
                {"messages": [{"role": "tool", "tool_call_id": "zz", "content": "x"}]}
            )
        )
    assert caught.value.param == "messages.tool_call_id"


def test_vertex_token_request_is_a_signed_jwt_bearer_grant() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "private_key": pem,
        "client_email": "sa@p.iam.gserviceaccount.com",
        "private_key_id": "k",
        "token_uri": "https://oauth2.example.com/token",
    }
    ent = entity(
        "google-cloud-vertex-ai",
        credentials={"privateKey": "g/k"},
        vertex={"projectId": "p", "region": "europe-west4"},
    )
    provider = REGISTRY[ent.provider]
    tok = provider.token_request(ent, Auth({"privateKey": json.dumps(info)}))
    assert tok is not None and tok.url == "https://oauth2.example.com/token"
    from urllib.parse import parse_qs

    form = parse_qs((tok.body or b"").decode())
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = jwt.decode(form["assertion"][0], certs=public, audience=tok.url)
    assert claims["iss"] == "sa@p.iam.gserviceaccount.com"
    assert provider.base_url(ent) == "https://europe-west4-aiplatform.googleapis.com"
    with pytest.raises(GatewayError) as caught:
        provider.token_request(ent, Auth({"privateKey": "not json"}))
    assert "service-account JSON" in caught.value.message and "not json" not in caught.value.message


@pytest.mark.parametrize(
    ("provider", "extra", "event"),
    [
        ("anthropic", {}, sse_event("message_start", {"type": "message_start", "message": {}})),
        ("cohere", {}, sse_event("message-start", {"type": "message-start"})),
        (
            "amazon-bedrock",
            {
                "bedrock": {"region": "us-east-1"},
                "credentials": {"awsAccessKeyId": "a/i", "awsSecretAccessKey": "a/s"},
            },
            ("messageStart", b'{"role": "assistant"}'),
        ),
    ],
)
def test_a_stream_cut_before_its_end_event_is_an_error(
    provider: str, extra: dict[str, Any], event: tuple[str, bytes]
) -> None:
    ent = entity(provider, **extra)
    translator = REGISTRY[ent.provider].stream_translator(
        call(ent, {"messages": USER, "stream": True})
    )
    translator.feed(event)
    with pytest.raises(GatewayError) as caught:
        translator.finish()
    assert caught.value.status == 502
