"""``modelport operator`` with a memory probe: the what-if behind ``--memory-probe``.

On SIGUSR1 the operator (unchanged otherwise) collects garbage, writes the 20 most
numerous live object types, the bytes held by the largest kinds (``sys.getsizeof``,
shallow) and its RSS, then calls glibc's ``malloc_trim(0)`` and writes the RSS again:
what is live Python data versus memory freed but kept by the allocators. Output: the
JSON file named by MODELPORT_BENCH_PROBE_OUT.

    python -m benchmarks.operator.memory_what_if operator [flags...]
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.operator.as_shipped import without_kubernetes_client


def _rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def probe(*_: Any) -> None:
    """Write the probe's JSON (see the module docstring)."""
    before = _rss_mib()
    gc.collect()
    objects = gc.get_objects()
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for obj in objects:
        name = type(obj).__qualname__
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj)
    result = {
        "rss_mib_before": before,
        "gc_tracked_objects": len(objects),
        "top_counts": counts.most_common(20),
        "top_shallow_mib": [(k, round(v / 2**20, 1)) for k, v in sizes.most_common(12)],
        "rss_mib_after_collect": _rss_mib(),
    }
    del objects
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    result["rss_mib_after_malloc_trim"] = _rss_mib()
    Path(os.environ["MODELPORT_BENCH_PROBE_OUT"]).write_text(json.dumps(result, indent=1))


def main() -> int:
    """Install the probe, then run `modelport`."""
    signal.signal(signal.SIGUSR1, probe)
    without_kubernetes_client()  # as the image runs it (as_shipped.py)
    from modelport.cli import main as modelport_main

    return modelport_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
