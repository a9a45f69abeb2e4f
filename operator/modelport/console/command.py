"""``modelport console``: argument parsing only, so ``modelport --help`` does not import
the console's dependencies. Every flag has an environment variable
(``MODELPORT_CONSOLE_<FLAG>``), which is how the chart configures it."""

from __future__ import annotations

import argparse
import os
from typing import Any

_FLAGS = (
    ("--host", "address to listen on (default 0.0.0.0)"),
    ("--port", "port to listen on (default 8080)"),
    ("--workspaces", "namespaces shown, comma-separated (default: every namespace)"),
    (
        "--audiences",
        "audiences of the ServiceAccount tokens accepted at sign-in, comma-separated "
        "(default: modelport, the gateways' default)",
    ),
    ("--oidc", "an OIDC issuer whose tokens are accepted, as JSON: {issuer, audiences, ...}"),
    ("--oidc-username-prefix", "prefix of OIDC user names, as the apiserver's (default none)"),
    ("--oidc-groups-prefix", "prefix of OIDC group names, as the apiserver's (default none)"),
    ("--api-server", "the Kubernetes API server's URL (default: the pod's in-cluster one)"),
    ("--token-file", "the console's ServiceAccount token (default: the pod's)"),
    ("--ca-file", "the apiserver's CA certificate (default: the pod's)"),
    (
        "--gateway-url-template",
        "base URL of an endpoint's gateway, with {service}, {namespace} and {endpoint} "
        "(default http://{service}.{namespace}.svc.cluster.local)",
    ),
    ("--prometheus-url", "Prometheus for the charts (default: scrape the gateway pods)"),
    (
        "--pod-metrics-url-template",
        "a gateway pod's metrics URL, with {ip} (default http://{ip}:8080/metrics)",
    ),
    ("--log-level", "debug, info (default), warning or error"),
)


def env_name(flag: str) -> str:
    """The environment variable of a ``console`` flag."""
    return "MODELPORT_CONSOLE_" + flag.removeprefix("--").replace("-", "_").upper()


def add_parser(sub: Any) -> None:
    """Register ``console`` on the CLI's subparsers."""
    cmd = sub.add_parser(
        "console",
        help="serve the web console: endpoints, their state and metrics, and a playground",
        description="Serve the web console. People sign in with a ServiceAccount or OIDC "
        "token; Kubernetes RBAC decides which namespaces' endpoints they see and which they "
        "may call from the playground (as themselves).",
    )
    for flag, text in _FLAGS:
        cmd.add_argument(
            flag, default=os.environ.get(env_name(flag)), help=f"{text} ({env_name(flag)})"
        )
    cmd.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from modelport.console import server

    return server.main(args)
