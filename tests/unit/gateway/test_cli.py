"""`modelport gateway` is registered and parses its flags."""

from __future__ import annotations

import sys

from modelport.cli import build_parser


def test_gateway_subcommand_parses() -> None:
    args = build_parser().parse_args(
        ["gateway", "--config", "/etc/gw", "--secrets", "/var/run/secrets/gw", "--port", "9000"]
    )
    assert (args.config, args.secrets, args.port, args.workers, args.host) == (
        "/etc/gw",
        "/var/run/secrets/gw",
        9000,
        1,
        "0.0.0.0",  # noqa: S104
    )


def test_parsing_does_not_import_the_gateway_server() -> None:
    # `modelport --help` must stay light: the server (uvicorn, botocore) loads only to run.
    sys.modules.pop("modelport.gateway.server", None)
    build_parser()
    assert "modelport.gateway.server" not in sys.modules
