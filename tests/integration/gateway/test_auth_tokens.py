"""Token-authenticated callers of a running gateway, through the real ``openai`` SDK:
Kubernetes ServiceAccount tokens verified by a real TokenReview on the local cluster's
apiserver, and OIDC JWTs from an issuer on loopback (key rotation included)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import pytest

from modelport import gatewayconfig
from modelport.gateway.app import GatewayApp
from modelport.gateway.auth.apikeys import ApiKeyVerifier
from modelport.gateway.auth.base import Fingerprinter
from modelport.gateway.auth.callers import CallerAuth
from modelport.gateway.auth.oidc import OidcVerifier
from modelport.gateway.pipeline import Pipeline
from tests.conftest import Cluster
from tests.integration.gateway.fakes import (
    FakeProvider,
    RunningGateway,
    endpoint,
    vllm,
    write_config,
)
from tests.integration.gateway.jwks import AUDIENCE, Issuer, SigningKey, ec_key, rsa_key
from tests.integration.gateway.kubeauth import api_server, grant_tokenreview, mint
from tests.integration.gateway.openai_fake import serve_openai
from tests.support import FakeClock

CHAT = [{"role": "user", "content": "hi"}]
API_KEY = "test-caller-key-alice-0000"
T = TypeVar("T")


def sdk(gw: RunningGateway, credential: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=credential, max_retries=0, timeout=20)


def answers(gw: RunningGateway, credential: str) -> str | None:
    reply = sdk(gw, credential).chat.completions.create(model="ep", messages=CHAT)
    return reply.choices[0].message.content


# --- Kubernetes ServiceAccount tokens --------------------------------------------------


@pytest.fixture
def sa_gateway(
    cluster: Cluster,
    namespace: str,
    provider: FakeProvider,
    gateway: Callable[..., RunningGateway],
    tmp_path: Path,
) -> Iterator[RunningGateway]:
    """A gateway that reviews tokens as the namespace's ServiceAccount ``gateway`` (with
    the chart's right to create TokenReviews), allowing ServiceAccounts of the namespace
    and one API key."""
    for account in ("gateway", "caller"):
        cluster.kubectl("-n", namespace, "create", "serviceaccount", account)
    revoke = grant_tokenreview(cluster, namespace, "gateway")
    url, ca_file = api_server(cluster, tmp_path)
    token_file = tmp_path / "gateway.token"
    token_file.write_text(mint(cluster, namespace, "gateway"))
    serve_openai(provider, "/v1", lambda seen: None, model="e1")
    auth = {
        "serviceAccountTokens": {
            "audiences": [AUDIENCE],
            "apiServer": url,
            "caFile": str(ca_file),
            "tokenFile": str(token_file),
        },
        "apiKeys": [{"path": "callers/alice", "principal": {"user": "alice"}}],
        "allow": {"serviceAccounts": [f"{namespace}/*"]},
    }
    doc = endpoint(vllm("e1", provider.url + "/v1"), aiGateway={"auth": auth})
    try:
        yield gateway(doc, {"callers/alice": API_KEY})
    finally:
        revoke()


@pytest.mark.cluster
def test_service_account_tokens_through_a_real_tokenreview(
    cluster: Cluster, namespace: str, sa_gateway: RunningGateway
) -> None:
    token = mint(cluster, namespace, "caller", AUDIENCE)
    assert answers(sa_gateway, token) == "Hello from upstream"
    assert answers(sa_gateway, API_KEY) == "Hello from upstream", "API keys work beside tokens"

    # Another namespace's ServiceAccount is a valid caller, just not one this endpoint allows.
    outsider = mint(cluster, "default", "default", AUDIENCE)
    with pytest.raises(openai.PermissionDeniedError) as denied:
        answers(sa_gateway, outsider)
    assert denied.value.body["code"] == "PERMISSION_DENIED"  # type: ignore[index]
    assert "system:serviceaccount:default:default" in denied.value.message

    # Tokens for another audience (or the apiserver's own) are not credentials here.
    for wrong in (mint(cluster, namespace, "caller", "other"), mint(cluster, namespace, "caller")):
        with pytest.raises(openai.AuthenticationError) as refused:
            answers(sa_gateway, wrong)
        assert "rejected" in refused.value.message or "audience" in refused.value.message
        assert wrong not in refused.value.response.text

    metrics = httpx.get(sa_gateway.url + "/metrics", timeout=5).text
    assert f'principal="service_principal:system:serviceaccount:{namespace}:caller"' in metrics


# --- OIDC --------------------------------------------------------------------------------


class LoopThread:
    """An event loop in a thread of its own, for servers a gateway thread must reach."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    """An OIDC issuer on loopback, served from a thread of its own."""
    loop = LoopThread()
    running = loop.run(Issuer().__aenter__())
    try:
        yield running
    finally:
        loop.run(running.__aexit__())
        loop.stop()


@pytest.fixture
def oidc_gateway(
    issuer: Issuer, provider: FakeProvider, tmp_path: Path
) -> Iterator[tuple[RunningGateway, FakeClock]]:
    """A gateway accepting the issuer's tokens for users of group team-a, built with a
    clock the test moves (the JWKS refetch interval), as the default pipeline builds it."""
    serve_openai(provider, "/v1", lambda seen: None, model="e1")
    auth = {
        "oidc": {"issuer": issuer.url, "audiences": [AUDIENCE]},
        "allow": {"groups": ["team-a"], "users": ["carol@example.com"]},
    }
    config_dir, secrets_dir = write_config(
        tmp_path, endpoint(vllm("e1", provider.url + "/v1"), aiGateway={"auth": auth}), {}
    )
    config = gatewayconfig.load(config_dir)
    auth_config = config.ai_gateway.auth
    assert auth_config.oidc is not None
    clock = FakeClock()
    fingerprint = Fingerprinter()
    callers = CallerAuth(
        auth_config,
        ApiKeyVerifier(secrets_dir, [], fingerprint=fingerprint),
        oidc=OidcVerifier(auth_config.oidc, clock=clock, fingerprint=fingerprint),
        oidc_issuer=issuer.url,
    )
    app = GatewayApp(config, secrets_dir, pipeline=Pipeline(authenticator=callers))
    gw = RunningGateway(app, secrets_dir).start()
    try:
        yield gw, clock
    finally:
        gw.stop()


def test_oidc_tokens_with_key_rotation(
    issuer: Issuer, oidc_gateway: tuple[RunningGateway, FakeClock]
) -> None:
    gw, clock = oidc_gateway
    first = issuer.add(rsa_key("k1"))
    assert answers(gw, issuer.token(first, groups=["team-a"])) == "Hello from upstream"
    assert answers(gw, issuer.token(first, sub="carol@example.com")) == "Hello from upstream"

    # The issuer rotates: a new key is published; a token signed with it is accepted once
    # the gateway refetches the set (at most every 10 s for unknown key ids).
    second = issuer.add(ec_key("k2"))
    clock.advance(11)
    assert answers(gw, issuer.token(second, groups=["team-a"])) == "Hello from upstream"
    # The old key is withdrawn: its fresh tokens stop verifying after the next refresh.
    issuer.remove(first)
    clock.advance(3601)
    refused_after_rotation = issuer.token(first, groups=["team-a"], sub="dave@example.com")
    with pytest.raises(openai.AuthenticationError):
        answers(gw, refused_after_rotation)


def test_oidc_refusals(issuer: Issuer, oidc_gateway: tuple[RunningGateway, FakeClock]) -> None:
    gw, _ = oidc_gateway
    key = issuer.add(rsa_key("k1"))
    stranger: SigningKey = rsa_key("k1")  # same kid, a key the issuer never published
    cases = {
        "expired": issuer.token(key, groups=["team-a"], exp=int(issuer.now()) - 120),
        "audience": issuer.token(key, groups=["team-a"], aud="another-service"),
        "signature": issuer.token(stranger, groups=["team-a"]),
    }
    for reason, token in cases.items():
        with pytest.raises(openai.AuthenticationError) as refused:
            answers(gw, token)
        assert reason in refused.value.message, (reason, refused.value.message)
        assert token not in refused.value.response.text
    # Valid, but neither in group team-a nor a listed user: 403.
    with pytest.raises(openai.PermissionDeniedError) as denied:
        answers(gw, issuer.token(key, groups=["team-b"], sub="eve@example.com"))
    assert "user:eve@example.com" in denied.value.message
