"""Traces of the gateway's requests: OpenTelemetry spans with the GenAI conventions.

Each traced request becomes a tree of spans, exported over OTLP/HTTP to the collector
the cluster names (``MODELPORT_TRACING``, Helm value ``tracing``)::

    POST /v1/chat/completions        SERVER    the request as the client saw it
    └─ attempt gpt-4o                INTERNAL  one try of one entity (several with fallback)
       └─ chat gpt-4o                CLIENT    the upstream call: gen_ai.* attributes

How it stays off the hot path:

- With no collector configured none of this is imported and the pipeline has no stage
  for it: the request path is the untraced one (``benchmarks/gateway/run --baseline``
  measures it).
- With one, the request path only draws ids (:mod:`.stages`: a ``traceparent`` read at
  arrival, a span id per attempt, sent upstream to in-cluster models so that their own
  spans join the trace). Spans are built *after* the request, from its finished
  :class:`~modelport.gateway.context.RequestContext` (:mod:`.spans`, pure), by a queue
  sink's task, and exported in batches by the OpenTelemetry SDK's own thread
  (:mod:`.otlp`, the only module that imports it). A full queue drops and counts.

Layout: ``ids`` (pure: W3C trace context), ``spans`` (pure: context -> span records),
``stages`` (the opener and attempt hook), ``otlp`` (the SDK adapter and the sink).
"""
