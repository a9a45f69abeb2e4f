"""Images, JSON output and reasoning through every provider, driven by the openai SDK.

Each provider's loopback fake (:mod:`.feature_fakes`) checks the documented request
shape of the feature and answers in that provider's documented shape; the SDK must
parse every answer, streamed and not: ``chat.completions.parse`` / ``.stream`` with a
pydantic model for JSON output, ``reasoning_content`` for the model's reasoning.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from modelport.gateway.fetch import FetchPolicy, ImageFetcher
from tests.integration.gateway.fakes import FakeProvider, Reply, RunningGateway, Seen
from tests.integration.gateway.feature_fakes import ANSWER, DATA_URL, LINK, THOUGHT, TRANSLATED
from tests.integration.gateway.test_openai_compatible import aclient, client


class Place(BaseModel):
    city: str
    country: str


def image_only(url: str) -> Any:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]


def refused(gw: RunningGateway, messages: Any) -> dict[str, Any]:
    """The 400 body the gateway answers ``messages`` with."""
    with pytest.raises(openai.BadRequestError) as caught:
        client(gw).chat.completions.create(model="ep", messages=messages)
    body: dict[str, Any] = caught.value.response.json()
    return body


# --- images ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TRANSLATED)
def test_images_inline_and_by_link(
    name: str, provider_gateway: Callable[[str], RunningGateway], provider: FakeProvider
) -> None:
    gw = provider_gateway(name)
    link = provider.url + "/cat.png" if name == "amazon-bedrock" else LINK
    messages: Any = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "How many cats?"},
                {"type": "image_url", "image_url": {"url": DATA_URL}},
                {"type": "image_url", "image_url": {"url": link, "detail": "low"}},
            ],
        }
    ]
    reply = client(gw).chat.completions.create(model="ep", messages=messages)
    assert reply.choices[0].message.content == "saw 2 images"
    streamed = client(gw).chat.completions.create(model="ep", messages=messages, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == (
        "saw 2 images"
    )
    if name == "amazon-bedrock":
        fetched = [s for s in provider.seen if s.path == "/cat.png"]
        assert fetched and "authorization" not in fetched[0].headers


def test_images_pass_through_to_openai_compatible_upstreams(
    provider_gateway: Callable[[str], RunningGateway], provider: FakeProvider
) -> None:
    gw = provider_gateway("openai")
    messages: Any = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is it?"},
                {"type": "image_url", "image_url": {"url": LINK, "detail": "high"}},
            ],
        }
    ]
    client(gw).chat.completions.create(model="ep", messages=messages)
    assert provider.last("/v1/chat/completions").json()["messages"] == messages
    assert not [s for s in provider.seen if s.method == "GET"], "the gateway fetched a link"


def test_a_provider_without_images_says_so(
    provider_gateway: Callable[[str], RunningGateway],
) -> None:
    gw = provider_gateway("ai21labs")
    body = refused(gw, image_only(DATA_URL))
    assert "does not take images" in body["message"]
    assert body["error"]["param"] == "messages.0.content"


def test_bedrock_fetches_links_only_within_its_fences(
    provider_gateway: Callable[[str], RunningGateway], provider: FakeProvider
) -> None:
    def gateway_with(policy: FetchPolicy | None) -> RunningGateway:
        gw = provider_gateway("amazon-bedrock")
        gw.app.upstream.images = ImageFetcher(policy)  # before its first use
        return gw

    def ask(gw: RunningGateway, url: str) -> str:
        body = refused(gw, image_only(url))
        assert body["error"]["param"] == "messages.0.content.0.image_url.url"
        return str(body["message"])

    production = gateway_with(None)
    assert "https:// only" in ask(production, provider.url + "/cat.png")
    for url in (
        f"https://127.0.0.1:{provider.port}/cat.png",
        f"https://localhost:{provider.port}/cat.png",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/x.png",
    ):
        assert "not a public address" in ask(production, url), url
    assert not [s for s in provider.seen if s.method == "GET"], "a fenced link was fetched"

    @provider.route("GET", "/page.html")
    def page(seen: Seen) -> Reply:
        return Reply(body=b"<html>not an image</html>", content_type="image/png")

    @provider.route("GET", "/moved.png")
    def moved(seen: Seen) -> Reply:
        return Reply(status=302, body=b"", headers={"location": "http://10.0.0.1/x.png"})

    small = gateway_with(FetchPolicy(https_only=False, public_only=False, max_bytes=16))
    assert "larger than 16 bytes" in ask(small, provider.url + "/cat.png")
    loopback = gateway_with(FetchPolicy(https_only=False, public_only=False))
    assert "not a PNG, JPEG, GIF or WebP" in ask(loopback, provider.url + "/page.html")
    assert "redirects" in ask(loopback, provider.url + "/moved.png")
    assert "HTTP 404" in ask(loopback, provider.url + "/missing.png")


# --- JSON output ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*TRANSLATED, "openai"])
def test_json_output_parsed_by_the_sdk(
    name: str, provider_gateway: Callable[[str], RunningGateway]
) -> None:
    gw = provider_gateway(name)
    question: Any = [{"role": "user", "content": "Where is the Louvre? Answer in JSON."}]
    done = client(gw).chat.completions.parse(model="ep", messages=question, response_format=Place)
    assert done.choices[0].message.parsed == Place(**ANSWER)
    assert done.choices[0].finish_reason == "stop"
    with client(gw).chat.completions.stream(
        model="ep", messages=question, response_format=Place
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.parsed == Place(**ANSWER)
    anything = client(gw).chat.completions.create(
        model="ep", messages=question, response_format={"type": "json_object"}
    )
    assert json.loads(anything.choices[0].message.content or "") == ANSWER


def test_ai21_json_mode_and_no_schema(provider_gateway: Callable[[str], RunningGateway]) -> None:
    gw = provider_gateway("ai21labs")
    question: Any = [{"role": "user", "content": "JSON please"}]
    done = client(gw).chat.completions.create(
        model="ep", messages=question, response_format={"type": "json_object"}
    )
    assert json.loads(done.choices[0].message.content or "") == ANSWER
    with pytest.raises(openai.BadRequestError) as caught:
        client(gw).chat.completions.parse(model="ep", messages=question, response_format=Place)
    assert caught.value.response.json()["error"]["param"] == "response_format"


# --- reasoning ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TRANSLATED)
def test_reasoning_effort_and_reasoning_content(
    name: str, provider_gateway: Callable[[str], RunningGateway]
) -> None:
    gw = provider_gateway(name)
    question: Any = [{"role": "user", "content": "Capital of France?"}]
    done = client(gw).chat.completions.create(model="ep", messages=question, reasoning_effort="low")
    assert done.choices[0].message.content == "saw 0 images"
    assert (done.choices[0].message.model_extra or {}).get("reasoning_content") == THOUGHT

    async def streamed() -> tuple[str, str]:
        ac = aclient(gw)
        reasoning, text = "", ""
        stream = await ac.chat.completions.create(
            model="ep", messages=question, reasoning_effort="low", stream=True
        )
        async for chunk in stream:
            if chunk.choices:
                delta = chunk.choices[0].delta
                reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
                text += delta.content or ""
        await ac.close()
        return reasoning, text

    assert asyncio.run(streamed()) == (THOUGHT, "saw 0 images")
