"""Usage rows and inference tables against a real PostgreSQL (Debian's server, started by
the session), with the real ``openai`` SDK as the client and API-key callers."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from modelport import gatewayconfig
from modelport.gateway.app import GatewayApp, default_pipeline
from modelport.gateway.tables.writer import TableWriter
from tests.integration.gateway.fakes import (
    FakeProvider,
    Reply,
    RunningGateway,
    Seen,
    endpoint,
    json_reply,
    vllm,
    write_config,
)
from tests.integration.gateway.openai_fake import USAGE, serve_openai
from tests.postgres import PostgresServer, create_database, query
from tests.support import eventually

CHAT = [{"role": "user", "content": "Say hello to the tables"}]
ALICE = "test-caller-key-alice-0000"
BOT = "test-caller-key-nightly-bot-1111"
DSN_FILE = "usage-db/dsn"


def tracked(base: str, *, inference: dict[str, Any] | None = None, **ai: Any) -> dict[str, Any]:
    """An endpoint in namespace team-a with API-key callers, usage rows and (optionally)
    an inference table, all in the database whose DSN is the file ``usage-db/dsn``."""
    return endpoint(
        vllm("e1", base),
        endpointNamespace="team-a",
        aiGateway={
            "usageTrackingEnabled": True,
            "usageTable": {"postgresDsn": DSN_FILE},
            "auth": {
                "apiKeys": [
                    {"path": "callers/alice", "principal": {"user": "alice", "groups": ["team-a"]}},
                    {"path": "callers/bot", "principal": {"servicePrincipal": "nightly-eval"}},
                ]
            },
            **({"inferenceTable": inference} if inference else {}),
            **ai,
        },
    )


def start(
    gateway: Callable[..., RunningGateway], config: dict[str, Any], dsn: str
) -> RunningGateway:
    return gateway(config, {"callers/alice": ALICE, "callers/bot": BOT, DSN_FILE: dsn})


def sdk(gw: RunningGateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=10)


def writers(gw: RunningGateway) -> list[TableWriter]:
    return [s for s in gw.app.pipeline.sinks if isinstance(s, TableWriter)]


def rows(
    dsn: str, table: str = "modelport_usage", count: int | None = None
) -> list[dict[str, Any]]:
    """The table's rows by request time, once there are ``count`` of them."""

    def read() -> list[dict[str, Any]] | None:
        try:
            found = query(dsn, f"SELECT * FROM {table} ORDER BY request_time")  # noqa: S608
        except Exception:  # the table is created with the first batch
            return None
        return found if count is None or len(found) >= count else None

    return eventually(read, timeout=20, interval=0.2)


@pytest.fixture
def upstream(provider: FakeProvider) -> FakeProvider:
    serve_openai(provider, "/v1", lambda seen: None, model="e1")
    return provider


