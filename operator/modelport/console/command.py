"""``modelport console``: argument parsing only, so ``modelport --help`` does not import
the console's dependencies. Every flag has an environment variable
(``MODELPORT_CONSOLE_<FLAG>``), which is how the chart configures it."""

from __future__ import annotations

import argparse
from typing import Any

from modelport.restapi.command import API_FLAGS, add_env_flags

_SHARED = {
    "--host", "--port", "--audiences", "--oidc", "--oidc-username-prefix",
    "--oidc-groups-prefix", "--api-server", "--token-file", "--ca-file",
    "--gateway-url-template", "--log-level",
}  # fmt: skip
"""The API server's flags that mean the same here (who may sign in, where things are)."""

_FLAGS = (
    *(flag for flag in API_FLAGS if flag[0] in _SHARED),
    ("--workspaces", "namespaces shown, comma-separated (default: every namespace)"),
    ("--prometheus-url", "Prometheus for the charts (default: scrape the gateway pods)"),
    (
        "--pod-metrics-url-template",
        "a gateway pod's metrics URL, with {ip} (default http://{ip}:8080/metrics)",
    ),
)


def add_parser(sub: Any) -> None:
    """Register ``console`` on the CLI's subparsers."""
    cmd = sub.add_parser(
        "console",
        help="serve the web console: endpoints, their state and metrics, and a playground",
        description="Serve the web console. People sign in with a ServiceAccount or OIDC "
        "token; Kubernetes RBAC decides which namespaces' endpoints they see and which they "
        "may call from the playground (as themselves).",
    )
    add_env_flags(cmd, _FLAGS, "MODELPORT_CONSOLE_")
    cmd.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from modelport.console import server

    return server.main(args)
