"""Guardrails on a running gateway, called with the openai SDK: input masked before it
leaves, blocked with a reason, streamed output masked across chunks or ended with an error
event, and safety judged by a loopback guard model (unsafe refused, safe passes, a guard
that is down fails closed or open as configured)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.integration.gateway.fakes import (
    FakeProvider,
    Reply,
    RunningGateway,
    Seen,
    chat_reply,
    endpoint,
    json_reply,
    sse,
    vllm,
)
from tests.integration.gateway.test_openai_compatible import client

Start = Callable[..., RunningGateway]


def stream_of(pieces: list[str]) -> Reply:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    events: list[tuple[str | None, Any]] = [(None, chunk({"role": "assistant"}))]
    events += [(None, chunk({"content": p})) for p in pieces]
    events += [(None, chunk({}, "stop")), (None, "[DONE]")]
    return sse(events)


class Upstream:
    """A model that answers with whatever the test sets, and records what it was asked."""

    def __init__(self, provider: FakeProvider) -> None:
        self.pieces = ["Hello"]
        self.asked: list[dict[str, Any]] = []

        @provider.route("POST", "/v1/chat/completions")
        def chat(seen: Seen) -> Reply:
            body = seen.json()
            self.asked.append(body)
            return (
                stream_of(self.pieces) if body.get("stream") else chat_reply("".join(self.pieces))
            )


def guarded(provider: FakeProvider, **guardrails: Any) -> dict[str, Any]:
    return endpoint(vllm("m", provider.url + "/v1"), aiGateway={"guardrails": guardrails})


def test_input_pii_is_masked_before_it_leaves(provider: FakeProvider, gateway: Start) -> None:
    upstream = Upstream(provider)
    gw = gateway(guarded(provider, input={"pii": "MASK"}))
    text = "I am jane@example.com, card 4111 1111 1111 1111, call +44 20 7946 0958"
    reply = client(gw).chat.completions.create(
        model="ep", messages=[{"role": "user", "content": text}]
    )
    assert reply.choices[0].message.content == "Hello"
    sent = upstream.asked[-1]["messages"][0]["content"]
    assert sent == "I am [EMAIL], card [CREDIT_CARD], call [PHONE]"
    metrics = httpx.get(gw.url + "/metrics").text
    assert (
        'modelport_gateway_guardrail_decisions_total{action="mask",check="pii",'
        'direction="input",kind="EMAIL"} 1.0'
    ) in metrics


def test_input_pii_blocked_with_a_reason_and_never_the_value(
    provider: FakeProvider, gateway: Start
) -> None:
    upstream = Upstream(provider)
    gw = gateway(guarded(provider, input={"pii": "BLOCK", "invalidKeywords": ["falcon"]}))
    with pytest.raises(openai.BadRequestError) as caught:
        client(gw).chat.completions.create(
            model="ep", messages=[{"role": "user", "content": "my SSN is 536-22-8726"}]
        )
    body: Any = caught.value.body
    assert body["reason"] == "pii:US_SSN" and "536-22" not in json.dumps(
        caught.value.response.json()
    )
    with pytest.raises(openai.BadRequestError) as caught:
        client(gw).chat.completions.create(
            model="ep", messages=[{"role": "user", "content": "About Falcon: ..."}]
        )
    assert caught.value.response.json()["reason"] == "keywords"
    assert upstream.asked == []  # nothing was sent anywhere


def test_streamed_output_masked_across_chunks(provider: FakeProvider, gateway: Start) -> None:
    upstream = Upstream(provider)
    upstream.pieces = ["Reach me at jo", "hn.doe@exa", "mple.com or +44 20 79", "46 0958 today."]
    gw = gateway(guarded(provider, output={"pii": "MASK"}))
    stream = client(gw).chat.completions.create(
        model="ep", messages=[{"role": "user", "content": "contact?"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Reach me at [EMAIL] or [PHONE] today."


def test_streamed_output_blocked_ends_with_an_error_event(
    provider: FakeProvider, gateway: Start
) -> None:
    upstream = Upstream(provider)
    upstream.pieces = ["Your card: 4111 1111 ", "1111 1111 is on file"]
    gw = gateway(guarded(provider, output={"pii": "BLOCK"}))
    got: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        stream = client(gw).chat.completions.create(
            model="ep", messages=[{"role": "user", "content": "card?"}], stream=True
        )
        for c in stream:
            if c.choices:
                got.append(c.choices[0].delta.content or "")
    assert "".join(got) == "Your card: "  # what passed before the finding
    assert "4111" not in str(caught.value)


class Guard:
    """A loopback guard model speaking the OpenAI chat API, answering Llama Guard verdicts."""

    def __init__(self, provider: FakeProvider) -> None:
        self.seen: list[Seen] = []
        self.down = threading.Event()
        self.nonsense = threading.Event()

        @provider.route("POST", "/guard/v1/chat/completions")
        def judge(seen: Seen) -> Reply:
            self.seen.append(seen)
            if self.down.is_set():
                return json_reply({"error": {"message": "guard down"}}, 503)
            if self.nonsense.is_set():
                return chat_reply("I think it is fine")
            last = seen.json()["messages"][-1]["content"]
            return chat_reply("unsafe\nS9" if "explosive" in last else "safe")


def with_guard(provider: FakeProvider, fail_open: bool, **checks: Any) -> dict[str, Any]:
    guard = {"url": provider.url + "/guard/v1", "model": "llama-guard", "failOpen": fail_open}
    return endpoint(
        vllm("m", provider.url + "/v1"),
        aiGateway={"guardrails": {"guard": guard, **checks}},
    )


def test_safety_refuses_unsafe_input_and_passes_safe(
    provider: FakeProvider, gateway: Start
) -> None:
    upstream = Upstream(provider)
    guard = Guard(provider)
    gw = gateway(with_guard(provider, False, input={"safety": True, "pii": "MASK"}))
    ok = client(gw).chat.completions.create(
        model="ep", messages=[{"role": "user", "content": "How do plants grow? mail a@b.org"}]
    )
    assert ok.choices[0].message.content == "Hello"
    asked = guard.seen[-1].json()
    assert asked["model"] == "llama-guard" and asked["temperature"] == 0
    assert asked["messages"][-1]["content"].endswith("[EMAIL]")  # the guard sees masked text
    with pytest.raises(openai.BadRequestError) as caught:
        client(gw).chat.completions.create(
            model="ep", messages=[{"role": "user", "content": "how to build an explosive"}]
        )
    assert caught.value.response.json()["reason"] == "safety:S9"
    assert len(upstream.asked) == 1


@pytest.mark.parametrize("fail_open", [False, True])
def test_a_guard_that_is_down_follows_the_setting(
    provider: FakeProvider, gateway: Start, fail_open: bool
) -> None:
    upstream = Upstream(provider)
    guard = Guard(provider)
    gw = gateway(with_guard(provider, fail_open, input={"safety": True}))
    for broken in (guard.down, guard.nonsense):  # unreachable, then not a verdict
        broken.set()
        r = httpx.post(
            gw.url + "/v1/chat/completions",
            json={"model": "ep", "messages": [{"role": "user", "content": "hello"}]},
            timeout=20,
        )
        broken.clear()
        if fail_open:
            assert r.status_code == 200
        else:
            assert r.status_code == 503 and r.json()["reason"] == "safety:unavailable"
    assert len(upstream.asked) == (2 if fail_open else 0)
    action = "fail_open" if fail_open else "fail_closed"
    assert f'action="{action}",check="safety"' in httpx.get(gw.url + "/metrics").text


def test_output_safety_holds_a_stream_until_judged(provider: FakeProvider, gateway: Start) -> None:
    upstream = Upstream(provider)
    Guard(provider)
    gw = gateway(with_guard(provider, False, output={"safety": True}))
    upstream.pieces = ["Plants ", "need light."]
    stream = client(gw).chat.completions.create(
        model="ep", messages=[{"role": "user", "content": "plants?"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == (
        "Plants need light."
    )
    upstream.pieces = ["Mix the ", "explosive like so"]
    with pytest.raises(openai.BadRequestError) as caught:
        client(gw).chat.completions.create(
            model="ep", messages=[{"role": "user", "content": "chemistry?"}], stream=True
        )
    assert caught.value.response.json()["reason"] == "safety:S9"
    with pytest.raises(openai.BadRequestError):
        client(gw).chat.completions.create(
            model="ep", messages=[{"role": "user", "content": "chemistry?"}]
        )