def test_usage_rows_match_the_requests_one_for_one(
    upstream: FakeProvider, gateway: Callable[..., RunningGateway], database: str
) -> None:
    @upstream.route("POST", "/broken/v1/chat/completions")
    def broken(seen: Seen) -> Reply:
        return json_reply({"error": {"message": "upstream down"}}, 500)

    gw = start(gateway, tracked(upstream.url + "/v1"), database)
    sent: dict[str, dict[str, Any]] = {}
    for i, (key, stream) in enumerate([(ALICE, False), (ALICE, True), (BOT, False), (BOT, True)]):
        crid = f"req-{i}"
        extra = {"client_request_id": crid, "usage_context": {"project": f"p{i % 2}"}}
        if stream:
            chunks = list(
                sdk(gw, key).chat.completions.create(
                    model="ep",
                    messages=CHAT,
                    stream=True,
                    stream_options={"include_usage": True},
                    extra_body=extra,
                )
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            reply = sdk(gw, key).chat.completions.create(
                model="ep", messages=CHAT, extra_body=extra
            )
            text = reply.choices[0].message.content or ""
        sent[crid] = {"key": key, "stream": stream, "text": text}
    # The fake upstream never sees our fields: they are taken out of the body.
    assert all("client_request_id" not in s.json() for s in upstream.seen)
    # A refused caller and an invalid request are rows too.
    with pytest.raises(openai.AuthenticationError):
        sdk(gw, "test-caller-key-nobody-9999").chat.completions.create(model="ep", messages=CHAT)
    with pytest.raises(openai.BadRequestError):
        sdk(gw, ALICE).chat.completions.create(
            model="ep", messages=CHAT, extra_body={"client_request_id": "bad", "usage_context": 3}
        )

    found = rows(database, count=6)
    assert len(found) == 6
    by_crid = {r["client_request_id"]: r for r in found if r["client_request_id"]}
    assert set(by_crid) == set(sent)
    for crid, request in sent.items():
        row = by_crid[crid]
        alice = request["key"] == ALICE
        assert row["requester"] == ("alice" if alice else "nightly-eval")
        assert row["requester_type"] == ("user" if alice else "service_principal")
        assert (row["endpoint_namespace"], row["endpoint_name"]) == ("team-a", "ep")
        assert row["served_entity"] == "e1" and row["task"] == "llm/v1/chat"
        assert row["status_code"] == 200 and row["error_code"] is None
        assert row["request_streaming"] is request["stream"]
        # The provider's counts, not an estimate.
        assert (row["input_token_count"], row["output_token_count"]) == (
            USAGE["prompt_tokens"],
            USAGE["completion_tokens"],
        )
        assert row["token_counts_estimated"] is False
        assert row["input_character_count"] == len(CHAT[0]["content"])
        assert row["output_character_count"] == len(request["text"])
        assert json.loads(row["usage_context"]) == {"project": f"p{int(crid[-1]) % 2}"}
        assert 0 < row["time_to_first_token_ms"] <= row["duration_ms"]
        assert row["fallback_attempts"] == 0
        assert len(row["request_id"]) == 32
    refused = [r for r in found if not r["client_request_id"]]
    assert sorted(r["status_code"] for r in refused) == [400, 401]
    unauthenticated = next(r for r in refused if r["status_code"] == 401)
    assert unauthenticated["requester"] is None and unauthenticated["served_entity"] is None
    assert unauthenticated["error_code"] == "UNAUTHENTICATED"

    metrics = httpx.get(gw.url + "/metrics", timeout=5).text
    assert (
        'modelport_gateway_usage_requests_total{endpoint="team-a/ep",entity="e1",'
        'principal_kind="user"} 2.0' in metrics
    )
    assert (
        'modelport_gateway_usage_tokens_total{endpoint="team-a/ep",entity="e1",kind="prompt",'
        'principal_kind="service_principal"} 22.0' in metrics
    )
    assert 'modelport_gateway_table_rows_total{result="written",table="modelport_usage"} 6.0' in (
        metrics
    )
    assert ALICE not in metrics and "password" not in metrics


def test_fallback_attempts_and_failed_upstreams_are_counted(
    provider: FakeProvider, gateway: Callable[..., RunningGateway], database: str
) -> None:
    serve_openai(provider, "/ok/v1", lambda seen: None, model="ok")

    @provider.route("POST", "/down/v1/chat/completions")
    def down(seen: Seen) -> Reply:
        return json_reply({"error": {"message": "overloaded"}}, 503)

    config = tracked(provider.url + "/down/v1", fallbackEnabled=True)
    config["entities"] = [
        vllm("down", provider.url + "/down/v1"),
        vllm("ok", provider.url + "/ok/v1"),
    ]
    config["routes"] = [
        {"servedEntityName": "down", "trafficPercentage": 100},
        {"servedEntityName": "ok", "trafficPercentage": 0},
    ]
    gw = start(gateway, config, database)
    sdk(gw, ALICE).chat.completions.create(model="ep", messages=CHAT)
    (row,) = rows(database, count=1)
    assert row["served_entity"] == "ok" and row["fallback_attempts"] == 1
    assert row["status_code"] == 200


def test_inference_rows_hold_what_the_client_received(
    upstream: FakeProvider, gateway: Callable[..., RunningGateway], database: str
) -> None:
    inference = {"sink": "postgres", "table": "ep_payload", "postgresDsn": DSN_FILE}
    gw = start(gateway, tracked(upstream.url + "/v1", inference=inference), database)
    client = sdk(gw, BOT)
    chunks = list(
        client.chat.completions.create(
            model="ep",
            messages=CHAT,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"client_request_id": "streamed", "usage_context": {"team": "a"}},
        )
    )
    whole = httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": "ep", "messages": CHAT, "client_request_id": "whole"},
        headers={"authorization": f"Bearer {BOT}"},
        timeout=10,
    )
    assert whole.status_code == 200
    tool_chunks = list(
        client.chat.completions.create(
            model="ep",
            messages=CHAT,
            stream=True,
            tools=[{"type": "function", "function": {"name": "get_weather"}}],
            extra_body={"client_request_id": "tools"},
        )
    )

    found = {r["client_request_id"]: r for r in rows(database, "ep_payload", count=3)}
    streamed = found["streamed"]
    response = json.loads(streamed["response"])
    # What the SDK put together from the chunks is exactly what the table holds.
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert response["object"] == "chat.completion"
    assert response["id"] == chunks[0].id and response["model"] == chunks[0].model
    assert response["choices"][0]["message"] == {"role": "assistant", "content": content}
    assert response["choices"][0]["finish_reason"] == chunks[-2].choices[0].finish_reason
    assert response["usage"] == chunks[-1].usage.model_dump(exclude_none=True)  # type: ignore[union-attr]
    assert json.loads(streamed["request"])["messages"] == CHAT
    assert streamed["request_streaming"] is True and streamed["status_code"] == 200
    assert (streamed["requester"], streamed["requester_type"]) == (
        "nightly-eval",
        "service_principal",
    )
    assert json.loads(streamed["usage_context"]) == {"team": "a"}
    assert streamed["logging_error_codes"] is None and streamed["sampling_fraction"] == 1.0
    assert streamed["served_entity"] == "e1" and streamed["execution_duration_ms"] > 0

    assert found["whole"]["response"] == whole.text  # byte for byte
    assert found["whole"]["response_bytes"] == len(whole.content)

    calls = json.loads(found["tools"]["response"])["choices"][0]["message"]["tool_calls"]
    sdk_arguments = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments or ""  # type: ignore[index,union-attr]
        for c in tool_chunks
        if c.choices and c.choices[0].delta.tool_calls
    )
    assert calls == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": sdk_arguments},
        }
    ]


