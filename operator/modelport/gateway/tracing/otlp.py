"""Span records to an OTLP collector, with the OpenTelemetry SDK: the only module that
imports it, and only when tracing is configured (``pip install modelport[tracing]``;
the image has it).

:class:`TraceSink` is a :class:`~modelport.gateway.pipeline.QueueSink`: ``finish`` hands
it the finished context and returns; its task turns each sampled context into span
records (:func:`~.spans.request_spans`) and then into the SDK's ``ReadableSpan`` with the
ids the request path already drew (that is why the SDK's tracer, which draws its own,
is not used), and gives them to a ``BatchSpanProcessor``, whose thread sends them with
the OTLP/HTTP protobuf exporter (one POST per batch of up to 512 spans, at most every
second). A collector that is down costs the exporter's retries in that thread, never a
request; the processor's queue (2048 spans) drops beyond its bound, and so does ours.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from modelport import __version__
from modelport.gateway.context import RequestContext
from modelport.gateway.pipeline import QueueSink
from modelport.gateway.tracing.spans import SpanRecord, request_spans
from modelport.gatewayconfig import EntityConfig, GatewayConfig, Tracing

log = logging.getLogger("modelport.gateway.tracing")

SCOPE = InstrumentationScope("modelport.gateway", __version__)
EXPORT_TIMEOUT_SECONDS = 10.0
SCHEDULE_DELAY_MILLIS = 1000
_KINDS = {"server": SpanKind.SERVER, "internal": SpanKind.INTERNAL, "client": SpanKind.CLIENT}
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


class TraceSink(QueueSink):
    """Exports the spans of finished, sampled requests (off the request path)."""

    def __init__(
        self,
        resource: Resource,
        entities: Mapping[str, EntityConfig],
        processor: Callable[[], SpanProcessor],
        *,
        max_queued: int = 10000,
    ) -> None:
        super().__init__(self._export, max_queued=max_queued, name="traces")
        self._resource = resource
        self._entities = entities
        self._make_processor = processor
        self._processor: SpanProcessor | None = None
        self.exported = 0
        """Spans handed to the processor, for tests and logs."""

    def submit(self, ctx: RequestContext) -> None:
        """Queue a sampled request; an unsampled one costs nothing more."""
        if ctx.trace is not None and ctx.trace.sampled:
            super().submit(ctx)

    async def start(self) -> None:
        """Start the processor (its export thread) and the queue's task, in the serving
        process: a gateway built only to check its config starts no thread."""
        if self._processor is None:
            self._processor = self._make_processor()
        await super().start()

    async def aclose(self, drain_seconds: float = 5.0) -> None:
        """Turn what is queued into spans, then send them (in a thread: the exporter
        blocks) and stop the processor."""
        await super().aclose(drain_seconds)
        processor, self._processor = self._processor, None
        if processor is not None:
            await asyncio.to_thread(processor.shutdown)
        if self.dropped:
            log.warning("traces: %d requests' spans dropped (queue full)", self.dropped)

    async def _export(self, ctx: RequestContext) -> None:
        trace, processor = ctx.trace, self._processor
        assert trace is not None  # submit queues traced requests only
        assert processor is not None  # the task runs between start and aclose
        trace_id = int(trace.trace_id, 16)
        for record in request_spans(ctx, self._entities):
            processor.on_end(self._readable(trace_id, record))
            self.exported += 1

    def _readable(self, trace_id: int, record: SpanRecord) -> ReadableSpan:
        parent = None
        if record.parent_span_id is not None:
            parent = SpanContext(trace_id, int(record.parent_span_id, 16), False, _SAMPLED)
        status = Status(StatusCode.UNSET)
        if record.error is not None:
            status = Status(StatusCode.ERROR, record.error)
        return ReadableSpan(
            name=record.name,
            context=SpanContext(trace_id, int(record.span_id, 16), False, _SAMPLED),
            parent=parent,
            resource=self._resource,
            attributes=record.attributes,
            events=[Event(e.name, timestamp=_ns(e.time)) for e in record.events],
            kind=_KINDS[record.kind],
            status=status,
            start_time=_ns(record.start),
            end_time=_ns(record.end),
            instrumentation_scope=SCOPE,
        )


def build(config: GatewayConfig, tracing: Tracing) -> TraceSink:
    """The sink exporting ``config``'s endpoint's spans to ``tracing.endpoint``."""
    resource = Resource.create(
        {
            "service.name": tracing.service_name,
            "service.version": __version__,
            "modelport.endpoint": config.endpoint_name,
            **({"k8s.namespace.name": ns} if (ns := config.endpoint_namespace) else {}),
        }
    )
    exporter = OTLPSpanExporter(
        endpoint=f"{tracing.endpoint}/v1/traces", timeout=EXPORT_TIMEOUT_SECONDS
    )
    return TraceSink(
        resource,
        {e.name: e for e in config.entities},
        lambda: BatchSpanProcessor(exporter, schedule_delay_millis=SCHEDULE_DELAY_MILLIS),
    )


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)
