"""The ServingEndpoint controller: Kopf watches feed a cache, a work queue feeds
reconciles.

Run it with `modelport operator` (flags: see `modelport operator --help`) or,
equivalently, `kopf run -m modelport.controller [--all-namespaces | -n NS]
[--liveness URL]` with the settings in MODELPORT_* variables (`modelport.settings`).
Importing this package registers the handlers.

Top-down: `handlers` (Kopf: what is watched and kept), `manager` (which events
matter; workers), `queue` (de-duplicating, debounced, backoff), `reconcile` (one
endpoint), `cache` (the records the watches keep), `expectations` (our writes the
watches have not shown yet), `cli` (the flags).
"""

from modelport.controller import handlers

__all__ = ["handlers"]
