"""``modelport api``, ``modelport import`` and ``modelport export``: argument parsing only,
so that ``modelport --help`` does not import the server's dependencies.

Every flag of ``api`` has an environment variable (``MODELPORT_API_<FLAG>``), which is
how the chart configures the server.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from typing import Any

# flag, help; the variable is MODELPORT_API_<FLAG in upper case with _>. The console
# (modelport.console.command) takes those it shares under its own prefix.
API_FLAGS = (
    ("--host", "address to listen on (default 0.0.0.0)"),
    ("--port", "port to listen on (default 8080)"),
    (
        "--workspaces",
        "namespaces served as workspaces, comma-separated (default: every namespace; the "
        "chart passes the operator's watchNamespaces)",
    ),
    ("--default-workspace", "namespace of requests that name no workspace (default: none)"),
    (
        "--audiences",
        "audiences of the ServiceAccount tokens accepted, comma-separated (default: "
        "modelport, the gateways' default; empty: no ServiceAccount tokens)",
    ),
    ("--oidc", "an OIDC issuer whose tokens are accepted, as JSON: {issuer, audiences, ...}"),
    ("--oidc-username-prefix", "prefix of OIDC user names, as the apiserver's (default none)"),
    ("--oidc-groups-prefix", "prefix of OIDC group names, as the apiserver's (default none)"),
    ("--api-server", "the Kubernetes API server's URL (default: the pod's in-cluster one)"),
    ("--token-file", "the server's ServiceAccount token (default: the pod's)"),
    ("--ca-file", "the apiserver's CA certificate (default: the pod's)"),
    (
        "--gateway-url-template",
        "base URL of an endpoint's gateway, with {service}, {namespace} and {endpoint} "
        "(default http://{service}.{namespace}.svc.cluster.local)",
    ),
    ("--log-level", "debug, info (default), warning or error"),
)


def env_name(flag: str, prefix: str = "MODELPORT_API_") -> str:
    """The environment variable of a flag: ``prefix`` + the flag in upper case with _."""
    return prefix + flag.removeprefix("--").replace("-", "_").upper()


def add_env_flags(parser: Any, flags: Iterable[tuple[str, str]], prefix: str) -> None:
    """Each ``(flag, help)`` of ``flags``, defaulting to its environment variable."""
    for flag, text in flags:
        name = env_name(flag, prefix)
        parser.add_argument(flag, default=os.environ.get(name), help=f"{text} ({name})")


def add_parsers(sub: Any) -> None:
    """Register ``api``, ``import`` and ``export`` on the CLI's subparsers."""
    api = sub.add_parser(
        "api",
        help="serve the reference service's serving-endpoints REST API over Kubernetes",
        description="Serve /api/2.0/serving-endpoints and /serving-endpoints/<name>/invocations "
        "for the databricks-sdk, MLflow and Terraform; endpoints are ServingEndpoints, one "
        "namespace per workspace, callers are checked with Kubernetes RBAC.",
    )
    add_env_flags(api, API_FLAGS, "MODELPORT_API_")
    api.set_defaults(run=_run_api)

    imp = sub.add_parser(
        "import",
        help="turn exported endpoint JSONs of the reference service into ServingEndpoint YAML",
        description="Read endpoint JSONs (a GET answer, a create request, a list of them or a "
        "list answer) and print ServingEndpoint YAML for kubectl apply; notes go to stderr.",
    )
    imp.add_argument("files", nargs="+", help="JSON files ('-': standard input)")
    imp.add_argument("--namespace", "-n", help="set metadata.namespace of every endpoint")
    imp.set_defaults(run=_run_import)

    exp = sub.add_parser(
        "export",
        help="turn ServingEndpoint YAML into the reference service's endpoint JSON",
        description="Read ServingEndpoint YAML (files, or kubectl get -o yaml on stdin) and "
        "print the reference service's create request: one JSON object, or a list of them.",
    )
    exp.add_argument("files", nargs="+", help="YAML files ('-': standard input)")
    exp.set_defaults(run=_run_export)


def _run_api(args: argparse.Namespace) -> int:
    from modelport.restapi import server

    return server.main(args)


def _run_import(args: argparse.Namespace) -> int:
    from modelport.restapi import portable

    return portable.import_main(args.files, args.namespace)


def _run_export(args: argparse.Namespace) -> int:
    from modelport.restapi import portable

    return portable.export_main(args.files)
