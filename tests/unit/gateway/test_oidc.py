"""The OIDC verifier against an issuer on loopback: discovery, JWKS, rotation, refusals.

Every test runs on its own event loop with a fake clock that drives both the verifier's
caches (monotonic) and the tokens' times (wall), so nothing sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from modelport import gatewayconfig as gc
from modelport.gateway.auth import oidc
from modelport.gateway.auth.base import AuthFailedError, AuthUnavailableError
from modelport.gateway.auth.oidc import OidcVerifier
from modelport.gateway.context import Principal
from tests.integration.gateway.jwks import AUDIENCE, Issuer, ec_key, forge, rsa_key
from tests.support import FakeClock, asynchronous

# Key generation is the slow part (RSA): once per module.
RSA_1 = rsa_key("rsa-1")
RSA_2 = rsa_key("rsa-2")
PS_1 = rsa_key("ps-1", "PS256")
EC_1 = ec_key("ec-1")
EC_384 = ec_key("ec-384", "ES384")
FOREIGN = rsa_key("foreign")


@asynccontextmanager
async def oidc_setup(
    *keys: Any, discovery: bool = True, **config: Any
) -> AsyncIterator[tuple[Issuer, OidcVerifier, FakeClock]]:
    """An issuer publishing ``keys`` and a verifier of its tokens (closed afterwards)."""
    clock = FakeClock()
    async with Issuer() as issuer:
        issuer.now = clock
        for key in keys:
            issuer.add(key)
        settings: dict[str, Any] = {"issuer": issuer.url, "audiences": [AUDIENCE], **config}
        if not discovery:
            settings["jwksUri"] = issuer.jwks_uri
        verifier = OidcVerifier(gc.Oidc.model_validate(settings), clock=clock, wall=clock)
        try:
            yield issuer, verifier, clock
        finally:
            await verifier.aclose()


async def refused(verifier: OidcVerifier, token: str) -> AuthFailedError:
    """The verifier's refusal of ``token`` (fails the test if it accepts it)."""
    with pytest.raises(AuthFailedError) as caught:
        await verifier.verify(token)
    return caught.value


# -- accepted tokens -------------------------------------------------------------------------


@asynchronous
async def test_a_valid_token_is_its_user_with_groups_through_discovery() -> None:
    async with oidc_setup(RSA_1) as (issuer, verifier, _):
        principal = await verifier.verify(issuer.token(RSA_1, groups=["team-a", "ml"]))
        assert principal == Principal("user", "alice@example.com", ("team-a", "ml"), "oidc")
        assert issuer.hits == {"discovery": 1, "jwks": 1}


@pytest.mark.parametrize("key", [EC_1, EC_384, PS_1], ids=lambda k: k.alg)
@asynchronous
async def test_ec_and_pss_keys_from_a_configured_jwks_uri(key: Any) -> None:
    async with oidc_setup(key, discovery=False, algorithms=[key.alg]) as (issuer, verifier, _):
        assert (await verifier.verify(issuer.token(key))).name == "alice@example.com"
        assert issuer.hits == {"jwks": 1}  # no discovery when jwksUri is set


@asynchronous
async def test_keys_published_without_alg_or_tokens_without_kid() -> None:
    async with oidc_setup(RSA_1, PS_1, EC_1) as (issuer, verifier, _):
        issuer.jwks_without_alg = True
        # A JWK without alg serves each configured algorithm its key type fits.
        for key in (RSA_1, PS_1, EC_1):
            assert (await verifier.verify(issuer.token(key, sub=key.kid))).name == key.kid
        # A token without kid is tried against every key that fits its algorithm.
        assert (await verifier.verify(issuer.token(RSA_1, kid=False, sub="x"))).name == "x"
        assert issuer.hits["jwks"] == 1


