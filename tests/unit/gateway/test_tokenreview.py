"""The TokenReview verifier's own logic, against a scripted TokenReview endpoint on loopback.

What a real apiserver cannot be made to do on demand (answer 500, hang, refuse the
gateway's own token, race) is exercised here; what tokens a real apiserver accepts is
exercised in tests/integration/gateway/test_tokenreview.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from modelport import gatewayconfig as gc
from modelport.gateway.auth import tokenreview
from modelport.gateway.auth.base import AuthFailedError, AuthUnavailableError
from modelport.gateway.auth.tokenreview import TokenReviewVerifier, api_server_url
from modelport.gateway.context import Principal
from tests.support import FakeClock, asynchronous

Answer = Callable[[str], tuple[int, dict[str, Any]]]
SA = "system:serviceaccount:team-a:caller"


def accept(username: str = SA, groups: list[str] | None = None) -> Answer:
    """An apiserver that accepts every token as ``username``."""
    user = {"username": username, "groups": groups or ["system:serviceaccounts"]}
    status = {"authenticated": True, "user": user, "audiences": ["modelport"]}
    return lambda token: (201, {"status": status})


class FakeReviews:
    """A TokenReview endpoint: ``answer`` maps a token to (HTTP status, body)."""

    def __init__(self) -> None:
        self.answer: Answer = accept()
        self.delay = 0.0
        self.requests: list[dict[str, Any]] = []
        self.bearers: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        self.bearers.append(request.headers.get("Authorization", ""))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            status, answer = self.answer(body["spec"]["token"])
        finally:
            self.in_flight -= 1
        # A real apiserver echoes the whole object, token included.
        return web.json_response({**body, **answer}, status=status)


@asynccontextmanager
async def reviews_setup(
    tmp_path: Path, **config: Any
) -> AsyncIterator[tuple[FakeReviews, TokenReviewVerifier, FakeClock]]:
    """A scripted apiserver and a verifier that asks it (closed afterwards)."""
    fake = FakeReviews()
    app = web.Application()
    app.router.add_post(tokenreview.REVIEW_PATH, fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    fake.url = f"http://{host}:{port}"
    token_file = tmp_path / "token"
    token_file.write_text("gateway-own-token-1\n")
    settings = {"audiences": ["modelport"], "apiServer": fake.url, "tokenFile": str(token_file)}
    clock = FakeClock()
    verifier = TokenReviewVerifier(
        gc.ServiceAccountTokens.model_validate({**settings, **config}), clock=clock, wall=clock
    )
    try:
        yield fake, verifier, clock
    finally:
        await verifier.aclose()
        await runner.cleanup()


def jwt_shaped(claims: dict[str, Any]) -> str:
    """An unsigned token with ``claims`` (the apiserver, scripted, does not check it)."""
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln"


def answering(status: dict[str, Any]) -> Answer:
    """An apiserver that answers every review with ``status``."""
    return lambda token: (201, {"status": status})


# -- the apiserver's address -----------------------------------------------------------------


def test_the_apiserver_defaults_to_the_pods_environment() -> None:
    assert api_server_url("https://k:6443", {}) == "https://k:6443"
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert api_server_url(None, env) == "https://10.96.0.1:443"
    env["KUBERNETES_SERVICE_HOST"] = "fd00:10:96::1"
    assert api_server_url(None, env) == "https://[fd00:10:96::1]:443"
    with pytest.raises(ValueError, match=r"serviceAccountTokens\.apiServer"):
        api_server_url(None, {})


# -- verdicts --------------------------------------------------------------------------------


@asynchronous
async def test_a_service_account_is_a_service_principal_and_a_user_a_user(tmp_path: Path) -> None:
    async with reviews_setup(tmp_path) as (fake, verifier, _):
        fake.answer = accept(SA, ["system:serviceaccounts", "system:serviceaccounts:team-a"])
        principal = await verifier.verify("sa-token")
        assert principal == Principal(
            "service_principal",
            SA,
            ("system:serviceaccounts", "system:serviceaccounts:team-a"),
            "service_account",
        )
        fake.answer = accept("alice", ["devs"])
        assert await verifier.verify("user-token") == Principal(
            "user", "alice", ("devs",), "service_account"
        )
        assert fake.requests[0] == {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": "sa-token", "audiences": ["modelport"]},
        }
        assert fake.bearers == ["Bearer gateway-own-token-1"] * 2


@asynchronous
async def test_a_rejected_token_gets_a_fixed_reason_and_a_short_negative_cache(
    tmp_path: Path,
) -> None:
    async with reviews_setup(tmp_path, cacheSeconds=30) as (fake, verifier, clock):
        # status.error may quote what it was given; none of it may reach the client.
        fake.answer = lambda token: (
            201,
            {"status": {"authenticated": False, "error": f"invalid bearer token {token}"}},
        )
        for _ in range(3):
            with pytest.raises(AuthFailedError) as caught:
                await verifier.verify("bad-token-xyz")
            assert caught.value.reason == "rejected"
            assert "xyz" not in f"{caught.value} {caught.value.detail}"
        assert len(fake.requests) == 1
        clock.advance(tokenreview.NEGATIVE_CACHE_SECONDS)
        with pytest.raises(AuthFailedError):
            await verifier.verify("bad-token-xyz")
        assert len(fake.requests) == 2


@asynchronous
async def test_an_answer_without_our_audience_is_refused(tmp_path: Path) -> None:
    async with reviews_setup(tmp_path) as (fake, verifier, _):
        for audiences in ([], ["https://kubernetes.default.svc"], None):
            status: dict[str, Any] = {"authenticated": True, "user": {"username": SA}}
            if audiences is not None:
                status["audiences"] = audiences
            fake.answer = answering(status)
            with pytest.raises(AuthFailedError) as caught:
                await verifier.verify(f"token-{audiences}")
            assert caught.value.reason == "audience"


@asynchronous
async def test_acceptances_are_cached_for_cache_seconds_but_not_past_exp(tmp_path: Path) -> None:
    async with reviews_setup(tmp_path, cacheSeconds=10) as (fake, verifier, clock):
        for _ in range(3):
            await verifier.verify("long-lived")
        assert len(fake.requests) == 1
        clock.advance(10)
        await verifier.verify("long-lived")
        assert len(fake.requests) == 2
        short = jwt_shaped({"exp": int(clock.now) + 3, "sub": SA})
        await verifier.verify(short)
        clock.advance(4)
        await verifier.verify(short)  # past its exp: asked again (the apiserver would refuse)
        assert len(fake.requests) == 4


@asynchronous
async def test_concurrent_requests_with_one_token_share_one_review(tmp_path: Path) -> None:
    async with reviews_setup(tmp_path) as (fake, verifier, _):
        fake.delay = 0.1
        principals = await asyncio.gather(*(verifier.verify("same") for _ in range(20)))
        assert {p.name for p in principals} == {SA}
        assert len(fake.requests) == 1


@asynchronous
async def test_a_caller_that_goes_away_does_not_cancel_the_shared_review(tmp_path: Path) -> None:
    async with reviews_setup(tmp_path) as (fake, verifier, _):
        fake.delay = 0.2
        first = asyncio.create_task(verifier.verify("shared"))
        second = asyncio.create_task(verifier.verify("shared"))
        await asyncio.sleep(0.05)
        first.cancel()
        assert (await second).name == SA
        assert len(fake.requests) == 1


@asynchronous
async def test_concurrent_reviews_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokenreview, "MAX_CONCURRENT_REVIEWS", 4)
    async with reviews_setup(tmp_path) as (fake, verifier, _):
        fake.delay = 0.05
        await asyncio.gather(*(verifier.verify(f"token-{i}") for i in range(16)))
        assert len(fake.requests) == 16
        assert fake.most_in_flight == 4


# -- cannot check: never cached --------------------------------------------------------------


@asynchronous
async def test_apiserver_errors_are_unavailable_and_not_cached(tmp_path: Path) -> None:
    async with reviews_setup(tmp_path) as (fake, verifier, _):
        fake.answer = lambda token: (500, {"status": {}})
        for _ in range(2):
            with pytest.raises(AuthUnavailableError):
                await verifier.verify("tok")
        assert len(fake.requests) == 2
        fake.answer = lambda token: (201, {"kind": "TokenReview"})  # no status at all
        with pytest.raises(AuthUnavailableError):
            await verifier.verify("tok")
        fake.answer = accept()
        assert (await verifier.verify("tok")).name == SA


@pytest.mark.parametrize(
    ("code", "hint"),
    [(403, "ClusterRoleBinding"), (401, "serviceAccountTokens.tokenFile")],
)
@asynchronous
async def test_a_refused_review_is_unavailable_and_names_the_fix_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, code: int, hint: str
) -> None:
    async with reviews_setup(tmp_path) as (fake, verifier, _):
        fake.answer = lambda token: (code, {"kind": "Status", "code": code})
        with caplog.at_level(logging.WARNING, "modelport.gateway.auth"):
            for i in range(3):
                with pytest.raises(AuthUnavailableError):
                    await verifier.verify(f"caller-token-{i}")
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert hint in warnings[0].getMessage()
        assert "caller-token" not in caplog.text
        assert "gateway-own-token" not in caplog.text


@asynchronous
async def test_a_hanging_apiserver_is_unavailable_within_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokenreview, "HTTP_TIMEOUT_SECONDS", 0.2)
    async with reviews_setup(tmp_path) as (fake, verifier, _):
        fake.delay = 2.0
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(AuthUnavailableError):
            await verifier.verify("tok")
        assert loop.time() - started < 1.5


@asynchronous
async def test_an_unreachable_apiserver_is_unavailable(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before use: nothing listens there
    token_file = tmp_path / "token"
    token_file.write_text("t")
    config = gc.ServiceAccountTokens.model_validate(
        {"audiences": ["m"], "apiServer": f"http://127.0.0.1:{port}", "tokenFile": str(token_file)}
    )
    verifier = TokenReviewVerifier(config)
    try:
        with pytest.raises(AuthUnavailableError):
            await verifier.verify("tok")
    finally:
        await verifier.aclose()


# -- the gateway's own credential ------------------------------------------------------------


@asynchronous
async def test_the_gateways_own_token_is_reread_when_rotated(tmp_path: Path) -> None:
    async with reviews_setup(tmp_path) as (fake, verifier, _):
        await verifier.verify("a")
        # The kubelet writes a new file and swaps it in: a new inode behind the same path.
        fresh = tmp_path / "token.new"
        fresh.write_text("gateway-own-token-2")
        fresh.replace(tmp_path / "token")
        await verifier.verify("b")
        assert fake.bearers == ["Bearer gateway-own-token-1", "Bearer gateway-own-token-2"]


@asynchronous
async def test_a_missing_own_token_or_ca_is_unavailable(tmp_path: Path) -> None:
    async with reviews_setup(tmp_path, tokenFile=str(tmp_path / "absent")) as (_, verifier, _):
        with pytest.raises(AuthUnavailableError):
            await verifier.verify("tok")
    token_file = tmp_path / "token"
    config = gc.ServiceAccountTokens.model_validate(
        {
            "audiences": ["m"],
            "apiServer": "https://127.0.0.1:1",
            "tokenFile": str(token_file),
            "caFile": str(tmp_path / "no-ca.crt"),
        }
    )
    verifier = TokenReviewVerifier(config)
    try:
        with pytest.raises(AuthUnavailableError):
            await verifier.verify("tok")
    finally:
        await verifier.aclose()


@asynchronous
async def test_oversized_or_non_ascii_tokens_are_malformed_without_a_review(
    tmp_path: Path,
) -> None:
    async with reviews_setup(tmp_path) as (fake, verifier, _):
        for token in ("", "x" * 20_000, "tök"):
            with pytest.raises(AuthFailedError) as caught:
                await verifier.verify(token)
            assert caught.value.reason == "malformed"
        assert fake.requests == []
