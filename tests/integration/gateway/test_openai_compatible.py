"""OpenAI-format upstreams through the gateway, driven by the real openai SDK.

Covers provider openai (plain, azure api-key, azuread with an Entra ID token from a
loopback token endpoint), ai21labs, databricks-model-serving, custom (api-key header and
bearer) and self-hosted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest

from tests.integration.gateway.fakes import FakeProvider, RunningGateway, Seen, endpoint, json_reply
from tests.integration.gateway.openai_fake import check_ai21, serve_openai

KEY = "test-key-not-real"
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def bearer(token: str) -> Callable[[Seen], None]:
    def check(seen: Seen) -> None:
        assert seen.headers.get("authorization") == f"Bearer {token}", "wrong or missing bearer"

    return check


def client(gw: RunningGateway, base: str = "/v1") -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + base, api_key="unused", max_retries=0, timeout=20)


def aclient(gw: RunningGateway, base: str = "/v1") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.url + base, api_key="unused", max_retries=0, timeout=20)


def entity(provider: str, base_url: str, task: str = "llm/v1/chat", **extra: Any) -> dict[str, Any]:
    return {
        "name": "e1",
        "task": task,
        "provider": provider,
        "modelName": "up-model",
        "baseUrl": base_url,
        **extra,
    }


def exercise_chat(gw: RunningGateway, base: str = "/v1", model: str = "ep") -> None:
    """Non-streaming, streaming with usage, and tool calls, sync and async."""
    c = client(gw, base)
    raw = c.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["served-model-name"] == "e1"
    reply = raw.parse()
    assert reply.choices[0].message.content == "Hello from upstream"
    assert reply.usage is not None and reply.usage.total_tokens == 18

    chunks = list(
        c.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "Hello there"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 11

    tool = c.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "weather?"}], tools=TOOLS
    )
    call = tool.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert tool.choices[0].finish_reason == "tool_calls"

    async def run_async() -> None:
        ac = aclient(gw, base)
        r = await ac.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "a"}]
        )
        assert r.choices[0].message.content == "Hello from upstream"
        stream = await ac.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "a"}],
            stream=True,
            tools=TOOLS,
        )
        args = ""
        async for ch in stream:
            for tc in (ch.choices[0].delta.tool_calls or []) if ch.choices else []:
                args += tc.function.arguments or ""  # type: ignore[union-attr]
        assert args == '{"city":"Paris"}'
        await ac.close()

    asyncio.run(run_async())


def test_openai_chat_completions_embeddings(
    provider: FakeProvider, gateway: Callable[..., RunningGateway]
) -> None:
    def check(seen: Seen) -> None:
        bearer(KEY)(seen)
        assert seen.headers.get("openai-organization") == "org-test"

    serve_openai(provider, "/v1", check, model="up-model")
    gw = gateway(
        endpoint(
            entity(
                "openai",
                provider.url + "/v1",
                openai={"organization": "org-test"},
                credentials={"apiKey": "keys/openai"},
            )
        ),
        {"keys/openai": KEY + "\n"},
    )
    exercise_chat(gw)
    exercise_chat(gw, base="/serving-endpoints")
    assert provider.last("/v1/chat/completions").json()["model"] == "up-model"


@pytest.mark.parametrize("task", ["llm/v1/completions", "llm/v1/embeddings"])
def test_openai_other_tasks(
    task: str, provider: FakeProvider, gateway: Callable[..., RunningGateway]
) -> None:
    serve_openai(provider, "/v1", bearer(KEY), model="up-model")
    gw = gateway(
        endpoint(
            entity("openai", provider.url + "/v1", task=task, credentials={"apiKey": "keys/openai"})
        ),
        {"keys/openai": KEY},
    )
    c = client(gw)
    if task == "llm/v1/embeddings":
        emb = c.embeddings.create(model="ep", input=["a", "b"])  # SDK asks for base64
        assert [round(x, 3) for x in emb.data[0].embedding] == [0.5, -0.25, 0.0]
        assert emb.data[1].embedding[2] == 1.0
        assert emb.usage.prompt_tokens == 4
        return
    done = c.completions.create(model="ep", prompt="Once")
    assert done.choices[0].text == "Once upon" and done.usage and done.usage.completion_tokens == 7
    chunks = list(
        c.completions.create(
            model="ep", prompt="Once", stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == "Once upon"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 18


def test_azure_api_key(provider: FakeProvider, gateway: Callable[..., RunningGateway]) -> None:
    def check(seen: Seen) -> None:
        assert seen.headers.get("api-key") == KEY
        assert "authorization" not in seen.headers
        assert seen.query.get("api-version") == ["2024-10-21"]

    serve_openai(provider, "/openai/deployments/my-deploy", check, model="up-model")
    gw = gateway(
        endpoint(
            entity(
                "openai",
                provider.url,
                openai={
                    "apiType": "azure",
                    "apiVersion": "2024-10-21",
                    "deploymentName": "my-deploy",
                },
                credentials={"apiKey": "keys/azure"},
            )
        ),
        {"keys/azure": KEY},
    )
    exercise_chat(gw)


def test_azuread_entra_token_cached_and_refreshed(
    provider: FakeProvider, gateway: Callable[..., RunningGateway]
) -> None:
    issued: list[str] = []

    @provider.route("POST", "/tenant-1/oauth2/v2.0/token")
    def token(seen: Seen) -> Any:
        form = seen.form()
        assert form == {
            "grant_type": "client_credentials",
            "client_id": "client-1",
            "client_secret": "secret-not-real",
            "scope": "https://cognitiveservices.azure.com/.default",
        }, f"bad token request {sorted(form)}"
        issued.append(f"entra-token-{len(issued)}")
        # 2 s lifetime: the gateway refreshes at half-life, so the test can see a refresh.
        return json_reply({"token_type": "Bearer", "expires_in": 2, "access_token": issued[-1]})

    def check(seen: Seen) -> None:
        assert issued, "no token was requested before the call"
        bearer(issued[-1])(seen)

    serve_openai(provider, "/openai/deployments/d1", check, model="up-model")
    gw = gateway(
        endpoint(
            entity(
                "openai",
                provider.url,
                openai={
                    "apiType": "azuread",
                    "apiVersion": "2024-10-21",
                    "deploymentName": "d1",
                    "tenantId": "tenant-1",
                    "clientId": "client-1",
                    "tokenUrl": provider.url + "/tenant-1/oauth2/v2.0/token",
                },
                credentials={"clientSecret": "keys/entra"},
            )
        ),
        {"keys/entra": "secret-not-real"},
    )
    c = client(gw)
    for _ in range(3):
        c.chat.completions.create(model="ep", messages=[{"role": "user", "content": "x"}])
    assert len(issued) == 1, "the token must be cached"
    time.sleep(1.2)
    c.chat.completions.create(model="ep", messages=[{"role": "user", "content": "x"}])
    assert len(issued) == 2, "the token must be refreshed before it expires"
    exercise_chat(gw)


def test_ai21labs(provider: FakeProvider, gateway: Callable[..., RunningGateway]) -> None:
    """Only AI21's documented fields go up; its last chunk brings the usage unasked."""

    def check(seen: Seen) -> None:
        bearer(KEY)(seen)
        check_ai21(seen)

    serve_openai(provider, "/studio/v1", check, model="jamba-large", usage_on_last_chunk=True)
    e = entity("ai21labs", provider.url + "/studio/v1", credentials={"apiKey": "k/ai21"})
    e["modelName"] = "jamba-large"
    gw = gateway(endpoint(e), {"k/ai21": KEY})
    exercise_chat(gw)


