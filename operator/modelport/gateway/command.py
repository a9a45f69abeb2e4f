"""The ``modelport gateway`` subcommand: argument parsing only, so ``modelport --help``
does not import the gateway's dependencies."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    """Register ``gateway`` on the CLI's subparsers."""
    cmd = sub.add_parser(
        "gateway",
        help="serve one endpoint's OpenAI-compatible gateway",
        description="Serve one endpoint: routes, traffic weights and provider translation "
        "from --config, credentials from files under --secrets.",
    )
    cmd.add_argument(
        "--config", required=True, help="directory holding gateway.json (the ConfigMap)"
    )
    cmd.add_argument(
        "--secrets", required=True, help="directory the credential files are mounted under"
    )
    cmd.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")  # noqa: S104
    cmd.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    cmd.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    cmd.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Validate the config, then serve until stopped."""
    from modelport.gateway import server

    return server.serve(
        config_dir=args.config,
        secrets_dir=args.secrets,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
    )
