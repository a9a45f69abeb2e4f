"""The ``modelport usage`` subcommand: argument parsing only (asyncpg is imported when it
runs), so ``modelport --help`` stays light."""

from __future__ import annotations

import argparse
from typing import Any

from modelport.gateway.tables.queries import DSN_ENV


def add_parser(sub: Any) -> None:
    """Register ``usage`` on the CLI's subparsers."""
    cmd = sub.add_parser(
        "usage",
        # No abbreviations: `--dsn postgresql://…` must be refused, not taken for --dsn-file.
        allow_abbrev=False,
        help="print an endpoint's usage per caller for a period (from the usage database)",
        description="Print one endpoint's usage per principal (requests, errors, tokens, "
        "mean time to first token) over a period, from the table modelport_usage that the "
        "gateways write. The connection string comes from --dsn-file, else the "
        f"{DSN_ENV} variable, else libpq's PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE; "
        "never from the command line, where other users and the shell history see it.",
    )
    cmd.add_argument("endpoint", help="the ServingEndpoint's name")
    cmd.add_argument(
        "-n", "--namespace", default="default", help="the endpoint's namespace (default: default)"
    )
    cmd.add_argument(
        "--since",
        help="start of the period: a date (2026-12-01, midnight UTC) or an ISO time with a "
        "zone (default: --days before --until)",
    )
    cmd.add_argument("--until", help="end of the period, excluded (default: now)")
    cmd.add_argument(
        "--days", type=float, default=1.0, help="length of the period without --since (default 1)"
    )
    cmd.add_argument("--dsn-file", help="a file holding the PostgreSQL connection string")
    cmd.add_argument(
        "--output", "-o", choices=["table", "json", "csv"], default="table", help="format"
    )
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Query and print."""
    from modelport.gateway.tables import report

    return report.main(args)
