"""The numbers behind an endpoint's charts, from either source. Pure.

Five panels: request rate, error rate (share of answers that were not 2xx), latency
p50/p99, time to first token p50/p99, and tokens per caller. Two ways to fill them:

- **From the gateways' own metrics** (no Prometheus): the console scrapes every gateway
  pod of the endpoint while someone looks at it; each scrape, summed over the pods, is a
  :class:`Snapshot`; two consecutive snapshots give one point per series (:func:`panels`):
  counter increases over the interval, and quantiles of the histogram buckets' increases,
  computed as Prometheus' ``histogram_quantile`` does. A counter that went down (a pod
  restarted) counts its new value, as ``rate()`` does.
- **From Prometheus**: :func:`promql` gives each series' query (the same expressions as
  the Grafana dashboard's panels), scoped by the ``namespace`` and ``service`` labels a
  ServiceMonitor gives the gateway's targets; ``query_range`` answers become points.

Metric names come from :mod:`modelport.gateway.metrics`; a test checks every query here
and in the dashboards against what the gateway exports.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "modelport_gateway_requests_total"
DURATION = "modelport_gateway_request_duration_seconds"
FIRST_TOKEN = "modelport_gateway_time_to_first_token_seconds"  # noqa: S105 - a metric name
PRINCIPAL_TOKENS = "modelport_gateway_principal_tokens_total"
TOP_PRINCIPALS = 5

K = TypeVar("K", str, float)
Point = tuple[float, float]
"""(wall-clock seconds, value)."""


@dataclass(frozen=True)
class Series:
    """One line of a chart."""

    name: str
    points: list[Point]


@dataclass(frozen=True)
class Panel:
    """One chart: a title, a unit for its axis, its lines."""

    key: str
    title: str
    unit: str
    series: list[Series]


PANELS: tuple[tuple[str, str, str], ...] = (
    ("requests", "Requests", "req/s"),
    ("errors", "Error rate", "%"),
    ("latency", "Latency", "s"),
    ("ttft", "Time to first token", "s"),
    ("tokens", "Tokens per caller", "tokens/min"),
)


@dataclass
class Histogram:
    """Cumulative bucket counts by upper bound (``+Inf`` included)."""

    buckets: dict[float, float] = field(default_factory=dict)

    def add(self, bound: float, count: float) -> None:
        self.buckets[bound] = self.buckets.get(bound, 0.0) + count


@dataclass
class Snapshot:
    """One scrape of an endpoint's gateway pods, summed over the pods."""

    time: float
    requests: dict[str, float] = field(default_factory=dict)
    """Requests by status code."""
    duration: Histogram = field(default_factory=Histogram)
    first_token: Histogram = field(default_factory=Histogram)
    tokens: dict[str, float] = field(default_factory=dict)
    """Tokens (prompt and completion) by caller."""


def snapshot(time: float, expositions: Iterable[str]) -> Snapshot:
    """Sum the gateway pods' Prometheus text expositions into one snapshot."""
    snap = Snapshot(time)
    for text in expositions:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                name, labels, value = sample.name, sample.labels, sample.value
                if name == REQUESTS:
                    status = labels.get("status", "")
                    snap.requests[status] = snap.requests.get(status, 0.0) + value
                elif name == DURATION + "_bucket":
                    snap.duration.add(float(labels["le"]), value)
                elif name == FIRST_TOKEN + "_bucket":
                    snap.first_token.add(float(labels["le"]), value)
                elif name == PRINCIPAL_TOKENS:
                    who = labels.get("principal", "")
                    snap.tokens[who] = snap.tokens.get(who, 0.0) + value
    return snap