def test_databricks_model_serving(
    provider: FakeProvider, gateway: Callable[..., RunningGateway]
) -> None:
    serve_openai(provider, "/serving-endpoints/other-ep", bearer("dapi-not-real"), model=None)
    # the fake registers <prefix>/chat/completions; databricks posts to /invocations
    provider.routes[("POST", "/serving-endpoints/other-ep/invocations")] = provider.routes[
        ("POST", "/serving-endpoints/other-ep/chat/completions")
    ]
    e = entity("databricks-model-serving", provider.url, credentials={"apiKey": "k/dbx"})
    e["modelName"] = "other-ep"
    gw = gateway(endpoint(e), {"k/dbx": "dapi-not-real"})
    exercise_chat(gw)


@pytest.mark.parametrize("header", [None, "X-Api-Key"])
def test_custom_provider(
    header: str | None, provider: FakeProvider, gateway: Callable[..., RunningGateway]
) -> None:
    def check(seen: Seen) -> None:
        if header:
            assert seen.headers.get("x-api-key") == KEY and "authorization" not in seen.headers
        else:
            bearer(KEY)(seen)

    serve_openai(provider, "/custom/v1", check, model="up-model")
    extra: dict[str, Any] = {"credentials": {"apiKey": "k/custom"}}
    if header:
        extra["custom"] = {"apiKeyHeader": header}
    gw = gateway(
        endpoint(entity("custom", provider.url + "/custom/v1", **extra)), {"k/custom": KEY}
    )
    exercise_chat(gw)


def test_self_hosted_vllm(provider: FakeProvider, gateway: Callable[..., RunningGateway]) -> None:
    def check(seen: Seen) -> None:
        assert "authorization" not in seen.headers

    serve_openai(provider, "/v1", check, model="up-model")
    gw = gateway(endpoint(entity("self-hosted", provider.url + "/v1")))
    exercise_chat(gw)
    # The reference service's path, and addressing the entity by name.
    import httpx

    r = httpx.post(
        gw.url + "/serving-endpoints/ep/invocations",
        json={"messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )
    assert r.status_code == 200 and r.headers["served-model-name"] == "e1"
    assert r.json()["choices"][0]["message"]["content"] == "Hello from upstream"
    exercise_chat(gw, model="e1")