def test_a_two_mib_request_is_marked_not_stored(
    upstream: FakeProvider, gateway: Callable[..., RunningGateway], database: str
) -> None:
    inference = {"sink": "postgres", "table": "ep_payload", "postgresDsn": DSN_FILE}
    gw = start(gateway, tracked(upstream.url + "/v1", inference=inference), database)
    big = [{"role": "user", "content": "x" * (2 * 1024 * 1024)}]
    sdk(gw, ALICE).chat.completions.create(
        model="ep", messages=big, extra_body={"client_request_id": "big"}
    )
    sdk(gw, ALICE).chat.completions.create(
        model="ep", messages=CHAT, extra_body={"client_request_id": "small"}
    )
    found = {r["client_request_id"]: r for r in rows(database, "ep_payload", count=2)}
    row = found["big"]
    assert row["request"] is None and row["request_bytes"] > 2 * 1024 * 1024
    assert row["logging_error_codes"] == ["MAX_REQUEST_SIZE_EXCEEDED"]
    assert json.loads(row["response"])["choices"][0]["message"]["content"] == "Hello from upstream"
    assert found["small"]["request"] is not None and found["small"]["logging_error_codes"] is None
    usage = {r["client_request_id"]: r for r in rows(database, count=2)}
    assert usage["big"]["input_character_count"] == 2 * 1024 * 1024
    metrics = httpx.get(gw.url + "/metrics", timeout=5).text
    assert 'modelport_gateway_payloads_not_stored_total{table="ep_payload"} 1.0' in metrics


def test_sampling_keeps_a_fraction_of_payloads(
    upstream: FakeProvider, gateway: Callable[..., RunningGateway], database: str
) -> None:
    inference = {
        "sink": "postgres",
        "table": "ep_payload",
        "postgresDsn": DSN_FILE,
        "samplingFraction": 0.0,
    }
    gw = start(gateway, tracked(upstream.url + "/v1", inference=inference), database)
    for _ in range(3):
        sdk(gw, ALICE).chat.completions.create(model="ep", messages=CHAT)
    assert len(rows(database, count=3)) == 3  # every request has its usage row
    assert query(database, "SELECT count(*) AS n FROM ep_payload") == [{"n": 0}]


