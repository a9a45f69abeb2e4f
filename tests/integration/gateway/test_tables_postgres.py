"""The PostgreSQL side of usage and payload rows, against a real server: migrations under
concurrency, refused rows, retention, the usage queries' plans at a million rows, and
that no error message carries the password."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import subprocess
import sys
import time
from typing import Any

import asyncpg
import pytest

from modelport.gateway.tables import queries, schema
from modelport.gateway.tables.postgres import PostgresTarget, UnavailableError
from modelport.gateway.tables.records import Row
from modelport.gateway.tables.schema import Table, usage_table
from tests.postgres import PostgresServer, fetch, free_port
from tests.support import asynchronous

NOW = time.time()


def usage(request_id: str, *, requester: str = "alice", age_days: float = 0, **over: Any) -> Row:
    """A usage row (columns of schema.USAGE_COLUMNS)."""
    values: dict[str, Any] = {
        "request_id": request_id,
        "client_request_id": None,
        "request_time": NOW - age_days * 86400,
        "endpoint_namespace": "team-a",
        "endpoint_name": "chat",
        "served_entity": "e1",
        "requester": requester,
        "requester_type": "user",
        "task": "llm/v1/chat",
        "status_code": 200,
        "error_code": None,
        "input_token_count": 11,
        "output_token_count": 7,
        "token_counts_estimated": False,
        "input_character_count": 40,
        "output_character_count": 20,
        "request_streaming": False,
        "usage_context": None,
        "time_to_first_token_ms": 12.5,
        "duration_ms": 30.0,
        "fallback_attempts": 0,
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    }
    values.update(over)
    return tuple(values[c.name] for c in schema.USAGE_COLUMNS)


@asynchronous
async def test_replicas_migrate_once_and_write_side_by_side(database: str) -> None:
    targets = [PostgresTarget(usage_table(), lambda: database) for _ in range(4)]
    await asyncio.gather(*(t.prepare() for t in targets))
    await asyncio.gather(*(t.write([usage(f"r{i}")]) for i, t in enumerate(targets)))
    for t in targets:
        await t.close()
    assert await fetch(
        database, "SELECT table_name, version FROM modelport_schema_migrations ORDER BY version"
    ) == [
        {"table_name": "modelport_usage", "version": 1},
        {"table_name": "modelport_usage", "version": 2},
    ]
    assert len(await fetch(database, "SELECT 1 FROM modelport_usage")) == 4


@asynchronous
async def test_a_retried_batch_writes_each_row_once(database: str) -> None:
    target = PostgresTarget(usage_table(), lambda: database)
    batch = [usage("a"), usage("b")]
    assert await target.write(batch) == 0
    assert await target.write([*batch, usage("c")]) == 0  # e.g. after a lost acknowledgement
    await target.close()
    ids = await fetch(database, "SELECT request_id FROM modelport_usage ORDER BY 1")
    assert [r["request_id"] for r in ids] == ["a", "b", "c"]


@asynchronous
async def test_a_refused_row_drops_alone(database: str, caplog: pytest.LogCaptureFixture) -> None:
    target = PostgresTarget(usage_table(), lambda: database)
    bad = usage("bad", usage_context="{not json")
    refused = await target.write([usage("ok1"), bad, usage("ok2")])
    await target.close()
    assert refused == 1
    ids = await fetch(database, "SELECT request_id FROM modelport_usage ORDER BY 1")
    assert [r["request_id"] for r in ids] == ["ok1", "ok2"]
    assert "refused a row (request bad)" in caplog.text


@asynchronous
async def test_a_dropped_table_is_made_again(database: str) -> None:
    target = PostgresTarget(usage_table(), lambda: database)
    await target.write([usage("a")])
    conn = await asyncpg.connect(database)
    await conn.execute("DROP TABLE modelport_usage; DELETE FROM modelport_schema_migrations")
    await conn.close()
    with pytest.raises(UnavailableError):
        await target.write([usage("b")])  # the writer keeps the batch and retries
    await target.write([usage("b")])
    await target.close()
    assert await fetch(database, "SELECT request_id FROM modelport_usage") == [{"request_id": "b"}]


@asynchronous
async def test_a_table_of_an_older_gateway_gets_the_trace_id_column(database: str) -> None:
    first = schema.migrations(usage_table())[0].replace(',\n  "trace_id" text', "")
    assert "trace_id" not in first
    conn = await asyncpg.connect(database)
    await conn.execute(schema.MIGRATIONS_DDL)
    await conn.execute(first)
    await conn.execute(schema.RECORD_SQL, "modelport_usage", 1)
    await conn.close()
    target = PostgresTarget(usage_table(), lambda: database)
    await target.write([usage("traced")])
    await target.close()
    assert await fetch(database, "SELECT trace_id FROM modelport_usage") == [
        {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}
    ]


@asynchronous
async def test_retention_deletes_old_rows_only(database: str) -> None:
    target = PostgresTarget(usage_table(), lambda: database, retention_days=30)
    old = [usage(f"old{i}", age_days=31 + i) for i in range(7)]
    await target.write([*old, usage("new", age_days=29)])
    deleted = await target.trim(dt.datetime.now(dt.UTC))
    await target.close()
    assert deleted == 7
    assert await fetch(database, "SELECT request_id FROM modelport_usage") == [
        {"request_id": "new"}
    ]
    forever = PostgresTarget(usage_table(), lambda: database, retention_days=0)
    assert await forever.trim(dt.datetime.now(dt.UTC) + dt.timedelta(days=999)) == 0


@asynchronous
async def test_an_inference_table_in_its_own_schema(database: str) -> None:
    table = Table("inference", "chat_payload", "serving")
    target = PostgresTarget(table, lambda: database)
    values: dict[str, Any] = {c.name: None for c in schema.INFERENCE_COLUMNS}
    values.update(
        request_id="r1",
        request_time=NOW,
        endpoint_namespace="team-a",
        endpoint_name="chat",
        status_code=200,
        request=b'{"messages":[]}',
        response=b'{"choices":[]}',
        request_bytes=15,
        response_bytes=14,
        logging_error_codes="MAX_RESPONSE_SIZE_EXCEEDED",
        sampling_fraction=0.5,
        request_streaming=False,
        input_token_count=1,
        output_token_count=2,
        token_counts_estimated=True,
        execution_duration_ms=3.0,
    )
    await target.write([tuple(values[c.name] for c in schema.INFERENCE_COLUMNS)])
    await target.close()
    (row,) = await fetch(
        database,
        "SELECT request::jsonb AS request, logging_error_codes FROM serving.chat_payload",
    )
    assert json.loads(row["request"]) == {"messages": []}
    assert row["logging_error_codes"] == ["MAX_RESPONSE_SIZE_EXCEEDED"]


@asynchronous
async def test_errors_never_carry_the_password(caplog: pytest.LogCaptureFixture) -> None:
    server = PostgresServer().start()
    try:
        wrong = server.dsn.replace(server.password, "not-the-password-" + server.password[:4])
        target = PostgresTarget(usage_table(), lambda: wrong)
        with pytest.raises(UnavailableError) as caught:
            await target.write([usage("a")])
        assert "password authentication failed" in str(caught.value)
        assert "not-the-password" not in str(caught.value)
        down = f"postgresql://modelport:{server.password}@127.0.0.1:{free_port()}/postgres"
        with pytest.raises(UnavailableError) as caught:
            await PostgresTarget(usage_table(), lambda: down).write([usage("a")])
        assert server.password not in str(caught.value)
        with pytest.raises(UnavailableError) as caught:
            await PostgresTarget(usage_table(), lambda: "mysql://x:y@h/db").write([usage("a")])
        assert "postgresql://user:password@host:5432/database" in str(caught.value)
    finally:
        server.close()


def test_a_principals_day_stays_fast_at_a_million_rows(
    database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """1,000,000 rows in time order (one every 2.6 s: 30 days), 500 callers, 20 endpoints.
    One principal's day, an endpoint's day by principal, the top endpoints of a day and
    an endpoint's error rates use the indexes and take milliseconds (the plans are logged
    for the README)."""
    caplog.set_level(logging.INFO)

    async def fill_and_explain() -> dict[str, tuple[str, float]]:
        target = PostgresTarget(usage_table(), lambda: database)
        await target.prepare()
        await target.close()
        conn = await asyncpg.connect(database)
        try:
            await conn.execute(FILL, NOW)
            await conn.execute("ANALYZE modelport_usage")
            day = dt.datetime.fromtimestamp(NOW, dt.UTC).replace(
                hour=0, minute=0, second=0, microsecond=0
            ) - dt.timedelta(days=3)
            until = day + dt.timedelta(days=1)
            plans = {}
            for name, sql, args in [
                ("requester", queries.ONE_PRINCIPAL, ("user-42", day, until)),
                ("principals", queries.BY_PRINCIPAL_AND_DAY, ("team-a", "chat-7", day, until)),
                ("endpoints", queries.TOP_ENDPOINTS, (day, until, 10)),
                ("errors", queries.ERROR_RATES, ("team-a", "chat-7", day, until)),
            ]:
                await conn.fetch(sql, *args)  # warm, as a dashboard's second look is
                rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)
                plan = "\n".join(r[0] for r in rows)
                took = float(plan.rsplit("Execution Time: ", 1)[1].split(" ms")[0])
                plans[name] = (plan, took)
            return plans
        finally:
            await conn.close()

    plans = asyncio.run(fill_and_explain())
    for name, (plan, took) in plans.items():
        logging.getLogger("test").info("%s: %.2f ms\n%s", name, took, plan)
        assert "Seq Scan" not in plan, f"{name} scans the whole table:\n{plan}"
        assert took < 250, f"{name} took {took} ms:\n{plan}"
    assert "modelport_usage_requester_time" in plans["requester"][0]


FILL = """
INSERT INTO modelport_usage (
  request_id, request_time, endpoint_namespace, endpoint_name, served_entity, requester,
  requester_type, task, status_code, input_token_count, output_token_count,
  token_counts_estimated, input_character_count, output_character_count,
  request_streaming, duration_ms, fallback_attempts)
