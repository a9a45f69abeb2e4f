"""Where an endpoint's usage and payload rows go: `spec.aiGateway.usageTrackingConfig` and
`inferenceTableConfig`, with the cluster's usage database (MODELPORT_USAGE_DATABASE, the
Helm value `usageDatabase`), into the `usageTable` and `inferenceTable` sections of
gateway.json.

- Usage rows need the cluster's database; without one, usage tracking only counts
  (Prometheus), and nothing is written.
- Payload rows go to the endpoint's own database (`sink: {type: postgres, postgresDsn}`),
  else to the cluster's database when it has one and the endpoint names no sink, else to
  the gateway's stdout as JSON lines (`type: log`, also the choice of a cluster without
  a database).
- The payload table is `<schemaName>.<tableNamePrefix>_payload`; the prefix defaults to
  the endpoint's name; `-` becomes `_`. `catalogName` has no meaning here (the database
  is the connection string's) and is ignored.

Connection strings are Secret keys, mounted into the gateway as files like provider keys;
`table_secrets` lists them for the pod spec and for status.
"""

from __future__ import annotations

import re

from modelport import gatewayconfig as gc
from modelport.api import ServingEndpoint
from modelport.api.aigateway import AiGatewayConfig, InferenceTableConfig
from modelport.settings import UsageDatabase

PAYLOAD_SUFFIX = "_payload"
_UNSAFE = re.compile(r"[^a-z0-9_]")
CLUSTER_DATABASE = "the cluster's usage database, Helm value usageDatabase"


def usage_table(endpoint: ServingEndpoint, database: UsageDatabase | None) -> gc.UsageTable | None:
    """The `usageTable` section: set when the endpoint tracks usage and the cluster has a
    database."""
    ai = endpoint.spec.ai_gateway
    if database is None or not _tracks_usage(ai):
        return None
    return gc.UsageTable(
        postgresDsn=gc.secret_file_path(database.secret_name, database.secret_key),
        retentionDays=database.retention_days,
    )


def inference_table(
    endpoint: ServingEndpoint, database: UsageDatabase | None
) -> gc.InferenceTable | None:
    """The `inferenceTable` section: set when the endpoint logs payloads."""
    config = _payloads(endpoint.spec.ai_gateway)
    if config is None:
        return None
    prefix = table_name(config.table_name_prefix or endpoint.metadata.name)
    schema = table_name(config.schema_name) if config.schema_name else None
    sink = config.sink
    dsn: str | None = None
    if sink is not None and sink.type == "postgres" and sink.postgres_dsn is not None:
        ref = sink.postgres_dsn.secret_key_ref
        dsn = gc.secret_file_path(ref.name, ref.key)
    elif sink is None and database is not None:
        dsn = gc.secret_file_path(database.secret_name, database.secret_key)
    return gc.InferenceTable(
        sink="postgres" if dsn else "log",
        schema=schema,
        table=prefix[: 63 - len(PAYLOAD_SUFFIX)] + PAYLOAD_SUFFIX,
        postgresDsn=dsn,
        samplingFraction=1.0 if config.sampling_fraction is None else config.sampling_fraction,
        retentionDays=database.retention_days if database else gc.DEFAULT_RETENTION_DAYS,
    )


def table_secrets(
    endpoint: ServingEndpoint, database: UsageDatabase | None
) -> list[tuple[str, str, str]]:
    """(Secret name, key, the field that needs it) of each connection string the gateway
    mounts; the cluster's database is one entry whichever features use it."""
    ai = endpoint.spec.ai_gateway
    out: list[tuple[str, str, str]] = []
    users = []
    if database is not None and _tracks_usage(ai):
        users.append("spec.aiGateway.usageTrackingConfig")
    payloads = _payloads(ai)
    if payloads is not None:
        sink = payloads.sink
        if sink is not None and sink.type == "postgres" and sink.postgres_dsn is not None:
            ref = sink.postgres_dsn.secret_key_ref
            out.append((ref.name, ref.key, "spec.aiGateway.inferenceTableConfig.sink.postgresDsn"))
        elif sink is None and database is not None:
            users.append("spec.aiGateway.inferenceTableConfig")
    if users and database is not None:
        field = f"{' and '.join(users)} ({CLUSTER_DATABASE})"
        out.append((database.secret_name, database.secret_key, field))
    return out


def table_name(name: str) -> str:
    """A name as a PostgreSQL identifier the gateway accepts: lower-case, `-` (and
    anything else unsafe) as `_`, not starting with a digit."""
    safe = _UNSAFE.sub("_", name.lower())
    return safe if safe[:1].isalpha() or safe[:1] == "_" else "_" + safe


def _tracks_usage(ai: AiGatewayConfig | None) -> bool:
    return bool(ai and ai.usage_tracking_config and ai.usage_tracking_config.enabled)


def _payloads(ai: AiGatewayConfig | None) -> InferenceTableConfig | None:
    config = ai.inference_table_config if ai else None
    return config if config is not None and config.enabled else None
