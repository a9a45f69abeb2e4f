"""The pipeline stages of usage rows and inference tables, from the gateway's config."""

from __future__ import annotations

from pathlib import Path

from modelport.gateway.metrics import Metrics
from modelport.gateway.pipeline import TapFactory
from modelport.gateway.secrets import SecretStore
from modelport.gateway.tables.capture import Recorder
from modelport.gateway.tables.logsink import LogTarget
from modelport.gateway.tables.postgres import PostgresTarget
from modelport.gateway.tables.records import InferenceRows, UsageRows, row_bytes
from modelport.gateway.tables.schema import Table, usage_table
from modelport.gateway.tables.writer import TableWriter, Target
from modelport.gatewayconfig import GatewayConfig


def build(
    config: GatewayConfig, secrets_dir: Path, metrics: Metrics | None = None
) -> tuple[tuple[TapFactory, ...], tuple[TableWriter, ...]]:
    """The recording tap and one writer per table ``config`` asks for (or nothing)."""
    ai = config.ai_gateway
    namespace = config.endpoint_namespace
    secrets = SecretStore(secrets_dir)
    writers: list[TableWriter] = []
    usage = ai.usage_table if ai.usage_tracking_enabled else None
    if usage is not None:
        dsn_file = usage.postgres_dsn
        table = usage_table()
        writers.append(
            TableWriter(
                UsageRows(namespace).row,
                PostgresTarget(
                    table,
                    lambda: secrets.read(dsn_file, "usageTable.postgresDsn"),
                    retention_days=usage.retention_days,
                ),
                counters=metrics.table(table.label) if metrics else None,
            )
        )
    payloads = None
    inference = ai.inference_table
    if inference is not None:
        table = Table("inference", inference.table, inference.schema_name)
        counters = metrics.table(table.label) if metrics else None
        payloads = InferenceRows(inference, namespace, counters=counters)
        target: Target
        if inference.sink == "postgres" and inference.postgres_dsn is not None:
            payload_dsn = inference.postgres_dsn
            target = PostgresTarget(
                table,
                lambda: secrets.read(payload_dsn, "inferenceTable.postgresDsn"),
                retention_days=inference.retention_days,
            )
        else:
            target = LogTarget(table)
        writers.append(TableWriter(payloads.row, target, counters=counters, row_bytes=row_bytes))
    if not writers:
        return (), ()
    recorder = Recorder(characters=usage is not None, payloads=payloads)
    return (recorder,), tuple(writers)
