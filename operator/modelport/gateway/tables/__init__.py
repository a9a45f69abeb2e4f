"""Usage rows and inference tables: what each finished request leaves behind in PostgreSQL.

Two features of ``spec.aiGateway``, one mechanism:

- **usage rows** (``usageTrackingConfig.enabled`` with the cluster's usage database): one
  row per request in ``modelport_usage``: who called which entity, status, tokens
  (the provider's or estimated, marked), characters, timings, fallback attempts, the
  body's ``client_request_id`` and ``usage_context``;
- **inference tables** (``inferenceTableConfig.enabled``): one row per sampled request
  with its request and response payloads (a stream's chunks aggregated into the response
  they amount to), in ``<schema>.<prefix>_payload``, or as JSON lines on stdout.

How a request gets there, and why it never waits for the database:

1. a tap (:mod:`.capture`) sees the response as the client gets it: a whole body is kept
   by reference; a stream's chunks are counted and, when payloads are captured,
   aggregated (:mod:`.aggregate`) up to the payload limit;
2. at ``finish`` each table's :class:`~.writer.TableWriter` turns the context into a
   compact row (:mod:`.records`, pure) and appends it to a bounded buffer, or drops and
   counts it when the buffer is full;
3. the writer's own task writes the buffer in batches (one multi-row ``INSERT … SELECT
   FROM unnest(…)`` per batch, :mod:`.postgres`) and, when the database is slow or down,
   keeps retrying with backoff while new rows wait in the buffer up to its bound.

The gateway creates and migrates its tables itself (:mod:`.schema`), under an advisory
lock so that replicas do not race, and deletes rows older than the retention period.
"""
