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

    # The operator parses its own flags (`modelport.controller.cli`): importing them
    # would import Kopf and the controller, which the other subcommands never need.
    operator = sub.add_parser(
        "operator",
        help="run the ServingEndpoint operator (flags: modelport operator --help)",
        add_help=False,
    )
    operator.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    operator.set_defaults(run=_operator)

    from modelport.restapi import command as restapi_command  # argparse only

    restapi_command.add_parsers(sub)

    from modelport.console import command as console_command  # argparse only

    console_command.add_parser(sub)
    return parser


def _operator(args: argparse.Namespace) -> int:
    from modelport.controller import cli as operator_cli

    return operator_cli.main(args.args)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run the chosen subcommand; return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["operator"]:
        return _operator(argparse.Namespace(args=argv[1:]))  # every flag is the operator's
    args = build_parser().parse_args(argv)
    run: Command = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
