"""Requests for an entity that scales to zero, while it has no ready pod: held, not failed,
and the entity woken.

An entity with ``scaleToZeroEnabled`` has no pod at all once it has been idle for its
idle period (the operator's autoscaler took it to zero replicas). The next request for it
must not fail: the dispatcher asks :meth:`ColdStarts.hold` to wait until the entity has a
ready pod (the EndpointSlice watch of :mod:`modelport.gateway.readiness` says so the
moment the pod is ready), then forwards it as usual. Meanwhile:

- **Wake**: the first request that finds the entity without a ready pod starts one wake
  (per entity; at most one every :data:`WAKE_QUIET_SECONDS`): the gateway reads its
  Deployment's ``scale`` subresource and, only if it still says 0 replicas, writes 1
  with the resourceVersion it read (a compare-and-set: if anyone changed it meanwhile,
  the apiserver refuses with 409 and the gateway reads again). That is the gateway's one
  write, with its own ServiceAccount, which may get and update the scale subresource of
  exactly these Deployments. It never sets any other number and never scales down: the
  operator's autoscaler owns the replicas, and takes the woken entity from there (it
  also scales up on requests held, should the gateway's write fail).
- **Bounded**: at most ``maxHeldRequests`` requests are held per entity (more get 503
  with ``Retry-After``), each until its own deadline (the request timeout), after which
  it gets 504. A client that goes away stops waiting with it.
- **Spill**: with fallback on and another entity after it in the plan, the dispatcher
  does not hold: the request goes to the next entity at once (the entity is still woken,
  so later requests find it up).
- **Connection refused**: a pod that the watch calls ready may not be reachable yet
  (kube-proxy catches up a moment later), and a request may race the scale to zero. A
  connection that cannot be made to such an entity is held and tried again (after a
  short pause growing to :data:`MAX_PAUSE_SECONDS`), within the same deadline; nothing
  was sent, so nothing is sent twice. Without the readiness watch (the cluster gives
  gateways no readiness role), this is how a held request finds out.

Held requests count as demand for the autoscaler (``modelport_gateway_held_requests``),
which never scales an entity down while any is held. Metrics: holds by outcome, hold
time, cold-start time, wakes (see :mod:`modelport.gateway.metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
import orjson

from modelport import gatewayconfig as gc
from modelport.gateway.apiserver import ApiServer
from modelport.gateway.errors import DEADLINE_EXCEEDED, TEMPORARILY_UNAVAILABLE, GatewayError
from modelport.gateway.fallback import retry_after_header
from modelport.gateway.metrics import Metrics
from modelport.gateway.readiness import Readiness

log = logging.getLogger("modelport.gateway.coldstart")

WAKE_ATTEMPTS = 5
WAKE_QUIET_SECONDS = 10.0
"""After a wake found the entity above zero (or put it there), the next is this far off:
held requests do not each read the Deployment."""
MAX_PAUSE_SECONDS = 2.0
FULL_RETRY_AFTER_SECONDS = 5.0


class Waker(Protocol):
    """Scales an entity's Deployment from zero to one replica."""

    async def wake(self, entity: str, deployment: str) -> str:
        """``woken``, ``already`` (it was not at zero) or ``failed``."""
        ...

    async def aclose(self) -> None:
        """Close connections (at shutdown)."""
        ...


class ScaleSubresource:
    """The gateway's :class:`Waker`: a compare-and-set on the Deployment's scale
    subresource, with the gateway's own ServiceAccount token (see the module)."""

    def __init__(self, config: gc.ScaleToZero) -> None:
        self._api = ApiServer(
            config.api_server, config.token_file, config.ca_file, section="scaleToZero"
        )
        self._base = f"{self._api.url}/apis/apps/v1/namespaces/{quote(config.namespace)}"

    async def wake(self, entity: str, deployment: str) -> str:
        """Read the scale; at 0 write 1 with the resourceVersion read; on 409 read again."""
        url = f"{self._base}/deployments/{quote(deployment)}/scale"
        for attempt in range(WAKE_ATTEMPTS):
            try:
                session = self._api.session()
                async with session.get(url, headers=self._api.headers()) as resp:
                    scale = self._checked(resp, await resp.read(), deployment)
                if int((scale.get("spec") or {}).get("replicas") or 0) > 0:
                    return "already"
                scale["spec"] = {**(scale.get("spec") or {}), "replicas": 1}
                headers = {**self._api.headers(), "Content-Type": "application/json"}
                async with session.put(url, data=orjson.dumps(scale), headers=headers) as resp:
                    if resp.status == 409:
                        continue  # changed since it was read: decide again on a fresh read
                    self._checked(resp, await resp.read(), deployment)
                log.info("woke entity %s: Deployment %s from 0 to 1 replica", entity, deployment)
                return "woken"
            except _RefusedError as exc:
                log.warning("cannot wake entity %s: %s", entity, exc)
                return "failed"
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                log.warning("waking entity %s failed (%s); retrying", entity, exc)
                await asyncio.sleep(min(MAX_PAUSE_SECONDS, 0.25 * 2**attempt))
        return "failed"

    async def aclose(self) -> None:
        """Close the connections."""
        await self._api.aclose()

    @staticmethod
    def _checked(resp: aiohttp.ClientResponse, body: bytes, deployment: str) -> dict[str, Any]:
        if resp.status in (401, 403, 404):
            raise _RefusedError(
                f"HTTP {resp.status} on the scale of Deployment {deployment}: the gateway's "
                "ServiceAccount may get and update it only through the Role the operator "
                "renders (<endpoint>-gateway-scale); the operator's autoscaler starts the "
                "entity instead, at its next look at the held requests"
            )
        if resp.status != 200:
            raise ValueError(f"the apiserver answered HTTP {resp.status}")
        parsed: dict[str, Any] = orjson.loads(body)
        return parsed


