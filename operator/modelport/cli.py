"""The `modelport` command line: one entry point, one subcommand per job.

Each subcommand lives in the module that owns the job and is registered here by
name, so `modelport --help` lists what the installed version can do.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from modelport import __version__

Command = Callable[[argparse.Namespace], int]


def _version(_: argparse.Namespace) -> int:
    print(f"modelport {__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="modelport",
        description="Model serving endpoints on Kubernetes: the operator, the gateway and tools.",
    )
    parser.add_argument("--version", action="version", version=f"modelport {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    version_cmd = sub.add_parser("version", help="print the version and exit")
    version_cmd.set_defaults(run=_version)

    from modelport.api import crd  # imported here: only `crds` needs the generator

    crd.add_subcommand(sub)

    from modelport.gateway import command as gateway_command  # argparse only: no heavy imports

    gateway_command.add_parser(sub)

    from modelport.gateway.tables import command as usage_command  # asyncpg when it runs

    usage_command.add_parser(sub)

    from modelport import settings  # argparse only: Kopf is imported when `operator` runs

    settings.add_operator_subcommand(sub)

    from modelport.restapi import command as restapi_command  # argparse only

    restapi_command.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run the chosen subcommand; return its exit status."""
    args = build_parser().parse_args(argv)
    run: Command = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
