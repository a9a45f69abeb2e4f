"""The routes of the reference service's serving-endpoints API (aiohttp), thin: each one
authenticates the caller, finds the workspace, asks RBAC, then maps and calls Kubernetes.

aiohttp rather than the gateway's raw ASGI: this is a control-plane API of a dozen
routes with path parameters, at the pace of humans and CI jobs, where a router and
request objects make the code shorter and a few microseconds do not matter; aiohttp is
already a dependency (and this server's client for the apiserver and the gateways).

Every route exists twice: at the root (the default workspace, or one named by header)
and under ``/workspaces/{workspace}`` (see ``modelport.restapi.workspaces``).
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import ValidationError

from modelport.api.v1alpha1 import ServingEndpoint, ServingEndpointSpec, format_errors
from modelport.gateway.context import Principal
from modelport.render.gateway import GATEWAY_PORT
from modelport.render.names import entity_selector, gateway_name, gateway_selector
from modelport.restapi import mapping, metrics, openapi, views, workspaces
from modelport.restapi.access import Operation
from modelport.restapi.auth import Callers
from modelport.restapi.errors import (
    INTERNAL_ERROR,
    INVALID_PARAMETER_VALUE,
    NOT_IMPLEMENTED,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_CONFLICT,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
    ApiError,
    endpoint_not_found,
    invalid,
)
from modelport.restapi.invocations import Invocations
from modelport.restapi.kube import Kube, KubeApiError

log = logging.getLogger("modelport.restapi")

API = "/api/2.0/serving-endpoints"
WORKSPACE_PREFIX = "/workspaces/{workspace}"
MALFORMED_REQUEST = "MALFORMED_REQUEST"
UPDATE_ATTEMPTS = 3
"""Read-modify-write retries when another writer changed the endpoint in between."""
LOG_TAIL_LINES = 2000
LOG_LIMIT_BYTES = 1 << 20

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SpecChange = Callable[[ServingEndpointSpec], ServingEndpointSpec]
T = TypeVar("T")


@dataclass
class RestApi:
    """The server's parts; :meth:`application` makes the aiohttp app of them."""

    kube: Kube
    callers: Callers
    invocations: Invocations = field(default_factory=Invocations)
    served: frozenset[str] = frozenset()
    """Namespaces that are workspaces (empty: all)."""
    default_workspace: str | None = None

    def application(self) -> web.Application:
        """The aiohttp application serving every route."""
        app = web.Application(middlewares=[_errors])
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/.well-known/databricks-config", self.host_metadata),
            ("GET", API, self.list),
            ("POST", API, self.create),
            # MLflow's client asks for the collection with a trailing slash.
            ("GET", API + "/", self.list),
            ("POST", API + "/", self.create),
            ("GET", API + "/{name}", self.get),
            ("DELETE", API + "/{name}", self.delete),
            ("PUT", API + "/{name}/config", self.put_config),
            ("PUT", API + "/{name}/ai-gateway", self.put_ai_gateway),
            ("PUT", API + "/{name}/rate-limits", self.put_rate_limits),
            ("PATCH", API + "/{name}/tags", self.patch_tags),
            ("GET", API + "/{name}/openapi", self.openapi),
            ("GET", API + "/{name}/metrics", self.metrics),
            ("GET", API + "/{name}/served-models/{entity}/logs", self.logs),
            ("POST", "/serving-endpoints/{name}/invocations", self.invoke),
            ("*", API + "/{tail:.*}", _not_implemented),
            ("*", "/api/2.0/permissions/serving-endpoints{tail:.*}", _not_implemented),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
            app.router.add_route(method, WORKSPACE_PREFIX + path, handler)
        app.router.add_get("/healthz", _ok)
        app.router.add_get("/readyz", _ok)
        app.on_cleanup.append(self._close)
        return app

    # --- endpoints ---------------------------------------------------------------------

    async def host_metadata(self, request: web.Request) -> web.Response:
        """What the SDKs ask a host first: here, which workspace it is (no credential)."""
        try:
            namespace = self._workspace(request)
        except ApiError:
            return _json({})
        return _json({"workspace_id": namespace})

    async def list(self, request: web.Request) -> web.Response:
        """``GET /api/2.0/serving-endpoints``."""
        _, namespace = await self._allowed(request, Operation.LIST)
        found = []
        for raw in await self._kube(self.kube.list_endpoints(namespace)):
            endpoint = views.parse_or_none(raw)
            if endpoint is not None:
                found.append(views.summary(endpoint))
        return _json({"endpoints": found})

    async def create(self, request: web.Request) -> web.Response:
        """``POST /api/2.0/serving-endpoints``."""
        principal, namespace = await self._allowed(request, Operation.CREATE)
        body = await _body(request)
        endpoint = _mapped(
            lambda: mapping.endpoint_from_reference(
                body,
                namespace=namespace,
                annotations={mapping.CREATOR_ANNOTATION: principal.name},
            )
        )
        name = endpoint.metadata.name
        try:
            stored = await self.kube.create_endpoint(namespace, endpoint.to_body())
        except KubeApiError as exc:
            if exc.status == 409:
                raise ApiError(
                    409,
                    RESOURCE_ALREADY_EXISTS,
                    f"Endpoint with name '{name}' already exists; update it with PUT "
                    f"{API}/{name}/config, or delete it first",
                ) from None
            raise _kube_error(exc, namespace, name) from None
        log.info("%s created servingendpoint %s/%s", principal.label, namespace, name)
        return _json(views.detailed(_parse(stored)))

    async def get(self, request: web.Request) -> web.Response:
        """``GET /api/2.0/serving-endpoints/{name}``."""
        _, namespace, name = await self._allowed_on(request, Operation.GET)
        return _json(views.detailed(await self._endpoint(namespace, name)))

    async def delete(self, request: web.Request) -> web.Response:
        """``DELETE /api/2.0/serving-endpoints/{name}``."""
        principal, namespace, name = await self._allowed_on(request, Operation.DELETE)
        try:
            await self.kube.delete_endpoint(namespace, name)
        except KubeApiError as exc:
            if exc.status == 404:
                raise endpoint_not_found(name, namespace) from None
            raise _kube_error(exc, namespace, name) from None
        log.info("%s deleted servingendpoint %s/%s", principal.label, namespace, name)
        return _json({})

    async def put_config(self, request: web.Request) -> web.Response:
        """``PUT …/{name}/config``: refused while an update is in progress, as the service
        does; the answer is the endpoint, its new config pending."""
        principal, namespace, name = await self._allowed_on(request, Operation.UPDATE)
        body = await _body(request)
        stored = await self._update(
            principal,
            namespace,
            name,
            lambda spec: mapping.spec_with_config(spec, body),
            refuse_while_updating=True,
        )
        return _json(views.detailed(stored))

    async def put_ai_gateway(self, request: web.Request) -> web.Response:
        """``PUT …/{name}/ai-gateway``: the answer is the new AI gateway."""
        principal, namespace, name = await self._allowed_on(request, Operation.UPDATE)
        body = await _body(request)
        stored = await self._update(
            principal, namespace, name, lambda spec: mapping.spec_with_ai_gateway(spec, body)
        )
        gateway = stored.spec.ai_gateway
        return _json(mapping.model_to_reference(gateway) if gateway is not None else {})

    async def put_rate_limits(self, request: web.Request) -> web.Response:
        """``PUT …/{name}/rate-limits`` (the legacy API): the AI gateway's rate limits."""
        principal, namespace, name = await self._allowed_on(request, Operation.UPDATE)
        body = await _body(request)
        stored = await self._update(
            principal, namespace, name, lambda spec: mapping.spec_with_rate_limits(spec, body)
        )
        gateway = stored.spec.ai_gateway
        limits = gateway.rate_limits if gateway is not None else None
        return _json({"rate_limits": [mapping.model_to_reference(r) for r in limits or []]})

    async def patch_tags(self, request: web.Request) -> web.Response:
        """``PATCH …/{name}/tags``: the answer is every tag of the endpoint."""
        principal, namespace, name = await self._allowed_on(request, Operation.UPDATE)
        body = await _body(request)
        stored = await self._update(
            principal, namespace, name, lambda spec: mapping.spec_with_tags(spec, body)
        )
        return _json({"tags": [mapping.model_to_reference(t) for t in stored.spec.tags or []]})

    async def openapi(self, request: web.Request) -> web.Response:
        """``GET …/{name}/openapi``."""
        _, namespace, name = await self._allowed_on(request, Operation.GET)
        endpoint = await self._endpoint(namespace, name)
        return _json(openapi.document(name, endpoint.spec.task))

    async def metrics(self, request: web.Request) -> web.Response:
        """``GET …/{name}/metrics``: every gateway pod's metrics, labelled by pod."""
        _, namespace, name = await self._allowed_on(request, Operation.GET)
        await self._endpoint(namespace, name)
        pods = await self._kube(self.kube.pods(namespace, gateway_selector(name)))
        urls = {
            p["metadata"]["name"]: f"http://{ip}:{GATEWAY_PORT}/metrics"
            for p in pods
            if (ip := p.get("status", {}).get("podIP")) and _running(p)
        }
        text = metrics.merge(await metrics.scrape(urls))
        return web.Response(body=text, content_type="text/plain", charset="utf-8")

    async def logs(self, request: web.Request) -> web.Response:
        """``GET …/{name}/served-models/{entity}/logs``: the newest running inference pod's
        log tail, for a self-hosted entity (an external model has no server of ours)."""
        principal, namespace, name = await self._allowed_on(request, Operation.GET)
        endpoint = await self._endpoint(namespace, name)
        entity_name = request.match_info["entity"]
        try:
            entity = endpoint.spec.entity(entity_name)
        except KeyError:
            raise ApiError(
                404,
                RESOURCE_DOES_NOT_EXIST,
                f"endpoint '{name}' has no served entity '{entity_name}'; its entities: "
                f"{', '.join(e.name for e in endpoint.spec.served_entities)}",
            ) from None
        if not entity.is_self_hosted:
            raise invalid(
                f"served entity '{entity_name}' is an external model: it runs at its provider, "
                "which keeps no server logs here; the endpoint's gateway logs are "
                f"kubectl -n {namespace} logs deployment/{gateway_name(name)}"
            )
        # Logs are the pods': the caller needs Kubernetes' own right to read them.
        await self.callers.authorize(principal, namespace, Operation.READ_LOGS.access())
        pods = await self._kube(self.kube.pods(namespace, entity_selector(name, entity_name)))
        running = sorted(
            (p for p in pods if _running(p)),
            key=lambda p: p["metadata"].get("creationTimestamp", ""),
        )
        if not running:
            raise ApiError(
                404,
                RESOURCE_DOES_NOT_EXIST,
                f"no pod of served entity '{entity_name}' is running yet; see its state in "
                f"GET {API}/{name}",
            )
        pod = running[-1]
        text = await self._kube(
            self.kube.pod_log(
                namespace,
                pod["metadata"]["name"],
                container=pod["spec"]["containers"][0]["name"],
                tail_lines=LOG_TAIL_LINES,
                limit_bytes=LOG_LIMIT_BYTES,
            )
        )
        return _json({"logs": text})

    async def invoke(self, request: web.Request) -> web.StreamResponse:
        """``POST /serving-endpoints/{name}/invocations``, proxied to the gateway."""
        _, namespace, name = await self._allowed_on(request, Operation.INVOKE)
        await self._endpoint(namespace, name)
        return await self.invocations.forward(request, namespace, name)

    # --- plumbing ----------------------------------------------------------------------

    def _workspace(self, request: web.Request) -> str:
        return workspaces.resolve(
            request.match_info.get("workspace"),
            request.headers,
            default=self.default_workspace,
            served=self.served,
        )

    async def _allowed(self, request: web.Request, operation: Operation) -> tuple[Principal, str]:
        """The authenticated caller and the workspace, once RBAC allows ``operation``."""
        principal = await self.callers.authenticate(request.headers.get("Authorization"))
        namespace = self._workspace(request)
        await self.callers.authorize(principal, namespace, operation.access())
        return principal, namespace

    async def _allowed_on(
        self, request: web.Request, operation: Operation
    ) -> tuple[Principal, str, str]:
        """As :meth:`_allowed`, for the endpoint the path names (normalised)."""
        principal = await self.callers.authenticate(request.headers.get("Authorization"))
        namespace = self._workspace(request)
        try:
            name = mapping.endpoint_name(request.match_info["name"])
        except mapping.MappingError as exc:
            raise invalid("; ".join(exc.errors)) from None
        await self.callers.authorize(principal, namespace, operation.access(name))
        return principal, namespace, name

    async def _endpoint(self, namespace: str, name: str) -> ServingEndpoint:
        raw = await self._kube(self.kube.get_endpoint(namespace, name))
        if raw is None:
            raise endpoint_not_found(name, namespace)
        return _parse(raw)

    async def _update(
        self,
        principal: Principal,
        namespace: str,
        name: str,
        change: SpecChange,
        *,
        refuse_while_updating: bool = False,
    ) -> ServingEndpoint:
        """Read, change the spec, write back with the version read; again on a conflict."""
        for _ in range(UPDATE_ATTEMPTS):
            raw = await self._kube(self.kube.get_endpoint(namespace, name))
            if raw is None:
                raise endpoint_not_found(name, namespace)
            endpoint = _parse(raw)
            if refuse_while_updating and views.state_of(endpoint)[1] == "IN_PROGRESS":
                raise ApiError(
                    409,
                    RESOURCE_CONFLICT,
                    f"Endpoint '{name}' is currently updating (config version "
                    f"{endpoint.metadata.generation} is rolling out); wait until its "
                    "state.config_update is NOT_UPDATING, then retry",
                )
            spec = _mapped(functools.partial(change, endpoint.spec))
            raw["spec"] = spec.to_body()
            try:
                stored = await self.kube.replace_endpoint(namespace, raw)
            except KubeApiError as exc:
                if exc.status == 409:
                    continue  # changed since we read it: read again
                raise _kube_error(exc, namespace, name) from None
            log.info("%s updated servingendpoint %s/%s", principal.label, namespace, name)
            return _parse(stored)
        raise ApiError(
            409,
            RESOURCE_CONFLICT,
            f"Endpoint '{name}' kept changing while it was being updated; retry",
        )

    async def _kube(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except KubeApiError as exc:
            raise _kube_error(exc, "", "") from None

    async def _close(self, _: web.Application) -> None:
        await self.invocations.aclose()
        await self.callers.aclose()
        await self.kube.aclose()


def _mapped(build: Callable[[], T]) -> T:
    """``build()``, its MappingError as the service's 400."""
    try:
        return build()
    except mapping.MappingError as exc:
        raise invalid("; ".join(exc.errors)) from None


def _parse(raw: dict[str, Any]) -> ServingEndpoint:
    try:
        return ServingEndpoint.parse(raw)
    except ValidationError as exc:
        name = raw.get("metadata", {}).get("name")
        raise ApiError(
            500,
            INTERNAL_ERROR,
            f"endpoint '{name}' as stored does not parse ({'; '.join(format_errors(exc))}); "
            "is the server older than the CRD?",
        ) from None


def _running(pod: dict[str, Any]) -> bool:
    return bool(pod.get("status", {}).get("phase") == "Running")


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, MALFORMED_REQUEST, "the request body is not valid JSON") from None


