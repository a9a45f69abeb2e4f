"""The operator's autoscaler: every interval, each endpoint's gateway pods are asked for
their load, and the replicas of the gateway and of each self-hosted entity are set from it.

The decisions are `modelport.scaling`'s (pure); here is the I/O around them:

- **What to scale**: the `ScaleTarget`s of an endpoint's last reconcile (the gateway's
  Deployment and each self-hosted entity's), read through `targets` (the reconciler's),
  so the autoscaler renders nothing and follows spec changes as soon as they are
  reconciled. A Deployment the watch cache does not hold (not created yet), or that some
  other endpoint owns, is left alone.
- **The load**: `GET http://<pod IP>:8080/metrics` of every ready gateway pod of the
  endpoint (from the watch cache), at most `SCRAPES` at once across endpoints, each
  given `SCRAPE_TIMEOUT_SECONDS`. A pod that does not answer makes the endpoint's figures
  incomplete: then nothing is scaled down (what it did not say could be load). The
  gateway pods' CPU seconds between two reads give their CPU utilisation.
- **The write**: `Kube.scale`, a merge patch of the scale subresource carrying the
  resourceVersion the decision was made on. A 409 means someone changed the Deployment
  since (the gateway woke an entity, a person scaled it): the next tick decides again.
- **Events** on the endpoint for each change (ScaledUp, ScaledDown, ScaledToZero), and
  WokenUp when the gateway took an entity from zero (seen on the next tick).

An endpoint whose gateway has no ready pod is not looked at: no figures, no decision.
The watch of the Deployments brings each change of replicas to the reconciler, which
writes it into the endpoint's status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Literal, Protocol

import aiohttp

from modelport.controller.cache import Cache, CachedPod, EndpointKey
from modelport.kube import KubeError
from modelport.render.gateway import GATEWAY_PORT
from modelport.render.names import gateway_selector
from modelport.scaling import (
    Decision,
    PodFigures,
    Scaler,
    ScaleTarget,
    cpu_utilisation,
    entity_load,
    gateway_load,
    parse_metrics,
)
from modelport.settings import AutoscalingSettings

log = logging.getLogger("modelport.autoscaler")

SCRAPE_TIMEOUT_SECONDS = 2.0
SCRAPES = 32
"""Gateway pods read at once, over every endpoint."""
MAX_METRICS_BYTES = 4 << 20


class GatewayMetrics(Protocol):
    """Reads one gateway pod's figures (raises when it cannot)."""

    async def read(self, namespace: str, endpoint: str, pod: CachedPod) -> PodFigures:
        """The pod's figures."""
        ...

    async def aclose(self) -> None:
        """Close connections."""
        ...


class ScaleWriter(Protocol):
    """The calls of `modelport.kube.Kube` the autoscaler makes."""

    async def scale(self, namespace: str, name: str, replicas: int, version: str) -> None:
        """Set a Deployment's replicas if its resourceVersion is still `version`."""
        ...

    async def event(
        self,
        namespace: str,
        endpoint: str,
        uid: str,
        type_: Literal["Normal", "Warning"],
        reason: str,
        message: str,
    ) -> bool:
        """Record an event on the endpoint."""
        ...


