"""The tables' definitions, their migrations and the SQL that writes and trims them. Pure.

The gateway owns its tables: it creates and migrates them on connecting (the operator
never reads the database's credentials). Each table kind has an ordered list of
migrations; ``modelport_schema_migrations`` records which ones a table has had, and a
transaction-scoped advisory lock per table makes concurrent replicas apply each one
once. Every statement is idempotent (``IF NOT EXISTS``), so a gateway of an older
version that meets a newer table leaves it alone.

Indexes follow the obvious queries, so they stay fast at millions of rows:

- usage by principal over a period (chargeback): ``(requester, request_time)``;
- usage of an endpoint over a period (top endpoints, error rates):
  ``(endpoint_namespace, endpoint_name, request_time)``;
- anything over a period, and the retention delete: ``(request_time)``;
- one request by id (support): the primary key.

Identifiers that come from configuration (an inference table's schema and name) are
checked against ``[a-z_][a-z0-9_]{0,62}`` when the config is loaded and quoted here.
"""

# ruff: noqa: S608 - SQL is built from constants and checked, quoted identifiers; values
# always travel as parameters.

from __future__ import annotations

from dataclasses import dataclass

USAGE_TABLE = "modelport_usage"
MIGRATIONS_TABLE = "modelport_schema_migrations"

RETENTION_BATCH = 5000
"""Rows deleted per statement by the retention pass: short transactions, no long locks."""


@dataclass(frozen=True)
class Column:
    """One column: its name, its SQL type and the array type rows arrive in."""

    name: str
    sql_type: str
    array_type: str
    expression: str = ""
    """How the inserted value is made from the array element ``u.<name>`` (default: as
    it is)."""

    @property
    def select(self) -> str:
        """The column's expression in ``INSERT … SELECT``."""
        return self.expression or f"u.{self.name}"


def _c(name: str, sql_type: str, array_type: str | None = None, expression: str = "") -> Column:
    return Column(name, sql_type, array_type or sql_type.split()[0] + "[]", expression)


# Timestamps travel as epoch seconds (float8) and become timestamptz in the database: no
# datetime object per row in Python.
_TIME = "to_timestamp(u.{0})"

COMMON_COLUMNS: tuple[Column, ...] = (
    _c("request_id", "text PRIMARY KEY", "text[]"),
    _c("client_request_id", "text"),
    _c("request_time", "timestamptz NOT NULL", "float8[]", _TIME.format("request_time")),
    _c("endpoint_namespace", "text NOT NULL", "text[]"),
    _c("endpoint_name", "text NOT NULL", "text[]"),
    _c("served_entity", "text"),
    _c("requester", "text"),
    _c("requester_type", "text"),
    _c("status_code", "integer NOT NULL", "int4[]"),
    _c("error_code", "text"),
)
"""The columns both tables start with: which request, when, of which endpoint, answered
by which entity, for whom, and how it ended."""

USAGE_COLUMNS: tuple[Column, ...] = (
    *COMMON_COLUMNS,
    _c("task", "text"),
    _c("input_token_count", "integer NOT NULL", "int4[]"),
    _c("output_token_count", "integer NOT NULL", "int4[]"),
    _c("token_counts_estimated", "boolean NOT NULL", "bool[]"),
    _c("input_character_count", "integer NOT NULL", "int4[]"),
    _c("output_character_count", "integer NOT NULL", "int4[]"),
    _c("request_streaming", "boolean NOT NULL", "bool[]"),
    _c("usage_context", "jsonb", "text[]", "u.usage_context::jsonb"),
    _c("time_to_first_token_ms", "double precision", "float8[]"),
    _c("duration_ms", "double precision NOT NULL", "float8[]"),
    _c("fallback_attempts", "integer NOT NULL", "int4[]"),
    _c("trace_id", "text"),
)
"""The reference service's usage table (``system.serving.endpoint_usage``: request ids,
requester, status, tokens, characters, streaming, usage context) plus our extensions:
the requester's kind, the endpoint's namespace, the task and error code, whether token
counts are estimated, time to first token, duration, fallback attempts (attempts after
the first) and the request's trace id (NULL when tracing is off)."""

INFERENCE_COLUMNS: tuple[Column, ...] = (
    *COMMON_COLUMNS,
    _c("request", "text"),
    _c("response", "text"),
    _c("request_bytes", "integer NOT NULL", "int4[]"),
    _c("response_bytes", "integer NOT NULL", "int4[]"),
    _c("logging_error_codes", "text[]", "text[]", "string_to_array(u.logging_error_codes, ',')"),
    _c("sampling_fraction", "double precision NOT NULL", "float8[]"),
    _c("request_streaming", "boolean NOT NULL", "bool[]"),
    _c("usage_context", "jsonb", "text[]", "u.usage_context::jsonb"),
    _c("input_token_count", "integer NOT NULL", "int4[]"),
    _c("output_token_count", "integer NOT NULL", "int4[]"),
    _c("token_counts_estimated", "boolean NOT NULL", "bool[]"),
    _c("time_to_first_token_ms", "double precision", "float8[]"),
    _c("execution_duration_ms", "double precision NOT NULL", "float8[]"),
    _c("trace_id", "text"),
)
"""The reference service's AI-gateway inference table (request ids, time, status,
sampling fraction, execution duration, request and response JSON, served entity,
logging error codes, requester), plus the namespace, error code, token counts, time
to first token and trace id. ``request`` and ``response`` are JSON text (``::jsonb`` to query into
them); NULL with ``MAX_REQUEST_SIZE_EXCEEDED`` / ``MAX_RESPONSE_SIZE_EXCEEDED`` in
``logging_error_codes`` when over the payload limit."""


