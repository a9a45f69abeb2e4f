"""The console's pure parts: chart numbers from gateway scrapes and from Prometheus,
quantiles as Prometheus computes them, sessions, and pages that escape what they show."""

from __future__ import annotations

import math

import jwt
import pytest

from modelport.console import pages
from modelport.console.series import (
    Snapshot,
    from_prometheus,
    panels,
    promql,
    quantile,
    snapshot,
)
from modelport.console.sessions import IDLE_SECONDS, MAX_SECONDS, Sessions
from modelport.console.svg import chart
from modelport.console.views import EndpointView, EntityView, event_views
from modelport.gateway.context import Principal
from tests.support import FakeClock

INF = math.inf


def exposition(ok: int, failed: int, fast: int, slow: int, tokens: int) -> str:
    """A gateway's metrics as it exposes them (one pod)."""
    return f"""# TYPE modelport_gateway_requests_total counter
modelport_gateway_requests_total{{entity="a",route="/v1/chat/completions",status="200"}} {ok}
modelport_gateway_requests_total{{entity="",route="/v1/chat/completions",status="429"}} {failed}
# TYPE modelport_gateway_request_duration_seconds histogram
modelport_gateway_request_duration_seconds_bucket{{entity="a",le="0.1"}} {fast}
modelport_gateway_request_duration_seconds_bucket{{entity="a",le="1.0"}} {fast + slow}
modelport_gateway_request_duration_seconds_bucket{{entity="a",le="+Inf"}} {fast + slow}
modelport_gateway_request_duration_seconds_sum{{entity="a"}} 1
modelport_gateway_request_duration_seconds_count{{entity="a"}} {fast + slow}
# TYPE modelport_gateway_principal_tokens_total counter
modelport_gateway_principal_tokens_total{{principal="user:alice",kind="prompt"}} {tokens}
modelport_gateway_principal_tokens_total{{principal="user:bob",kind="prompt"}} 0
"""


def test_two_scrapes_make_one_point_of_each_panel_summed_over_pods() -> None:
    before = snapshot(100.0, [exposition(10, 0, 10, 0, 100), exposition(5, 0, 5, 0, 0)])
    after = snapshot(110.0, [exposition(28, 2, 20, 8, 400), exposition(7, 0, 7, 0, 0)])
    by_key = {p.key: p for p in panels([before, after])}
    ((t, rate),) = by_key["requests"].series[0].points
    assert t == 110.0 and rate == pytest.approx((20 + 2) / 10)
    assert by_key["errors"].series[0].points == [(110.0, pytest.approx(100 * 2 / 22))]
    p50, p99 = by_key["latency"].series
    # 20 new observations: 12 under 0.1 s (10 + 2), 8 between 0.1 s and 1 s.
    assert p50.points[0][1] == pytest.approx(0.1 * (10 / 12))
    assert 0.1 < p99.points[0][1] <= 1.0
    (alice,) = by_key["tokens"].series  # bob stayed at 0: not on the chart
    assert alice.name == "user:alice" and alice.points == [(110.0, pytest.approx(300 * 6))]
    assert by_key["ttft"].series[0].points == []


