"""``modelport operator`` with Kopf's handler thread pool resized: the what-if behind
``--operator-threads``. Not the operator as shipped (it keeps Kopf's default pool,
min(32, cores + 4) threads): an experiment to show how much of the operator's time
to READY is waiting for its few threads, each blocked on one API call at a time.

    python -m benchmarks.operator.threads_what_if THREADS operator [flags...]
"""

from __future__ import annotations

import sys
from typing import Any

import kopf


def main() -> int:
    """Register a start-up handler that resizes the pool, then run `modelport`."""
    threads = int(sys.argv[1])

    @kopf.on.startup()
    def resize_pool(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.execution.max_workers = threads

    from modelport.cli import main as modelport_main

    return modelport_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
