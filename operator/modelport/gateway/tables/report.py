"""``modelport usage``: one endpoint's usage per principal over a period.

The query is :data:`~.queries.PRINCIPALS_OF_ENDPOINT` (an index range scan on
``(endpoint_namespace, endpoint_name, request_time)``); formatting is pure and tested
apart from the database.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import io
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from modelport.gateway.tables.queries import DSN_ENV, PRINCIPALS_OF_ENDPOINT


class UsageError(Exception):
    """A problem the user can fix; the message says how."""


@dataclass(frozen=True)
class PrincipalUsage:
    """One line of the report."""

    requester: str
    requester_type: str
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    estimated: int
    """Requests whose token counts were estimated (the provider reported none)."""
    mean_ttft_ms: float | None


def main(args: argparse.Namespace) -> int:
    """Run the report; 0 on success, 2 on a usage problem (said on stderr)."""
    try:
        since, until = period(args.since, args.until, args.days, dt.datetime.now(dt.UTC))
        dsn = connection_string(args.dsn_file, os.environ)
        lines = asyncio.run(fetch(dsn, args.namespace, args.endpoint, since, until))
    except UsageError as exc:
        print(f"modelport usage: {exc}", file=sys.stderr)
        return 2
    print(render(lines, args.output, f"{args.namespace}/{args.endpoint}", since, until), end="")
    return 0


def period(
    since: str | None, until: str | None, days: float, now: dt.datetime
) -> tuple[dt.datetime, dt.datetime]:
    """The period ``[since, until)`` from the arguments (UTC)."""
    end = parse_time(until, "--until") if until else now
    start = parse_time(since, "--since") if since else end - dt.timedelta(days=days)
    if start >= end:
        raise UsageError(
            f"--since ({start.isoformat()}) must be before --until ({end.isoformat()})"
        )
    return start, end


def parse_time(value: str, flag: str) -> dt.datetime:
    """A date (midnight UTC) or an ISO time (UTC unless it names a zone)."""
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"{flag} {value!r} is not a date or time; write 2026-12-01 or 2026-12-01T08:00+01:00"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def connection_string(dsn_file: str | None, env: Mapping[str, str]) -> str | None:
    """The DSN from ``--dsn-file``, else the environment; None lets asyncpg use libpq's
    ``PG*`` variables."""
    if dsn_file:
        try:
            text = Path(dsn_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"--dsn-file {dsn_file}: {exc.strerror}") from None
        if not text:
            raise UsageError(f"--dsn-file {dsn_file} is empty; write the connection string in it")
        return text
    return env.get(DSN_ENV) or None


async def fetch(
    dsn: str | None, namespace: str, endpoint: str, since: dt.datetime, until: dt.datetime
) -> list[PrincipalUsage]:
    """The report's lines, from the database."""
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise UsageError(
            f"cannot connect to the usage database ({type(exc).__name__}); give its connection "
            f"string in --dsn-file or {DSN_ENV}"
        ) from None
    try:
        rows = await conn.fetch(PRINCIPALS_OF_ENDPOINT, namespace, endpoint, since, until)
    except asyncpg.UndefinedTableError:
        raise UsageError(
            "the database has no table modelport_usage: no gateway has written usage rows "
            "to it yet (is usageDatabase set in the chart, and usageTrackingConfig enabled?)"
        ) from None
    finally:
        await conn.close()
    return [
        PrincipalUsage(
            requester=r["requester"],
            requester_type=r["requester_type"],
            requests=r["requests"],
            errors=r["errors"],
            input_tokens=int(r["input_tokens"] or 0),
            output_tokens=int(r["output_tokens"] or 0),
            estimated=r["estimated"],
            mean_ttft_ms=None if r["mean_ttft_ms"] is None else float(r["mean_ttft_ms"]),
        )
        for r in rows
    ]


HEADERS = (
    "PRINCIPAL",
    "KIND",
    "REQUESTS",
    "ERRORS",
    "INPUT TOKENS",
    "OUTPUT TOKENS",
    "ESTIMATED",
    "MEAN TTFT",
)


def render(
    lines: Sequence[PrincipalUsage],
    output: str,
    endpoint: str,
    since: dt.datetime,
    until: dt.datetime,
) -> str:
    """The report as a table (with totals), JSON or CSV."""
    if output == "json":
        return json.dumps([asdict(line) for line in lines], indent=2) + "\n"
    if output == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([f.lower().replace(" ", "_") for f in HEADERS])
        for line in lines:
            writer.writerow(
                [
                    line.requester,
                    line.requester_type,
                    line.requests,
                    line.errors,
                    line.input_tokens,
                    line.output_tokens,
                    line.estimated,
                    "" if line.mean_ttft_ms is None else f"{line.mean_ttft_ms:.1f}",
                ]
            )
        return buffer.getvalue()
    title = f"Usage of {endpoint} from {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC\n"
    if not lines:
        return title + "No requests in this period.\n"
    table = [list(HEADERS)]
    for line in lines:
        table.append(
            [
                line.requester,
                line.requester_type,
                f"{line.requests:,}",
                f"{line.errors:,}",
                f"{line.input_tokens:,}",
                f"{line.output_tokens:,}",
                f"{line.estimated:,}",
                "-" if line.mean_ttft_ms is None else f"{line.mean_ttft_ms:,.0f} ms",
            ]
        )
    table.append(
        [
            "TOTAL",
            "",
            f"{sum(x.requests for x in lines):,}",
            f"{sum(x.errors for x in lines):,}",
            f"{sum(x.input_tokens for x in lines):,}",
            f"{sum(x.output_tokens for x in lines):,}",
            f"{sum(x.estimated for x in lines):,}",
            "",
        ]
    )
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADERS))]
    out = []
    for row in table:
        cells = [
            cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        out.append("  ".join(cells).rstrip())
    return title + "\n".join(out) + "\n"
