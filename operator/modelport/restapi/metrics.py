"""``GET …/{name}/metrics``: the endpoint's gateway metrics, from every gateway pod.

A Service would answer from one replica only; the server reads ``/metrics`` of each
ready gateway pod and merges them into one Prometheus text exposition in which every
sample carries a ``pod`` label (sums across pods are then the scraper's, as with any
Prometheus target). A pod that does not answer is left out; the answer says how many
did in ``modelport_restapi_scraped_pods``. The merge is pure (:func:`merge`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator

import aiohttp
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("modelport.restapi.metrics")

SCRAPE_TIMEOUT_SECONDS = 5.0
MAX_PODS = 50


def merge(scrapes: Iterable[tuple[str, str]]) -> bytes:
    """One exposition from ``(pod, exposition text)`` pairs, each sample labelled ``pod``."""
    families: dict[str, Metric] = {}
    pods = 0
    for pod, text in scrapes:
        pods += 1
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = Metric(family.name, family.documentation, family.type, family.unit)
                families[family.name] = merged
            for sample in family.samples:
                labels = {**sample.labels, "pod": pod}
                merged.add_sample(sample.name, labels, sample.value, sample.timestamp)
    scraped = GaugeMetricFamily(
        "modelport_restapi_scraped_pods", "Gateway pods whose metrics this answer holds."
    )
    scraped.add_metric([], pods)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed([*families.values(), scraped]))
    return generate_latest(registry)


async def scrape(urls: dict[str, str]) -> list[tuple[str, str]]:
    """``(pod, text)`` of each ``pod -> metrics URL`` that answered in time."""
    timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(pod: str, url: str) -> tuple[str, str] | None:
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return pod, await resp.text()
                    log.info("metrics of pod %s: HTTP %d", pod, resp.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("metrics of pod %s: %s", pod, type(exc).__name__)
            return None

        found = await asyncio.gather(*(one(p, u) for p, u in list(urls.items())[:MAX_PODS]))
    return [f for f in found if f is not None]


class _Fixed:
    """A collector of metric families made beforehand."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families
