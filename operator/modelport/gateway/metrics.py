"""Prometheus metrics in the text exposition format, kept in process memory.

A handful of counters and one histogram do not justify a client library; with several
uvicorn workers each process reports its own series, which Prometheus sums per pod.
"""

from __future__ import annotations

import time
from collections import defaultdict

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    """Request counts, latency and token usage per served entity."""

    def __init__(self) -> None:
        self.requests: defaultdict[tuple[str, str, int], int] = defaultdict(int)
        self.tokens: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._hist: defaultdict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self._sum: defaultdict[str, float] = defaultdict(float)
        self.in_flight = 0
        self.started = time.time()

    def observe(self, entity: str, route: str, status: int, seconds: float) -> None:
        """Count one finished request."""
        self.requests[(entity, route, status)] += 1
        counts = self._hist[entity]
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                counts[i] += 1
                break
        else:
            counts[-1] += 1
        self._sum[entity] += seconds

    def add_tokens(self, entity: str, prompt: int, completion: int) -> None:
        """Add the provider-reported token counts of one response."""
        self.tokens[(entity, "prompt")] += prompt
        self.tokens[(entity, "completion")] += completion

    def render(self) -> bytes:
        """The exposition text."""
        lines = [
            "# HELP modelport_gateway_requests_total Requests by served entity, route and status.",
            "# TYPE modelport_gateway_requests_total counter",
        ]
        for (entity, route, status), n in sorted(self.requests.items()):
            lines.append(
                f'modelport_gateway_requests_total{{entity="{entity}",route="{route}",'
                f'status="{status}"}} {n}'
            )
        lines += [
            "# HELP modelport_gateway_tokens_total Tokens reported by the provider.",
            "# TYPE modelport_gateway_tokens_total counter",
        ]
        for (entity, kind), n in sorted(self.tokens.items()):
            lines.append(f'modelport_gateway_tokens_total{{entity="{entity}",kind="{kind}"}} {n}')
        lines += [
            "# HELP modelport_gateway_request_duration_seconds Time to the last byte.",
            "# TYPE modelport_gateway_request_duration_seconds histogram",
        ]
        for entity, counts in sorted(self._hist.items()):
            cumulative = 0
            for bound, n in zip((*BUCKETS, float("inf")), counts, strict=True):
                cumulative += n
                le = "+Inf" if bound == float("inf") else repr(bound)
                lines.append(
                    f'modelport_gateway_request_duration_seconds_bucket{{entity="{entity}",'
                    f'le="{le}"}} {cumulative}'
                )
            lines.append(
                f'modelport_gateway_request_duration_seconds_sum{{entity="{entity}"}} '
                f"{self._sum[entity]:.6f}"
            )
            lines.append(
                "modelport_gateway_request_duration_seconds_count"
                f'{{entity="{entity}"}} {cumulative}'
            )
        lines += [
            "# HELP modelport_gateway_in_flight_requests Requests being proxied now.",
            "# TYPE modelport_gateway_in_flight_requests gauge",
            f"modelport_gateway_in_flight_requests {self.in_flight}",
        ]
        return ("\n".join(lines) + "\n").encode()
