"""``modelport usage``'s pure parts: the period, the connection string's sources and the
three output formats."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from modelport import cli
from modelport.gateway.tables.report import (
    PrincipalUsage,
    UsageError,
    connection_string,
    period,
    render,
)

NOW = dt.datetime(2026, 12, 2, 15, 30, tzinfo=dt.UTC)
LINES = [
    PrincipalUsage("alice@example.com", "user", 1200, 3, 1_500_000, 250_000, 0, 310.4),
    PrincipalUsage("(anonymous)", "", 2, 2, 0, 0, 0, None),
]


def test_the_period_defaults_to_the_last_day_and_reads_dates_as_utc() -> None:
    assert period(None, None, 1, NOW) == (NOW - dt.timedelta(days=1), NOW)
    assert period("2026-12-01", "2026-12-02", 1, NOW) == (
        dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
        dt.datetime(2026, 12, 2, tzinfo=dt.UTC),
    )
    start, _ = period("2026-12-01T08:00+01:00", None, 1, NOW)
    assert start == dt.datetime(2026, 12, 1, 7, tzinfo=dt.UTC)
    with pytest.raises(UsageError, match="must be before"):
        period("2026-12-03", None, 1, NOW)
    with pytest.raises(UsageError, match="--until 'monday' is not a date"):
        period(None, "monday", 1, NOW)


def test_the_connection_string_never_comes_from_the_command_line(tmp_path: Path) -> None:
    file = tmp_path / "dsn"
    file.write_text("postgresql://u:p@h/db\n")
    assert connection_string(str(file), {}) == "postgresql://u:p@h/db"
    assert connection_string(None, {"MODELPORT_USAGE_DSN": "postgresql://e"}) == "postgresql://e"
    assert connection_string(None, {}) is None  # libpq's PG* variables, through asyncpg
    file.write_text("")
    with pytest.raises(UsageError, match="is empty"):
        connection_string(str(file), {})
    parser = cli.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["usage", "chat", "--dsn", "postgresql://u:p@h/db"])


def test_the_table_has_totals_and_aligned_columns() -> None:
    text = render(LINES, "table", "team-a/chat", NOW - dt.timedelta(days=1), NOW)
    lines = text.splitlines()
    assert lines[0] == "Usage of team-a/chat from 2026-12-01 15:30 to 2026-12-02 15:30 UTC"
    assert lines[1].split()[:2] == ["PRINCIPAL", "KIND"]
    assert lines[2].split() == [
        "alice@example.com", "user", "1,200", "3", "1,500,000", "250,000", "0", "310", "ms"
    ]  # fmt: skip
    assert lines[3].split()[-1] == "-"
    assert lines[4].split() == ["TOTAL", "1,202", "5", "1,500,000", "250,000", "0"]
    assert len({len(line) for line in lines[1:3]}) == 1  # right-aligned numbers
    assert "No requests" in render([], "table", "team-a/chat", NOW, NOW)


def test_json_and_csv_are_for_programs() -> None:
    data = json.loads(render(LINES, "json", "x", NOW, NOW))
    assert data[0]["input_tokens"] == 1_500_000 and data[1]["mean_ttft_ms"] is None
    rows = render(LINES, "csv", "x", NOW, NOW).splitlines()
    assert rows[0].startswith("principal,kind,requests,errors,input_tokens")
    assert rows[1] == "alice@example.com,user,1200,3,1500000,250000,0,310.4"
