"""Inference-table rows as JSON lines on stdout (``inferenceTableConfig.sink.type: log``).

For clusters without a database: the container runtime keeps the lines with the pod's
log, and a log pipeline (Fluent Bit, Vector, …) can ship them to any store. One object
per line, keyed by the columns of :data:`~.schema.INFERENCE_COLUMNS`; the payloads are
JSON text in a string, as in the PostgreSQL table.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Sequence
from typing import IO, Any

import orjson

from modelport.gateway.tables.records import Row
from modelport.gateway.tables.schema import Table


class LogTarget:
    """Writes rows as JSON lines to ``stream`` (default: stdout); keeps nothing."""

    def __init__(self, table: Table, stream: IO[bytes] | None = None) -> None:
        self.name = f"log:{table.label}"
        self._names = [c.name for c in table.columns]
        self._stream = stream

    async def prepare(self) -> None:
        """Nothing to prepare."""

    async def write(self, rows: Sequence[Row]) -> int:
        """One line per row, written at once."""
        out = self._stream or sys.stdout.buffer
        out.write(b"".join(orjson.dumps(self._record(row)) + b"\n" for row in rows))
        out.flush()
        return 0

    async def trim(self, now: dt.datetime) -> int:
        """Lines are the log's to keep: nothing to delete."""
        return 0

    async def close(self) -> None:
        """Nothing to release."""

    def _record(self, row: Row) -> dict[str, Any]:
        record = dict(zip(self._names, row, strict=True))
        record["request_time"] = dt.datetime.fromtimestamp(row[2], dt.UTC).isoformat()
        for key in ("request", "response"):
            value = record.get(key)
            if isinstance(value, bytes):
                record[key] = value.decode("utf-8", "replace")
        codes = record.get("logging_error_codes")
        record["logging_error_codes"] = codes.split(",") if codes else []
        return record
