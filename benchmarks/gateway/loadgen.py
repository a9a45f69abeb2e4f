"""An open-loop, constant-rate HTTP load generator (the part of wrk2 this benchmark needs).

wrk2, vegeta and oha are not to be had here (wrk2 is not in Debian; oha only on crates,
as source to compile; vegeta only as a Go module); Debian's hey and bombardier only
throttle closed-loop workers. wrk, which Debian has, is closed-loop:
each connection waits for an answer before it sends again, so a slow server slows the
load down and its queueing delay never shows ("coordinated omission"). This generator
sends request *i* at ``t0 + i / rate`` whatever happened before, on as many keep-alive
connections as are needed (up to ``--max-conns``; beyond that requests queue), and
measures each latency from the moment the request was *due*, so waiting in a queue
counts. It is Python (uvloop + httptools, a few tens of microseconds a request): enough
for the rates a Python proxy sustains, not for the bare upstream; ``achieved`` below
``rate`` in the output says the generator itself could not keep up.

``python -m benchmarks.gateway.loadgen --port N --path P --rate R --duration D --body B``
prints one JSON object: sent, ok, errors, achieved rate and latency percentiles (ms).
Only loopback targets are accepted, every request is bounded by ``--timeout``, and the
run ends by itself after ``duration + timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections import deque
from typing import cast

import httptools


class Connection(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self, gen: Generator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.due = 0.0
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.gen.lost(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def send(self, due: float) -> None:
        """Send one request that was due at ``due`` (perf_counter time)."""
        self.due = due
        self.busy = True
        assert self.transport is not None
        self.transport.write(self.gen.request)

    def on_message_complete(self) -> None:
        self.busy = False
        ok = self.parser.get_status_code() == 200
        self.gen.done(self, self.due, ok, self.parser.should_keep_alive())


class Generator:
    """Schedules requests at a constant rate and records their latencies."""

    def __init__(self, args: argparse.Namespace) -> None:
        headers = "".join(f"{h}\r\n" for h in args.header)
        body = args.body.encode()
        self.request = (
            f"POST {args.path} HTTP/1.1\r\nhost: {args.host}:{args.port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n{headers}\r\n"
        ).encode() + body
        self.args = args
        self.idle: list[Connection] = []
        self.waiting: deque[float] = deque()
        self.open = 0
        self.connecting = 0
        self.latencies: list[float] = []
        self.errors = 0
        self.sent = 0
        self.finished = 0
        self.all_done = asyncio.Event()
        self.total = 0

    async def run(self) -> dict[str, object]:
        """Send ``rate * duration`` requests on schedule; wait for the answers (bounded)."""
        # perf_counter, not loop.time(): uvloop's clock is libuv's, cached and in milliseconds.
        clock = time.perf_counter
        rate, duration = self.args.rate, self.args.duration
        self.total = max(1, int(rate * duration))
        await asyncio.gather(*(self._connect() for _ in range(min(32, self.args.max_conns))))
        start = clock() + 0.01
        i = 0
        while i < self.total:
            now = clock()
            due_count = min(self.total, int((now - start) * rate) + 1)
            while i < due_count:
                self._dispatch(start + i / rate)
                i += 1
            await asyncio.sleep(max(0.0, start + i / rate - clock()))
        sent_at = clock()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_done.wait(), self.args.timeout)
        elapsed = clock() - start
        timeouts = self.total - self.finished
        self.latencies.sort()
        return {
            "rate": rate,
            "duration": duration,
            "requests": self.total,
            "ok": len(self.latencies),
            "errors": self.errors + timeouts,
            "timeouts": timeouts,
            "connections": self.open,
            "achieved": len(self.latencies) / max(sent_at - start, duration),
            "elapsed": elapsed,
            "latency_ms": percentiles(self.latencies),
        }

    def _dispatch(self, due: float) -> None:
        while self.idle:
            conn = self.idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                conn.send(due)
                return
        self.waiting.append(due)
        if self.open + self.connecting < self.args.max_conns:
            asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        self.connecting += 1
        try:
            _, conn = await loop.create_connection(
                lambda: Connection(self), self.args.host, self.args.port
            )
        except OSError:
            self.connecting -= 1
            if self.waiting:
                self.waiting.popleft()
                self._record_error()
            return
        self.connecting -= 1
        self.open += 1
        self._next(conn)

    def _next(self, conn: Connection) -> None:
        if self.waiting:
            conn.send(self.waiting.popleft())
        else:
            self.idle.append(conn)

    def done(self, conn: Connection, due: float, ok: bool, keep_alive: bool) -> None:
        """An answer arrived."""
        if ok:
            self.latencies.append(time.perf_counter() - due)
            self._finish()
        else:
            self._record_error()
        if keep_alive:
            self._next(conn)
        elif conn.transport is not None:
            conn.transport.close()

    def lost(self, conn: Connection) -> None:
        """A connection closed; a request in flight on it failed."""
        self.open -= 1
        if conn.busy:
            self._record_error()
        if conn in self.idle:
            self.idle.remove(conn)

    def _record_error(self) -> None:
        self.errors += 1
        self._finish()

    def _finish(self) -> None:
        self.finished += 1
        if self.finished >= self.total:
            self.all_done.set()


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p90/p99/p99.9/max of sorted seconds, in milliseconds."""
    if not values:
        return {"p50": None, "p90": None, "p99": None, "p999": None, "max": None}

    def at(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 3)

    return {
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "p999": at(0.999),
        "max": round(values[-1] * 1000, 3),
    }


def main() -> None:
    """Command line; prints the result as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "::1"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/chat/completions")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds of sending")
    parser.add_argument("--body", required=True)
    parser.add_argument("--header", action="append", default=[], help="'name: value'")
    parser.add_argument("--max-conns", type=int, default=512)
    parser.add_argument("--timeout", type=float, default=10.0, help="wait this long at the end")
    args = parser.parse_args()
    if not (0 < args.rate <= 1_000_000 and 0 < args.duration <= 600):
        parser.error("rate must be in (0, 1e6] and duration in (0, 600]")
    import uvloop

    result = uvloop.run(Generator(args).run())
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
