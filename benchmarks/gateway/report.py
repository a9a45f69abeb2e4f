"""From raw rounds to the summary, the issue's targets, and the printed tables.

Each figure of a target at a point is taken from that point's best round (the most
requests per second; at concurrency 1 that is also the lowest mean latency): on a shared
machine a neighbour can only make a figure worse, never better.
"""

from __future__ import annotations

from typing import Any

PEAK_POINTS = ("none-c1", "none-c16", "none-c64", "none-c256")
TARGET_ADDED_P99_MS = 1.0
TARGET_VS_LITELLM = 10.0
TARGET_VS_FORWARDER = 0.5


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    """Per target: best-of-rounds figures, open-loop capacity, and the issue's checks."""
    per: dict[str, dict[str, Any]] = {}
    for t in raw["targets"]:
        name = t["name"]
        best: dict[str, dict[str, Any]] = {}
        quietest: dict[str, dict[str, Any]] = {}
        open_runs: list[dict[str, Any]] = []
        for rnd in raw["rounds"]:
            for key, res in rnd["results"][name].items():
                if key == "open":
                    open_runs.extend(res)
                    continue
                if key not in best or res["rps"] > best[key]["rps"]:
                    best[key] = res
                p99 = res["latency_ms"]["p99"]
                if key not in quietest or p99 < quietest[key]["latency_ms"]["p99"]:
                    quietest[key] = res
        passed = [o for o in open_runs if o["passed"]]
        slo = max(passed, key=lambda o: o["rate"]) if passed else None
        peak_key = max(
            (k for k in PEAK_POINTS if k in best), key=lambda k: best[k]["rps"], default=None
        )
        per[name] = {
            "workers": t["workers"],
            "best": best,
            # Latency at c=1 comes from each target's least-disturbed round (lowest p99).
            "quietest": quietest,
            "peak_rps": best[peak_key]["rps"] if peak_key else None,
            "peak_point": peak_key,
            "slo_rps": slo["rate"] if slo else 0.0,
            # Passing at the generator's cap: the target may do more than was measured.
            "slo_generator_capped": bool(slo and slo["rate"] >= 0.99 * raw["settings"]["max_rate"]),
            "slo_tried": sorted({o["rate"] for o in open_runs}),
            "rss_mib_before": t["rss_mib_before"],
            "rss_mib_after": t["rss_mib_after"],
        }
    direct = per.get("direct", {}).get("quietest", {})
    for s in per.values():
        for point in ("none-c1", "delay50-c1"):
            if point in s["quietest"] and point in direct:
                mine, base = s["quietest"][point]["latency_ms"], direct[point]["latency_ms"]
                s[f"added_{point}_ms"] = {
                    q: round(mine[q] - base[q], 3) for q in ("p50", "p90", "p99")
                }
    return {"targets": per, "checks": checks(per)}


