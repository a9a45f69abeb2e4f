"""The gateway's Prometheus metrics, on ``prometheus_client``, summed over uvicorn workers.

Series (the names are an interface: dashboards, alerts and tests use them):

- ``modelport_gateway_requests_total{entity,route,status}``: finished requests.
  ``entity=""`` counts requests refused before any entity was tried (400, 401, 403,
  404, 405, 413, 415, …: ``RequestContext.entity`` is None); ``status="499"`` a client
  that left before an answer.
- ``modelport_gateway_request_duration_seconds{entity}`` (histogram): arrival to the last
  byte, refused requests included under ``entity=""``.
- ``modelport_gateway_time_to_first_token_seconds{entity}`` (histogram): arrival to the
  first byte of a successful answer: the first chunk of a stream, the headers of a whole
  body. Errors are left out: their first byte is not a token, and a flood of 1 ms
  refusals would drag the quantiles down.
- ``modelport_gateway_tokens_total{entity,kind}``: ``kind`` is ``prompt`` or
  ``completion``; all tokens, whether the provider reported them or the gateway
  estimated them.
- ``modelport_gateway_estimated_tokens_total{entity,kind}``: the part of ``tokens_total``
  that was estimated (the provider reported none). A separate counter rather than an
  ``estimated`` label, so that ``tokens_total`` keeps its series and ``sum()`` over it
  needs no care; the estimated share is ``estimated_tokens_total / tokens_total``.
- ``modelport_gateway_principal_tokens_total{principal,kind}``: tokens per caller,
  ``principal`` being :attr:`Principal.label` (``user:<name>``,
  ``service_principal:<name>``), ``anonymous`` when the endpoint does not authenticate.
  Bounded: each worker process gives its own label value to the first ``max_principals``
  distinct principals it sees and counts every later one under ``other``, so a pod
  exposes at most workers x max_principals principals plus ``anonymous`` and ``other``
  (a restarted worker starts a fresh count). Per-caller totals beyond that bound belong
  in the usage rows, not in Prometheus.
- ``modelport_gateway_in_flight_requests`` (gauge): requests being served now.
- ``modelport_gateway_guardrail_decisions_total{direction,check,kind,action}``: each
  guardrail that acted (``action`` ``mask``, ``block``, ``fail_open``, ``fail_closed``),
  one per ``kind`` found (``EMAIL``, a safety category; empty for keywords and topics).
- ``modelport_gateway_fallbacks_total{entity,reason}``: an entity passed over for the
  next: ``reason`` is the status of its error, ``not_ready`` or ``breaker_open``.
- ``modelport_gateway_breaker_transitions_total{entity,state}`` and
  ``modelport_gateway_breaker_open{entity}`` (gauge, 1 while open or probing; the
  highest of the workers): each entity's circuit breaker, per worker process.
- with usage tracking on (``Metrics(usage_endpoint=...)``):
  ``modelport_gateway_usage_requests_total{endpoint,entity,principal_kind}`` and
  ``modelport_gateway_usage_tokens_total{endpoint,entity,principal_kind,kind}``:
  requests and tokens by endpoint (``<namespace>/<name>``), served entity and the
  caller's kind (``user``, ``service_principal``, ``anonymous``); bounded by the entities.
- with usage rows or an inference table (:meth:`Metrics.table`):
  ``modelport_gateway_table_rows_total{table,result}``: rows ``written``, or dropped
  (``dropped_queue_full``: the buffer was full while the database was slow or down;
  ``dropped_rejected``: the database refused the row; ``dropped_shutdown``: not written
  within the shutdown's drain time), and
  ``modelport_gateway_payloads_not_stored_total{table}``: request or response payloads
  over the limit, marked in their row instead of stored.
- ``modelport_gateway_rate_limit_decisions_total{key,decision}``: rate-limit decisions by
  the limit's key kind (``endpoint``, ``user``, ``user_group``, ``service_principal``)
  and ``decision``: ``admitted`` (counted once for each kind that admitted the request),
  ``limited`` (each kind that refused it) or ``unavailable`` (the store could not be
  asked; the request was refused or admitted as ``failOpen`` says).
- ``modelport_gateway_rate_limit_store_seconds`` (histogram): round trips to the shared
  rate-limit store (one round trip carries every decision queued meanwhile), failed
  ones included; ``modelport_gateway_rate_limit_store_errors_total``: failed round trips
  (timeouts, refused connections); ``modelport_gateway_rate_limit_store_up`` (gauge, only
  with a store): 1 while the last round trip worked (the lowest of the workers).

Per request, nothing touches prometheus_client: :meth:`Metrics.request_finished` adds to
plain Python cells (a float, a histogram's bucket counts), and the cells are flushed into
the library's series when a scrape renders them, and, with several workers, at most every
:data:`FLUSH_SECONDS` while requests run plus once a second while idle (so another
worker's scrape sees them). A flush is a few library calls per *series that changed*,
not per request: at hundreds of requests a second that is two orders of magnitude fewer
locked (or mmap) writes, and it keeps the request path at about a microsecond. The
price: a worker killed with SIGKILL takes up to its last second of counts with it (a
graceful stop flushes).

Two modes, chosen per process by the ``PROMETHEUS_MULTIPROC_DIR`` environment variable:

- unset (one worker, and tests): each :class:`Metrics` keeps its series in its own
  :class:`CollectorRegistry`, never the global one, so several gateway apps can live in one
  test process; the cheapest mode (a locked float add per increment).
- set (``modelport gateway --workers N``, see :func:`multiprocess_directory`):
  prometheus_client writes every value to per-process mmap files in that directory, and
  :meth:`Metrics.render` merges all of them, so any worker's scrape shows the pod's
  totals. Counters and histograms of a worker that died stay in the totals (they must
  never go backwards); its in-flight gauge (``livesum``) is dropped at the next scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from modelport.gateway.context import Principal, RequestContext

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Where worker processes write their metric files; must be set before prometheus_client
is imported, which is why :func:`multiprocess_directory` exports it before uvicorn spawns
the workers."""

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4.encode()
"""The text format every Prometheus version parses; our names are all legacy-valid, so the
body is the same as the 1.0.0 format's."""

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# A first token comes in tens of milliseconds from a warm GPU, seconds from a busy provider.
FIRST_TOKEN_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

