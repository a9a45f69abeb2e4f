"""The ServingEndpoint controller: Kopf handlers over a level-based reconcile.

Run it with `modelport operator` (flags: see `modelport operator --help`) or,
equivalently, `kopf run -m modelport.controller [--all-namespaces | -n NS]
[--liveness URL]` with the settings in MODELPORT_* variables (`modelport.settings`).
Importing this package registers the handlers.
"""

from modelport.controller import handlers

__all__ = ["handlers"]
