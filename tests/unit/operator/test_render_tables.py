"""Where usage and payload rows go: usageTrackingConfig and inferenceTableConfig with the
cluster's usage database, rendered into gateway.json, the gateway's Secret files and
the endpoint's status (pure, table-driven)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from modelport import gatewayconfig as gc
from modelport.render import Rendered, render
from modelport.render.tables import table_name
from modelport.settings import SettingsError, UsageDatabase, from_env
from modelport.status import Observed, SecretProblem, compute_status
from tests.unit.operator.helpers import endpoint, external, parse

SETTINGS = from_env({})
DATABASE = UsageDatabase("modelport-usage-db", "dsn", retention_days=30)
OWN_DSN = {"secretKeyRef": {"name": "payload-db", "key": "url"}}
CLUSTER_FIELD = "(the cluster's usage database, Helm value usageDatabase)"


def _render(
    ai: dict[str, Any] | None, database: UsageDatabase | None = DATABASE, name: str = "chat-bot"
) -> Rendered:
    body = endpoint(external(), name=name).to_body()
    if ai is not None:
        body["spec"]["aiGateway"] = ai
    return render(parse(body), replace(SETTINGS, usage_database=database))


def _tables(rendered: Rendered) -> dict[str, Any]:
    config = json.loads(rendered.children[0]["data"][gc.CONFIG_FILE_NAME])
    assert config["endpointNamespace"] == "team-a"
    ai = config["aiGateway"]
    return {k: ai.get(k) for k in ("usageTrackingEnabled", "usageTable", "inferenceTable")}


def _mounted(rendered: Rendered) -> list[str]:
    deployment = next(c for c in rendered.children if c["kind"] == "Deployment")
    volume = next(
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "secrets"
    )
    return sorted(
        item["path"] for src in volume["projected"]["sources"] for item in src["secret"]["items"]
    )


USAGE = {"usageTrackingConfig": {"enabled": True}}
CLUSTER_TABLE = {"postgresDsn": "modelport-usage-db/dsn", "retentionDays": 30}


def payloads(**config: Any) -> dict[str, Any]:
    return {"inferenceTableConfig": {"enabled": True, **config}}


def payload_table(**over: Any) -> dict[str, Any]:
    table = {
        "sink": "postgres",
        "table": "chat_bot_payload",
        "postgresDsn": "modelport-usage-db/dsn",
        "samplingFraction": 1.0,
        "maxPayloadBytes": 1048576,
        "retentionDays": 30,
    }
    table.update(over)
    return {k: v for k, v in table.items() if v is not None}


# (id, aiGateway, the cluster's database, usageTable, inferenceTable, mounted DSN files)
# fmt: off
CASES: list[tuple[str, dict[str, Any] | None, UsageDatabase | None, Any, Any, list[str]]] = [
    ("nothing asked", None, DATABASE, None, None, []),
    ("usage with the cluster's database", USAGE, DATABASE, CLUSTER_TABLE, None,
     ["modelport-usage-db/dsn"]),
    ("usage without a database: counted only", USAGE, None, None, None, []),
    ("payloads to the cluster's database", payloads(), DATABASE, None, payload_table(),
     ["modelport-usage-db/dsn"]),
    ("payloads without a database: log", payloads(), None, None,
     payload_table(sink="log", postgresDsn=None, retentionDays=90), []),
    ("payloads logged though there is a database", payloads(sink={"type": "log"}), DATABASE,
     None, payload_table(sink="log", postgresDsn=None), []),
    ("payloads to the endpoint's own database",
     payloads(sink={"type": "postgres", "postgresDsn": OWN_DSN}), DATABASE, None,
     payload_table(postgresDsn="payload-db/url"), ["payload-db/url"]),
    ("prefix, schema and sampling",
     payloads(tableNamePrefix="team-chat", schemaName="serving-logs", catalogName="main",
              samplingFraction=0.25), DATABASE, None,
     payload_table(table="team_chat_payload", schema="serving_logs", samplingFraction=0.25),
     ["modelport-usage-db/dsn"]),
    ("both, one Secret", {**USAGE, **payloads()}, DATABASE, CLUSTER_TABLE, payload_table(),
     ["modelport-usage-db/dsn"]),
    ("disabled payloads", {"inferenceTableConfig": {"enabled": False}}, DATABASE, None, None, []),
]
# fmt: on


@pytest.mark.parametrize(
    ("ai", "database", "usage", "inference", "mounted"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_where_rows_go(
    ai: dict[str, Any] | None,
    database: UsageDatabase | None,
    usage: Any,
    inference: Any,
    mounted: list[str],
) -> None:
    rendered = _render(ai, database)
    tables = _tables(rendered)
    assert tables["usageTable"] == usage
    assert tables["inferenceTable"] == inference
    assert [m for m in _mounted(rendered) if m != "llm-keys/openai"] == mounted
    # The connection string's Secret is named, never its value; gateway.json has paths.
    text = rendered.children[0]["data"][gc.CONFIG_FILE_NAME]
    assert "postgresql://" not in text


def test_the_cluster_database_is_one_secret_ref_naming_both_features() -> None:
    rendered = _render({**USAGE, **payloads()})
    (ref,) = [r for r in rendered.secret_refs if r.name == "modelport-usage-db"]
    assert ref.entity == "" and ref.key == "dsn"
    assert ref.field == (
        "spec.aiGateway.usageTrackingConfig and spec.aiGateway.inferenceTableConfig "
        + CLUSTER_FIELD
    )


def test_a_long_endpoint_name_still_makes_a_table_name() -> None:
    name = "a-very-long-endpoint-name-" + "x" * 36
    table = _tables(_render(payloads(), name=name))["inferenceTable"]["table"]
    assert len(table) <= 63 and table.endswith("_payload") and "-" not in table
    assert table_name("9lives") == "_9lives" and table_name("Chat.Bot") == "chat_bot"


def test_a_missing_database_secret_keeps_the_endpoint_serving() -> None:
    ep = endpoint(external("gpt"))
    (ref,) = [r for r in _render(USAGE).secret_refs if r.name == "modelport-usage-db"]
    assert ref.field == "spec.aiGateway.usageTrackingConfig " + CLUSTER_FIELD
    problem = SecretProblem("", ref.field, ref.name, ref.key, "secret", ref.consequence)
    observed = Observed(namespace="team-a", url="http://chat", gateway=None)
    observed = replace(observed, secret_problems=[problem])
    status = compute_status(ep, observed, None, datetime(2026, 12, 1, tzinfo=UTC))
    degraded = next(c for c in status.conditions or [] if c.type == "Degraded")
    assert degraded.reason == "SecretMissing"
    assert "modelport-usage-db" in degraded.message and "usageDatabase" in degraded.message
    assert "writes no usage or payload rows" in degraded.message
    assert "refuses this API key" not in degraded.message


def test_the_usage_database_setting() -> None:
    value = {"secretName": "usage-db", "secretKey": "url", "retentionDays": 7}
    settings = from_env({"MODELPORT_USAGE_DATABASE": json.dumps(value)})
    assert settings.usage_database == UsageDatabase("usage-db", "url", 7)
    assert from_env({}).usage_database is None
    # The chart's default: no Secret name, no database.
    chart_default = '{"secretName": "", "secretKey": "dsn", "retentionDays": 90}'
    assert from_env({"MODELPORT_USAGE_DATABASE": chart_default}).usage_database is None


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("{", "MODELPORT_USAGE_DATABASE: not JSON"),
        ('{"secret": "x"}', "unknown field(s) ['secret']"),
        ('{"secretName": "Bad_Name"}', "MODELPORT_USAGE_DATABASE.secretName='Bad_Name'"),
        ('{"secretName": "db", "secretKey": "a b"}', "secretKey='a b'"),
        ('{"secretName": "db", "retentionDays": -1}', "retentionDays=-1"),
        ('{"secretName": "db", "retentionDays": "90"}', "retentionDays='90'"),
    ],
)
def test_usage_database_errors_name_the_variable(value: str, needle: str) -> None:
    with pytest.raises(SettingsError) as err:
        from_env({"MODELPORT_USAGE_DATABASE": value})
    assert needle in str(err.value)
