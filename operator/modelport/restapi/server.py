"""Running ``modelport api``: settings from flags (or ``MODELPORT_API_*``), the parts of
:class:`~modelport.restapi.app.RestApi`, and aiohttp's server.

A bad setting exits 2 with a message naming the flag, before anything listens.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass

import orjson
from aiohttp import web
from pydantic import ValidationError

from modelport import gatewayconfig as gc
from modelport.gateway.auth.base import Fingerprinter
from modelport.gateway.auth.oidc import OidcVerifier
from modelport.gateway.auth.tokenreview import TokenReviewVerifier
from modelport.restapi.app import RestApi
from modelport.restapi.auth import Callers
from modelport.restapi.invocations import DEFAULT_URL_TEMPLATE, Invocations
from modelport.restapi.kube import Connection, Kube

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DEFAULT_AUDIENCES = ("modelport",)


@dataclass(frozen=True)
class Settings:
    """The server's settings (see ``modelport api --help``)."""

    host: str = "0.0.0.0"  # noqa: S104 (a server in a pod listens on all its addresses)
    port: int = 8080
    workspaces: frozenset[str] = frozenset()
    default_workspace: str | None = None
    audiences: tuple[str, ...] = DEFAULT_AUDIENCES
    oidc: gc.Oidc | None = None
    oidc_username_prefix: str = ""
    oidc_groups_prefix: str = ""
    api_server: str | None = None
    token_file: str | None = None
    ca_file: str | None = None
    gateway_url_template: str = DEFAULT_URL_TEMPLATE
    log_level: str = "info"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        """Settings from parsed flags; ValueError names the flag and the fix."""

        def words(value: str | None) -> tuple[str, ...]:
            return tuple(w.strip() for w in (value or "").split(",") if w.strip())

        try:
            port = int(args.port or 8080)
        except ValueError:
            raise ValueError(f"--port {args.port!r}: not a port number") from None
        oidc = None
        if args.oidc and args.oidc.strip() not in ("", "null"):
            try:
                oidc = gc.Oidc.model_validate(orjson.loads(args.oidc))
            except (orjson.JSONDecodeError, ValidationError) as exc:
                raise ValueError(
                    f"--oidc: not a valid issuer ({exc.__class__.__name__}); give JSON such as "
                    '{"issuer": "https://login.example.com", "audiences": ["modelport"]}'
                ) from None
        level = (args.log_level or "info").lower()
        if level not in ("debug", "info", "warning", "error"):
            raise ValueError(f"--log-level {level!r}: use debug, info, warning or error")
        template = args.gateway_url_template or DEFAULT_URL_TEMPLATE
        try:
            template.format(service="s", namespace="n", endpoint="e")
        except (KeyError, IndexError, ValueError):
            raise ValueError(
                f"--gateway-url-template {template!r}: only {{service}}, {{namespace}} and "
                "{endpoint} may appear in braces"
            ) from None
        return cls(
            host=args.host or "0.0.0.0",  # noqa: S104
            port=port,
            workspaces=frozenset(words(args.workspaces)),
            default_workspace=args.default_workspace or None,
            audiences=DEFAULT_AUDIENCES if args.audiences is None else words(args.audiences),
            oidc=oidc,
            oidc_username_prefix=args.oidc_username_prefix or "",
            oidc_groups_prefix=args.oidc_groups_prefix or "",
            api_server=args.api_server or None,
            token_file=args.token_file or None,
            ca_file=args.ca_file or None,
            gateway_url_template=template,
            log_level=level,
        )


def build(settings: Settings) -> RestApi:
    """The server's parts from ``settings`` (ValueError when the apiserver is unknown)."""
    connection = Connection.from_settings(
        settings.api_server, settings.token_file, settings.ca_file
    )
    kube = Kube(connection)
    fingerprint = Fingerprinter()
    service_accounts = None
    if settings.audiences:
        service_accounts = TokenReviewVerifier(
            gc.ServiceAccountTokens.model_validate(
                {
                    "audiences": list(settings.audiences),
                    "apiServer": connection.api_server,
                    "tokenFile": str(connection.token_file),
                    "caFile": connection.ca_file,
                }
            ),
            fingerprint=fingerprint,
        )
    oidc = OidcVerifier(settings.oidc, fingerprint=fingerprint) if settings.oidc else None
    callers = Callers(
        kube,
        service_accounts=service_accounts,
        audiences=settings.audiences,
        oidc=oidc,
        oidc_issuer=settings.oidc.issuer if settings.oidc else None,
        username_prefix=settings.oidc_username_prefix,
        groups_prefix=settings.oidc_groups_prefix,
        fingerprint=fingerprint,
    )
    return RestApi(
        kube=kube,
        callers=callers,
        invocations=Invocations(settings.gateway_url_template),
        served=settings.workspaces,
        default_workspace=settings.default_workspace,
    )


def main(args: argparse.Namespace) -> int:
    """``modelport api``: serve until stopped."""
    try:
        settings = Settings.from_args(args)
        api = build(settings)
    except ValueError as exc:
        print(f"modelport api: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    if not settings.audiences and settings.oidc is None:
        logging.getLogger("modelport.restapi").warning(
            "no ServiceAccount audiences and no OIDC issuer: every request will be refused"
        )
    web.run_app(
        api.application(),
        host=settings.host,
        port=settings.port,
        print=None,
        access_log_format='%a "%r" %s %b %Tfs',  # paths only: never a header
    )
    return 0
