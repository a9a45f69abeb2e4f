"""Running the gateway under uvicorn (uvloop and httptools when installed).

Worker processes build their app from environment variables set by :func:`serve`, which
is how uvicorn's multi-process mode hands arguments to an app factory. With more than one
worker, :func:`serve` also exports a private directory for the workers' metric files
(see :mod:`modelport.gateway.metrics`), so that a scrape answered by any worker reports
the whole pod.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

import uvicorn

from modelport import gatewayconfig
from modelport.gateway import metrics
from modelport.gateway.app import GatewayApp, check_providers

CONFIG_ENV = "MODELPORT_GATEWAY_CONFIG_DIR"
SECRETS_ENV = "MODELPORT_GATEWAY_SECRETS_DIR"
LOG_LEVEL_ENV = "MODELPORT_GATEWAY_LOG_LEVEL"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def build_app(config_dir: Path, secrets_dir: Path) -> GatewayApp:
    """Load the config and build the app (raises ConfigError with a fixable message)."""
    config = gatewayconfig.load(config_dir)
    check_providers(config)
    return GatewayApp(config, secrets_dir)


def app_from_env() -> GatewayApp:
    """The uvicorn factory: an app built from the directories :func:`serve` exported."""
    # Worker processes start fresh: they need their own logging set-up.
    logging.basicConfig(level=os.environ.get(LOG_LEVEL_ENV, "INFO").upper(), format=LOG_FORMAT)
    return build_app(Path(os.environ[CONFIG_ENV]), Path(os.environ[SECRETS_ENV]))


def serve(
    *, config_dir: str, secrets_dir: str, host: str, port: int, workers: int, log_level: str
) -> int:
    """Serve until stopped; a bad config exits 2 before anything listens."""
    logging.basicConfig(level=log_level.upper(), format=LOG_FORMAT)
    try:
        build_app(Path(config_dir), Path(secrets_dir))
    except gatewayconfig.ConfigError as exc:
        print(f"modelport gateway: {exc}", file=sys.stderr)
        return 2
    os.environ[CONFIG_ENV] = str(Path(config_dir).resolve())
    os.environ[SECRETS_ENV] = str(Path(secrets_dir).resolve())
    os.environ[LOG_LEVEL_ENV] = log_level
    # Spawned workers inherit the variable and import prometheus_client with it set, as
    # its multiprocess mode requires; one worker keeps the cheaper in-memory registry.
    metrics_dir = metrics.multiprocess_directory() if workers > 1 else contextlib.nullcontext()
    with metrics_dir:
        uvicorn.run(
            "modelport.gateway.server:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            # Access logs carry paths only (never headers), so they cannot leak a key.
            access_log=log_level == "debug",
            timeout_keep_alive=75,  # outlive typical load-balancer idle timeouts (60 s)
            lifespan="on",
        )
    return 0
