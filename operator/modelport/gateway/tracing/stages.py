"""The tracing stages on the request path: they only draw and carry ids.

:class:`TraceStart` is both an :class:`~modelport.gateway.pipeline.Opener` (at arrival:
the caller's ``traceparent`` or a new trace) and an
:class:`~modelport.gateway.pipeline.AttemptHook` (per attempt: a span id for the
upstream call, sent to in-cluster models as their parent). Building and exporting the
spans happens after the request, in :mod:`.otlp`.
"""

from __future__ import annotations

from modelport.gateway.context import Attempt, RequestContext, TraceIds
from modelport.gateway.pipeline import Headers
from modelport.gateway.providers.base import Call
from modelport.gateway.tracing.ids import (
    new_span_id,
    new_trace_id,
    parse_traceparent,
    sampled_by_ratio,
    traceparent,
)
from modelport.gatewayconfig import ProviderName

PROPAGATED = frozenset({ProviderName.SELF_HOSTED})
"""Entities that get our ``traceparent``: the cluster's own inference servers (vLLM,
SGLang and llama.cpp read it). External providers do not: a trace id says nothing to
them, and what leaves the cluster is kept to what the call needs."""


class TraceStart:
    """Gives each request its trace context and each attempt its span id."""

    def __init__(self, sample_ratio: float = 1.0) -> None:
        self.sample_ratio = sample_ratio

    def open(self, ctx: RequestContext, headers: Headers) -> None:
        """The caller's trace (its ``traceparent`` and sampled flag), or a new one drawn
        at the sample ratio."""
        for name, value in headers:
            if name == b"traceparent":
                parsed = parse_traceparent(value.decode("latin-1"))
                if parsed is not None:
                    trace_id, parent, sampled = parsed
                    ctx.trace = TraceIds(trace_id, new_span_id(), parent, sampled)
                    return
                break
        trace_id = new_trace_id()
        sampled = sampled_by_ratio(trace_id, self.sample_ratio)
        ctx.trace = TraceIds(trace_id, new_span_id(), None, sampled)

    async def before(self, ctx: RequestContext, call: Call, attempt: Attempt) -> None:
        """A span id for this attempt's upstream call, sent upstream when the entity is
        in the cluster."""
        trace = ctx.trace
        if trace is None:
            call.traceparent = None
            return
        attempt.span_id = new_span_id()
        if call.entity.provider in PROPAGATED:
            call.traceparent = traceparent(trace.trace_id, attempt.span_id, trace.sampled)
        else:
            call.traceparent = None

    def after(self, ctx: RequestContext, attempt: Attempt) -> None:
        """Nothing: the attempt's times and outcome are already on it."""
