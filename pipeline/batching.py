"""Cross-request batching inside an asyncio actor.

Concurrent calls to an actor method each ``await`` :meth:`MicroBatcher.submit`; the batcher waits
``wait_s`` for more requests, takes the oldest request and every pending one that can share its
forward pass (same ``key``), up to ``max_batch``, and runs them in one call on a worker thread so
the event loop keeps accepting requests meanwhile. Each caller gets its own result or exception.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

Request = TypeVar("Request")
Result = TypeVar("Result")


class MicroBatcher(Generic[Request, Result]):
    """Gathers concurrent requests into batches for ``run_batch``.

    Args:
        run_batch: called with a list of requests sharing one key; returns one result per request.
        key: the batch key of a request.
        max_batch: most requests per call.
        wait_s: how long to wait for companions once a request arrives (0 = run what is there).
        executor: where ``run_batch`` runs (default: one dedicated thread, so calls never overlap).
    """

    def __init__(
        self,
        run_batch: Callable[[list[Request]], Sequence[Result]],
        key: Callable[[Request], Hashable],
        max_batch: int,
        wait_s: float = 0.0,
        executor: Executor | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if wait_s < 0:
            raise ValueError(f"wait_s must be >= 0, got {wait_s}")
        self._run_batch = run_batch
        self._key = key
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch")
        self._pending: list[tuple[Request, Hashable, asyncio.Future[Result]]] = []
        self._worker: asyncio.Task[None] | None = None
        self.batch_sizes: list[int] = []

    async def submit(self, request: Request) -> Result:
        """Queue one request and wait for its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((request, self._key(request), future))
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        return await future

    def _take_batch(self) -> list[tuple[Request, Hashable, asyncio.Future[Result]]]:
        key = self._pending[0][1]
        batch, rest = [], []
        for item in self._pending:
            (batch if item[1] == key and len(batch) < self.max_batch else rest).append(item)
        self._pending = rest
        return batch

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            if self.wait_s > 0 and len(self._pending) < self.max_batch:
                await asyncio.sleep(self.wait_s)
            batch = self._take_batch()
            self.batch_sizes.append(len(batch))
            try:
                results: Any = await loop.run_in_executor(self._executor, self._run_batch, [item[0] for item in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} requests")
            except Exception as err:  # every caller of the batch sees the failure
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            for (_, _, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)
