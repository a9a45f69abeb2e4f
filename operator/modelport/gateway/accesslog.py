"""The gateway's access log: one line per finished request, off the request path.

On when the cluster asks for it (``accessLog`` in the gateway's config; Helm value
``gateway.accessLog``). A :class:`~modelport.gateway.pipeline.QueueSink` takes the
finished context at ``finish`` and its task writes the line, so a slow log destination
never holds a request; a full queue drops and counts. The line carries what joins it to
the rest: the request id (also the usage row's key) and the trace id (also in the usage
row, and the trace's id in the tracing back end)::

    request=3f…01 trace=4bf92f3577b34da6a3ce929d0e0e4736 route=/v1/chat/completions
    principal=service_principal:system:serviceaccount:team-a:app entity=gpt-4o status=200
    duration_ms=812.4 ttft_ms=95.1 tokens=42/118 attempts=1

Nothing secret: no header, no body, no credential; the caller by name only (as the
metrics and usage rows name it).
"""

from __future__ import annotations

import logging

from modelport.gateway.context import RequestContext
from modelport.gateway.pipeline import QueueSink

log = logging.getLogger("modelport.gateway.access")


def access_line(ctx: RequestContext) -> str:
    """The log line of a finished request. Pure."""
    trace = ctx.trace.trace_id if ctx.trace is not None else "-"
    principal = ctx.principal.label if ctx.principal is not None else "anonymous"
    duration = (ctx.ended if ctx.ended is not None else ctx.started) - ctx.started
    ttft = ctx.time_to_first_byte
    usage = ctx.usage
    tokens = f"{usage.prompt_tokens}/{usage.completion_tokens}" if usage is not None else "-"
    if usage is not None and usage.estimated:
        tokens += "~"
    parts = [
        f"request={ctx.request_id}",
        f"trace={trace}",
        f"route={ctx.route}",
        f"principal={principal}",
        f"entity={ctx.entity or '-'}",
        f"status={ctx.status or 499}",
        f"duration_ms={duration * 1000:.1f}",
        f"ttft_ms={ttft * 1000:.1f}" if ttft is not None else "ttft_ms=-",
        f"tokens={tokens}",
        f"attempts={len(ctx.attempts)}",
    ]
    if ctx.error_code is not None:
        parts.append(f"error={ctx.error_code}")
    return " ".join(parts)


class AccessLog(QueueSink):
    """Writes :func:`access_line` of each finished request to the ``modelport.gateway.access``
    logger (INFO)."""

    def __init__(self, *, max_queued: int = 10000) -> None:
        super().__init__(self._write, max_queued=max_queued, name="access-log")

    async def _write(self, ctx: RequestContext) -> None:
        log.info("%s", access_line(ctx))