def panels(snapshots: Sequence[Snapshot]) -> list[Panel]:
    """The five panels from consecutive snapshots (one point per interval)."""
    points: dict[str, list[Point]] = {
        k: [] for k in ("requests", "errors", "p50", "p99", "ttft50", "ttft99")
    }
    tokens: dict[str, list[Point]] = {}
    for before, after in itertools.pairwise(snapshots):
        seconds = after.time - before.time
        if seconds <= 0:
            continue
        t = after.time
        done = _increase(before.requests, after.requests)
        total = sum(done.values())
        failed = sum(v for status, v in done.items() if not status.startswith("2"))
        points["requests"].append((t, total / seconds))
        points["errors"].append((t, 100.0 * failed / total if total else 0.0))
        duration = _increase(before.duration.buckets, after.duration.buckets)
        first = _increase(before.first_token.buckets, after.first_token.buckets)
        for key, buckets, q in (
            ("p50", duration, 0.5),
            ("p99", duration, 0.99),
            ("ttft50", first, 0.5),
            ("ttft99", first, 0.99),
        ):
            value = quantile(q, buckets)
            if value is not None:
                points[key].append((t, value))
        for who, amount in _increase(before.tokens, after.tokens).items():
            tokens.setdefault(who, []).append((t, amount * 60.0 / seconds))
    return [
        Panel("requests", "Requests", "req/s", [Series("requests", points["requests"])]),
        Panel("errors", "Error rate", "%", [Series("not 2xx", points["errors"])]),
        Panel(
            "latency", "Latency", "s", [Series("p50", points["p50"]), Series("p99", points["p99"])]
        ),
        Panel(
            "ttft",
            "Time to first token",
            "s",
            [Series("p50", points["ttft50"]), Series("p99", points["ttft99"])],
        ),
        Panel("tokens", "Tokens per caller", "tokens/min", top(tokens)),
    ]


def top(by_name: dict[str, list[Point]], count: int = TOP_PRINCIPALS) -> list[Series]:
    """The ``count`` series with the largest totals, largest first (none that stayed 0:
    a caller with no tokens in the window is not on the chart)."""
    totals = {name: sum(v for _, v in pts) for name, pts in by_name.items()}
    ranked = sorted((n for n in by_name if totals[n] > 0), key=lambda n: -totals[n])
    return [Series(name, by_name[name]) for name in ranked[:count]]


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The ``q`` quantile of cumulative histogram buckets, interpolated linearly within a
    bucket as Prometheus' ``histogram_quantile`` does; None without observations."""
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]):
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bound: its bound, as Prometheus says
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def promql(namespace: str, service: str) -> dict[str, dict[str, str]]:
    """Each panel's series as PromQL over a 5-minute window, for the gateway of one
    endpoint (Prometheus' ``namespace`` and ``service`` target labels)."""
    sel = f'namespace="{_quoted(namespace)}",service="{_quoted(service)}"'

    def q(level: float, metric: str) -> str:
        return f"histogram_quantile({level}, sum by (le) (rate({metric}_bucket{{{sel}}}[5m])))"

    return {
        "requests": {"requests": f"sum(rate({REQUESTS}{{{sel}}}[5m]))"},
        "errors": {
            "not 2xx": f'100 * sum(rate({REQUESTS}{{{sel},status!~"2.."}}[5m])) '
            f"/ sum(rate({REQUESTS}{{{sel}}}[5m]))"
        },
        "latency": {"p50": q(0.5, DURATION), "p99": q(0.99, DURATION)},
        "ttft": {"p50": q(0.5, FIRST_TOKEN), "p99": q(0.99, FIRST_TOKEN)},
        "tokens": {"*": f"60 * sum by (principal) (rate({PRINCIPAL_TOKENS}{{{sel}}}[5m]))"},
    }


def from_prometheus(answers: dict[str, dict[str, list[dict[str, object]]]]) -> list[Panel]:
    """Panels from ``query_range`` results (``data.result``) keyed as :func:`promql`'s
    queries; a ``*`` query names each series by its ``principal`` label."""
    out = []
    for key, title, unit in PANELS:
        series: list[Series] = []
        by_name: dict[str, list[Point]] = {}
        for name, result in answers.get(key, {}).items():
            for item in result:
                metric = item.get("metric")
                labels = metric if isinstance(metric, dict) else {}
                label = str(labels.get("principal", "")) if name == "*" else name
                values = item.get("values")
                pts = [
                    (float(t), float(v))
                    for t, v in (values if isinstance(values, list) else [])
                    if v not in ("NaN", "+Inf", "-Inf")
                ]
                if name == "*":
                    by_name[label] = pts
                else:
                    series.append(Series(label, pts))
        if by_name:
            series = top(by_name)
        out.append(Panel(key, title, unit, series))
    return out


def _increase(before: Mapping[K, float], after: Mapping[K, float]) -> dict[K, float]:
    """What each counter added between two snapshots (its new value after a reset)."""
    out: dict[K, float] = {}
    for key, value in after.items():
        previous = before.get(key, 0.0)
        out[key] = value - previous if value >= previous else value
    return out


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