@asynchronous
async def test_custom_claims_and_the_shapes_of_groups() -> None:
    config: dict[str, Any] = {"userClaim": "email", "groupsClaim": "roles"}
    async with oidc_setup(RSA_1, **config) as (issuer, verifier, _):
        one = await verifier.verify(issuer.token(RSA_1, email="bob@x", roles="admin"))
        assert (one.name, one.groups) == ("bob@x", ("admin",))
        none = await verifier.verify(issuer.token(RSA_1, email="carol@x"))
        assert none.groups == ()
        error = await refused(verifier, issuer.token(RSA_1, email="dan@x", roles=["a", 1]))
        assert error.reason == "claims"


@asynchronous
async def test_an_audience_list_needs_one_of_ours_and_skew_is_tolerated() -> None:
    async with oidc_setup(RSA_1) as (issuer, verifier, clock):
        await verifier.verify(issuer.token(RSA_1, aud=["other", AUDIENCE]))
        # Within the leeway on both sides: the issuer's clock may be a little off.
        now = clock.now
        await verifier.verify(issuer.token(RSA_1, exp=now - 10, iat=now - 100))
        await verifier.verify(issuer.token(RSA_1, nbf=now + 10, iat=now + 10))


# -- refused tokens --------------------------------------------------------------------------


@asynchronous
async def test_time_audience_and_issuer_refusals_name_a_fixed_reason() -> None:
    async with oidc_setup(RSA_1) as (issuer, verifier, clock):
        now = clock.now
        cases = {
            "expired": issuer.token(RSA_1, exp=now - 120, iat=now - 720),
            "not_yet_valid": issuer.token(RSA_1, nbf=now + 300),
            "audience": issuer.token(RSA_1, aud="someone-else"),
            "issuer": issuer.token(RSA_1, iss="https://evil.example.com"),
        }
        for reason, token in cases.items():
            error = await refused(verifier, token)
            assert error.reason == reason
            # Nothing from the token reaches a message: not its subject, not its issuer.
            assert "alice" not in f"{error} {error.detail}"
            assert "evil" not in f"{error} {error.detail}"
        for missing, reason in (("aud", "audience"), ("iss", "issuer"), ("exp", "claims")):
            without: dict[str, Any] = {missing: None}
            error = await refused(verifier, issuer.token(RSA_1, **without))
            assert error.reason == reason, missing


@asynchronous
async def test_a_missing_or_empty_user_claim_is_refused() -> None:
    async with oidc_setup(RSA_1) as (issuer, verifier, _):
        assert (await refused(verifier, issuer.token(RSA_1, sub=None))).reason == "claims"
        assert (await refused(verifier, issuer.token(RSA_1, sub=""))).reason == "claims"


@asynchronous
async def test_a_key_outside_the_jwks_is_refused() -> None:
    async with oidc_setup(RSA_1) as (issuer, verifier, _):
        # Unknown kid, then a known kid with a signature by another key.
        assert (await refused(verifier, issuer.token(FOREIGN))).reason == "unknown_key"
        impostor = issuer.token(FOREIGN, kid=RSA_1.kid)
        assert (await refused(verifier, impostor)).reason == "signature"
        # No kid: tried against the issuer's keys, none of which signed it.
        assert (await refused(verifier, issuer.token(FOREIGN, kid=False))).reason == "signature"
        # A key used with an algorithm its JWK does not name.
        ps_with_rs_kid = rsa_key(RSA_1.kid, "PS256").sign(issuer.claims())
        assert (await refused(verifier, ps_with_rs_kid)).reason == "signature"


