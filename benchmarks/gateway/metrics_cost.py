"""What the gateway's metrics cost per request: ``request_started`` + ``request_finished``.

::

    .venv/bin/python -m benchmarks.gateway.metrics_cost            # both modes, ~20 s
    .venv/bin/python -m benchmarks.gateway.metrics_cost --requests 50000 --rounds 3

Each mode runs in a child process of its own, because prometheus_client picks its mode
when it is imported: ``single`` (one worker: values in memory) and ``multiprocess``
(``--workers N``: every increment also written to an mmap file). A round finishes
``--requests`` contexts of a realistic mix (4 entities, 50 callers, 1 in 8 refused before
dispatch, 1 in 4 with estimated tokens) in a tight loop; the figure is the best round's
mean, in µs per request, then the cost of one scrape (``render``) with those series.
Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

MODES = ("single", "multiprocess")


def main() -> None:
    """Run each mode in a child process and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=200_000, help="per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # a child's mode
    args = parser.parse_args()
    if args.mode is not None:
        print(json.dumps(measure(args.requests, args.rounds)))
        return
    print(f"metrics cost: {args.requests} requests x {args.rounds} rounds, best round")
    for mode in MODES:
        with tempfile.TemporaryDirectory(prefix="metrics-cost-") as directory:
            env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
            if mode == "multiprocess":
                env["PROMETHEUS_MULTIPROC_DIR"] = directory
            child = [sys.executable, "-m", "benchmarks.gateway.metrics_cost", "--mode", mode]
            done = subprocess.run(
                [*child, "--requests", str(args.requests), "--rounds", str(args.rounds)],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
        figures = json.loads(done.stdout)
        print(
            f"  {mode:<12} {figures['us_per_request']:6.2f} µs per finished request "
            f"(started + finished); render {figures['render_ms']:.2f} ms "
            f"({figures['series']} samples)"
        )


def measure(requests: int, rounds: int) -> dict[str, float]:
    """The best round's µs per request, and one render's ms, in this process's mode."""
    # Imported here: the parent must not import prometheus_client before it sets a
    # child's environment (only the child's import matters, but keep the rule simple).
    from modelport.gateway.context import Attempt, Principal, RequestContext, TokenUsage
    from modelport.gateway.metrics import Metrics

    contexts: list[RequestContext] = []
    for i in range(1000):
        ctx = RequestContext("ep", "/v1/chat/completions", started=0.0)
        ctx.principal = None if i % 10 == 0 else Principal("user", f"u{i % 50}")
        if i % 8 == 7:
            ctx.status = 401  # refused before dispatch: no entity, no tokens
        else:
            ctx.attempts.append(Attempt(f"entity-{i % 4}", started=0.0))
            ctx.status = 200 if i % 16 else 429
            ctx.first_byte = 0.02 + (i % 7) / 100
            ctx.usage = TokenUsage(20 + i % 300, 5 + i % 200, estimated=i % 4 == 0)
        ctx.ended = 0.05 + (i % 13) / 10
        contexts.append(ctx)
    metrics = Metrics()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(requests):
            metrics.request_started()
            metrics.request_finished(contexts[i % 1000])
        best = min(best, (time.perf_counter() - start) / requests)
    start = time.perf_counter()
    body, _ = metrics.render()
    render_seconds = time.perf_counter() - start
    samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return {"us_per_request": best * 1e6, "render_ms": render_seconds * 1e3, "series": samples}


if __name__ == "__main__":
    main()
