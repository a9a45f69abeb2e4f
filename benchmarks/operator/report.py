"""The table and the verdicts against issue 18's targets, from the raw results."""

from __future__ import annotations

from typing import Any

RSS_TARGET_MIB = 250.0
RATIO_TARGET = 1.5
REQUESTS_TARGET = 12.0
QUIET_TARGET_S = 10.0
TARGET_N = 1000


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    """One row per N (the direct and the operator round side by side) and the verdicts."""
    rows: dict[int, dict[str, Any]] = {}
    for r in raw.get("rounds", []):
        row = rows.setdefault(r["n"], {"n": r["n"], "deployments": r["deployments"]})
        if r["kind"] == "direct":
            row["direct_s"] = r["deployments_available_s"]
            row["direct_requests_per_endpoint"] = r["requests_per_endpoint"]
            row["direct_load"] = r["load_average_1m"]
        else:
            row.update(
                ready_s=r["ready_s"],
                operator_deployments_s=r["deployments_available_s"],
                requests_per_endpoint=r["requests_per_endpoint"],
                writes_per_endpoint=r["writes_per_endpoint"],
                peak_rss_mib=r["rss_mib"]["peak"],
                idle_rss_mib=r["rss_mib"]["idle"],
                cpu_to_ready_s=r["cpu_s"]["to_ready"],
                quiet_after_ready_s=r.get("quiet_after_ready_s"),
                steady_writes_per_min=r["steady_writes_per_min"],
                settle_writes=r["requests"]["settle"]["writes"],
                steady_requests_per_min=r["steady_requests_per_min"],
                steady_beyond_watches_per_min=r.get("steady_requests_beyond_watches_per_min"),
                operator_load=r["load_average_1m"],
            )
    for row in rows.values():
        if row.get("ready_s") and row.get("direct_s"):
            row["ratio"] = round(row["ready_s"] / row["direct_s"], 2)
    ordered = [rows[n] for n in sorted(rows)]
    verdicts = []
    big = rows.get(TARGET_N)
    if big and big.get("ratio") is not None:
        verdicts.append(
            (
                f"{TARGET_N} endpoints READY within {RATIO_TARGET:g}x the direct-apply limit",
                f"{big['ready_s']} s vs {big['direct_s']} s = {big['ratio']}x",
                big["ratio"] <= RATIO_TARGET,
            )
        )
    if big and big.get("requests_per_endpoint") is not None:
        verdicts.append(
            (
                f"<= {REQUESTS_TARGET:g} API requests per endpoint until READY (N = {TARGET_N})",
                f"{big['requests_per_endpoint']:g} ({big['writes_per_endpoint']:g} writes)",
                big["requests_per_endpoint"] <= REQUESTS_TARGET,
            )
        )
    rss = [r["peak_rss_mib"] for r in ordered if r.get("peak_rss_mib")]
    if rss:
        verdicts.append(
            (
                f"operator peak RSS <= {RSS_TARGET_MIB:g} MiB",
                f"peak {max(rss):g} MiB",
                max(rss) <= RSS_TARGET_MIB,
            )
        )
    quiet = [r["quiet_after_ready_s"] for r in ordered if r.get("quiet_after_ready_s") is not None]
    if quiet:
        verdicts.append(
            (
                f"quiet within {QUIET_TARGET_S:g} s after READY",
                f"last request at most {max(quiet):g} s after READY",
                max(quiet) <= QUIET_TARGET_S,
            )
        )
    steady = [r for r in ordered if r.get("steady_writes_per_min") is not None]
    if steady:
        writes = max(r["steady_writes_per_min"] for r in steady)
        # Results from before the watches were told apart count every request.
        beyond = max(
            r["steady_beyond_watches_per_min"]
            if r.get("steady_beyond_watches_per_min") is not None
            else r.get("steady_requests_per_min") or 0
            for r in steady
        )
        verdicts.append(
            (
                "then zero writes and zero requests per minute beyond the watches",
                f"max {writes:g} writes/min, {beyond:g} requests/min beyond the watches",
                writes == 0 and beyond == 0,
            )
        )
    return {
        "rows": ordered,
        "verdicts": [{"target": t, "measured": m, "met": ok} for t, m, ok in verdicts],
    }


def _f(value: Any, fmt: str = "{:g}") -> str:
    if value is None:
        return "—"
    if isinstance(value, list):
        return "/".join(_f(v) for v in value)
    return fmt.format(value)


def render(raw: dict[str, Any]) -> str:
    """Markdown tables for stdout and the README."""
    summary = raw.get("summary") or summarize(raw)
    lines = [
        "| N | Deployments | direct: all available s | operator: all READY s | ratio | "
        "operator: all Deployments available s | API requests/endpoint (writes) | "
        "direct requests/endpoint | operator peak RSS MiB (idle) | operator CPU s to READY "
        "(ms/endpoint) | quiet after READY s | writes in the settle window | steady "
        "writes/min (requests/min; beyond watches) | load 1m direct; operator |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in summary["rows"]:
        cpu = r.get("cpu_to_ready_s")
        per = cpu * 1000 / r["n"] if cpu is not None else None
        lines.append(
            f"| {r['n']} | {r['deployments']} | {_f(r.get('direct_s'))} | {_f(r.get('ready_s'))} "
            f"| {_f(r.get('ratio'))} | {_f(r.get('operator_deployments_s'))} "
            f"| {_f(r.get('requests_per_endpoint'))} ({_f(r.get('writes_per_endpoint'))}) "
            f"| {_f(r.get('direct_requests_per_endpoint'))} "
            f"| {_f(r.get('peak_rss_mib'))} ({_f(r.get('idle_rss_mib'))}) "
            f"| {_f(cpu)} ({_f(per, '{:.0f}')}) | {_f(r.get('quiet_after_ready_s'))} "
            f"| {_f(r.get('settle_writes'))} "
            f"| {_f(r.get('steady_writes_per_min'))} ({_f(r.get('steady_requests_per_min'))}; "
            f"{_f(r.get('steady_beyond_watches_per_min'))}) "
            f"| {_f(r.get('direct_load'))}; {_f(r.get('operator_load'))} |"
        )
    if summary["verdicts"]:
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        for v in summary["verdicts"]:
            lines.append(f"| {v['target']} | {v['measured']} | {'yes' if v['met'] else 'NO'} |")
    if raw.get("skipped"):
        lines += ["", "skipped: " + ", ".join(raw["skipped"])]
    load = raw.get("load_average")
    if load:
        lines += ["", f"load average (1/5/15 min) at start {load['start']}, at end {load['end']}"]
    return "\n".join(lines)
