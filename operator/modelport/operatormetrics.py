"""The operator's Prometheus metrics, served on their own port (``MODELPORT_METRICS_PORT``;
the chart's ``metrics.port``, 8082) at ``/metrics``.

Series (the names are an interface: the chart's dashboards and alerts use them, and a
test compares them):

- ``modelport_operator_reconciles_total{result}``: finished reconciles, ``ok`` or
  ``error`` (an apiserver failure; Kopf retries it).
- ``modelport_operator_reconcile_duration_seconds`` (histogram).
- ``modelport_operator_queue_depth`` (gauge): endpoints waiting in the work queue
  (due or debouncing; one in a worker's hands is not counted).
- ``modelport_operator_api_requests_total{method,code}``: requests to the apiserver by
  HTTP method and status code (``0``: no answer).
- ``process_*``: the operator process's memory, CPU and open files.
- ``modelport_operator_endpoint_ready{namespace,endpoint}`` (gauge): 1 while an
  endpoint's status says READY, 0 otherwise; its series goes with the endpoint. The
  alert "endpoint not ready for N minutes" is ``== 0`` for N minutes.

A leaf module (it imports nothing of Modelport), so that ``kube`` and ``controller``
both count into it without a cycle. Its own registry, never the global one.
"""

from __future__ import annotations

import contextlib
import logging

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)

log = logging.getLogger("modelport.metrics")

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # process_resident_memory_bytes, _cpu_seconds_total …
RECONCILES = Counter(
    "modelport_operator_reconciles",
    "Finished reconciles by result (ok, error).",
    ("result",),
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "modelport_operator_reconcile_duration_seconds",
    "Seconds one reconcile took, from its turn to its end.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "modelport_operator_queue_depth",
    "Endpoints waiting in the work queue.",
    registry=REGISTRY,
)
API_REQUESTS = Counter(
    "modelport_operator_api_requests",
    "Requests to the Kubernetes API server by method and status code (0: no answer).",
    ("method", "code"),
    registry=REGISTRY,
)
ENDPOINT_READY = Gauge(
    "modelport_operator_endpoint_ready",
    "1 while the endpoint's status is READY, else 0.",
    ("namespace", "endpoint"),
    registry=REGISTRY,
)


def endpoint_ready(namespace: str, endpoint: str, ready: bool) -> None:
    """Record an endpoint's readiness, as its status says."""
    ENDPOINT_READY.labels(namespace, endpoint).set(1 if ready else 0)


def endpoint_gone(namespace: str, endpoint: str) -> None:
    """Drop a deleted endpoint's series."""
    with contextlib.suppress(KeyError):  # never reconciled to a status
        ENDPOINT_READY.remove(namespace, endpoint)


def serve(port: int) -> None:
    """Serve ``/metrics`` on ``port`` (all addresses; a thread of prometheus_client's)."""
    start_http_server(port, registry=REGISTRY)
    log.info("metrics on :%d/metrics", port)
