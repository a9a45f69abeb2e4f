"""Running ``modelport console``: settings from flags (or ``MODELPORT_CONSOLE_*``), the
parts of :class:`~modelport.console.app.Console`, and aiohttp's server.

The callers' checks are the REST API's, built the same way (:func:`modelport.restapi.
server.build`'s verifiers): ServiceAccount tokens for the audiences (TokenReview) and
OIDC tokens of one issuer. A bad setting exits 2 naming the flag, before anything
listens.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass

from aiohttp import web

from modelport.console.app import Console
from modelport.console.sources import DEFAULT_POD_METRICS_URL, GatewayScrapes, Prometheus, Source
from modelport.restapi import server as api_server
from modelport.restapi.invocations import Invocations

LOG_FORMAT = api_server.LOG_FORMAT


@dataclass(frozen=True)
class Settings:
    """The console's settings (see ``modelport console --help``)."""

    api: api_server.Settings
    """Listening, namespaces, callers, the apiserver and the gateways' URLs: as the API's."""
    prometheus_url: str | None = None
    pod_metrics_url_template: str = DEFAULT_POD_METRICS_URL

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        """Settings from parsed flags; ValueError names the flag and the fix."""
        prometheus = (args.prometheus_url or "").strip() or None
        if prometheus is not None and not prometheus.startswith(("http://", "https://")):
            raise ValueError(f"--prometheus-url {prometheus!r}: give an http(s) URL")
        template = args.pod_metrics_url_template or DEFAULT_POD_METRICS_URL
        try:
            template.format(ip="10.0.0.1")
        except (KeyError, IndexError, ValueError):
            raise ValueError(
                f"--pod-metrics-url-template {template!r}: only {{ip}} may appear in braces"
            ) from None
        # The API's own flags, with the console's names (no default workspace).
        args.default_workspace = None
        return cls(
            api=api_server.Settings.from_args(args),
            prometheus_url=prometheus,
            pod_metrics_url_template=template,
        )


def build(settings: Settings) -> Console:
    """The console's parts (ValueError when the apiserver is unknown)."""
    api = api_server.build(settings.api)
    metrics: Source
    if settings.prometheus_url:
        metrics = Prometheus(settings.prometheus_url)
    else:
        metrics = GatewayScrapes(api.kube, pod_url_template=settings.pod_metrics_url_template)
    return Console(
        kube=api.kube,
        callers=api.callers,
        metrics=metrics,
        invocations=Invocations(settings.api.gateway_url_template),
        served=settings.api.workspaces,
        oidc_issuer=settings.api.oidc.issuer if settings.api.oidc else None,
    )


def main(args: argparse.Namespace) -> int:
    """``modelport console``: serve until stopped."""
    try:
        settings = Settings.from_args(args)
        console = build(settings)
    except ValueError as exc:
        print(f"modelport console: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.api.log_level.upper(), format=LOG_FORMAT)
    web.run_app(
        console.application(),
        host=settings.api.host,
        port=settings.api.port,
        print=None,
        access_log_format='%a "%r" %s %b %Tfs',  # paths only: never a header or a cookie
    )
    return 0
