"""Which self-hosted entities have a ready pod, from the EndpointSlices of their Services.

Fallback skips a self-hosted entity with no ready pod (scaling from zero, waiting for a
GPU node, loading weights) and goes straight to the next entity: a cold start spills
over instead of making requests wait. The gateway learns readiness the way kube-proxy
does: it watches the EndpointSlices (``kubernetes.io/service-name`` in the entities'
Services) of its own namespace, with its own ServiceAccount, which the operator binds
to a ClusterRole that may only get, list and watch ``endpointslices`` — with a
RoleBinding in that one namespace (see the chart's README). A watch event reaches the
gateway within milliseconds of the pod's readiness changing, where a file the operator
rendered would take the kubelet's sync period (a minute or more) to arrive.

An entity counts as ready whenever the gateway does not know better: before the first
list, for an entity whose Service it does not watch, and when the watch has been broken
for more than :data:`STALE_SECONDS` (a stale "not ready" must not keep an entity out for
good). A watch that ends is resumed from its last resourceVersion; an expired one
(``410 Gone``) is listed afresh; failures back off up to :data:`MAX_BACKOFF_SECONDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
import orjson

from modelport import gatewayconfig as gc
from modelport.gateway.auth.tokenreview import DEFAULT_CA_FILE, DEFAULT_TOKEN_FILE, api_server_url

log = logging.getLogger("modelport.gateway.readiness")

SERVICE_LABEL = "kubernetes.io/service-name"
WATCH_SECONDS = 290
"""How long one watch request lasts before the apiserver ends it (it is then resumed)."""
STALE_SECONDS = 60.0
MAX_BACKOFF_SECONDS = 30.0
MAX_EVENT_BYTES = 4 << 20


class Readiness(Protocol):
    """Tells fallback whether an entity may have a ready pod."""

    def ready(self, entity: str) -> bool:
        """False only when the entity is known to have no ready pod."""
        ...

    async def start(self) -> None:
        """Start following readiness (at start-up)."""
        ...

    async def aclose(self) -> None:
        """Stop (at shutdown)."""
        ...


def ready_endpoints(slice_: dict[str, Any]) -> int:
    """How many of an EndpointSlice's endpoints are ready (an unset ``ready`` is ready, as
    the API documents)."""
    count = 0
    for endpoint in slice_.get("endpoints") or []:
        conditions = endpoint.get("conditions") or {} if isinstance(endpoint, dict) else {}
        if conditions.get("ready") is not False:
            count += 1
    return count


class EndpointSliceReadiness:
    """Readiness of entities from a watch of their Services' EndpointSlices."""

    def __init__(self, config: gc.Readiness, clock: Callable[[], float] = time.monotonic):
        self._config = config
        self._clock = clock
        self._service_of = dict(config.services)
        services = sorted(set(config.services.values()))
        selector = quote(f"{SERVICE_LABEL} in ({','.join(services)})", safe="")
        try:
            base = api_server_url(config.api_server)
        except ValueError:
            raise ValueError(
                "readiness.apiServer is not set and KUBERNETES_SERVICE_HOST is not in the "
                "environment: set apiServer when the gateway runs outside a pod"
            ) from None
        self._url = (
            f"{base.rstrip('/')}/apis/discovery.k8s.io/v1/namespaces/"
            f"{quote(config.namespace)}/endpointslices?labelSelector={selector}"
        )
        self._token_file = Path(config.token_file or DEFAULT_TOKEN_FILE)
        self._ca_file = config.ca_file or DEFAULT_CA_FILE
        # slice name -> (its Service, its ready endpoints); None until the first list.
        self._slices: dict[str, tuple[str, int]] | None = None
        self._ready: dict[str, bool] = {}
        self._broken_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.synced = asyncio.Event()
        """Set once the first list has been taken (tests wait on it)."""
        self._warned: set[str] = set()

    def ready(self, entity: str) -> bool:
        """Whether ``entity`` may have a ready pod (True unless the watch knows it has none)."""
        service = self._service_of.get(entity)
        if service is None:
            return True
        known = self._ready.get(service)
        if known is None or known:
            return True
        broken = self._broken_since
        return broken is not None and self._clock() - broken > STALE_SECONDS

    async def start(self) -> None:
        """Start watching (at start-up, on the serving loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="readiness")

    async def aclose(self) -> None:
        """Stop watching (at shutdown)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _run(self) -> None:
        backoff = 1.0
        version: str | None = None
        while True:
            try:
                if version is None:
                    version = await self._list()
                version = await self._watch(version)
                backoff = 1.0
                self._broken_since = None
            except _GoneError:
                version = None  # the watch fell too far behind: list afresh
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                if self._broken_since is None:
                    self._broken_since = self._clock()
                self._warn_once(
                    type(exc).__name__,
                    "readiness: cannot watch EndpointSlices in %s (%s); entities count as "
                    "ready until it works again",
                    self._config.namespace,
                    exc,
                )
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF_SECONDS, backoff * 2)

    async def _list(self) -> str:
        async with self._open().get(self._url, headers=self._headers()) as resp:
            self._check(resp)
            document = orjson.loads(await resp.read())
        slices: dict[str, tuple[str, int]] = {}
        for item in document.get("items") or []:
            entry = _entry(item)
            if entry is not None:
                slices[entry[0]] = entry[1]
        self._slices = slices
        self._recompute()
        self._warned.clear()
        self._broken_since = None
        self.synced.set()
        version = (document.get("metadata") or {}).get("resourceVersion")
        if not isinstance(version, str):
            raise ValueError("the EndpointSlice list has no resourceVersion")
        return version

    async def _watch(self, version: str) -> str:
        url = (
            f"{self._url}&watch=1&allowWatchBookmarks=true&resourceVersion={quote(version)}"
            f"&timeoutSeconds={WATCH_SECONDS}"
        )
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=WATCH_SECONDS + 30)
        async with self._open().get(url, headers=self._headers(), timeout=timeout) as resp:
            self._check(resp)
            buffer = b""
            async for data in resp.content.iter_any():
                buffer += data
                if len(buffer) > MAX_EVENT_BYTES:
                    raise ValueError("an EndpointSlice watch event is too large")
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        version = self._event(orjson.loads(line), version)
        return version

    def _event(self, event: dict[str, Any], version: str) -> str:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _GoneError
            raise ValueError(f"watch error: {obj.get('message', '')}")
        new_version = (obj.get("metadata") or {}).get("resourceVersion") or version
        if kind == "BOOKMARK" or self._slices is None:
            return str(new_version)
        entry = _entry(obj)
        if entry is not None:
            if kind == "DELETED":
                self._slices.pop(entry[0], None)
            else:
                self._slices[entry[0]] = entry[1]
            self._recompute()
        return str(new_version)

    def _recompute(self) -> None:
        ready = dict.fromkeys(self._service_of.values(), False)
        for service, count in (self._slices or {}).values():
            if count > 0:
                ready[service] = True
        for service, now in ready.items():
            if self._ready.get(service) is not now:
                state = "ready" if now else "has no ready pod"
                log.info("readiness: Service %s %s", service, state)
        self._ready = ready

    def _headers(self) -> dict[str, str]:
        token = self._token_file.read_text(encoding="utf-8").strip()  # rotated by the kubelet
        return {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def _check(self, resp: aiohttp.ClientResponse) -> None:
        if resp.status == 410:
            raise _GoneError
        if resp.status in (401, 403):
            raise ValueError(
                f"HTTP {resp.status}: the gateway's ServiceAccount may not watch endpointslices "
                f"in {self._config.namespace} (the operator binds it to the chart's readiness "
                "ClusterRole; see MODELPORT_GATEWAY_READINESS_ROLE)"
            )
        if resp.status != 200:
            raise ValueError(f"the apiserver answered HTTP {resp.status}")

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            tls: ssl.SSLContext | bool = True
            if self._url.startswith("https://"):
                tls = ssl.create_default_context(cafile=self._ca_file)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=tls, limit=2),
                timeout=aiohttp.ClientTimeout(total=30, sock_connect=5),
            )
        return self._session

    def _warn_once(self, cause: str, message: str, *args: object) -> None:
        if cause not in self._warned:
            self._warned.add(cause)
            log.warning(message, *args)


class _GoneError(Exception):
    """The watch's resourceVersion is too old: list again."""


def _entry(obj: Any) -> tuple[str, tuple[str, int]] | None:
    """(slice name, (its Service, ready endpoints)) of an EndpointSlice object."""
    if not isinstance(obj, dict):
        return None
    meta = obj.get("metadata") or {}
    name, service = meta.get("name"), (meta.get("labels") or {}).get(SERVICE_LABEL)
    if not isinstance(name, str) or not isinstance(service, str):
        return None
    return name, (service, ready_endpoints(obj))