def _json(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def _kube_error(exc: KubeApiError, namespace: str, name: str) -> ApiError:
    """An apiserver failure as the service's error."""
    if exc.status == 0:
        return ApiError(
            503, TEMPORARILY_UNAVAILABLE, "the Kubernetes API server is unreachable; retry"
        )
    if exc.status == 422:
        return ApiError(400, INVALID_PARAMETER_VALUE, mapping.reference_words(exc.message))
    if exc.status == 404 and namespace:
        return ApiError(
            404, RESOURCE_DOES_NOT_EXIST, f"workspace (namespace) '{namespace}' does not exist"
        )
    if exc.status == 403:
        log.error("the apiserver refused the server's own request: %s", exc.message)
        return ApiError(
            500,
            INTERNAL_ERROR,
            "the API server's own ServiceAccount may not do this (or the namespace is "
            "being deleted); an administrator should check the chart's RBAC for it",
        )
    log.error("apiserver error %s %s: %s", exc.status, exc.reason, exc.message)
    return ApiError(502, INTERNAL_ERROR, f"the Kubernetes API server failed: {exc.reason}")


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as ``{error_code, message}``; never a traceback to the client."""
    try:
        return await handler(request)
    except ApiError as exc:
        return _json(exc.body(), status=exc.status, headers=exc.headers)
    except web.HTTPNotFound:
        return _json(
            {
                "error_code": "ENDPOINT_NOT_FOUND",
                "message": f"No API found for '{request.method} {request.path}'",
            },
            status=404,
        )
    except web.HTTPMethodNotAllowed as exc:
        return _json(
            {
                "error_code": "BAD_REQUEST",
                "message": f"{request.method} is not allowed here; use "
                f"{', '.join(sorted(exc.allowed_methods))}",
            },
            status=405,
        )
    except web.HTTPException:
        raise
    except Exception:
        incident = uuid.uuid4().hex[:12]
        log.exception("incident %s: %s %s failed", incident, request.method, request.path)
        return _json(
            {
                "error_code": INTERNAL_ERROR,
                "message": f"internal error (incident {incident}; the server's log has it)",
            },
            status=500,
        )


async def _not_implemented(request: web.Request) -> web.Response:
    hint = ""
    if "/permissions/" in request.path:
        hint = "; who may do what is Kubernetes RBAC on servingendpoints (see the README)"
    raise ApiError(
        501,
        NOT_IMPLEMENTED,
        f"'{request.method} {request.path}' is not implemented by Modelport{hint}",
    )


async def _ok(_: web.Request) -> web.Response:
    return web.Response(text="ok")
