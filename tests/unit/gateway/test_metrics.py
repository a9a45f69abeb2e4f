"""The gateway's Prometheus metrics: what a finished request adds, the principal bound, and
the multiprocess mode (several simulated workers in this one process)."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.parser import text_string_to_metric_families

from modelport.gateway import metrics as metrics_module
from modelport.gateway.context import Attempt, Principal, RequestContext, TokenUsage
from modelport.gateway.metrics import MULTIPROC_DIR_ENV, Metrics, multiprocess_directory

ROUTE = "/v1/chat/completions"
Labels = frozenset[tuple[str, str]]


def scrape(m: Metrics) -> dict[tuple[str, Labels], float]:
    """Every sample of a render, by (name, labels)."""
    body, content_type = m.render()
    assert content_type.startswith(b"text/plain; version=0.0.4")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def sample(samples: dict[tuple[str, Labels], float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def finished(
    *,
    entity: str | None = "e1",
    status: int = 200,
    duration: float = 0.3,
    first_byte: float | None = 0.1,
    usage: TokenUsage | None = None,
    principal: Principal | None = None,
    route: str = ROUTE,
) -> RequestContext:
    """A context as ``finish`` hands it over."""
    ctx = RequestContext("ep", route, started=100.0, principal=principal, usage=usage)
    if entity is not None:
        ctx.attempts.append(Attempt(entity, started=100.0, ended=100.0 + duration, status=status))
    ctx.first_byte = None if first_byte is None else 100.0 + first_byte
    ctx.ended = 100.0 + duration
    ctx.status = status
    return ctx


def serve(m: Metrics, ctx: RequestContext) -> None:
    m.request_started()
    m.request_finished(ctx)


def user(name: str) -> Principal:
    return Principal("user", name)


def test_a_streamed_answer_counts_everywhere() -> None:
    m = Metrics()
    serve(m, finished(usage=TokenUsage(12, 30), principal=user("ana"), first_byte=0.08))
    s = scrape(m)
    assert sample(s, "modelport_gateway_requests_total", entity="e1", route=ROUTE, status="200")
    assert sample(s, "modelport_gateway_request_duration_seconds_count", entity="e1") == 1
    assert sample(s, "modelport_gateway_request_duration_seconds_sum", entity="e1") == (
        pytest.approx(0.3)
    )
    assert sample(s, "modelport_gateway_time_to_first_token_seconds_count", entity="e1") == 1
    assert sample(
        s, "modelport_gateway_time_to_first_token_seconds_bucket", entity="e1", le="0.05"
    ) == (0)
    assert (
        sample(s, "modelport_gateway_time_to_first_token_seconds_bucket", entity="e1", le="0.1")
        == 1
    )
    assert sample(s, "modelport_gateway_tokens_total", entity="e1", kind="prompt") == 12
    assert sample(s, "modelport_gateway_tokens_total", entity="e1", kind="completion") == 30
    assert (
        sample(s, "modelport_gateway_principal_tokens_total", principal="user:ana", kind="prompt")
        == 12
    )
    assert sample(s, "modelport_gateway_in_flight_requests") == 0
    # Reported counts: nothing estimated, and no zero series of it either.
    assert not any(name.startswith("modelport_gateway_estimated_tokens") for name, _ in s)


def test_the_text_keeps_the_existing_series_names_and_label_order() -> None:
    m = Metrics()
    serve(m, finished(usage=TokenUsage(22, 5)))
    text = m.render()[0].decode()
    assert (
        f'modelport_gateway_requests_total{{entity="e1",route="{ROUTE}",status="200"}} 1.0' in text
    )
    assert 'modelport_gateway_tokens_total{entity="e1",kind="prompt"} 22.0' in text
    assert 'modelport_gateway_request_duration_seconds_count{entity="e1"} 1.0' in text
    assert "modelport_gateway_in_flight_requests 0.0" in text
    assert "_created" not in text  # the start-time series are switched off


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 413, 415])
def test_a_request_refused_before_dispatch_counts_under_the_empty_entity(status: int) -> None:
    m = Metrics()
    serve(m, finished(entity=None, status=status, duration=0.002, first_byte=0.002))
    s = scrape(m)
    assert (
        sample(s, "modelport_gateway_requests_total", entity="", route=ROUTE, status=str(status))
        == 1
    )
    assert sample(s, "modelport_gateway_request_duration_seconds_count", entity="") == 1
    # An error's first byte is not a token, and a refusal has no tokens.
    assert not any(name.startswith("modelport_gateway_time_to_first_token") for name, _ in s)
    assert not any(name.startswith("modelport_gateway_tokens") for name, _ in s)


def test_a_client_that_left_counts_as_499_without_a_first_token() -> None:
    m = Metrics()
    serve(m, finished(status=0, first_byte=None))
    serve(m, finished(status=499, first_byte=0.05))
    s = scrape(m)
    assert sample(s, "modelport_gateway_requests_total", entity="e1", route=ROUTE, status="499")
    assert sample(s, "modelport_gateway_request_duration_seconds_count", entity="e1") == 2
    assert sample(s, "modelport_gateway_time_to_first_token_seconds_count", entity="e1") is None


def test_estimated_tokens_are_in_the_total_and_in_their_own_counter() -> None:
    m = Metrics()
    serve(m, finished(usage=TokenUsage(10, 4, estimated=True)))
    serve(m, finished(usage=TokenUsage(1, 2)))
    serve(m, finished(usage=TokenUsage(7, 0, estimated=True)))  # an embedding: no completion
    s = scrape(m)
    assert sample(s, "modelport_gateway_tokens_total", entity="e1", kind="prompt") == 18
    assert sample(s, "modelport_gateway_tokens_total", entity="e1", kind="completion") == 6
    assert sample(s, "modelport_gateway_estimated_tokens_total", entity="e1", kind="prompt") == 17
    assert (
        sample(s, "modelport_gateway_estimated_tokens_total", entity="e1", kind="completion") == 4
    )


def test_principals_beyond_the_bound_count_as_other_and_anonymous_is_its_own() -> None:
    m = Metrics(max_principals=2)
    for name, tokens in [("a", 1), ("b", 2), ("c", 4), ("a", 8), ("d", 16), ("e", 32)]:
        serve(m, finished(usage=TokenUsage(tokens, 0), principal=user(name)))
    serve(m, finished(usage=TokenUsage(64, 0), principal=None))
    serve(m, finished(usage=TokenUsage(128, 0), principal=Principal("service_principal", "b")))
    s = scrape(m)
    by_principal = {
        dict(labels)["principal"]: value
        for (name, labels), value in s.items()
        if name == "modelport_gateway_principal_tokens_total" and ("kind", "prompt") in labels
    }
    # a and b came first; c, d, e and a different kind named b are past the bound.
    assert by_principal == {
        "user:a": 9,
        "user:b": 2,
        "other": 4 + 16 + 32 + 128,
        "anonymous": 64,
    }
    # The bound holds in memory too: callers past it are not remembered one by one.
    assert len(m._principals) == 2


def test_no_principal_labels_at_all_with_a_bound_of_zero() -> None:
    m = Metrics(max_principals=0)
    serve(m, finished(usage=TokenUsage(3, 1), principal=user("a")))
    s = scrape(m)
    assert (
        sample(s, "modelport_gateway_principal_tokens_total", principal="other", kind="prompt") == 3
    )


def test_a_negative_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="max_principals"):
        Metrics(max_principals=-1)


def test_routes_beyond_the_bound_count_as_other() -> None:
    m = Metrics()
    for i in range(metrics_module.MAX_ROUTES + 5):
        serve(m, finished(entity=None, status=404, route=f"/serving-endpoints/x{i}/invocations"))
    s = scrape(m)
    routes = {
        dict(labels)["route"] for (name, labels) in s if name == "modelport_gateway_requests_total"
    }
    assert len(routes) == metrics_module.MAX_ROUTES + 1 and "other" in routes
    assert (
        sample(s, "modelport_gateway_requests_total", entity="", route="other", status="404") == 5
    )


def test_in_flight_follows_started_and_finished() -> None:
    m = Metrics()
    m.request_started()
    m.request_started()
    assert sample(scrape(m), "modelport_gateway_in_flight_requests") == 2
    m.request_finished(finished())
    assert sample(scrape(m), "modelport_gateway_in_flight_requests") == 1


def test_instances_in_one_process_do_not_share_series() -> None:
    first, second = Metrics(), Metrics()
    serve(first, finished())
    assert not first.multiprocess and not second.multiprocess
    assert sample(scrape(first), "modelport_gateway_request_duration_seconds_count", entity="e1")
    assert (
        sample(scrape(second), "modelport_gateway_request_duration_seconds_count", entity="e1")
        is None
    )


@pytest.mark.parametrize(
    "amount", [0.0, 0.01, 0.05, 0.0500001, 0.1, 2.5, 7.0, 300.0, 300.0001, 1e9]
)
def test_the_fast_histogram_path_fills_the_buckets_observe_would(amount: float) -> None:
    registry = CollectorRegistry()
    family = Histogram(
        "h", "h", ("path",), buckets=metrics_module.DURATION_BUCKETS, registry=registry
    )
    family.labels("public").observe(amount)
    pending = metrics_module._PendingHistogram(family.labels("fast"))
    pending.observe(amount)
    pending.flush()
    by_path: dict[str, dict[tuple[str, str], float]] = {"public": {}, "fast": {}}
    for metric in registry.collect():
        for s in metric.samples:
            by_path[s.labels["path"]][(s.name, s.labels.get("le", ""))] = s.value
    assert by_path["fast"] == by_path["public"]


def test_the_fast_counter_path_adds_what_inc_would() -> None:
    registry = CollectorRegistry()
    family = Counter("c", "c", ("path",), registry=registry)
    family.labels("public").inc(3)
    metrics_module._adder(family.labels("fast"))(3)
    assert registry.get_sample_value("c_total", {"path": "fast"}) == 3
    assert registry.get_sample_value("c_total", {"path": "public"}) == 3


def test_without_the_private_attributes_the_public_methods_are_used() -> None:
    """Should prometheus_client rename its internals, the adapters fall back."""

    class Child:
        def inc(self, amount: float = 1) -> None: ...

        def observe(self, amount: float) -> None: ...

    child = Child()
    assert metrics_module._adder(child) == child.inc  # type: ignore[arg-type]
    pending = metrics_module._PendingHistogram(child)  # type: ignore[arg-type]
    assert pending.observe == child.observe
    pending.flush()  # nothing pending: the public method got each observation


# -- multiprocess mode -------------------------------------------------------------------


@pytest.fixture
def multiproc_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """PROMETHEUS_MULTIPROC_DIR set, as a spawned worker sees it; each test then installs
    one value class per simulated worker (the pid its files are named after)."""
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)  # restored afterwards
    try:
        yield tmp_path
    finally:
        values.close_all_multiprocess_files()


def worker(pid: int, **kwargs: int) -> Metrics:
    """A Metrics whose series go to the files of process ``pid``. Series are made on first
    use, so a simulated worker must be served before the next one is made."""
    values.ValueClass = values.MultiProcessValue(lambda: pid)
    return Metrics(**kwargs)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_scrape_of_any_worker_reports_the_sum_of_all(multiproc_dir: Path) -> None:
    a = worker(os.getpid())
    assert a.multiprocess
    serve(a, finished(usage=TokenUsage(10, 1), principal=user("ana")))
    serve(a, finished(entity=None, status=401))
    a.request_started()  # still in flight
    a.flush()  # what its periodic flush does (see the flush tests below)
    b = worker(os.getppid())  # another process that is alive
    serve(b, finished(usage=TokenUsage(5, 2, estimated=True), principal=user("bo")))
    b.request_started()
    b.flush()
    for m in (a, b):
        s = scrape(m)
        assert (
            sample(s, "modelport_gateway_requests_total", entity="e1", route=ROUTE, status="200")
            == 2
        )
        assert (
            sample(s, "modelport_gateway_requests_total", entity="", route=ROUTE, status="401") == 1
        )
        assert sample(s, "modelport_gateway_request_duration_seconds_count", entity="e1") == 2
        assert sample(s, "modelport_gateway_time_to_first_token_seconds_count", entity="e1") == 2
        assert sample(s, "modelport_gateway_tokens_total", entity="e1", kind="prompt") == 15
        assert (
            sample(s, "modelport_gateway_estimated_tokens_total", entity="e1", kind="prompt") == 5
        )
        assert (
            sample(
                s, "modelport_gateway_principal_tokens_total", principal="user:bo", kind="prompt"
            )
            == 5
        )
        # livesum: one number for the pod, no pid label.
        assert sample(s, "modelport_gateway_in_flight_requests") == 2


def test_a_dead_workers_counts_stay_and_its_in_flight_goes(multiproc_dir: Path) -> None:
    gone = worker(dead_pid())
    serve(gone, finished())
    gone.request_started()  # killed mid-request
    gone.flush()
    live = worker(os.getpid())
    serve(live, finished())
    before = set(multiproc_dir.iterdir())
    s = scrape(live)
    assert sample(s, "modelport_gateway_in_flight_requests") == 0
    assert (
        sample(s, "modelport_gateway_requests_total", entity="e1", route=ROUTE, status="200") == 2
    )
    # Only the dead worker's live-gauge file went.
    removed = before - set(multiproc_dir.iterdir())
    assert [p.name.startswith("gauge_livesum_") for p in removed] == [True]


def test_the_principal_bound_is_per_worker(multiproc_dir: Path) -> None:
    a = worker(os.getpid(), max_principals=1)
    serve(a, finished(usage=TokenUsage(1, 0), principal=user("x")))
    serve(a, finished(usage=TokenUsage(2, 0), principal=user("y")))
    b = worker(os.getppid(), max_principals=1)
    serve(b, finished(usage=TokenUsage(4, 0), principal=user("y")))
    b.flush()
    by_principal = {
        dict(labels)["principal"]: value
        for (name, labels), value in scrape(a).items()
        if name == "modelport_gateway_principal_tokens_total" and ("kind", "prompt") in labels
    }
    # Each worker admits one: the pod shows workers x max_principals callers, plus other.
    assert by_principal == {"user:x": 1, "user:y": 4, "other": 2}


def test_with_workers_a_busy_process_flushes_at_most_every_half_second(
    multiproc_dir: Path,
) -> None:
    a = worker(os.getpid())
    b = worker(os.getppid())  # the scraping worker; it serves nothing itself
    start = time.monotonic()
    early = finished()
    early.ended = start  # a request that ended right after the last flush
    serve(a, early)

    def requests_seen() -> float | None:
        return sample(
            scrape(b), "modelport_gateway_requests_total", entity="e1", route=ROUTE, status="200"
        )

    assert not requests_seen(), "not flushed yet: still pending in worker a"
    late = finished()
    late.ended = start + metrics_module.FLUSH_SECONDS
    serve(a, late)
    assert requests_seen() == 2, "the request after half a second flushed both"


def test_with_workers_an_idle_process_flushes_once_a_second(multiproc_dir: Path) -> None:
    a = worker(os.getpid())
    b = worker(os.getppid())

    async def run() -> None:
        await a.start()
        serve(a, finished())
        await asyncio.sleep(1.2)
        seen = sample(
            scrape(b), "modelport_gateway_requests_total", entity="e1", route=ROUTE, status="200"
        )
        assert seen == 1
        await a.aclose()

    asyncio.run(run())


def test_a_directory_set_after_the_import_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MutexValue)
    with pytest.raises(RuntimeError, match="before the process starts"):
        Metrics()


def test_multiprocess_directory_is_fresh_private_exported_and_removed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(MULTIPROC_DIR_ENV, raising=False)
    with multiprocess_directory() as path:
        directory = Path(path)
        assert os.environ[MULTIPROC_DIR_ENV] == path
        assert directory.is_dir() and not any(directory.iterdir())
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        (directory / "counter_1.db").write_bytes(b"x")
    assert not directory.exists()
    assert MULTIPROC_DIR_ENV not in os.environ
