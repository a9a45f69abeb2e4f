"""`modelport operator`: run the controller (its flags are defined in `modelport.settings`).

`modelport.settings.add_operator_subcommand` turns every flag into the MODELPORT_*
variable of the same name *before* this module, and with it the handlers, is
imported: the handlers read their settings at import, so flags and environment are
one mechanism and `kopf run -m modelport.controller` behaves the same given the same
variables.
"""

from __future__ import annotations

import logging

import kopf

from modelport.controller import handlers


def main() -> int:
    """Run Kopf with the handlers of `modelport.controller` until it is stopped."""
    settings = handlers.SETTINGS
    log_format = kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(
        debug=settings.log_level == "DEBUG",
        verbose=settings.log_level in ("DEBUG", "INFO"),
        log_format=log_format,
    )
    logging.getLogger().setLevel(settings.log_level)
    liveness = None if settings.liveness.lower() == "off" else settings.liveness
    kopf.run(
        standalone=True,
        clusterwide=settings.clusterwide,
        namespaces=list(settings.namespaces),
        liveness_endpoint=liveness,
    )
    return 0
