"""The console's HTML, page by page. Pure: every value inserted is escaped here.

Pages load ``/static/console.css`` and ``/static/console.js`` only; no inline script
(the Content-Security-Policy the app sends forbids it), so a value that slipped through
unescaped still could not run.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

from modelport.console.series import Panel
from modelport.console.svg import chart
from modelport.console.views import EndpointView, EventView

e = html.escape


def layout(title: str, body: str, *, user: str | None = None, active: str = "") -> str:
    """A whole page: header with navigation and the signed-in person, then ``body``."""
    nav = ""
    if user is not None:
        links = [("endpoints", "/", "Endpoints"), ("playground", "/playground", "Playground")]
        items = "".join(
            f'<a href="{href}"{" class=active" if key == active else ""}>{text}</a>'
            for key, href, text in links
        )
        nav = (
            f"<nav>{items}</nav>"
            f'<form class="signout" method="post" action="/logout">'
            f'<span class="who">{e(user)}</span><button>Sign out</button></form>'
        )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · Modelport</title>"
        '<link rel=stylesheet href="/static/console.css">'
        '<script src="/static/console.js" defer></script></head><body>'
        f'<header><a class="brand" href="/">Modelport</a>{nav}</header>'
        f"<main>{body}</main></body></html>"
    )


def login(message: str = "", *, oidc_issuer: str | None = None) -> str:
    """The sign-in form: paste a token (the console keeps it server-side)."""
    note = f'<p class="error" role="alert">{e(message)}</p>' if message else ""
    oidc = (
        f"<li>an ID token of <code>{e(oidc_issuer)}</code> (or sign in through your "
        "authenticating proxy, which passes it for you)</li>"
        if oidc_issuer
        else ""
    )
    body = (
        '<section class="login"><h1>Sign in</h1>'
        f"{note}<p>Paste a token the cluster accepts:</p><ul>"
        "<li>a ServiceAccount token: <code>kubectl create token &lt;account&gt; "
        "--audience modelport</code></li>"
        f"{oidc}</ul>"
        '<form method="post" action="/login">'
        '<textarea name="token" id="token" rows="5" autocomplete="off" spellcheck="false" '
        'required placeholder="eyJhbGciOi..."></textarea>'
        '<button id="signin">Sign in</button></form>'
        "<p class=hint>You see the endpoints of the namespaces where Kubernetes RBAC lets "
        "you list them; the playground calls endpoints as you.</p></section>"
    )
    return layout("Sign in", body)


def endpoint_list(user: str, groups: Sequence[tuple[str, list[EndpointView]]], hidden: int) -> str:
    """Every endpoint the person may see, by namespace."""
    sections = []
    for namespace, endpoints in groups:
        rows = "".join(_row(v) for v in endpoints)
        sections.append(
            f'<section class="namespace" data-namespace="{e(namespace)}">'
            f"<h2>{e(namespace)}</h2><table class=endpoints><thead><tr><th>Name</th>"
            "<th>State</th><th>Config update</th><th>Served entities</th><th>Traffic</th>"
            f"<th>URL</th></tr></thead><tbody>{rows}</tbody></table></section>"
        )
    if not sections:
        sections.append(
            '<p class="empty" id="no-endpoints">No endpoints you may see. Endpoints show '
            "here for the namespaces where RBAC lets you list servingendpoints.</p>"
        )
    note = (
        f'<p class="hint">{hidden} namespace(s) with endpoints are not shown: you may not '
        "list endpoints there.</p>"
        if hidden
        else ""
    )
    return layout(
        "Endpoints", f"<h1>Endpoints</h1>{''.join(sections)}{note}", user=user, active="endpoints"
    )


def _row(view: EndpointView) -> str:
    entities = "".join(f"<li>{e(x.name)} {_badge(x.deployment)}</li>" for x in view.entities)
    traffic = " · ".join(f"{e(x.name)} {x.traffic}%" for x in view.entities)
    href = f"/endpoints/{e(view.namespace)}/{e(view.name)}"
    return (
        f'<tr data-endpoint="{e(view.key)}"><td><a href="{href}">{e(view.name)}</a></td>'
        f'<td class="state">{_badge(view.ready)}</td><td>{_badge(view.config_update)}</td>'
        f"<td><ul class=entities>{entities}</ul></td><td>{traffic}</td>"
        f"<td><code>{e(view.url)}</code></td></tr>"
    )


def endpoint_detail(
    user: str, view: EndpointView, events: list[EventView], panels: list[Panel], source: str
) -> str:
    """One endpoint: state, entities, traffic, conditions, events and charts."""
    entities = "".join(
        f'<tr data-entity="{e(x.name)}"><td>{e(x.name)}</td><td>{e(x.what)}</td>'
        f"<td>{x.traffic}%</td><td>{_badge(x.deployment)}</td><td>{e(x.message)}</td></tr>"
        for x in view.entities
    )
    bar = "".join(
        f'<span class="share" style="flex:{max(x.traffic, 0)}" title="{e(x.name)} '
        f'{x.traffic}%">{e(x.name)} {x.traffic}%</span>'
        for x in view.entities
        if x.traffic > 0
    )
    conditions = (
        "".join(
            f"<tr><td>{e(c.type)}</td><td>{e(c.status)}</td><td>{e(c.reason)}</td>"
            f"<td>{e(c.message)}</td><td>{e(c.since)}</td></tr>"
            for c in view.conditions
        )
        or '<tr><td colspan=5 class="empty">none yet</td></tr>'
    )
    rows = (
        "".join(
            f'<tr class="{e(ev.type.lower())}"><td>{e(ev.time)}</td><td>{e(ev.type)}</td>'
            f"<td>{e(ev.reason)}</td><td>{e(ev.message)}</td><td>{ev.count}</td></tr>"
            for ev in events
        )
        or '<tr><td colspan=5 class="empty">no recent events</td></tr>'
    )
    charts_url = f"/endpoints/{e(view.namespace)}/{e(view.name)}/charts"
    creator = f"<dt>Created by</dt><dd>{e(view.creator)}</dd>" if view.creator else ""
    play = f"/playground?a={e(view.key)}"
    body = (
        f"<h1>{e(view.name)} <small>{e(view.namespace)}</small></h1>"
        f'<dl class="facts"><dt>State</dt><dd id="state">{_badge(view.ready)}</dd>'
        f"<dt>Config update</dt><dd>{_badge(view.config_update)}</dd>"
        f"<dt>URL</dt><dd><code>{e(view.url)}</code></dd>"
        f"<dt>Task</dt><dd>{e(view.task)}</dd>{creator}</dl>"
        f'<p><a class="button" href="{play}">Open in the playground</a></p>'
        "<h2>Served entities</h2><table id=entities><thead><tr><th>Name</th><th>Model</th>"
        "<th>Traffic</th><th>State</th><th>Message</th></tr></thead>"
        f"<tbody>{entities}</tbody></table>"
        f'<h2>Traffic</h2><div class="traffic" id="traffic">{bar}</div>'
        f'<h2>Metrics <small class="hint">({e(source)})</small></h2>'
        f'<div class="charts" data-refresh="{charts_url}">{charts(panels)}</div>'
        "<h2>Conditions</h2><table id=conditions><thead><tr><th>Type</th><th>Status</th>"
        "<th>Reason</th><th>Message</th><th>Since</th></tr></thead>"
        f"<tbody>{conditions}</tbody></table>"
        "<h2>Recent events</h2><table id=events><thead><tr><th>Last seen</th><th>Type</th>"
        "<th>Reason</th><th>Message</th><th>Count</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )
    return layout(view.name, body, user=user, active="endpoints")


def charts(panels: Iterable[Panel]) -> str:
    """The charts fragment (also what the page's script fetches to refresh them)."""
    return "".join(chart(p) for p in panels)


def playground(user: str, endpoints: list[EndpointView], chosen: Sequence[str]) -> str:
    """One prompt, sent to one endpoint or two side by side; answers stream in."""
    chat = [v for v in endpoints if v.task == "llm/v1/chat"]
    panes = []
    for index, key in enumerate((*chosen, "", "")[:2]):
        options = '<option value="">— none —</option>' if index else ""
        options += "".join(
            f'<option value="{e(v.key)}"{" selected" if v.key == key else ""}>'
            f"{e(v.key)} ({e(v.ready)})</option>"
            for v in chat
        )
        panes.append(
            f'<section class="pane" data-pane="{index}"><label>Endpoint '
            f'<select name="endpoint{index}">{options}</select></label>'
            '<div class="transcript" aria-live="polite"></div>'
            '<p class="stats"></p></section>'
        )
    empty = "" if chat else '<p class="empty">No chat endpoints you may see.</p>'
    body = (
        "<h1>Playground</h1>"
        '<p class="hint">Messages go to each chosen endpoint\'s gateway as you (your '
        "token): the endpoint's own rules on callers and limits apply.</p>"
        f'{empty}<div class="panes">{"".join(panes)}</div>'
        '<form id="prompt"><textarea name="message" rows="3" required '
        'placeholder="Ask something…"></textarea>'
        '<label>Max tokens <input type="number" name="max_tokens" value="256" min="1" '
        'max="4096"></label><button id="send">Send</button>'
        '<button type="button" id="clear">Clear</button></form>'
    )
    return layout("Playground", body, user=user, active="playground")


def problem(title: str, message: str, *, user: str | None = None) -> str:
    """An error page that says what to do."""
    return layout(title, f"<h1>{e(title)}</h1><p class=error>{e(message)}</p>", user=user)


def _badge(state: str) -> str:
    good = state in ("READY", "DEPLOYMENT_READY", "NOT_UPDATING")
    bad = state in ("NOT_READY", "UPDATE_FAILED", "DEPLOYMENT_FAILED", "DEPLOYMENT_ABORTED")
    kind = "good" if good else "bad" if bad else "busy"
    return f'<span class="badge {kind}">{e(state)}</span>'
