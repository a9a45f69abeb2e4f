"""Caller authentication on a running gateway, with the real ``openai`` SDK as the client:
API keys (rotation included), the 401/403 shapes, the secure default, what is counted and
that no credential leaks. ServiceAccount tokens (real TokenReview) and OIDC (loopback
JWKS) are in test_auth_tokens.py."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.integration.gateway.fakes import FakeProvider, RunningGateway, endpoint, vllm
from tests.integration.gateway.openai_fake import serve_openai
from tests.support import eventually

CHAT = [{"role": "user", "content": "hi"}]
ALICE = "test-caller-key-alice-0000"
BOT = "test-caller-key-nightly-bot-1111"
ALICE_NEXT = "test-caller-key-alice-next-2222"


def with_keys(base: str, **auth: Any) -> dict[str, Any]:
    """An endpoint whose callers are alice (a user in team-a) and a nightly service principal."""
    return endpoint(
        vllm("e1", base),
        aiGateway={
            "auth": {
                "apiKeys": [
                    {"path": "callers/alice", "principal": {"user": "alice", "groups": ["team-a"]}},
                    {"path": "callers/bot", "principal": {"servicePrincipal": "nightly-eval"}},
                ],
                **auth,
            }
        },
    )


def sdk(gw: RunningGateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=10)


@pytest.fixture
def keyed(provider: FakeProvider, gateway: Callable[..., RunningGateway]) -> RunningGateway:
    serve_openai(provider, "/v1", lambda seen: None, model="e1")
    return gateway(
        with_keys(provider.url + "/v1"), {"callers/alice": ALICE, "callers/bot": BOT + "\n"}
    )


def test_no_credential_is_401_with_a_bearer_challenge(keyed: RunningGateway) -> None:
    r = httpx.post(keyed.url + "/v1/chat/completions", json={"messages": CHAT}, timeout=5)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="modelport"'
    body = r.json()
    assert body["error_code"] == "UNAUTHENTICATED"
    assert body["error"]["type"] == "authentication_error"
    assert "Authorization: Bearer" in body["message"] and "API keys" in body["message"]


def test_a_wrong_key_is_401_through_the_sdk(keyed: RunningGateway) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(keyed, "test-caller-key-nobody-9999").chat.completions.create(model="ep", messages=CHAT)
    assert caught.value.status_code == 401
    assert caught.value.response.headers["www-authenticate"].endswith('error="invalid_token"')
    assert "test-caller-key-nobody-9999" not in caught.value.response.text


def test_valid_keys_map_to_their_principals(keyed: RunningGateway) -> None:
    reply = sdk(keyed, ALICE).chat.completions.create(model="ep", messages=CHAT)
    assert reply.choices[0].message.content == "Hello from upstream"
    streamed = list(sdk(keyed, BOT).chat.completions.create(model="ep", messages=CHAT, stream=True))
    assert streamed
    metrics = httpx.get(keyed.url + "/metrics", timeout=5).text
    assert 'principal="user:alice"' in metrics
    assert 'principal="service_principal:nightly-eval"' in metrics
    assert ALICE not in metrics and BOT not in metrics


def test_models_list_needs_a_credential_too(keyed: RunningGateway) -> None:
    with pytest.raises(openai.AuthenticationError):
        sdk(keyed, "test-caller-key-nobody-9999").models.list()
    assert [m.id for m in sdk(keyed, ALICE).models.list()] == ["ep", "e1"]
    # Health and metrics stay open to probes and scrapers.
    assert httpx.get(keyed.url + "/healthz", timeout=5).status_code == 200
    assert httpx.get(keyed.url + "/metrics", timeout=5).status_code == 200


def test_other_schemes_and_empty_tokens_are_401(keyed: RunningGateway) -> None:
    for header in (f"Basic {ALICE}", "Bearer", ALICE, f"bearer  {ALICE}x", f"Token {ALICE}"):
        r = httpx.post(
            keyed.url + "/v1/chat/completions",
            json={"messages": CHAT},
            headers={"authorization": header},
            timeout=5,
        )
        assert r.status_code == 401, header
    r = httpx.post(
        keyed.url + "/v1/chat/completions",
        json={"messages": CHAT},
        headers={"authorization": f"bearer {ALICE}"},  # the scheme is case-insensitive
        timeout=5,
    )
    assert r.status_code == 200


def test_refusals_are_counted(keyed: RunningGateway) -> None:
    for _ in range(3):
        httpx.post(keyed.url + "/v1/chat/completions", json={"messages": CHAT}, timeout=5)
    metrics = httpx.get(keyed.url + "/metrics", timeout=5).text
    line = next(
        line
        for line in metrics.splitlines()
        if line.startswith("modelport_gateway_requests_total") and 'status="401"' in line
    )
    assert float(line.rsplit(" ", 1)[1]) == 3


def test_rotation_overlaps_and_never_fails_a_request(keyed: RunningGateway) -> None:
    """The Secret's value becomes 'old\\nnew', callers move to the new key, then 'new' alone:
    no request with the key its caller holds at that moment fails."""
    old, new = sdk(keyed, ALICE), sdk(keyed, ALICE_NEXT)
    old.chat.completions.create(model="ep", messages=CHAT)
    keyed.write_secret("callers/alice", f"{ALICE}\n{ALICE_NEXT}\n")
    old.chat.completions.create(model="ep", messages=CHAT)  # still good during the overlap

    def new_key_works() -> bool:
        try:
            new.chat.completions.create(model="ep", messages=CHAT)
        except openai.AuthenticationError:
            return False
        return True

    eventually(new_key_works, timeout=5, interval=0.1)
    keyed.write_secret("callers/alice", ALICE_NEXT)

    def old_key_refused() -> bool:
        new.chat.completions.create(model="ep", messages=CHAT)  # must never fail
        try:
            old.chat.completions.create(model="ep", messages=CHAT)
        except openai.AuthenticationError:
            return True
        return False

    eventually(old_key_refused, timeout=5, interval=0.1)


def test_short_keys_and_missing_files_are_not_accepted(
    provider: FakeProvider, gateway: Callable[..., RunningGateway], caplog: pytest.LogCaptureFixture
) -> None:
    serve_openai(provider, "/v1", lambda seen: None, model="e1")
    caplog.set_level(logging.WARNING, logger="modelport.gateway.auth")
    gw = gateway(with_keys(provider.url + "/v1"), {"callers/alice": "short-key"})
    for key in ("short-key", BOT):
        with pytest.raises(openai.AuthenticationError):
            sdk(gw, key).chat.completions.create(model="ep", messages=CHAT)
    text = caplog.text
    assert "shorter than 16 characters" in text and "callers/bot is not mounted" in text
    assert "short-key" not in text
    assert httpx.get(gw.url + "/readyz", timeout=5).status_code == 200, (
        "a missing caller key file leaves the gateway ready: other callers still work"
    )


def test_one_key_for_two_principals_is_refused(
    provider: FakeProvider, gateway: Callable[..., RunningGateway]
) -> None:
    serve_openai(provider, "/v1", lambda seen: None, model="e1")
    gw = gateway(with_keys(provider.url + "/v1"), {"callers/alice": ALICE, "callers/bot": ALICE})
    with pytest.raises(openai.AuthenticationError):
        sdk(gw, ALICE).chat.completions.create(model="ep", messages=CHAT)


def test_auth_on_with_no_method_refuses_everyone_and_says_why(
    provider: FakeProvider, gateway: Callable[..., RunningGateway]
) -> None:
    """The secure default: a file without an auth section requires a credential."""
    doc = endpoint(vllm("e1", provider.url + "/v1"))
    del doc["aiGateway"]["auth"]
    gw = gateway(doc)
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(gw, ALICE).chat.completions.create(model="ep", messages=CHAT)
    assert "spec.aiGateway.auth" in caught.value.message
    assert provider.seen == []


def test_auth_off_serves_anonymous_callers(
    provider: FakeProvider, gateway: Callable[..., RunningGateway]
) -> None:
    serve_openai(provider, "/v1", lambda seen: None, model="e1")
    gw = gateway(endpoint(vllm("e1", provider.url + "/v1")))  # the helper turns auth off
    reply = sdk(gw, "anything").chat.completions.create(model="ep", messages=CHAT)
    assert reply.choices[0].message.content == "Hello from upstream"
    assert "authorization" not in provider.last().headers, "a caller's key is never forwarded"
    assert 'principal="anonymous"' in httpx.get(gw.url + "/metrics", timeout=5).text


def test_the_caller_credential_is_never_forwarded_or_logged(
    keyed: RunningGateway, provider: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sdk(keyed, ALICE).chat.completions.create(model="ep", messages=CHAT)
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(keyed, ALICE + "x").chat.completions.create(model="ep", messages=CHAT)
    assert ALICE not in caught.value.response.text
    assert "authorization" not in provider.last().headers
    assert ALICE not in caplog.text
