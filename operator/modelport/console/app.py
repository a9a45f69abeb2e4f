"""The console's routes (aiohttp), thin: each finds the signed-in person, asks RBAC, reads
Kubernetes, and hands views to :mod:`~modelport.console.pages`.

Who is asking: the session cookie's person (:mod:`~modelport.console.sessions`), else a
bearer token on the request itself (an authenticating proxy such as oauth2-proxy in
front of the console, passing the person's OIDC token), else the sign-in page.

Forged requests: the session cookie is ``SameSite=Strict`` and every POST must come from
the console's own pages (its ``Origin``, when the browser sends one, is the console's);
the playground's calls must also carry the ``X-Modelport-Console`` header, which a form on
another site cannot set.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from modelport.api.v1alpha1 import ServingEndpoint
from modelport.console import pages
from modelport.console.sessions import COOKIE, Session, Sessions
from modelport.console.sources import Source
from modelport.console.views import EndpointView, endpoint_view, event_views
from modelport.gateway.context import Principal
from modelport.restapi.access import Operation
from modelport.restapi.auth import Callers
from modelport.restapi.errors import ApiError
from modelport.restapi.invocations import Invocations
from modelport.restapi.kube import Kube, KubeApiError
from modelport.restapi.views import parse_or_none

log = logging.getLogger("modelport.console")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PLAYGROUND_HEADER = "X-Modelport-Console"
MAX_PROMPT_BYTES = 256 * 1024
MAX_TOKENS = 4096
STATIC = ("console.css", "console.js")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Viewer:
    """The person behind a request and how to call on their behalf."""

    principal: Principal
    authorization: str


@dataclass
class Console:
    """The console's parts; :meth:`application` makes the aiohttp app of them."""

    kube: Kube
    callers: Callers
    metrics: Source
    invocations: Invocations = field(default_factory=Invocations)
    served: frozenset[str] = frozenset()
    """Namespaces shown (empty: every namespace)."""
    sessions: Sessions = field(default_factory=Sessions)
    oidc_issuer: str | None = None

    def application(self) -> web.Application:
        """The aiohttp application serving every page."""
        app = web.Application(middlewares=[_guard], client_max_size=MAX_PROMPT_BYTES)
        app.router.add_get("/healthz", _ok)
        app.router.add_get("/readyz", _ok)
        app.router.add_get("/static/{file}", _static)
        app.router.add_get("/login", self.login_page)
        app.router.add_post("/login", self.login)
        app.router.add_post("/logout", self.logout)
        app.router.add_get("/", self.endpoints)
        app.router.add_get("/endpoints/{namespace}/{name}", self.endpoint)
        app.router.add_get("/endpoints/{namespace}/{name}/charts", self.charts)
        app.router.add_get("/playground", self.playground)
        app.router.add_post("/playground/api/{namespace}/{name}", self.chat)
        app.on_cleanup.append(self._close)
        return app

    # --- signing in --------------------------------------------------------------------

    async def login_page(self, request: web.Request) -> web.Response:
        """The sign-in form."""
        return _html(pages.login(oidc_issuer=self.oidc_issuer))

    async def login(self, request: web.Request) -> web.Response:
        """Check the pasted token, then start a session and go to the list."""
        form = await request.post()
        token = str(form.get("token") or "").strip()
        try:
            principal = await self.callers.authenticate(f"Bearer {token}")
        except ApiError as exc:
            reason = exc.message.split(";")[0]
            return _html(pages.login(reason, oidc_issuer=self.oidc_issuer), status=exc.status)
        sid = self.sessions.start(principal, token)
        log.info("%s signed in", principal.label)
        response = web.HTTPSeeOther("/")
        response.set_cookie(
            COOKIE, sid, httponly=True, samesite="Strict", path="/", secure=_https(request)
        )
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        """End the session."""
        self.sessions.end(request.cookies.get(COOKIE))
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    # --- pages -------------------------------------------------------------------------

    async def endpoints(self, request: web.Request) -> web.Response:
        """Every endpoint of the namespaces where the person may list them."""
        viewer = await self._viewer(request)
        groups, hidden = await self._visible(viewer)
        return _html(pages.endpoint_list(_name(viewer), groups, hidden))

    async def endpoint(self, request: web.Request) -> web.Response:
        """One endpoint, its entities, traffic, conditions, events and charts."""
        viewer, namespace, name = await self._allowed_on(request, Operation.GET)
        endpoint = await self._endpoint(namespace, name)
        events, panels = await asyncio.gather(
            self._kube(self.kube.endpoint_events(namespace, name)),
            self.metrics.panels(namespace, name),
        )
        page = pages.endpoint_detail(
            _name(viewer),
            endpoint_view(endpoint),
            event_views(events),
            panels,
            self.metrics.description,
        )
        return _html(page)

    async def charts(self, request: web.Request) -> web.Response:
        """The charts fragment of an endpoint (the detail page refreshes it)."""
        _, namespace, name = await self._allowed_on(request, Operation.GET)
        return _html(pages.charts(await self.metrics.panels(namespace, name)))

    async def playground(self, request: web.Request) -> web.Response:
        """The playground, with up to two endpoints chosen (``?a=ns/name&b=ns/name``)."""
        viewer = await self._viewer(request)
        groups, _ = await self._visible(viewer)
        views = [v for _, vs in groups for v in vs]
        chosen = [request.query.get(k, "") for k in ("a", "b")]
        return _html(pages.playground(_name(viewer), views, chosen))

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """A playground message: to the endpoint's gateway as the person, streamed back."""
        if request.headers.get(PLAYGROUND_HEADER) != "1":
            raise ApiError(403, "PERMISSION_DENIED", f"send the {PLAYGROUND_HEADER} header")
        viewer, namespace, name = await self._allowed_on(request, Operation.INVOKE)
        try:
            sent = orjson.loads(await request.read())
            messages = sent["messages"]
            max_tokens = int(sent.get("max_tokens") or 256)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise ApiError(
                400, "BAD_REQUEST", "send JSON {messages: [...], max_tokens: N}"
            ) from None
        if not isinstance(messages, list) or not 1 <= max_tokens <= MAX_TOKENS:
            raise ApiError(400, "BAD_REQUEST", f"messages: a list; max_tokens: 1 to {MAX_TOKENS}")
        body = orjson.dumps(
            {
                "messages": messages,
                "max_tokens": max_tokens,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
        )
        return await self.invocations.forward(
            request, namespace, name, authorization=viewer.authorization, body=body
        )

    # --- plumbing ----------------------------------------------------------------------

    async def _viewer(self, request: web.Request) -> Viewer:
        session: Session | None = self.sessions.get(request.cookies.get(COOKIE))
        if session is not None:
            return Viewer(session.principal, session.authorization)
        header = request.headers.get("Authorization")
        if header:
            # An authenticating proxy's token: checked on every request (cached briefly).
            principal = await self.callers.authenticate(header)
            return Viewer(principal, header)
        raise web.HTTPSeeOther("/login")

    async def _visible(self, viewer: Viewer) -> tuple[list[tuple[str, list[EndpointView]]], int]:
        """``(namespace, endpoints)`` the person may list, by name; and how many
        namespaces with endpoints were left out."""
        if self.served:
            lists = await asyncio.gather(
                *(self._kube(self.kube.list_endpoints(ns)) for ns in sorted(self.served))
            )
            raw = [item for items in lists for item in items]
        else:
            raw = await self._kube(self.kube.list_all_endpoints())
        by_namespace: dict[str, list[EndpointView]] = {}
        for item in raw:
            endpoint = parse_or_none(item)
            if endpoint is not None:
                view = endpoint_view(endpoint)
                by_namespace.setdefault(view.namespace, []).append(view)
        allowed = await asyncio.gather(
            *(self._may(viewer, ns, Operation.LIST) for ns in by_namespace)
        )
        groups = [
            (ns, sorted(views, key=lambda v: v.name))
            for (ns, views), ok in zip(by_namespace.items(), allowed, strict=True)
            if ok
        ]
        return sorted(groups), len(by_namespace) - len(groups)

    async def _may(self, viewer: Viewer, namespace: str, operation: Operation) -> bool:
        try:
            await self.callers.authorize(viewer.principal, namespace, operation.access())
        except ApiError as exc:
            if exc.status == 403:
                return False
            raise
        return True

    async def _allowed_on(
        self, request: web.Request, operation: Operation
    ) -> tuple[Viewer, str, str]:
        viewer = await self._viewer(request)
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        if self.served and namespace not in self.served:
            raise ApiError(
                404, "RESOURCE_DOES_NOT_EXIST", f"namespace {namespace} is not shown here"
            )
        await self.callers.authorize(viewer.principal, namespace, operation.access(name))
        return viewer, namespace, name

    async def _endpoint(self, namespace: str, name: str) -> ServingEndpoint:
        raw = await self._kube(self.kube.get_endpoint(namespace, name))
        endpoint = parse_or_none(raw) if raw is not None else None
        if endpoint is None:
            raise ApiError(
                404, "RESOURCE_DOES_NOT_EXIST", f"no endpoint {name} in namespace {namespace}"
            )
        return endpoint

    async def _kube(self, call: Awaitable[Any]) -> Any:
        try:
            return await call
        except KubeApiError as exc:
            log.warning("apiserver: %s %s", exc.status, exc.reason)
            raise ApiError(
                503, "TEMPORARILY_UNAVAILABLE", "the Kubernetes API server failed; retry shortly"
            ) from None

    async def _close(self, _: web.Application) -> None:
        await self.invocations.aclose()
        await self.metrics.aclose()
        await self.callers.aclose()
        await self.kube.aclose()


def _name(viewer: Viewer) -> str:
    return viewer.principal.name


def _https(request: web.Request) -> bool:
    return request.secure or request.headers.get("X-Forwarded-Proto") == "https"


def _html(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Same-origin POSTs, security headers, and failures as pages (or JSON for the
    playground's calls); never a traceback."""
    playground = request.path.startswith("/playground/api/")
    try:
        if request.method == "POST" and not _same_origin(request):
            raise ApiError(403, "PERMISSION_DENIED", "cross-site requests are refused")
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400:
            exc.headers.update(SECURITY_HEADERS)
        raise
    except ApiError as exc:
        if playground:
            body = {"error": {"message": exc.message, "code": exc.code}}
            response = web.json_response(body, status=exc.status, dumps=_dumps)
        else:
            title = {401: "Sign in again", 403: "Not allowed", 404: "Not found"}
            response = _html(
                pages.problem(title.get(exc.status, "Unavailable"), exc.message), exc.status
            )
    except Exception:
        incident = uuid.uuid4().hex[:12]
        log.exception("incident %s: %s %s failed", incident, request.method, request.path)
        response = _html(
            pages.problem("Error", f"internal error (incident {incident}; see the log)"), 500
        )
    if not response.prepared:
        response.headers.update(SECURITY_HEADERS)
    return response


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser's cross-site form: browsers send Origin on every POST
    return urlsplit(origin).netloc == request.host  # "null" (a sandboxed frame) never is


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


async def _static(request: web.Request) -> web.Response:
    name = request.match_info["file"]
    if name not in STATIC:
        raise web.HTTPNotFound()
    data = resources.files("modelport.console").joinpath("static", name).read_bytes()
    kind = "text/css" if name.endswith(".css") else "text/javascript"
    return web.Response(body=data, content_type=kind, charset="utf-8")


async def _ok(_: web.Request) -> web.Response:
    return web.Response(text="ok")
