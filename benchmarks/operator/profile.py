"""``--profile``: py-spy samples of the operator during its largest round.

py-spy (from the gateway benchmark's tools venv, ``benchmarks.gateway.profile``) records
from the moment the endpoints are applied until all are READY, non-blocking, at 100 Hz,
idle threads left out, so the samples show where the operator spends CPU. The collapsed
stacks go to ``benchmarks/results/operator-profile-n<N>.collapsed`` and the top
functions into the JSON. Profiling costs CPU on a 2-core machine: figures from a
``--profile`` run are not the benchmark's figures.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.gateway.profile import tools_venv, top

RATE = 100
REPO = Path(__file__).resolve().parents[2]


class Profiler:
    """One py-spy recording of one process, from construction until :meth:`stop`."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [
                str(tools_venv() / "bin/py-spy"),
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(RATE),
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop(self) -> None:
        """End the recording; py-spy writes its file on SIGINT."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def result(self) -> dict[str, Any]:
        """The top functions (inclusive and self, % of samples) and the stacks' file."""
        if not self.out.exists():
            return {"error": "py-spy wrote no samples"}
        return {"top": top(self.out, 30), "stacks": str(self.out.relative_to(REPO))}

    @staticmethod
    def factory(size: int) -> Callable[[int, int], Profiler | None]:
        """A ``profile(pid, n)`` for ``operator_round``: records the round of ``size``."""
        tools_venv()  # install before any round starts, not inside one

        def start(pid: int, n: int) -> Profiler | None:
            if n != size:
                return None
            out = REPO / "benchmarks/results" / f"operator-profile-n{n}.collapsed"
            return Profiler(pid, out)

        return start