@asynchronous
async def test_alg_none_and_hs256_under_the_public_key_are_refused_before_any_fetch() -> None:
    async with oidc_setup(RSA_1) as (issuer, verifier, _):
        claims = issuer.claims()
        unsigned = forge({"alg": "none", "kid": RSA_1.kid}, claims, None)
        # The classic confusion attack: the public key, which anyone can fetch, as an HMAC
        # secret, hoping the verifier feeds the same key to HS256.
        hs256 = forge({"alg": "HS256", "kid": RSA_1.kid}, claims, RSA_1.public_pem())
        for token in (unsigned, hs256):
            assert (await refused(verifier, token)).reason == "signature"
        assert issuer.hits == {}


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "x" * 20_000, "e30.e30.e30.e30.e30"])
@asynchronous
async def test_malformed_tokens(token: str) -> None:
    async with oidc_setup(RSA_1) as (issuer, verifier, _):
        assert (await refused(verifier, token)).reason == "malformed"
        assert issuer.hits == {}


# -- keys: rotation, rate limits, outages ----------------------------------------------------


@asynchronous
async def test_a_key_added_to_the_jwks_verifies_after_one_refetch() -> None:
    async with oidc_setup(RSA_1) as (issuer, verifier, clock):
        await verifier.verify(issuer.token(RSA_1))
        issuer.add(RSA_2)
        clock.advance(oidc.REFETCH_MIN_INTERVAL_SECONDS)
        assert (await verifier.verify(issuer.token(RSA_2, sub="new"))).name == "new"
        assert issuer.hits["jwks"] == 2


@asynchronous
async def test_a_key_removed_from_the_jwks_stops_verifying_after_a_refresh() -> None:
    async with oidc_setup(RSA_1, RSA_2) as (issuer, verifier, clock):
        await verifier.verify(issuer.token(RSA_1, sub="before"))
        issuer.remove(RSA_1)
        # Until the set is refetched, the cached key still verifies ...
        await verifier.verify(issuer.token(RSA_1, sub="still"))
        # ... and the periodic refresh drops it.
        clock.advance(oidc.JWKS_MAX_AGE_SECONDS)
        assert (await refused(verifier, issuer.token(RSA_1))).reason == "unknown_key"
        assert (await verifier.verify(issuer.token(RSA_2))).name == "alice@example.com"
        assert issuer.hits["jwks"] == 2


@asynchronous
async def test_a_refetch_for_a_new_key_also_drops_removed_ones() -> None:
    async with oidc_setup(RSA_1) as (issuer, verifier, clock):
        await verifier.verify(issuer.token(RSA_1))
        issuer.keys = [RSA_2]  # the issuer rotated: new key in, old key out
        clock.advance(oidc.REFETCH_MIN_INTERVAL_SECONDS)
        await verifier.verify(issuer.token(RSA_2))
        assert (await refused(verifier, issuer.token(RSA_1, sub="x"))).reason == "unknown_key"
        assert issuer.hits["jwks"] == 2  # the unknown kid right after a fetch: no refetch


@asynchronous
async def test_unknown_kids_refetch_at_most_once_per_interval() -> None:
    async with oidc_setup(RSA_1) as (issuer, verifier, clock):
        await verifier.verify(issuer.token(RSA_1))
        clock.advance(oidc.REFETCH_MIN_INTERVAL_SECONDS)
        for i in range(50):
            garbage = issuer.token(FOREIGN, kid=f"garbage-{i}")
            assert (await refused(verifier, garbage)).reason == "unknown_key"
            clock.advance(0.1)
        assert issuer.hits["jwks"] == 2  # one refetch for fifty unknown kids over 5 s
        clock.advance(oidc.REFETCH_MIN_INTERVAL_SECONDS)
        await refused(verifier, issuer.token(FOREIGN, kid="garbage-late"))
        assert issuer.hits["jwks"] == 3


@asynchronous
async def test_concurrent_first_requests_fetch_once() -> None:
    async with oidc_setup(RSA_1, EC_1) as (issuer, verifier, _):
        issuer.delay = 0.05  # every request arrives while the first fetch is in flight
        tokens = [issuer.token(RSA_1 if i % 2 else EC_1, sub=f"u{i}") for i in range(20)]
        principals = await asyncio.gather(*(verifier.verify(t) for t in tokens))
        assert [p.name for p in principals] == [f"u{i}" for i in range(20)]
        assert issuer.hits == {"discovery": 1, "jwks": 1}


