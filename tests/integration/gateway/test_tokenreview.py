"""The TokenReview verifier against the real kube-apiserver of the local cluster.

The gateway's stand-in is a ServiceAccount ``reviewer`` of the test namespace, bound to a
ClusterRole that may create tokenreviews (what the chart grants the gateway); callers are
other ServiceAccounts whose tokens ``kubectl create token`` mints. The verifier talks to
the apiserver named by the cluster's kubeconfig, trusting its CA.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelport import gatewayconfig as gc
from modelport.gateway.auth.base import AuthFailedError, AuthUnavailableError
from modelport.gateway.auth.tokenreview import TokenReviewVerifier
from tests.conftest import Cluster
from tests.integration.gateway.kubeauth import api_server, grant_tokenreview, mint
from tests.support import FakeClock, asynchronous

pytestmark = pytest.mark.cluster

AUDIENCE = "modelport"
CACHE_SECONDS = 10.0

Reviewers = Callable[..., TokenReviewVerifier]


@pytest.fixture
def reviewers(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Reviewers]:
    """Make verifiers that review as the namespace's ServiceAccount ``reviewer``.

    ``reviewer`` may create tokenreviews (a ClusterRole and ClusterRoleBinding named after
    the namespace, removed afterwards); ``norights`` may not; ``caller`` is a caller.
    """
    for account in ("reviewer", "norights", "caller"):
        cluster.kubectl("-n", namespace, "create", "serviceaccount", account)
    revoke = grant_tokenreview(cluster, namespace, "reviewer")
    url, ca_file = api_server(cluster, tmp_path)

    def make(
        account: str = "reviewer", clock: FakeClock | None = None, **config: Any
    ) -> TokenReviewVerifier:
        token_file = tmp_path / f"{account}.token"
        token_file.write_text(mint(cluster, namespace, account))
        settings = {
            "audiences": [AUDIENCE],
            "cacheSeconds": CACHE_SECONDS,
            "apiServer": url,
            "caFile": str(ca_file),
            "tokenFile": str(token_file),
            **config,
        }
        clock = clock or FakeClock()
        return TokenReviewVerifier(
            gc.ServiceAccountTokens.model_validate(settings), clock=clock, wall=clock
        )

    try:
        yield make
    finally:
        revoke()


@asynchronous
async def test_a_caller_token_for_our_audience_is_its_service_principal(
    cluster: Cluster, namespace: str, reviewers: Reviewers
) -> None:
    verifier = reviewers()
    try:
        principal = await verifier.verify(mint(cluster, namespace, "caller", AUDIENCE))
    finally:
        await verifier.aclose()
    assert principal.name == f"system:serviceaccount:{namespace}:caller"
    assert principal.kind == "service_principal"
    assert principal.method == "service_account"
    assert f"system:serviceaccounts:{namespace}" in principal.groups
    assert "system:serviceaccounts" in principal.groups


@asynchronous
async def test_tokens_for_other_audiences_and_garbage_are_refused(
    cluster: Cluster, namespace: str, reviewers: Reviewers
) -> None:
    verifier = reviewers()
    other = mint(cluster, namespace, "caller", "other")
    apiserver_own = mint(cluster, namespace, "caller")  # the apiserver's audience, not ours
    forged = other[: other.rindex(".") + 1] + "c2lnbmF0dXJl"  # its claims, a bad signature
    try:
        for token in (other, apiserver_own, forged, "garbage", "a.b.c"):
            with pytest.raises(AuthFailedError) as caught:
                await verifier.verify(token)
            assert caught.value.reason in ("rejected", "audience")
            assert token not in f"{caught.value} {caught.value.detail}"
    finally:
        await verifier.aclose()


@asynchronous
async def test_a_reviewer_without_the_right_is_unavailable_and_names_the_fix(
    cluster: Cluster,
    namespace: str,
    reviewers: Reviewers,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    verifier = reviewers("norights")
    caller = mint(cluster, namespace, "caller", AUDIENCE)
    try:
        with caplog.at_level(logging.WARNING, "modelport.gateway.auth"):
            for _ in range(3):
                with pytest.raises(AuthUnavailableError):
                    await verifier.verify(caller)
        assert verifier.reviews == 3  # "cannot check" is never cached
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "ClusterRoleBinding" in warnings[0]
        assert "tokenreviews" in warnings[0]
        assert caller not in caplog.text

        # The token file is rotated to one with the right: used from the next review on.
        token_file = tmp_path / "norights.token"  # where the fixture put the reviewer's token
        fresh = token_file.with_suffix(".new")
        fresh.write_text(mint(cluster, namespace, "reviewer"))
        fresh.replace(token_file)
        principal = await verifier.verify(caller)
        assert principal.name == f"system:serviceaccount:{namespace}:caller"
    finally:
        await verifier.aclose()


@asynchronous
async def test_verdicts_are_cached_then_asked_again(
    cluster: Cluster, namespace: str, reviewers: Reviewers
) -> None:
    clock = FakeClock()
    verifier = reviewers(clock=clock)
    caller = mint(cluster, namespace, "caller", AUDIENCE)
    try:
        for _ in range(3):
            await verifier.verify(caller)
        assert verifier.reviews == 1
        clock.advance(CACHE_SECONDS)
        await verifier.verify(caller)
        assert verifier.reviews == 2

        # Concurrent requests with a new token share one review.
        second = mint(cluster, namespace, "caller", AUDIENCE)
        await asyncio.gather(*(verifier.verify(second) for _ in range(10)))
        assert verifier.reviews == 3

        # A refusal is remembered briefly too: a bad token in a loop is not a review each.
        for _ in range(3):
            with pytest.raises(AuthFailedError):
                await verifier.verify("garbage")
        assert verifier.reviews == 4
    finally:
        await verifier.aclose()


@asynchronous
async def test_a_deleted_service_accounts_token_fails_once_the_cache_expires(
    cluster: Cluster, namespace: str, reviewers: Reviewers
) -> None:
    clock = FakeClock()
    verifier = reviewers(clock=clock)
    caller = mint(cluster, namespace, "caller", AUDIENCE)
    try:
        await verifier.verify(caller)
        cluster.kubectl("-n", namespace, "delete", "serviceaccount", "caller")
        await verifier.verify(caller)  # still cached: no review, no refusal
        assert verifier.reviews == 1

        async def refused() -> bool:
            clock.advance(CACHE_SECONDS)
            try:
                await verifier.verify(caller)
            except AuthFailedError as exc:
                return exc.reason == "rejected"
            return False

        # The apiserver may accept it a few seconds more (its own token cache, and it learns
        # of the deletion through a watch): ask again, a cache period apart, up to 30 s.
        for _ in range(60):
            if await refused():
                break
            await asyncio.sleep(0.5)
        else:
            pytest.fail("the deleted ServiceAccount's token was still accepted after 30 s")
    finally:
        await verifier.aclose()