ANONYMOUS = "anonymous"
OTHER = "other"
"""Principal label values of their own; :attr:`Principal.label` always has a ``kind:``
prefix, so no caller can collide with them."""

MAX_ROUTES = 32
"""Distinct ``route`` values per process before the rest count as ``other``. The app
passes route templates (a handful); the bound keeps a scrape small should a raw,
client-chosen path ever reach the label."""

STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# A store round trip on a cluster network: a few hundred microseconds, up to its timeout.

FLUSH_SECONDS = 0.5
"""With several workers: how stale another worker's scrape may see this one's requests
while it serves; an idle worker flushes once a second (:meth:`Metrics.start`)."""

Add = Callable[[float], None]
"""One series' increment (a counter's ``inc``), resolved once."""

# ``*_created`` series double a scrape for a start time that process_start_time_seconds
# already tells; the gateway process is ours, so the library-wide switch is ours to flip.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    """Request counts, latencies and token usage of one gateway process (see the module)."""

    def __init__(self, *, max_principals: int = 100, usage_endpoint: str | None = None) -> None:
        if max_principals < 0:
            raise ValueError(f"max_principals must be 0 or more, not {max_principals}")
        self.max_principals = max_principals
        self._dir = os.environ.get(MULTIPROC_DIR_ENV) or None
        if self._dir is not None and values.ValueClass is values.MutexValue:
            # The values would stay in this process's memory and never reach the files the
            # scrape merges: every worker's numbers would silently vanish.
            raise RuntimeError(
                f"{MULTIPROC_DIR_ENV} was set after prometheus_client was imported; set it "
                "before the process starts (modelport gateway --workers N does)"
            )
        # Multiprocess: the families register nowhere (their values go to the files) and
        # the registry that renders holds only the collector that merges those files.
        self._registry = CollectorRegistry()
        family_registry: CollectorRegistry | None = self._registry
        if self._dir is not None:
            MultiProcessCollector(self._registry, path=self._dir)  # type: ignore[no-untyped-call]
            family_registry = None
        self._requests = Counter(
            "modelport_gateway_requests",
            "Finished requests by served entity, route and status; entity is empty for "
            "requests refused before dispatch.",
            ("entity", "route", "status"),
            registry=family_registry,
        )
        self._duration = Histogram(
            "modelport_gateway_request_duration_seconds",
            "Seconds from arrival to the last byte.",
            ("entity",),
            buckets=DURATION_BUCKETS,
            registry=family_registry,
        )
        self._first_token = Histogram(
            "modelport_gateway_time_to_first_token_seconds",
            "Seconds from arrival to the first byte of a successful answer (a stream's first "
            "chunk).",
            ("entity",),
            buckets=FIRST_TOKEN_BUCKETS,
            registry=family_registry,
        )
        self._tokens = Counter(
            "modelport_gateway_tokens",
            "Tokens by served entity and kind (prompt, completion), reported or estimated.",
            ("entity", "kind"),
            registry=family_registry,
        )
        self._estimated_tokens = Counter(
            "modelport_gateway_estimated_tokens",
            "The part of modelport_gateway_tokens_total the gateway estimated because the "
            "provider reported none.",
            ("entity", "kind"),
            registry=family_registry,
        )
        self._principal_tokens = Counter(
            "modelport_gateway_principal_tokens",
            f"Tokens by caller and kind; the first {max_principals} callers a worker sees "
            "have their own value, later ones count as 'other'.",
            ("principal", "kind"),
            registry=family_registry,
        )
        self._usage_endpoint = usage_endpoint
        self._usage_requests = Counter(
            "modelport_gateway_usage_requests",
            "Finished requests by endpoint, served entity and the caller's kind (usage tracking).",
            ("endpoint", "entity", "principal_kind"),
            registry=family_registry,
        )
        self._usage_tokens = Counter(
            "modelport_gateway_usage_tokens",
            "Tokens by endpoint, served entity, the caller's kind and kind (prompt, "
            "completion) (usage tracking).",
            ("endpoint", "entity", "principal_kind", "kind"),
            registry=family_registry,
        )
        self._table_rows = Counter(
            "modelport_gateway_table_rows",
            "Rows of usage and inference tables: written, or dropped (and why).",
            ("table", "result"),
            registry=family_registry,
        )
        self._payloads_not_stored = Counter(
            "modelport_gateway_payloads_not_stored",
            "Request and response payloads over the inference table's limit, marked "
            "instead of stored.",
            ("table",),
            registry=family_registry,
        )
        self._usage_cells: dict[tuple[str, str], _UsageCells] = {}
        self._in_flight = Gauge(
            "modelport_gateway_in_flight_requests",
            "Requests being served now.",
            registry=family_registry,
            # livesum: the pod's sum over the workers alive now; a dead one's share goes.
            multiprocess_mode="livesum",
        )
        # Guardrails and fallback: series made on first use, off the hot path (a request
        # that no guardrail acted on and that one entity answered never touches them).
        self._guardrails = Counter(
            "modelport_gateway_guardrail_decisions",
            "Guardrail decisions by direction, check, kind found and action.",
            ("direction", "check", "kind", "action"),
            registry=family_registry,
        )
        self._fallbacks = Counter(
            "modelport_gateway_fallbacks",
            "Entities passed over for the next one, by reason (an error's status, not_ready, "
            "breaker_open).",
            ("entity", "reason"),
            registry=family_registry,
        )
        self._breaker_transitions = Counter(
            "modelport_gateway_breaker_transitions",
            "Circuit breaker transitions by entity and new state (open, half_open, closed).",
            ("entity", "state"),
            registry=family_registry,
        )
        self._breaker_open = Gauge(
            "modelport_gateway_breaker_open",
            "1 while an entity's circuit breaker is open or probing (any worker).",
            ("entity",),
            registry=family_registry,
            multiprocess_mode="livemax",
        )
        self._rare_cells: dict[tuple[object, ...], _Cell] = {}
        self._rate_limit_decisions = Counter(
            "modelport_gateway_rate_limit_decisions",
            "Rate-limit decisions by the limit's key kind and decision (admitted, limited, "
            "unavailable).",
            ("key", "decision"),
            registry=family_registry,
        )
        self._store_seconds = Histogram(
            "modelport_gateway_rate_limit_store_seconds",
            "Round trips to the shared rate-limit store, failed ones included.",
            buckets=STORE_BUCKETS,
            registry=family_registry,
        )
        self._store_errors = Counter(
            "modelport_gateway_rate_limit_store_errors",
            "Round trips to the shared rate-limit store that failed (timeout, refused).",
            registry=family_registry,
        )
        self._family_registry = family_registry
        self._store_up: Gauge | None = None
        self._store_up_now: Callable[[], bool] | None = None
        self._decision_cells: dict[tuple[str, str], _Cell] = {}
        self._store_pending: _PendingHistogram | None = None
        self._store_error_cell: _Cell | None = None
        # The hot path: each series' child is resolved once (`.labels()` validates and
        # hashes under a lock) and given a pending cell; a request adds to cells only.
        self._in_flight_now = 0
        self._in_flight_flushed = 0
        self._cells: list[_Cell] = []
        self._histograms: list[_PendingHistogram] = []
        self._request_cells: dict[tuple[str, str, int], _Cell] = {}
        self._routes: set[str] = set()
        self._entities: dict[str, _EntitySeries] = {}
        self._principals: dict[str, Pair] = {}
        self._fixed_principals: dict[str, Pair] = {}
        self._flushed_at = time.monotonic()
        self._flusher: asyncio.Task[None] | None = None

    @property
    def multiprocess(self) -> bool:
        """Whether the scrape merges the files of every worker process."""
        return self._dir is not None

    def request_started(self) -> None:
        """A request arrived: in-flight + 1."""
        self._in_flight_now += 1

    def request_finished(self, ctx: RequestContext) -> None:
        """A request ended, however it ended: in-flight - 1, and its count, timings and
        tokens. (Written flat: it runs on every request.)"""
        self._in_flight_now -= 1
        # 0 at the end means nothing reached the client: it left first.
        status = ctx.status or 499
        attempts = ctx.attempts
        entity = attempts[-1].entity if attempts else ""
        series = self._entities.get(entity) or self._entity(entity)
        cell = self._request_cells.get((entity, ctx.route, status))
        if cell is None:
            cell = self._request_cell(series, ctx.route, status)
        cell.value += 1
        ended = ctx.ended or 0.0
        series.duration.observe(ended - ctx.started)
        if status < 400 and ctx.first_byte is not None:
            pending = series.first_token
            if pending is None:
                pending = series.first_token = self._histogram(
                    self._first_token.labels(series.entity)
                )
            pending.observe(ctx.first_byte - ctx.started)
        usage = ctx.usage
        if usage is not None:
            self._count_tokens(
                series,
                ctx.principal,
                usage.prompt_tokens,
                usage.completion_tokens,
                estimated=usage.estimated,
            )
        if self._usage_endpoint is not None:
            self._count_usage(entity, ctx)
        if ctx.guardrails is not None or len(attempts) > 1:
            self._count_decisions(ctx)
        if self._dir is not None and ended - self._flushed_at >= FLUSH_SECONDS:
            self.flush()

    def table(self, table: str) -> TableCounters:
        """The row counters of one usage or inference table (its writer adds to them)."""
        return TableCounters(
            written=self._cell(self._table_rows.labels(table, "written")),
            dropped_queue_full=self._cell(self._table_rows.labels(table, "dropped_queue_full")),
            dropped_rejected=self._cell(self._table_rows.labels(table, "dropped_rejected")),
            dropped_shutdown=self._cell(self._table_rows.labels(table, "dropped_shutdown")),
            not_stored=self._cell(self._payloads_not_stored.labels(table)),
        )

    def breaker_changed(self, entity: str, state: str) -> None:
        """An entity's circuit breaker moved to ``state`` (open, half_open, closed)."""
        self._rare(self._breaker_transitions, (entity, state)).value += 1
        self._breaker_open.labels(entity).set(0 if state == "closed" else 1)

    def rate_limit_decision(self, kinds: tuple[str, ...], decision: str) -> None:
        """A rate-limit decision, counted for each key kind it involved."""
        cells = self._decision_cells
        for kind in kinds:
            cell = cells.get((kind, decision))
            if cell is None:
                cell = cells[(kind, decision)] = self._cell(
                    self._rate_limit_decisions.labels(kind, decision)
                )
            cell.value += 1

    def rate_limit_store_call(self, seconds: float, ok: bool) -> None:
        """A round trip to the rate-limit store: its duration, and whether it worked."""
        pending = self._store_pending
        if pending is None:
            pending = self._store_pending = self._histogram(self._store_seconds)
        pending.observe(seconds)
        if not ok:
            cell = self._store_error_cell
            if cell is None:
                cell = self._store_error_cell = self._cell(self._store_errors)
            cell.value += 1

    def track_rate_limit_store(self, up: Callable[[], bool]) -> None:
        """Report ``up()`` as ``modelport_gateway_rate_limit_store_up`` at each flush."""
        if self._store_up is None:
            self._store_up = Gauge(
                "modelport_gateway_rate_limit_store_up",
                "1 while the shared rate-limit store answers, 0 while it does not.",
                registry=self._family_registry,
                multiprocess_mode="livemin",
            )
        self._store_up_now = up
        self._store_up.set(1)

    def render(self) -> tuple[bytes, bytes]:
        """``(body, content_type)`` for ``GET /metrics``: this process's series, or the
        pod's in multiprocess mode."""
        self.flush()
        if self._dir is not None:
            _forget_dead_workers(self._dir)
        return generate_latest(self._registry), CONTENT_TYPE

    def flush(self) -> None:
        """Move what requests added since the last flush into the library's series."""
        self._flushed_at = time.monotonic()
        for cell in self._cells:
            if cell.value:
                value, cell.value = cell.value, 0.0
                cell.add(value)
        for histogram in self._histograms:
            histogram.flush()
        if self._in_flight_now != self._in_flight_flushed:
            self._in_flight_flushed = self._in_flight_now
            self._in_flight.set(self._in_flight_now)
        if self._store_up is not None and self._store_up_now is not None:
            self._store_up.set(1 if self._store_up_now() else 0)

    async def start(self) -> None:
        """With several workers, flush once a second while idle (on the serving loop), so
        that another worker's scrape sees this one's last requests."""
        if self._dir is not None and self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_every_second())

    async def aclose(self) -> None:
        """Stop the idle flush and flush what is left (at shutdown)."""
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        self.flush()

    async def _flush_every_second(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if time.monotonic() - self._flushed_at >= FLUSH_SECONDS:
                self.flush()

    # -- internals

    def _count_decisions(self, ctx: RequestContext) -> None:
        """Guardrail decisions and fallbacks of one request (the rare path)."""
        for d in ctx.guardrails or ():
            for kind in d.kinds or ("",):
                key = (d.direction, d.check, kind, d.action)
                self._rare(self._guardrails, key).value += 1
        for attempt in ctx.attempts[:-1]:
            reason = attempt.skipped or str(attempt.status)
            self._rare(self._fallbacks, (attempt.entity, reason)).value += 1

    def _rare(self, family: Counter, labels: tuple[str, ...]) -> _Cell:
        """The cell of a series of a rarely counted family, made on first use. Label values
        come from the config (entities, categories) and fixed words, so they are bounded."""
        key = (id(family), *labels)
        cell = self._rare_cells.get(key)
        if cell is None:
            cell = self._rare_cells[key] = self._cell(family.labels(*labels))
        return cell

    def _cell(self, child: Counter) -> _Cell:
        cell = _Cell(_adder(child))
        self._cells.append(cell)
        return cell

    def _histogram(self, child: Histogram) -> _PendingHistogram:
        pending = _PendingHistogram(child)
        self._histograms.append(pending)
        return pending

    def _pair(self, family: Counter, first_label: str) -> Pair:
        """The (prompt, completion) cells of a family labelled (<first>, kind)."""
        return (
            self._cell(family.labels(first_label, "prompt")),
            self._cell(family.labels(first_label, "completion")),
        )

    def _entity(self, entity: str) -> _EntitySeries:
        series = self._entities.get(entity)
        if series is None:
            series = self._entities[entity] = _EntitySeries(
                entity, self._histogram(self._duration.labels(entity))
            )
        return series

    def _request_cell(self, series: _EntitySeries, route: str, status: int) -> _Cell:
        """The requests cell of (entity, route, status), made on first use."""
        key = (series.entity, route, status)
        if route not in self._routes and len(self._routes) >= MAX_ROUTES:
            # Counted under `other`, and not cached under the overflowing route: the dict
            # stays bounded.
            key = (series.entity, OTHER, status)
            cell = self._request_cells.get(key)
            if cell is None:
                cell = self._request_cells[key] = self._cell(
                    self._requests.labels(series.entity, OTHER, str(status))
                )
            return cell
        self._routes.add(route)
        cell = self._request_cells[key] = self._cell(
            self._requests.labels(series.entity, route, str(status))
        )
        return cell

    def _count_tokens(
        self,
        series: _EntitySeries,
        principal: Principal | None,
        prompt: int,
        completion: int,
        *,
        estimated: bool,
    ) -> None:
        tokens = series.tokens
        if tokens is None:
            tokens = series.tokens = self._pair(self._tokens, series.entity)
        by_principal = self._principal(principal)
        # A negative count is skipped: a counter would refuse it with an exception.
        if prompt > 0:
            tokens[0].value += prompt
            by_principal[0].value += prompt
        if completion > 0:
            tokens[1].value += completion
            by_principal[1].value += completion
        if estimated:
            guessed = series.estimated
            if guessed is None:
                guessed = series.estimated = self._pair(self._estimated_tokens, series.entity)
            if prompt > 0:
                guessed[0].value += prompt
            if completion > 0:
                guessed[1].value += completion

    def _count_usage(self, entity: str, ctx: RequestContext) -> None:
        principal = ctx.principal
        kind = principal.kind if principal is not None else ANONYMOUS
        cells = self._usage_cells.get((entity, kind))
        if cells is None:
            endpoint = self._usage_endpoint or ""
            cells = self._usage_cells[(entity, kind)] = _UsageCells(
                self._cell(self._usage_requests.labels(endpoint, entity, kind)),
                self._pair_of(self._usage_tokens, endpoint, entity, kind),
            )
        cells.requests.value += 1
        usage = ctx.usage
        if usage is not None:
            if usage.prompt_tokens > 0:
                cells.tokens[0].value += usage.prompt_tokens
            if usage.completion_tokens > 0:
                cells.tokens[1].value += usage.completion_tokens

    def _pair_of(self, family: Counter, *labels: str) -> Pair:
        return (
            self._cell(family.labels(*labels, "prompt")),
            self._cell(family.labels(*labels, "completion")),
        )

    def _principal(self, principal: Principal | None) -> Pair:
        if principal is None:
            return self._fixed_principal(ANONYMOUS)
        label = principal.label
        pair = self._principals.get(label)
        if pair is None:
            if len(self._principals) >= self.max_principals:
                # Not cached under the caller's label: the dict stays bounded too.
                return self._fixed_principal(OTHER)
            pair = self._principals[label] = self._pair(self._principal_tokens, label)
        return pair

    def _fixed_principal(self, label: str) -> Pair:
        # Made on first use, so that a scrape shows no zero series nobody asked for.
        pair = self._fixed_principals.get(label)
        if pair is None:
            pair = self._fixed_principals[label] = self._pair(self._principal_tokens, label)
        return pair


class _Cell:
    """A counter's increments since the last flush."""

    __slots__ = ("add", "value")

    def __init__(self, add: Add) -> None:
        self.add = add
        self.value = 0.0


Pair = tuple[_Cell, _Cell]
"""The (prompt, completion) cells of one entity or principal."""


class _UsageCells:
    """The usage series of one (entity, principal kind)."""

    __slots__ = ("requests", "tokens")

    def __init__(self, requests: _Cell, tokens: Pair) -> None:
        self.requests = requests
        self.tokens = tokens


class TableCounters:
    """What a table's writer counts: rows written and dropped (by why), and payloads
    over the limit. Plain cells: adding is a float add; :meth:`Metrics.flush` moves
    them into the library's series. :meth:`detached` ones count for nobody (a writer
    built without metrics, in tests)."""

    __slots__ = (
        "dropped_queue_full",
        "dropped_rejected",
        "dropped_shutdown",
        "not_stored",
        "written",
    )

    def __init__(
        self,
        *,
        written: _Cell,
        dropped_queue_full: _Cell,
        dropped_rejected: _Cell,
        dropped_shutdown: _Cell,
        not_stored: _Cell,
    ) -> None:
        self.written = written
        self.dropped_queue_full = dropped_queue_full
        self.dropped_rejected = dropped_rejected
        self.dropped_shutdown = dropped_shutdown
        self.not_stored = not_stored

    @classmethod
    def detached(cls) -> TableCounters:
        """Counters that nothing exposes."""

        def cell() -> _Cell:
            return _Cell(lambda _amount: None)

        return cls(
            written=cell(),
            dropped_queue_full=cell(),
            dropped_rejected=cell(),
            dropped_shutdown=cell(),
            not_stored=cell(),
        )


class _PendingHistogram:
    """A histogram's observations since the last flush: a sum and bucket counts.

    The bucket is found with a bisect (``Histogram.observe`` walks its bounds one by one);
    a flush adds each bucket's count to the child's bucket value. Those values
    (``_upper_bounds``, ``_buckets``, ``_sum``) are prometheus_client's private state,
    unchanged since 0.4; should they change, observations go to the public ``observe``
    as they come (and the unit tests compare both paths).
    """

    __slots__ = ("_add_buckets", "_add_sum", "_bounds", "_counts", "_sum", "observe")

    def __init__(self, child: Histogram) -> None:
        try:
            bounds: list[float] = list(child._upper_bounds)
            add_sum: Add = child._sum.inc
            add_buckets: list[Add] = [bucket.inc for bucket in child._buckets]
        except (AttributeError, TypeError):
            bounds, add_buckets = [], []
        self._bounds = bounds
        self._counts = [0] * len(bounds)
        self._sum = 0.0
        if not bounds or len(bounds) != len(add_buckets):
            self.observe: Add = child.observe  # the public path, per observation
            self._add_buckets: list[Add] = []
            return
        self._add_sum = add_sum
        self._add_buckets = add_buckets
        self.observe = self._observe

    def _observe(self, amount: float) -> None:
        # The first bucket whose bound is >= amount, as Histogram.observe picks it.
        self._counts[bisect_left(self._bounds, amount)] += 1
        self._sum += amount

    def flush(self) -> None:
        """Add what was observed since the last flush to the child."""
        if not self._add_buckets or not any(self._counts):
            return
        counts, self._counts = self._counts, [0] * len(self._counts)
        for add, count in zip(self._add_buckets, counts, strict=True):
            if count:
                add(count)
        total, self._sum = self._sum, 0.0
        self._add_sum(total)


class _EntitySeries:
    """One entity's pending series; those only some requests need are made on first use
    (a refused request's ``entity=""`` never gets token series)."""

    __slots__ = ("duration", "entity", "estimated", "first_token", "tokens")

    def __init__(self, entity: str, duration: _PendingHistogram) -> None:
        self.entity = entity
        self.duration = duration
        self.first_token: _PendingHistogram | None = None
        self.tokens: Pair | None = None
        self.estimated: Pair | None = None


# prometheus_client's public ``inc`` re-checks on every call what the callers here
# guarantee once (a labelled child, an amount > 0); at flush the value object's own
# ``inc`` is used (what the public method ends in, in both modes: a locked float or an
# mmap write), or the public method should the private attribute ever change.


def _adder(child: Counter) -> Add:
    """``child.inc``, without the checks."""
    try:
        inc: Add = child._value.inc
    except AttributeError:
        return child.inc
    return inc


@contextlib.contextmanager
def multiprocess_directory() -> Iterator[str]:
    """A fresh private directory for the workers' metric files, exported as
    ``PROMETHEUS_MULTIPROC_DIR`` for the processes started inside the block, and removed
    (with the variable) after it.

    Fresh, so that no file of an earlier run is summed into this one's totals; under the
    temp dir (``/tmp``, the pod's emptyDir: the root filesystem is read-only); mode 0700.
    """
    path = tempfile.mkdtemp(prefix="modelport-metrics-")
    previous = os.environ.get(MULTIPROC_DIR_ENV)
    os.environ[MULTIPROC_DIR_ENV] = path
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_DIR_ENV, None)
        else:
            os.environ[MULTIPROC_DIR_ENV] = previous
        shutil.rmtree(path, ignore_errors=True)


def _forget_dead_workers(path: str) -> None:
    """Drop the live gauges of worker processes that are gone (uvicorn restarts a dead
    worker under a new pid), so that in-flight requests of a killed worker do not stay in
    the pod's sum forever. Their counters stay: totals must not go backwards.

    A zombie not yet reaped by the supervisor still counts as alive: the next scrape gets
    it. Linux hands out pids in sequence, so a dead worker's pid is not soon reused.
    """
    # Files are named <type>_<mode>_<pid>.db; only live gauges are per living process.
    for file in Path(path).glob("gauge_live*.db"):
        pid_text = file.stem.rpartition("_")[2]
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid != os.getpid() and not _alive(pid):
            # Two workers scraped at once may both try; the loser finds the file gone.
            with contextlib.suppress(OSError):
                mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user
    return True
