"""Small helpers shared by tests of every tier."""

from __future__ import annotations

import asyncio
import functools
import subprocess
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

T = TypeVar("T")
P = ParamSpec("P")


def eventually(check: Callable[[], T | None], timeout: float = 60, interval: float = 0.25) -> T:
    """Poll `check` until it returns a truthy value, and return that value.

    Raises AssertionError naming the last value seen when `timeout` runs out, so
    a failing test says what the state was instead of just "timed out".
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")
        time.sleep(interval)


class FakeClock:
    """A clock that moves only when told: pass it as both the monotonic clock and the wall
    clock of the code under test. It starts at the real Unix time, so tokens minted from it
    look current to anything else."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds


def asynchronous(test: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """Run an async test function on a fresh event loop (pytest sees its parameters)."""

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def stop_processes(procs: Sequence[subprocess.Popen[bytes]], grace: float = 10) -> None:
    """Terminate every process, then wait for each, killing those that outlive `grace`."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