class PodMetrics:
    """`GatewayMetrics` over HTTP: the pod's IP, the gateway's port, `/metrics`."""

    def __init__(self, port: int = GATEWAY_PORT, timeout: float = SCRAPE_TIMEOUT_SECONDS):
        self._port = port
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def read(self, namespace: str, endpoint: str, pod: CachedPod) -> PodFigures:
        """GET the pod's /metrics and parse what the autoscaler reads of it."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(limit=SCRAPES)
            )
        host = f"[{pod.ip}]" if ":" in pod.ip else pod.ip
        async with self._session.get(f"http://{host}:{self._port}/metrics") as resp:
            if resp.status != 200:
                raise ValueError(f"HTTP {resp.status}")
            body = await resp.content.read(MAX_METRICS_BYTES)
        return parse_metrics(body.decode("utf-8", "replace"))

    async def aclose(self) -> None:
        """Close the connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class Autoscaler:
    """Sets the replicas of every endpoint's gateway and self-hosted entities."""

    def __init__(
        self,
        cache: Cache,
        kube: ScaleWriter,
        targets: Callable[[EndpointKey], tuple[ScaleTarget, ...]],
        settings: AutoscalingSettings,
        *,
        metrics: GatewayMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache = cache
        self.kube = kube
        self._targets = targets
        self._settings = settings
        self._metrics = metrics if metrics is not None else PodMetrics()
        self._clock = clock
        self._scalers: dict[tuple[EndpointKey, str], Scaler] = {}
        self._cpu: dict[str, tuple[float, float]] = {}
        """Gateway pod uid -> its last (time, CPU seconds)."""
        self._unreachable: set[str] = set()
        self._read_now: set[str] = set()
        self._scrapes = asyncio.Semaphore(SCRAPES)
        self._task: asyncio.Task[None] | None = None
        self.writes = 0

    def start(self) -> None:
        """Start the loop (on the running event loop)."""
        self._task = asyncio.create_task(self._run(), name="modelport-autoscaler")

    async def stop(self) -> None:
        """Stop the loop; close the connections."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._metrics.aclose()

    async def tick(self) -> None:
        """Look at every endpoint once."""
        keys = [k for k in self.cache.endpoints() if self._targets(k)]
        self._read_now = set()
        await asyncio.gather(*(self._endpoint(k) for k in keys))
        for uid in set(self._cpu) - self._read_now:
            del self._cpu[uid]  # a pod gone
        live = set(keys)
        for scaler_key in [k for k in self._scalers if k[0] not in live]:
            del self._scalers[scaler_key]

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._settings.interval_seconds)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("autoscaler tick failed; the next one tries again")

    async def _endpoint(self, key: EndpointKey) -> None:
        namespace, name = key
        endpoint = self.cache.endpoint(key)
        if endpoint is None or endpoint.deleting:
            return
        selector = gateway_selector(name)
        pods = [
            p for p in self.cache.pods(namespace, name) if p.matches(selector) and p.ready and p.ip
        ]
        if not pods:
            return
        figures = list(await asyncio.gather(*(self._read(namespace, name, p) for p in pods)))
        now = self._clock()
        children = self.cache.children(key)
        targets = self._targets(key)
        for target in targets:
            child = children.get(("Deployment", target.deployment))
            if child is None or child.deployment is None or child.owner_uid != endpoint.uid:
                continue
            current = child.deployment.replicas
            scaler = self._scalers.get((key, target.deployment))
            if scaler is None:
                scaler = self._scalers[(key, target.deployment)] = Scaler(now)
            available = child.deployment.available_replicas
            if scaler.observe(current, now, available) and target.entity is not None:
                await self.kube.event(
                    namespace, name, endpoint.uid, "Normal", "WokenUp",
                    f"{target.what}: 0 -> {current} replicas: a request arrived (the gateway "
                    "started it)",
                )  # fmt: skip
            if target.entity is None:
                load = gateway_load(figures, self._cpu_utilisations(pods, figures, target, now))
            else:
                load = entity_load(figures, target.entity)
            decision = scaler.decide(
                target, load, current, now, self._settings.scale_down_stabilization_seconds
            )
            if decision is not None and not await self._write(
                key, endpoint.uid, child.version, target, current, decision
            ):
                scaler.last_replicas = current  # not done: the next look starts from here
        kept = {t.deployment for t in targets}
        for scaler_key in [k for k in self._scalers if k[0] == key and k[1] not in kept]:
            del self._scalers[scaler_key]

    async def _write(
        self,
        key: EndpointKey,
        uid: str,
        version: str,
        target: ScaleTarget,
        current: int,
        decision: Decision,
    ) -> bool:
        """Set the replicas the decision says, and say so in an event; whether it was set."""
        namespace, name = key
        try:
            await self.kube.scale(namespace, target.deployment, decision.replicas, version)
        except KubeError as exc:
            if exc.status != 409:  # 409: changed meanwhile; the next look decides again
                log.warning("could not scale %s of %s/%s: %s", target.what, *key, exc)
            return False
        self.writes += 1
        if decision.replicas == 0:
            reason = "ScaledToZero"
        else:
            reason = "ScaledUp" if decision.replicas > current else "ScaledDown"
        message = f"{target.what}: {current} -> {decision.replicas} replicas: {decision.reason}"
        log.info("%s/%s %s", namespace, name, message)
        await self.kube.event(namespace, name, uid, "Normal", reason, message)
        return True

    async def _read(self, namespace: str, endpoint: str, pod: CachedPod) -> PodFigures | None:
        """A pod's figures, or None (logged once per pod until it answers again)."""
        async with self._scrapes:
            try:
                figures = await self._metrics.read(namespace, endpoint, pod)
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                if pod.uid not in self._unreachable:
                    self._unreachable.add(pod.uid)
                    log.warning(
                        "cannot read the load of gateway pod %s of %s/%s (%s: %s); its "
                        "endpoint is not scaled down until it answers",
                        pod.observation.name, namespace, endpoint, type(exc).__name__, exc,
                    )  # fmt: skip
                return None
        self._unreachable.discard(pod.uid)
        return figures

    def _cpu_utilisations(
        self,
        pods: list[CachedPod],
        figures: list[PodFigures | None],
        target: ScaleTarget,
        now: float,
    ) -> list[float]:
        """Each gateway pod's CPU utilisation since its previous read (those read twice)."""
        found: list[float] = []
        for pod, pod_figures in zip(pods, figures, strict=True):
            if pod_figures is None or pod_figures.cpu_seconds is None:
                continue
            sample = (now, pod_figures.cpu_seconds)
            self._read_now.add(pod.uid)
            before = self._cpu.get(pod.uid)
            self._cpu[pod.uid] = sample
            if before is not None and target.cpu_request:
                used = cpu_utilisation(before, sample, target.cpu_request)
                if used is not None:
                    found.append(used)
        return found
