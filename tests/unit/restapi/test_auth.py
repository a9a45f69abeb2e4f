"""Callers of the REST API: which verifier a token goes to, OIDC names as the apiserver
makes them, and RBAC decisions cached briefly (injectable clock)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from modelport.gateway.auth.base import AuthFailedError, AuthUnavailableError
from modelport.gateway.context import Principal
from modelport.restapi.access import Operation
from modelport.restapi.auth import ALLOWED_SECONDS, DENIED_SECONDS, Callers
from modelport.restapi.errors import ApiError
from tests.support import FakeClock, asynchronous

ISSUER = "https://login.example.com"


def jwt_shaped(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


class StubVerifier:
    """Answers with a fixed principal, or raises what it is given."""

    def __init__(self, answer: Principal | Exception) -> None:
        self.answer = answer
        self.tokens: list[str] = []

    async def verify(self, token: str) -> Principal:
        self.tokens.append(token)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    async def aclose(self) -> None:
        return None


class StubReviews:
    """Stands in for the apiserver's SubjectAccessReview answers in these unit tests (the
    integration tests use the real one)."""

    def __init__(self, allowed: bool) -> None:
        self.allowed = allowed
        self.reviews: list[dict[str, Any]] = []

    async def review_access(self, review: dict[str, Any]) -> dict[str, Any]:
        self.reviews.append(review)
        return {"allowed": self.allowed}


SA = Principal(
    kind="service_principal",
    name="system:serviceaccount:team-a:ci",
    groups=("system:serviceaccounts", "system:authenticated"),
    method="service_account",
)


def callers(
    reviews: StubReviews, clock: FakeClock | None = None, **verifiers: StubVerifier
) -> Callers:
    return Callers(
        reviews,  # type: ignore[arg-type]
        service_accounts=verifiers.get("sa"),
        audiences=("modelport",),
        oidc=verifiers.get("oidc"),
        oidc_issuer=ISSUER,
        username_prefix="oidc:",
        groups_prefix="oidc:",
        clock=clock or FakeClock(),
    )


@asynchronous
async def test_tokens_go_to_the_verifier_their_issuer_names() -> None:
    sa = StubVerifier(SA)
    oidc = StubVerifier(Principal(kind="user", name="alice", groups=("ml",), method="oidc"))
    auth = callers(StubReviews(True), sa=sa, oidc=oidc)
    assert await auth.authenticate("Bearer " + jwt_shaped({"iss": "kubernetes"})) == SA
    user = await auth.authenticate("bearer " + jwt_shaped({"iss": ISSUER}))
    # As the apiserver's OIDC authenticator names them, so RoleBindings apply alike.
    assert user.name == "oidc:alice"
    assert user.groups == ("oidc:ml", "system:authenticated")
    assert len(sa.tokens) == len(oidc.tokens) == 1


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (None, "no bearer token"),
        ("Basic dXNlcjpwYXNz", "no bearer token"),
        ("Bearer dapi0123456789abcdef", "not a Kubernetes or OIDC token"),
    ],
)
@asynchronous
async def test_missing_or_foreign_credentials_are_401_with_what_to_send(
    header: str | None, words: str
) -> None:
    auth = callers(StubReviews(True), sa=StubVerifier(SA))
    with pytest.raises(ApiError) as caught:
        await auth.authenticate(header)
    assert caught.value.status == 401 and caught.value.code == "UNAUTHENTICATED"
    assert words in caught.value.message
    assert "kubectl create token <sa> --audience modelport" in caught.value.message
    assert caught.value.headers["WWW-Authenticate"].startswith("Bearer")
    assert "dapi0123456789abcdef" not in caught.value.message


@asynchronous
async def test_invalid_tokens_are_401_and_unverifiable_ones_503() -> None:
    token = jwt_shaped({"iss": "kubernetes"})
    refused = callers(StubReviews(True), sa=StubVerifier(AuthFailedError("rejected", "expired")))
    with pytest.raises(ApiError) as caught:
        await refused.authenticate("Bearer " + token)
    assert caught.value.status == 401 and "rejected (expired)" in caught.value.message
    assert token not in caught.value.message
    down = callers(StubReviews(True), sa=StubVerifier(AuthUnavailableError("apiserver down")))
    with pytest.raises(ApiError) as caught:
        await down.authenticate("Bearer " + token)
    assert caught.value.status == 503


@asynchronous
async def test_rbac_decisions_are_cached_briefly() -> None:
    clock = FakeClock()
    reviews = StubReviews(True)
    auth = callers(reviews, clock)
    access = Operation.GET.access("chat")
    for _ in range(5):
        await auth.authorize(SA, "team-a", access)
    assert len(reviews.reviews) == 1
    clock.advance(ALLOWED_SECONDS)
    reviews.allowed = False  # revoked meanwhile
    with pytest.raises(ApiError) as caught:
        await auth.authorize(SA, "team-a", access)
    assert caught.value.status == 403 and caught.value.code == "PERMISSION_DENIED"
    assert "system:serviceaccount:team-a:ci may not get servingendpoints 'chat'" in (
        caught.value.message
    )
    assert len(reviews.reviews) == 2
    # Another endpoint, verb or namespace is another question.
    await _denied(auth, Operation.UPDATE.access("chat"))
    await _denied(auth, Operation.GET.access("other"))
    assert len(reviews.reviews) == 4
    reviews.allowed = True
    clock.advance(DENIED_SECONDS)
    await auth.authorize(SA, "team-a", access)


async def _denied(auth: Callers, access: Any) -> None:
    with pytest.raises(ApiError):
        await auth.authorize(SA, "team-a", access)
