"""Where an endpoint's chart numbers come from: Prometheus when the console is told its
URL, else the endpoint's gateway pods themselves.

- :class:`Prometheus` asks ``/api/v1/query_range`` for the last hour (a point a minute)
  with :func:`~modelport.console.series.promql`'s queries: history from before anyone
  looked, and every replica that ever served.
- :class:`GatewayScrapes` reads ``/metrics`` of each running gateway pod (as the REST
  API's ``GET …/metrics`` does) when a page asks, at most every
  :data:`SCRAPE_INTERVAL_SECONDS` per endpoint, and keeps the last :data:`KEEP`
  snapshots of the :data:`MAX_ENDPOINTS` endpoints looked at most recently: charts
  start when someone first opens the endpoint, and cost nothing while nobody does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp

from modelport.console.series import Panel, Snapshot, from_prometheus, panels, promql, snapshot
from modelport.render.gateway import GATEWAY_PORT
from modelport.render.names import gateway_selector, service_name
from modelport.restapi.kube import Kube
from modelport.restapi.metrics import scrape

log = logging.getLogger("modelport.console.sources")

SCRAPE_INTERVAL_SECONDS = 10.0
KEEP = 360
"""Snapshots kept per endpoint: an hour at one a page refresh (every 10-15 s)."""
MAX_ENDPOINTS = 64
WINDOW_SECONDS = 3600
STEP_SECONDS = 60
PROMETHEUS_TIMEOUT_SECONDS = 10.0
DEFAULT_POD_METRICS_URL = "http://{ip}:" + str(GATEWAY_PORT) + "/metrics"


class Source(Protocol):
    """Gives the panels of one endpoint."""

    description: str

    async def panels(self, namespace: str, endpoint: str) -> list[Panel]:
        """The endpoint's five panels."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class Prometheus:
    """Panels from a Prometheus server's HTTP API."""

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time) -> None:
        self.url = url.rstrip("/")
        self.description = "from Prometheus, last hour"
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    async def panels(self, namespace: str, endpoint: str) -> list[Panel]:
        """Each query over the last hour; a query that fails leaves its series empty."""
        end = self._clock()
        params = {"start": str(end - WINDOW_SECONDS), "end": str(end), "step": str(STEP_SECONDS)}
        queries = promql(namespace, service_name(endpoint))
        keys = [(panel, name, q) for panel, named in queries.items() for name, q in named.items()]
        results = await asyncio.gather(*(self._range(q, params) for _, _, q in keys))
        answers: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for (panel, name, _), result in zip(keys, results, strict=True):
            answers.setdefault(panel, {})[name] = result
        return from_prometheus(answers)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _range(self, query: str, params: dict[str, str]) -> list[dict[str, Any]]:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=PROMETHEUS_TIMEOUT_SECONDS)
            self._session = aiohttp.ClientSession(timeout=timeout)
        try:
            async with self._session.get(
                f"{self.url}/api/v1/query_range", params={"query": query, **params}
            ) as resp:
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("Prometheus query failed (%s): %s", type(exc).__name__, query)
            return []
        if not isinstance(body, dict) or body.get("status") != "success":
            log.warning("Prometheus refused a query (%s): %s", _error(body), query)
            return []
        result = body.get("data", {}).get("result", [])
        return result if isinstance(result, list) else []


class GatewayScrapes:
    """Panels from the endpoint's gateway pods, scraped while someone looks."""

    def __init__(
        self,
        kube: Kube,
        *,
        pod_url_template: str = DEFAULT_POD_METRICS_URL,
        clock: Callable[[], float] = time.time,
        interval: float = SCRAPE_INTERVAL_SECONDS,
    ) -> None:
        self.description = "from the gateway pods, since this page was first opened"
        self._kube = kube
        self._template = pod_url_template
        self._clock = clock
        self._interval = interval
        self._rings: OrderedDict[tuple[str, str], deque[Snapshot]] = OrderedDict()
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def panels(self, namespace: str, endpoint: str) -> list[Panel]:
        """A fresh snapshot when the last is old enough, then the panels of the ring."""
        key = (namespace, endpoint)
        ring = self._rings.get(key)
        if ring is None:
            ring = self._rings[key] = deque(maxlen=KEEP)
            while len(self._rings) > MAX_ENDPOINTS:
                old, _ = self._rings.popitem(last=False)
                self._locks.pop(old, None)
        self._rings.move_to_end(key)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # two pages refreshing at once scrape once
            now = self._clock()
            if not ring or now - ring[-1].time >= self._interval:
                texts = await self._scrape(namespace, endpoint)
                if texts is not None:
                    ring.append(snapshot(now, texts))
        return panels(list(ring))

    async def aclose(self) -> None:
        """Nothing held between scrapes."""

    async def _scrape(self, namespace: str, endpoint: str) -> list[str] | None:
        try:
            pods = await self._kube.pods(namespace, gateway_selector(endpoint))
        except Exception as exc:  # the apiserver's failure is not the page's
            log.warning("cannot list gateway pods of %s/%s: %s", namespace, endpoint, exc)
            return None
        urls = {
            p["metadata"]["name"]: self._template.format(ip=ip)
            for p in pods
            if (ip := p.get("status", {}).get("podIP")) and p["status"].get("phase") == "Running"
        }
        if not urls:
            return None
        return [text for _, text in await scrape(urls)]


def _error(body: object) -> str:
    if isinstance(body, dict):
        return str(body.get("error") or body.get("errorType") or "no status")
    return "not JSON"
