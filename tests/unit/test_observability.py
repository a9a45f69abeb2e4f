"""The Grafana dashboards, the Prometheus alerts and the console's queries against what
the code exports: every query parses as PromQL, and every metric it names is one the
gateway or the operator exports (under the name Prometheus stores: ``_total``,
``_bucket`` …). The dashboards also pass a structural check of Grafana's dashboard JSON
model (what its schema requires of a provisioned dashboard: a uid, a schema version,
panels with unique ids laid out on the 24-column grid, queries with refIds, every
``$variable`` defined), documented in the chart's README."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
from prometheus_client import generate_latest

from modelport import operatormetrics
from modelport.console.series import promql
from modelport.gateway.metrics import Metrics
from tests.unit.test_chart import CHART, template

DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
}
PANEL_TYPES = {"timeseries", "stat", "row", "gauge", "table", "bargauge"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported() -> set[str]:
    """Every sample name the gateway and the operator expose, from their own registries'
    text exposition (families without samples yet still print their TYPE line)."""
    gateway = Metrics()
    gateway.track_rate_limit_store(lambda: True)
    body, _ = gateway.render()
    text = body.decode() + generate_latest(operatormetrics.REGISTRY).decode()
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        base = name.removesuffix("_total") if kind == "counter" else name
        names.update(base + suffix for suffix in SUFFIXES.get(kind, ("",)))
    return names


def selectors(expr: Any) -> Iterator[str]:
    """The metric names an expression selects."""
    if isinstance(expr, promql_parser.VectorSelector):
        if expr.name:
            yield expr.name
        return
    if isinstance(expr, promql_parser.MatrixSelector):
        yield from selectors(expr.vector_selector)
        return
    for attribute in ("expr", "lhs", "rhs", "param"):
        child = getattr(expr, attribute, None)
        if child is not None and not isinstance(child, str | int | float):
            yield from selectors(child)
    for arg in getattr(expr, "args", None) or ():
        yield from selectors(arg)


def parse(expr: str) -> Any:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return promql_parser.parse(expr)


def dashboard_queries() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        for panel in doc["panels"]:
            for target in panel.get("targets", []):
                out.append((f"{path.name}: {panel['title']}", target["expr"]))
    return out


def rule_queries() -> list[tuple[str, str]]:
    docs = template("metrics.prometheusRule.enabled=true")
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    return [(f"alert {r['alert']}", r["expr"]) for g in rule["spec"]["groups"] for r in g["rules"]]


def console_queries() -> list[tuple[str, str]]:
    return [
        (f"console {panel} {name}", expr)
        for panel, named in promql("team-a", "chat").items()
        for name, expr in named.items()
    ]


QUERIES = dashboard_queries() + rule_queries() + console_queries()


def test_there_are_dashboards_alerts_and_console_queries() -> None:
    assert {p.name for p in DASHBOARDS} == {"gateway.json", "operator.json"}
    kinds = {where.split(" ")[0] for where, _ in QUERIES}
    assert {"gateway.json:", "operator.json:", "alert", "console"} <= kinds


@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[w for w, _ in QUERIES])
def test_every_query_parses_and_names_exported_metrics(where: str, expr: str) -> None:
    names = set(selectors(parse(expr)))
    assert names, f"{where}: selects no metric"
    missing = sorted(n for n in names if n not in exported() and not n.startswith("process_"))
    assert not missing, f"{where}: {missing} are not exported by the gateway or the operator"
    process = [n for n in names if n.startswith("process_")]
    assert all(n in exported() for n in process), f"{where}: {process}"


def test_every_gateway_and_operator_family_is_on_a_dashboard() -> None:
    """Nothing exported is left off the dashboards (a new metric needs a panel)."""
    used = {n for _, expr in dashboard_queries() for n in selectors(parse(expr))}
    families = {n.removesuffix("_bucket") for n in exported() if n.startswith("modelport_")}
    # A histogram is on a dashboard through its buckets; _sum and _count need no panel.
    wanted = {n for n in families if not n.endswith(("_sum", "_count"))}
    unused = sorted(n for n in wanted if n not in used and n + "_bucket" not in used)
    assert not unused, f"exported but on no dashboard: {unused}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_dashboards_follow_grafanas_dashboard_model(path: Path) -> None:
    doc = json.loads(path.read_text())
    assert re.fullmatch(r"[a-z0-9-]{1,40}", doc["uid"]) and doc["title"].startswith("Modelport")
    assert isinstance(doc["schemaVersion"], int) and doc["schemaVersion"] >= 36
    variables = {v["name"] for v in doc["templating"]["list"]}
    assert "datasource" in variables
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in doc["panels"]:
        assert panel["type"] in PANEL_TYPES, panel["type"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
    text = path.read_text()
    used = set(re.findall(r"\$\{?([A-Za-z_]\w*)", text)) - {"__rate_interval", "__all"}
    assert used <= variables, f"undefined variables: {used - variables}"


def test_the_chart_loads_dashboards_for_grafanas_sidecar() -> None:
    docs = template("metrics.dashboards.enabled=true")
    maps = {d["metadata"]["name"]: d for d in docs if "-dashboard-" in d["metadata"]["name"]}
    assert set(maps) == {"mp-modelport-dashboard-gateway", "mp-modelport-dashboard-operator"}
    for config_map in maps.values():
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((key, body),) = config_map["data"].items()
        assert key.endswith(".json") and json.loads(body)["uid"].startswith("modelport-")
    assert not [d for d in template() if "-dashboard-" in d["metadata"]["name"]]
