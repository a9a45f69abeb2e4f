"""`modelport operator`: its flags, and running the controller with them.

Each flag overrides the MODELPORT_* variable of the same name (`modelport.settings`
reads them): the settings are built once, from the environment with the flags laid
over it, and handed to Kopf in its memo, where the handlers find them. Nothing is
written back to the environment, and `kopf run -m modelport.controller` behaves the
same given the same variables.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

import kopf

from modelport.controller import handlers
from modelport.settings import DEFAULT_LIVENESS, ENV_PREFIX, Settings, SettingsError, from_env

OPERATOR_FLAGS: list[tuple[str, str, str]] = [
    ("--gateway-image", "GATEWAY_IMAGE", "image of the gateway pods"),
    ("--vllm-image", "VLLM_IMAGE", "default image of vLLM inference pods"),
    ("--sglang-image", "SGLANG_IMAGE", "default image of SGLang inference pods"),
    ("--llamacpp-image", "LLAMACPP_IMAGE", "default image of llama.cpp inference pods"),
    ("--mlflow-image", "MLFLOW_IMAGE", "default image of custom (MLflow) model pods"),
    ("--mlflow-tracking-uri", "MLFLOW_TRACKING_URI", "MLflow tracking server of custom models"),
    ("--catalog", "CATALOG", "model catalog additions: YAML/JSON, or @file"),
    ("--startup-seconds", "STARTUP_SECONDS", "time an inference pod may take to load weights"),
    ("--gpu-profiles", "GPU_PROFILES", "GPU profiles: JSON, or @file holding JSON"),
    ("--default-workload-type", "DEFAULT_WORKLOAD_TYPE", "profile when workloadType is unset"),
    ("--gateway-min-replicas", "GATEWAY_MIN_REPLICAS", "fewest gateway replicas"),
    ("--gateway-max-replicas", "GATEWAY_MAX_REPLICAS", "most gateway replicas"),
    ("--gateway-node-selector", "GATEWAY_NODE_SELECTOR", "gateway pods' nodeSelector (JSON)"),
    (
        "--gateway-service-account-annotations",
        "GATEWAY_SERVICE_ACCOUNT_ANNOTATIONS",
        "annotations of every gateway ServiceAccount (JSON)",
    ),
    ("--gateway-tolerations", "GATEWAY_TOLERATIONS", "gateway pods' tolerations (JSON list)"),
    (
        "--gateway-resources",
        "GATEWAY_RESOURCES",
        "gateway container's resources (JSON requests/limits)",
    ),
    ("--gateway-auth", "GATEWAY_AUTH", "cluster defaults of spec.aiGateway.auth (JSON)"),
    (
        "--gateway-tokenreview-binding",
        "GATEWAY_TOKENREVIEW_BINDING",
        "ClusterRoleBinding that lets gateways create TokenReviews",
    ),
    (
        "--gateway-readiness-role",
        "GATEWAY_READINESS_ROLE",
        "ClusterRole that lets gateways watch EndpointSlices (bound per namespace)",
    ),
    ("--guard-model", "GUARD_MODEL", "the guard model of guardrails' safety check (JSON)"),
    ("--rate-limiting", "RATE_LIMITING", "rate limits' shared store and behaviour (JSON)"),
    (
        "--usage-database",
        "USAGE_DATABASE",
        "the cluster's usage database: its DSN Secret and retention (JSON)",
    ),
    ("--autoscaling", "AUTOSCALING", "the autoscaler of gateways and entities (JSON)"),
    ("--progress-deadline-seconds", "PROGRESS_DEADLINE_SECONDS", "Deployment progress deadline"),
    ("--resync-seconds", "RESYNC_SECONDS", "period of the safety-net reconcile (0: off)"),
    ("--log-level", "LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR"),
    ("--log-format", "LOG_FORMAT", "json (default) or plain"),
    ("--liveness", "LIVENESS", f"liveness endpoint URL, or 'off' (default {DEFAULT_LIVENESS})"),
    ("--reconcile-workers", "RECONCILE_WORKERS", "endpoints reconciled at once"),
    ("--tracing", "TRACING", "the OTLP collector gateways send their spans to (JSON)"),
    ("--gateway-access-log", "GATEWAY_ACCESS_LOG", "gateways log one line per request"),
    ("--metrics-port", "METRICS_PORT", "port of the Prometheus metrics (default 0: off)"),
]


def build_parser() -> argparse.ArgumentParser:
    """The parser of `modelport operator`'s flags."""
    parser = argparse.ArgumentParser(
        prog="modelport operator",
        description="Run the ServingEndpoint operator until it is stopped. Every flag "
        "overrides the MODELPORT_* variable named in its help.",
    )
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch this namespace (repeatable); default: all namespaces (MODELPORT_NAMESPACES)",
    )
    for flag, env, text in OPERATOR_FLAGS:
        parser.add_argument(
            flag, dest=env.lower(), default=None, help=f"{text} ({ENV_PREFIX}{env})"
        )
    return parser


def settings_from(args: argparse.Namespace, environ: dict[str, str]) -> Settings:
    """The settings: `environ`'s MODELPORT_* variables, with the flags given laid over."""
    env = dict(environ)
    if args.namespace:
        env[ENV_PREFIX + "NAMESPACES"] = ",".join(args.namespace)
    for _, name, _text in OPERATOR_FLAGS:
        value = getattr(args, name.lower())
        if value is not None:
            env[ENV_PREFIX + name] = str(value)
    return from_env(env)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags, build the settings, run Kopf with the handlers until stopped."""
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args, dict(os.environ))
    except SettingsError as exc:
        print(f"modelport operator: {exc}")
        return 2
    log_format = kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(
        debug=settings.log_level == "DEBUG",
        verbose=settings.log_level in ("DEBUG", "INFO"),
        log_format=log_format,
    )
    logging.getLogger().setLevel(settings.log_level)
    liveness = None if settings.liveness.lower() == "off" else settings.liveness
    kopf.run(
        registry=handlers.registry,
        standalone=True,
        clusterwide=settings.clusterwide,
        namespaces=list(settings.namespaces),
        liveness_endpoint=liveness,
        memo=kopf.Memo(settings=settings),
    )
    return 0