SELECT md5(i::text), to_timestamp($1 - i * 2.592),
  'team-a', 'chat-' || (i % 20), 'e' || (i % 3), 'user-' || (i % 500), 'user',
  'llm/v1/chat', CASE WHEN i % 50 = 0 THEN 500 ELSE 200 END, 100 + i % 50, 20 + i % 30,
  false, 400, 80, i % 2 = 0, 120.0, 0
FROM generate_series(1, 1000000) AS i
"""


def test_modelport_usage_prints_a_table_per_principal(database: str, tmp_path: Any) -> None:
    async def write() -> None:
        target = PostgresTarget(usage_table(), lambda: database)
        await target.write(
            [
                usage("a1", requester="alice", age_days=0.1),
                usage("a2", requester="alice", age_days=0.2, status_code=500),
                usage("b1", requester="nightly", requester_type="service_principal"),
                usage("old", requester="alice", age_days=3),
                usage("other", requester="alice", endpoint_name="other"),
                usage("anon", requester=None, requester_type=None, token_counts_estimated=True),
            ]
        )
        await target.close()

    asyncio.run(write())
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(database + "\n")
    done = subprocess.run(
        [
            sys.executable, "-m", "modelport.cli", "usage", "chat", "-n", "team-a",
            "--dsn-file", str(dsn_file),
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Usage of team-a/chat from ")
    table = [line.split() for line in lines[1:]]
    assert table[0][:2] == ["PRINCIPAL", "KIND"]
    assert table[1] == ["alice", "user", "2", "1", "22", "14", "0", "12", "ms"]
    assert {tuple(row[:3]) for row in table[2:4]} == {
        ("nightly", "service_principal", "1"),
        ("(anonymous)", "1", "0"),
    }
    assert table[4][:5] == ["TOTAL", "4", "1", "44", "28"]
    as_json = subprocess.run(
        [
            sys.executable, "-m", "modelport.cli", "usage", "chat", "-n", "team-a",
            "--since", "2000-01-01", "-o", "json",
        ],
        capture_output=True, text=True, timeout=60, check=True,
        env={**os.environ, "MODELPORT_USAGE_DSN": database},
    )  # fmt: skip
    assert sum(x["requests"] for x in json.loads(as_json.stdout)) == 5
    assert database not in done.stdout + done.stderr


def test_modelport_usage_says_what_to_fix(tmp_path: Any) -> None:
    down = f"postgresql://u:secret-pw@127.0.0.1:{free_port()}/db"
    done = subprocess.run(
        [sys.executable, "-m", "modelport.cli", "usage", "chat", "--since", "yesterday"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "MODELPORT_USAGE_DSN": down},
    )  # fmt: skip
    assert done.returncode == 2 and "--since 'yesterday' is not a date" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "modelport.cli", "usage", "chat"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "MODELPORT_USAGE_DSN": down},
    )  # fmt: skip
    assert done.returncode == 2 and "cannot connect to the usage database" in done.stderr
    assert "secret-pw" not in done.stderr
