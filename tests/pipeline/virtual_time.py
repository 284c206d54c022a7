"""Deterministic asyncio for tests: a clock that jumps, and batches run inline.

:class:`VirtualTimeLoop` never waits: whenever nothing is ready to run, its clock jumps to the
next timer. ``asyncio.sleep``, ``wait_for`` and ``loop.time()`` then follow a timeline fixed by
the test, whatever the machine's load. :class:`InlineExecutor` runs ``run_in_executor`` calls on
the loop's own thread, so no thread scheduling enters the order of events either.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock advances by exactly the time it would otherwise wait."""

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0
        poll = self._selector.select

        def select(timeout: float | None = None):
            if timeout is None:  # nothing scheduled and nothing ready: the test would hang for real
                raise RuntimeError("the event loop has nothing left to run (deadlock in the test?)")
            self._now += max(timeout, 0.0)
            return poll(0)

        self._selector.select = select  # type: ignore[method-assign]

    def time(self) -> float:
        return self._now


class InlineExecutor(concurrent.futures.Executor):
    """Runs each submitted call at once, on the caller's thread."""

    def submit(self, fn, /, *args, **kwargs) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:  # handed to the awaiting caller, as a thread pool would
            future.set_exception(err)
        return future


def run_virtual(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion on a fresh :class:`VirtualTimeLoop`."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()