def checks(per: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets for the gateway (1 worker), each with the measured values."""
    gw, ll, fw = per.get("modelport-1w"), per.get("litellm-1w"), per.get("forwarder")
    out: list[dict[str, Any]] = []
    direct = per.get("direct", {}).get("quietest", {}).get("none-c1")
    if gw and direct and "added_none-c1_ms" in gw:
        added = gw["added_none-c1_ms"]
        # The bare upstream's own p99 is microseconds; anything above that is the
        # machine's neighbours, and a p99 budget below it cannot be judged.
        floor = direct["latency_ms"]["p99"]
        met: bool | None = added["p99"] <= TARGET_ADDED_P99_MS
        if floor > TARGET_ADDED_P99_MS:
            met = None
        out.append(
            {
                "target": "gateway adds <= 1 ms p99 at concurrency 1",
                "value": f"{added['p99']:+.3f} ms (p50 {added['p50']:+.3f}, "
                f"p90 {added['p90']:+.3f}; direct's own p99, the noise floor: {floor:.3f} ms)",
                "met": met,
            }
        )
    for other, label, goal in (
        (ll, "LiteLLM's throughput per core", TARGET_VS_LITELLM),
        (fw, "the minimal forwarder's throughput", TARGET_VS_FORWARDER),
    ):
        if gw and other:
            out += _ratios(gw, other, label, goal)
    return out


def _ratios(
    gw: dict[str, Any], other: dict[str, Any], label: str, goal: float
) -> list[dict[str, Any]]:
    """The gateway against ``other`` three ways: peak, at c=64, and at p99 <= 10 ms."""
    at64 = (gw["best"].get("none-c64", {}).get("rps"), other["best"].get("none-c64", {}).get("rps"))
    out = []
    for what, (mine, theirs) in (
        ("closed-loop peak over c=1..256", (gw["peak_rps"], other["peak_rps"])),
        ("closed loop at c=64", at64),
        ("highest open-loop rate with p99<=10 ms", (gw["slo_rps"], other["slo_rps"])),
    ):
        if mine is None or theirs is None or (what.startswith("highest") and not gw["slo_tried"]):
            continue  # not measured in this run (--points / --open-steps 0)
        if not mine:
            value, met = f"gateway {mine} req/s", False
        elif not theirs:
            tried = ", ".join(f"{r:.0f}" for r in other["slo_tried"][:4])
            value, met = f"{mine:.0f} req/s vs none (it passed at no rate tried: {tried})", True
        else:
            value, met = (
                f"{mine / theirs:.2f}x ({mine:.0f} vs {theirs:.0f} req/s)",
                (mine / theirs >= goal),
            )
        out.append(
            {"target": f">= {goal:g}x {label} (1 worker each), {what}", "value": value, "met": met}
        )
    return out


def _f(value: float | None, fmt: str = ".2f") -> str:
    return "—" if value is None else format(value, fmt)


def render(raw: dict[str, Any]) -> str:
    """Markdown tables of the summary (what README.md shows)."""
    s = raw["summary"]["targets"]
    v, m = raw["versions"], raw["machine"]
    lines = [
        f"Gateway overhead benchmark, {raw['date']}, {raw['elapsed_s']} s",
        f"machine: {m['nproc']} cores, {m['cpu_model']}, {m['memory_mib']} MiB, "
        f"kernel {m['kernel']}, load average at start {m['loadavg_start'][0]:.2f}",
        f"versions: python {v['python']}, modelport {v['modelport']} ({v['modelport_commit']}), "
        f"uvicorn {v['uvicorn']}, uvloop {v['uvloop']}, httpx {v['httpx']}, "
        f"httpcore {v.get('httpcore', '—')}, "
        f"aiohttp {v.get('aiohttp', '—')}, baseline {v.get('baseline', '—')}, "
        f"litellm {v.get('litellm', '—')} (python {v.get('litellm_python', '—')}, uvicorn "
        f"{v.get('litellm_uvicorn', '—')}), {v['wrk']}",
        f"settings: {raw['settings']['rounds']} interleaved round(s), "
        f"{raw['settings']['duration_s']:g} s a point; throughput: best round; c=1 latency: "
        "the round with the lowest p99",
        "",
        "No-delay upstream (latency in ms; c=N columns: req/s, closed loop, wrk -c N):",
        "",
        "| target | c=1 p50 | c=1 p99 | added p50 | added p99 | c=1 | c=16 | c=64 | c=256 "
        "| max rate, p99≤10 ms, 0 errors | CPU µs/req (c=64) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, t in s.items():
        b = t["best"]
        c1 = t["quietest"].get("none-c1", {}).get("latency_ms", {})
        added = t.get("added_none-c1_ms", {})
        slo = f"{t['slo_rps']:.0f}" + (" (generator cap)" if t["slo_generator_capped"] else "")
        lines.append(
            f"| {name} | {_f(c1.get('p50'), '.3f')} | {_f(c1.get('p99'), '.3f')} "
            f"| {_f(added.get('p50'), '+.3f')} | {_f(added.get('p99'), '+.3f')} "
            + "".join(
                f"| {_f(b[k]['rps'], '.0f')}{'*' if b[k]['errors'] else ''} " if k in b else "| — "
                for k in ("none-c1", "none-c16", "none-c64", "none-c256")
            )
            + f"| {slo} | {_f(b.get('none-c64', {}).get('cpu_us_per_request'), '.1f')} |"
        )
    lines += [
        "",
        "\\* errors during the point. Slow upstream (50 ms), streaming (64 chunks 20 ms apart "
        "+ usage, c=64) and memory:",
        "",
        "| target | 50 ms c=1 added p50/p99 | 50 ms c=256 req/s (p99 ms) "
        "| SSE stream p50/p99 s | CPU µs/chunk | RSS MiB before → after |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for name, t in s.items():
        b = t["best"]
        add50 = t.get("added_delay50-c1_ms", {})
        d256 = b.get("delay50-c256")
        sse = b.get("sse-c64") or b.get("sse-c16")
        lines.append(
            f"| {name} | {_f(add50.get('p50'), '+.2f')} / {_f(add50.get('p99'), '+.2f')} "
            + (
                f"| {d256['rps']:.0f}{'*' if d256['errors'] else ''} "
                f"({d256['latency_ms']['p99']:.1f}) "
                if d256
                else "| — "
            )
            + (
                f"| {sse['latency_ms']['p50'] / 1000:.3f} / {sse['latency_ms']['p99'] / 1000:.3f}"
                f"{'*' if sse['errors'] else ''} | {_f(sse.get('cpu_us_per_chunk'), '.1f')} "
                if sse
                else "| — | — "
            )
            + f"| {t['rss_mib_before']:.0f} → {t['rss_mib_after']:.0f} |"
        )
    lines += ["", "The issue's targets for the gateway:", ""]
    for c in raw["summary"]["checks"]:
        verdict = {True: "MET", False: "NOT MET", None: "UNDECIDED (noise)"}[c["met"]]
        lines.append(f"- {verdict}: {c['target']}: {c['value']}")
    return "\n".join(lines)
