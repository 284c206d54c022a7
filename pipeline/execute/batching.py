"""Cross-request batching inside an asyncio actor.

Concurrent calls to an actor method each ``await`` :meth:`MicroBatcher.submit`; the batcher takes
the oldest request and every pending one that can share its forward pass (same ``key``), up to
``max_batch``, and runs them in one call on a worker thread so the event loop keeps accepting
requests meanwhile. Each caller gets its own result or exception.

When the oldest request's group is not full, the batcher waits for it to fill while requests
keep arriving: until no request has come for ``gap_s``, and ``wait_s`` at most. Requests of
songs whose previous window just finished arrive in a burst a few milliseconds after it (and the
first windows of newly admitted songs one by one as their labels are made); a batch run without
them splits the songs into groups that stay out of step for the rest of the run (two half
batches cost nearly twice one full batch), while a group that cannot fill costs only ``gap_s``.

A request may also say whose it is (``member``, e.g. its song) and that the member will send
another after it (``follow_up``). Once its batch is done, that member is *due*: a group that is
not full keeps waiting (up to ``wait_s``) while members are due, whatever the gap, because their
next requests are on their way. This re-joins songs that fell out of step: the smaller group
waits for the larger one's songs to come back instead of running alone again.
"""
from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

ARRIVAL_GAP_S = 0.015  # longer than the spread of a burst of requests under load, shorter than a forward pass

Request = TypeVar("Request")
Result = TypeVar("Result")


@dataclass(order=True)
class _Pending(Generic[Request, Result]):
    """A queued request: ordered by (priority, arrival)."""

    rank: tuple[Any, int]
    request: Request = field(compare=False)
    key: Hashable = field(compare=False)
    future: asyncio.Future[Result] = field(compare=False)
    expect: int = field(compare=False, default=0)
    member: Hashable = field(compare=False, default=None)
    follow_up: bool = field(compare=False, default=False)


class MicroBatcher(Generic[Request, Result]):
    """Gathers concurrent requests into batches for ``run_batch``.

    Args:
        run_batch: called with a list of requests sharing one key; returns one result per request.
        key: the batch key of a request.
        max_batch: most requests per call.
        wait_s: the longest a group that is not full waits for companions (0 = run what is there).
        executor: where ``run_batch`` runs (default: one dedicated thread, so calls never overlap).
        gap_s: stop waiting when no request arrived for this long (at most ``wait_s``).

    Requests are served by (priority, arrival): the next batch is the group of the first request
    in that order, filled in that order. Giving older songs priority lets them finish first,
    instead of every song in flight advancing in step and finishing together.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Request]], Sequence[Result]],
        key: Callable[[Request], Hashable],
        max_batch: int,
        wait_s: float = 0.0,
        executor: Executor | None = None,
        gap_s: float = ARRIVAL_GAP_S,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if wait_s < 0:
            raise ValueError(f"wait_s must be >= 0, got {wait_s}")
        self._run_batch = run_batch
        self._key = key
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.gap_s = min(gap_s, wait_s)
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch")
        self._pending: list[_Pending[Request, Result]] = []
        self._arrivals = itertools.count()
        self._worker: asyncio.Task[None] | None = None
        self._arrived: asyncio.Event | None = None
        self._due: dict[Hashable, float] = {}  # member -> until when its next request is waited for
        self.batch_sizes: list[int] = []

    async def submit(
        self,
        request: Request,
        priority: Any = 0,
        expect: int | None = None,
        member: Hashable = None,
        follow_up: bool = False,
    ) -> Result:
        """Queue one request and wait for its result.

        Args:
            request: the request.
            priority: smaller runs first (then arrival order).
            expect: how many requests could share its batch at most (e.g. the songs in flight
                on this actor); a group that size is not waited on. None: ``max_batch``.
            member: who sends it (e.g. its song); None: anonymous.
            follow_up: ``member`` sends another request once this one is done.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        rank = (priority, next(self._arrivals))
        expected = self.max_batch if expect is None else max(1, min(expect, self.max_batch))
        self._pending.append(_Pending(rank, request, self._key(request), future, expected, member, follow_up))
        self._due.pop(member, None)
        if self._arrived is not None:
            self._arrived.set()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        return await future

    def _next_key(self) -> Hashable:
        """The key of the next batch: the first pending request's."""
        return min(self._pending).key

    def _next_group_full(self) -> bool:
        key = self._next_key()
        group = [item for item in self._pending if item.key == key]
        return len(group) >= max(item.expect for item in group)

    async def _wait_for_companions(self) -> None:
        """Wait until the next group is full (as full as its requests expect), or no member is
        due and no request came for ``gap_s``, or ``wait_s`` passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while not self._next_group_full():
            now = loop.time()
            self._due = {member: until for member, until in self._due.items() if until > now}
            # members on their way: wait for them (as long as one is due); otherwise for the gap
            horizon = max(self._due.values(), default=now + self.gap_s)
            remaining = min(deadline, horizon) - now
            if remaining <= 0:
                return
            self._arrived = asyncio.Event()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return
            finally:
                self._arrived = None

    def _take_batch(self) -> list[_Pending[Request, Result]]:
        key = self._next_key()
        group = sorted(item for item in self._pending if item.key == key)[: self.max_batch]
        taken = {id(item) for item in group}
        self._pending = [item for item in self._pending if id(item) not in taken]
        return group

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            if self.wait_s > 0:
                await self._wait_for_companions()
            batch = self._take_batch()
            self.batch_sizes.append(len(batch))
            try:
                results: Any = await loop.run_in_executor(self._executor, self._run_batch, [item.request for item in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} requests")
            except Exception as err:  # every caller of the batch sees the failure
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(err)
                continue
            until = loop.time() + self.wait_s
            for item, result in zip(batch, results):
                if item.follow_up and item.member is not None:
                    self._due[item.member] = until
                if not item.future.done():
                    item.future.set_result(result)