class ColdStarts:
    """Holds requests for entities that scale to zero and wakes them (see the module)."""

    def __init__(
        self,
        config: gc.ScaleToZero,
        readiness: Readiness | None,
        metrics: Metrics,
        *,
        waker: Waker | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._deployments = dict(config.deployments)
        self._max_held = config.max_held_requests
        self._readiness = readiness
        self._metrics = metrics
        self._waker = waker if waker is not None else ScaleSubresource(config)
        self._clock = clock
        self._waking: dict[str, asyncio.Task[None]] = {}
        self._quiet_until: dict[str, float] = {}
        self._cold_since: dict[str, float] = {}

    def scales(self, entity: str) -> bool:
        """Whether ``entity`` scales to zero (its requests are held, not failed)."""
        return entity in self._deployments

    def cold(self, entity: str) -> bool:
        """Whether ``entity`` scales to zero and is known to have no ready pod; if so it is
        woken (the caller holds the request, or spills it to another entity)."""
        if entity not in self._deployments:
            return False
        if self._readiness is None or self._readiness.ready(entity):
            return False
        self.wake(entity)
        return True

    def refused(self, entity: str) -> None:
        """A connection to ``entity`` could not be made: it may have just gone to zero (or
        have no pod yet that kube-proxy knows of); wake it."""
        self.wake(entity)

    def spilled(self, entity: str) -> None:
        """A request went to another entity instead of waiting for ``entity`` (fallback)."""
        self._metrics.hold_ended(entity, "spilled", 0.0)

    def answered(self, entity: str) -> None:
        """An attempt on ``entity`` got an answer: it is up (ends its cold start, if any)."""
        self._warm(entity)

    def wake(self, entity: str) -> None:
        """Start waking ``entity`` unless a wake runs or one just ran; its cold start
        counts from the first call."""
        self._cold_since.setdefault(entity, self._clock())
        if entity in self._waking or self._clock() < self._quiet_until.get(entity, 0.0):
            return
        task = asyncio.get_running_loop().create_task(self._wake(entity), name=f"wake-{entity}")
        self._waking[entity] = task
        task.add_done_callback(lambda _: self._waking.pop(entity, None))

    async def hold(self, entity: str, deadline: float, *, pause: float = 0.0) -> None:
        """Wait until ``entity`` may have a ready pod (after ``pause`` seconds first: a
        connection just refused); raises 503 when it already holds ``maxHeldRequests``,
        504 when ``deadline`` (on this object's clock, monotonic by default) passes
        first."""
        series = self._metrics.entity(entity)
        if series.held >= self._max_held:
            self._metrics.hold_ended(entity, "refused", 0.0)
            raise GatewayError(
                503,
                TEMPORARILY_UNAVAILABLE,
                f"served entity {entity!r} is starting and already holds {self._max_held} "
                "requests; retry shortly",
                headers=(retry_after_header(FULL_RETRY_AFTER_SECONDS),),
            )
        started = self._clock()
        series.held += 1
        outcome = "timeout"
        try:
            if pause > 0:
                await asyncio.sleep(min(pause, max(0.0, deadline - self._clock())))
            left = deadline - self._clock()
            ready = left > 0 and (
                self._readiness is None or await self._readiness.until_ready(entity, left)
            )
            if ready:
                outcome = "forwarded"
                if self._readiness is not None:
                    self._warm(entity)
                return
        except asyncio.CancelledError:
            outcome = "disconnected"
            raise
        finally:
            series.held -= 1
            self._metrics.hold_ended(entity, outcome, self._clock() - started)
        raise GatewayError(
            504,
            DEADLINE_EXCEEDED,
            f"served entity {entity!r} was starting from zero replicas and had no ready "
            "replica within the request's timeout; retry (it keeps starting)",
        )

    async def aclose(self) -> None:
        """Stop wakes in flight; close the connections (at shutdown)."""
        for task in list(self._waking.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._waker.aclose()

    def _warm(self, entity: str) -> None:
        since = self._cold_since.pop(entity, None)
        if since is not None:
            took = self._clock() - since
            self._metrics.cold_start(entity, took)
            log.info("entity %s has a ready replica: cold start took %.1f s", entity, took)

    async def _wake(self, entity: str) -> None:
        try:
            result = await self._waker.wake(entity, self._deployments[entity])
        except Exception:  # a bug must not leave the entity asleep silently
            log.exception("waking entity %s failed", entity)
            result = "failed"
        self._metrics.wake(entity, result)
        if result != "failed":
            self._quiet_until[entity] = self._clock() + WAKE_QUIET_SECONDS


class _RefusedError(Exception):
    """The apiserver refused the gateway's ServiceAccount: retrying cannot help."""
