"""The work queue: de-duplicated, debounced, one worker per key, per-key backoff."""

from __future__ import annotations

import asyncio

from modelport.controller.queue import WorkQueue


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _queue(clock: Clock) -> WorkQueue[str]:
    return WorkQueue(backoff_base=0.5, backoff_cap=8.0, clock=clock)


def test_a_burst_of_adds_is_one_turn_after_the_debounce() -> None:
    clock = Clock()
    queue = _queue(clock)
    for _ in range(50):
        queue.add("a", 0.5)
        clock.now += 0.001  # adding again never pushes the turn later
    assert len(queue) == 1 and queue.take() is None
    clock.now += 0.5
    assert queue.take() == "a" and queue.take() is None


def test_an_earlier_add_moves_the_turn_forward() -> None:
    clock = Clock()
    queue = _queue(clock)
    queue.add("a", 5)
    queue.add("a", 0)
    assert queue.take() == "a"


def test_a_key_is_handed_to_one_worker_at_a_time() -> None:
    clock = Clock()
    queue = _queue(clock)
    queue.add("a")
    assert queue.take() == "a"
    queue.add("a")  # an event while it is being reconciled
    queue.add("b")
    assert queue.take() == "b" and queue.take() is None  # not "a" again yet
    queue.done("a")
    assert queue.take() == "a"  # now it runs again, for the change it missed


def test_failures_back_off_exponentially_up_to_the_cap_and_success_forgets() -> None:
    clock = Clock()
    queue = _queue(clock)
    queue.add("a")
    delays = []
    for _ in range(7):
        assert queue.take() == "a"
        delays.append(queue.done("a", failed=True))
        assert queue.take() is None  # not before its backoff
        assert queue.next_due_in() == delays[-1]
        clock.now += delays[-1] or 0
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert queue.failures("a") == 7
    assert queue.take() == "a"
    assert queue.done("a") is None and queue.failures("a") == 0
    queue.add("a")
    assert queue.take() == "a"
    assert queue.done("a", failed=True) == 0.5  # counting starts over


def test_an_event_brings_a_backing_off_key_back_sooner() -> None:
    clock = Clock()
    queue = _queue(clock)
    queue.add("a")
    for _ in range(4):
        queue.take()
        queue.done("a", failed=True)
        clock.now += 100
    assert queue.take() == "a"
    assert queue.done("a", failed=True) == 8.0
    queue.add("a", 0.5)  # the cause may be fixed: try soon
    clock.now += 0.5
    assert queue.take() == "a"
    assert queue.failures("a") == 5  # the count stays until a success


def test_workers_wait_for_due_keys() -> None:
    async def scenario() -> list[str]:
        queue: WorkQueue[str] = WorkQueue()
        got: list[str] = []

        async def worker() -> None:
            while True:
                key = await queue.get()
                got.append(key)
                queue.done(key)

        tasks = [asyncio.create_task(worker()) for _ in range(3)]
        queue.add("later", 0.05)
        queue.add("now")
        queue.add("now")
        await asyncio.sleep(0.01)
        assert got == ["now"]
        await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
        return got

    assert asyncio.run(scenario()) == ["now", "later"]