def test_the_database_down_slows_and_fails_no_request(
    upstream: FakeProvider, gateway: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    server = PostgresServer().start()
    try:
        dsn = create_database(server)
        gw = start(gateway, tracked(upstream.url + "/v1"), dsn)
        (writer,) = writers(gw)
        writer.max_backoff_seconds = 0.3
        client = sdk(gw, ALICE)

        def burst(n: int) -> list[float]:
            took = []
            for _ in range(n):
                t0 = time.perf_counter()
                client.chat.completions.create(model="ep", messages=CHAT)
                took.append(time.perf_counter() - t0)
            return took

        before = burst(30)
        assert len(rows(dsn, count=30)) == 30
        assert writer.queued == 0
        writer.max_rows = 20  # small, so that the outage overflows it
        server.stop()
        during = burst(60)  # every request succeeds (burst raises otherwise)
        eventually(lambda: writer.dropped >= 40, timeout=10)
        server.start()
        # The rows that waited are written once it is back (20: the buffer's bound).
        eventually(lambda: writer.queued == 0, timeout=20)
        assert len(rows(dsn)) == 50
        after = burst(10)
        total = 100
        final = eventually(
            lambda: (found := rows(dsn)) and len(found) + writer.dropped == total and found,
            timeout=30,
        )
        # Rows resumed; what is missing is exactly what the counter says.
        assert len(final) == total - writer.dropped and writer.dropped == 40
        metrics = httpx.get(gw.url + "/metrics", timeout=5).text
        assert (
            'modelport_gateway_table_rows_total{result="dropped_queue_full",'
            'table="modelport_usage"} 40.0' in metrics
        )
        # Unchanged latency, within this shared machine's noise.
        assert statistics.median(during) < 3 * statistics.median(before) + 0.01
        assert statistics.median(after) < 3 * statistics.median(before) + 0.01
        assert server.password not in metrics
    finally:
        server.close()


def test_shutdown_writes_what_is_buffered(
    upstream: FakeProvider, database: str, tmp_path: Path
) -> None:
    config_dir, secrets_dir = write_config(
        tmp_path,
        tracked(upstream.url + "/v1"),
        {"callers/alice": ALICE, "callers/bot": BOT, DSN_FILE: database},
    )
    config = gatewayconfig.load(config_dir)
    pipeline = default_pipeline(config, secrets_dir)
    (writer,) = [s for s in pipeline.sinks if isinstance(s, TableWriter)]
    writer.flush_seconds = 3600.0  # nothing is written before the shutdown
    gw = RunningGateway(GatewayApp(config, secrets_dir, pipeline=pipeline), secrets_dir).start()
    try:
        for _ in range(5):
            sdk(gw, ALICE).chat.completions.create(model="ep", messages=CHAT)
        assert writer.queued == 5
    finally:
        gw.stop()
    assert len(query(database, "SELECT request_id FROM modelport_usage")) == 5


@pytest.fixture
def log_lines(capfdbinary: pytest.CaptureFixture[bytes]) -> Iterator[Callable[[], list[Any]]]:
    def lines() -> list[Any]:
        out = capfdbinary.readouterr().out
        return [json.loads(line) for line in out.splitlines() if line.startswith(b"{")]

    yield lines


def test_the_log_sink_writes_json_lines(
    upstream: FakeProvider,
    gateway: Callable[..., RunningGateway],
    log_lines: Callable[[], list[Any]],
) -> None:
    config = endpoint(
        vllm("e1", upstream.url + "/v1"),
        endpointNamespace="team-a",
        aiGateway={"inferenceTable": {"sink": "log", "table": "ep_payload"}},
    )
    gw = gateway(config)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0, timeout=10)
    client.chat.completions.create(
        model="ep", messages=CHAT, extra_body={"client_request_id": "logged"}
    )
    (line,) = eventually(lambda: [x for x in log_lines() if x.get("client_request_id")], timeout=10)
    assert line["client_request_id"] == "logged" and line["endpoint_namespace"] == "team-a"
    assert json.loads(line["request"])["messages"] == CHAT
    assert json.loads(line["response"])["choices"][0]["message"]["content"] == "Hello from upstream"
    assert line["requester"] is None and line["status_code"] == 200
    assert line["request_time"].endswith("+00:00")


def test_a_request_refused_by_a_rate_limit_is_a_usage_row(
    upstream: FakeProvider, gateway: Callable[..., RunningGateway], database: str
) -> None:
    config = tracked(upstream.url + "/v1", rateLimits=[{"calls": 1, "key": "user"}])
    gw = start(gateway, config, database)
    sdk(gw, ALICE).chat.completions.create(model="ep", messages=CHAT)
    with pytest.raises(openai.RateLimitError):
        sdk(gw, ALICE).chat.completions.create(model="ep", messages=CHAT)
    found = rows(database, count=2)
    assert [(r["status_code"], r["error_code"]) for r in found] == [
        (200, None),
        (429, "REQUEST_LIMIT_EXCEEDED"),
    ]
    assert all(r["requester"] == "alice" for r in found)
    assert found[1]["served_entity"] is None and found[1]["input_character_count"] > 0
