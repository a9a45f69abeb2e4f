"""Small helpers shared by tests of every tier."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


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