@asynchronous
async def test_a_request_that_goes_away_does_not_cancel_the_shared_fetch() -> None:
    async with oidc_setup(RSA_1) as (issuer, verifier, _):
        issuer.delay = 0.1
        first = asyncio.create_task(verifier.verify(issuer.token(RSA_1, sub="first")))
        second = asyncio.create_task(verifier.verify(issuer.token(RSA_1, sub="second")))
        await asyncio.sleep(0.05)
        first.cancel()
        assert (await second).name == "second"
        assert issuer.hits == {"discovery": 1, "jwks": 1}


@asynchronous
async def test_an_unreachable_issuer_with_no_keys_is_unavailable_then_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with oidc_setup(RSA_1) as (issuer, verifier, clock):
        issuer.up = False
        token = issuer.token(RSA_1)
        with caplog.at_level(logging.WARNING, "modelport.gateway.auth"):
            for _ in range(5):
                with pytest.raises(AuthUnavailableError):
                    await verifier.verify(token)
        assert issuer.hits["discovery"] == 1  # retried at most once a second, not per request
        assert token not in caplog.text
        issuer.up = True
        clock.advance(oidc.RETRY_EMPTY_SECONDS)
        assert (await verifier.verify(token)).name == "alice@example.com"


@asynchronous
async def test_an_unreachable_issuer_keeps_the_last_keys_in_use() -> None:
    async with oidc_setup(RSA_1, discovery=False) as (issuer, verifier, clock):
        await verifier.verify(issuer.token(RSA_1))
        issuer.up = False
        clock.advance(oidc.JWKS_MAX_AGE_SECONDS)
        # The refresh fails; the key it had still verifies, and the next tries are spaced.
        await verifier.verify(issuer.token(RSA_1, sub="a"))
        await verifier.verify(issuer.token(RSA_1, sub="b"))
        assert issuer.hits["jwks"] == 2
        clock.advance(oidc.REFETCH_MIN_INTERVAL_SECONDS)
        await verifier.verify(issuer.token(RSA_1, sub="c"))
        assert issuer.hits["jwks"] == 3


@asynchronous
async def test_an_issuer_that_does_not_answer_is_unavailable_within_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(oidc, "HTTP_TIMEOUT_SECONDS", 0.2)
    async with oidc_setup(RSA_1) as (issuer, verifier, _):
        issuer.delay = 2.0
        started = time.monotonic()
        with pytest.raises(AuthUnavailableError):
            await verifier.verify(issuer.token(RSA_1))
        assert time.monotonic() - started < 1.5


# -- the token cache -------------------------------------------------------------------------


@asynchronous
async def test_a_repeated_token_is_verified_once_a_minute() -> None:
    async with oidc_setup(RSA_1) as (issuer, verifier, clock):
        token = issuer.token(RSA_1)
        for _ in range(5):
            await verifier.verify(token)
        assert verifier.signature_checks == 1
        clock.advance(oidc.TOKEN_CACHE_SECONDS)
        await verifier.verify(token)
        assert verifier.signature_checks == 2
        assert issuer.hits["jwks"] == 1


@asynchronous
async def test_a_cached_token_is_not_accepted_past_its_exp() -> None:
    async with oidc_setup(RSA_1) as (issuer, verifier, clock):
        token = issuer.token(RSA_1, exp=int(clock.now) + 20)
        await verifier.verify(token)
        clock.advance(21 + oidc.LEEWAY_SECONDS)
        assert (await refused(verifier, token)).reason == "expired"


@asynchronous
async def test_refusals_are_not_cached_as_acceptances() -> None:
    async with oidc_setup(RSA_1) as (issuer, verifier, _):
        token = issuer.token(RSA_1, aud="other")
        for _ in range(3):
            assert (await refused(verifier, token)).reason == "audience"
