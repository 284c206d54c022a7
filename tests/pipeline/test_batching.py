"""MicroBatcher: concurrent requests share forward passes by key; failures reach every caller."""
from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from pipeline.batching import MicroBatcher


def test_concurrent_requests_are_batched_by_key():
    calls: list[list[tuple[str, int]]] = []
    threads: set[str] = set()

    def run_batch(items):
        calls.append(list(items))
        threads.add(threading.current_thread().name)
        return [value * 10 for _, value in items]

    async def main():
        batcher = MicroBatcher(run_batch, key=lambda item: item[0], max_batch=3, wait_s=0.01)
        requests = [("a", i) for i in range(5)] + [("b", i) for i in range(2)]
        return await asyncio.gather(*(batcher.submit(r) for r in requests)), batcher

    results, batcher = asyncio.run(main())
    assert results == [0, 10, 20, 30, 40, 0, 10]
    assert sorted(len(c) for c in calls) == [2, 2, 3]
    assert all(len({key for key, _ in call}) == 1 for call in calls)
    assert len(threads) == 1 and not any(t == threading.main_thread().name for t in threads)
    assert sorted(batcher.batch_sizes) == [2, 2, 3]


def test_a_failing_batch_fails_its_callers_only():
    def run_batch(items):
        if any(item == "bad" for item in items):
            raise RuntimeError("boom")
        return [item.upper() for item in items]

    async def main():
        batcher = MicroBatcher(run_batch, key=lambda item: item == "bad", max_batch=4)
        return await asyncio.gather(batcher.submit("x"), batcher.submit("bad"), batcher.submit("y"), return_exceptions=True)

    good_x, bad, good_y = asyncio.run(main())
    assert (good_x, good_y) == ("X", "Y")
    assert isinstance(bad, RuntimeError) and "boom" in str(bad)


def test_options_are_checked():
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(lambda items: items, key=id, max_batch=0)
    with pytest.raises(ValueError, match="wait_s"):
        MicroBatcher(lambda items: items, key=id, max_batch=1, wait_s=-1)


def test_interval_union_is_exact_and_bounded():
    from pipeline.progress import IntervalUnion

    rng = np.random.default_rng(0)
    union = IntervalUnion(horizon_s=50.0, max_open=16)
    covered = np.zeros(20000, dtype=bool)
    order = np.concatenate([rng.permutation(block) for block in np.arange(2000).reshape(100, 20)])
    for start in order * 10:  # a little out of order, overlapping, some identical
        lo = start + int(rng.integers(0, 5))
        hi = lo + int(rng.integers(1, 25))
        union.add(lo / 10, hi / 10)
        covered[lo:hi] = True
    assert len(union.open) < 100  # memory does not grow with the number of intervals
    assert union.total == pytest.approx(covered.sum() / 10, rel=1e-9)