def test_a_pod_restart_counts_its_new_values_as_rate_does() -> None:
    before = snapshot(0.0, [exposition(100, 0, 100, 0, 0)])
    after = snapshot(10.0, [exposition(3, 0, 3, 0, 0)])
    by_key = {p.key: p for p in panels([before, after])}
    assert by_key["requests"].series[0].points == [(10.0, pytest.approx(0.3))]


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, {0.1: 5.0, 1.0: 10.0, INF: 10.0}, 0.1),
        (0.75, {0.1: 5.0, 1.0: 10.0, INF: 10.0}, 0.1 + 0.9 * 0.5),
        (0.99, {0.1: 0.0, 1.0: 0.0, INF: 4.0}, 1.0),  # beyond the last bound: its bound
        (0.5, {0.1: 0.0, INF: 0.0}, None),
        (0.5, {0.1: 3.0}, None),  # no +Inf bucket: not a histogram
    ],
)
def test_quantiles_interpolate_as_prometheus_does(
    q: float, buckets: dict[float, float], expected: float | None
) -> None:
    got = quantile(q, buckets)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_prometheus_queries_are_scoped_and_their_answers_become_panels() -> None:
    queries = promql('team"a', "chat")
    assert 'namespace="team\\"a",service="chat"' in queries["requests"]["requests"]
    answers = {
        "requests": {"requests": [{"metric": {}, "values": [[1, "0.5"], [61, "NaN"]]}]},
        "tokens": {
            "*": [
                {"metric": {"principal": "user:a"}, "values": [[1, "10"]]},
                {"metric": {"principal": "user:b"}, "values": [[1, "0"]]},
            ]
        },
    }
    by_key = {p.key: p for p in from_prometheus(answers)}
    assert by_key["requests"].series[0].points == [(1.0, 0.5)]
    assert [s.name for s in by_key["tokens"].series] == ["user:a"]
    assert by_key["latency"].series == []


def test_a_chart_escapes_names_and_says_when_it_has_nothing() -> None:
    empty = chart(panels([Snapshot(0.0)])[0])
    assert "no data yet" in empty
    before, after = Snapshot(0.0), Snapshot(60.0, tokens={"<script>": 60.0})
    svg = chart(panels([before, after])[-1])
    assert "<script>" not in svg and "&lt;script&gt;" in svg


def test_sessions_end_on_idle_at_the_token_expiry_and_on_sign_out() -> None:
    clock = FakeClock()
    sessions = Sessions(clock=clock, max_sessions=2)
    who = Principal("user", "alice")
    token = jwt.encode({"exp": int(clock.now) + 120}, "k" * 32, algorithm="HS256")
    sid = sessions.start(who, token)
    session = sessions.get(sid)
    assert session is not None and session.authorization == f"Bearer {token}"
    clock.advance(121)
    assert sessions.get(sid) is None  # the token expired
    long_lived = sessions.start(who, "not-a-jwt")
    clock.advance(IDLE_SECONDS - 1)
    assert sessions.get(long_lived) is not None
    clock.advance(IDLE_SECONDS + 1)
    assert sessions.get(long_lived) is None
    kept = sessions.start(who, "x")
    for _ in range(int(MAX_SECONDS // (IDLE_SECONDS / 2)) - 1):  # in use, never idle
        clock.advance(IDLE_SECONDS / 2)
        assert sessions.get(kept) is not None
    clock.advance(IDLE_SECONDS / 2)
    assert sessions.get(kept) is None  # eight hours after sign-in, however busy
    signed_out = sessions.start(who, "x")
    sessions.end(signed_out)
    assert sessions.get(signed_out) is None and sessions.get("nonsense") is None
    for _ in range(5):
        sessions.start(who, "x")
    assert len(sessions) == 2


def test_pages_escape_every_value() -> None:
    view = EndpointView(
        namespace="ns",
        name="<b>x</b>",
        ready="READY",
        config_update="NOT_UPDATING",
        url='http://"evil"',
        task="llm/v1/chat",
        creator="",
        entities=[EntityView("e<1>", "openai: m", 100, "DEPLOYMENT_READY", "<img src=x>")],
        conditions=[],
    )
    events = event_views(
        [{"type": "Warning", "reason": "R", "message": "<script>alert(1)</script>"}]
    )
    html = pages.endpoint_detail("u<s>", view, events, [], "from nowhere")
    listing = pages.endpoint_list("u", [("ns", [view])], 0)
    played = pages.playground("u", [view], ["ns/<b>x</b>"])
    for page in (html, listing, played):
        assert "<b>x</b>" not in page and "<script>alert" not in page and "<img src=x>" not in page
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "u&lt;s&gt;" in html