@dataclass(frozen=True)
class Table:
    """A table the gateway writes: where it is and what it holds."""

    kind: str
    """``usage`` or ``inference``: which columns and migrations."""
    name: str
    schema: str | None = None

    @property
    def qualified(self) -> str:
        """The quoted, schema-qualified name for SQL."""
        return f"{quote(self.schema)}.{quote(self.name)}" if self.schema else quote(self.name)

    @property
    def label(self) -> str:
        """The unquoted name, for logs, metrics and the migrations table."""
        return f"{self.schema}.{self.name}" if self.schema else self.name

    @property
    def columns(self) -> tuple[Column, ...]:
        """The columns of this kind of table."""
        return USAGE_COLUMNS if self.kind == "usage" else INFERENCE_COLUMNS


def usage_table() -> Table:
    """The cluster's usage table (one for every endpoint)."""
    return Table("usage", USAGE_TABLE)


def quote(identifier: str) -> str:
    """A quoted PostgreSQL identifier."""
    return '"' + identifier.replace('"', '""') + '"'


def insert_sql(table: Table) -> str:
    """One statement that inserts a whole batch: each column arrives as one array
    parameter, ``unnest`` turns the arrays back into rows. A request id already present
    (a batch retried after a lost acknowledgement) is skipped, so retries never
    duplicate a row."""
    columns = table.columns
    names = ", ".join(quote(c.name) for c in columns)
    arrays = ", ".join(f"${i}::{c.array_type}" for i, c in enumerate(columns, 1))
    aliases = ", ".join(c.name for c in columns)
    select = ", ".join(c.select for c in columns)
    return (
        f"INSERT INTO {table.qualified} ({names}) SELECT {select} "
        f"FROM unnest({arrays}) AS u({aliases}) ON CONFLICT (request_id) DO NOTHING"
    )


def migrations(table: Table) -> list[str]:
    """The migrations of ``table``, in order; index *i* is version *i + 1*."""
    q = table.qualified
    prefix = table.name[:40]  # index names stay within 63 bytes
    columns = ",\n  ".join(f"{quote(c.name)} {c.sql_type}" for c in table.columns)
    create = [f"CREATE TABLE IF NOT EXISTS {q} (\n  {columns}\n)"]
    if table.schema:
        create.insert(0, f"CREATE SCHEMA IF NOT EXISTS {quote(table.schema)}")
    indexes = [
        f"CREATE INDEX IF NOT EXISTS {quote(prefix + '_time')} ON {q} (request_time)",
        f"CREATE INDEX IF NOT EXISTS {quote(prefix + '_endpoint_time')} "
        f"ON {q} (endpoint_namespace, endpoint_name, request_time)",
    ]
    if table.kind == "usage":
        indexes.append(
            f"CREATE INDEX IF NOT EXISTS {quote(prefix + '_requester_time')} "
            f"ON {q} (requester, request_time)"
        )
    # Version 2: the trace id (a table made at version 1 lacks it; a new one has it).
    trace_id = f"ALTER TABLE {q} ADD COLUMN IF NOT EXISTS trace_id text"
    return ["; ".join(create + indexes), trace_id]


MIGRATIONS_DDL = (
    f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
    "table_name text NOT NULL, version integer NOT NULL, "
    "applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (table_name, version))"
)
APPLIED_SQL = f"SELECT coalesce(max(version), 0) FROM {MIGRATIONS_TABLE} WHERE table_name = $1"
RECORD_SQL = f"INSERT INTO {MIGRATIONS_TABLE} (table_name, version) VALUES ($1, $2)"
MIGRATIONS_LOCK = "modelport:migrations"
LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext($1))"
TRY_LOCK_SQL = "SELECT pg_try_advisory_lock(hashtext($1))"
UNLOCK_SQL = "SELECT pg_advisory_unlock(hashtext($1))"


def retention_sql(table: Table) -> str:
    """Delete up to :data:`RETENTION_BATCH` rows older than ``$1`` (a timestamptz)."""
    q = table.qualified
    return (
        f"DELETE FROM {q} WHERE ctid IN (SELECT ctid FROM {q} WHERE request_time < $1 "
        f"LIMIT {RETENTION_BATCH})"
    )


def lock_key(table: Table) -> str:
    """The advisory lock's key for migrating or trimming ``table``."""
    return f"modelport:{table.label}"
