"""MicroBatcher: concurrent requests share forward passes by key; failures reach every caller."""
from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from pipeline.execute.batching import MicroBatcher
from tests.pipeline.virtual_time import InlineExecutor, run_virtual


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
    from pipeline.execute.progress import IntervalUnion

    rng = np.random.default_rng(0)
    union = IntervalUnion(max_open=64)
    covered = np.zeros(20000, dtype=bool)
    order = np.concatenate([rng.permutation(block) for block in np.arange(2000).reshape(100, 20)])
    for start in order * 10:  # a little out of order (within 20 calls), overlapping, some identical
        lo = start + int(rng.integers(0, 5))
        hi = lo + int(rng.integers(1, 25))
        union.add(lo / 10, hi / 10)
        covered[lo:hi] = True
    assert len(union.open) <= 64  # memory does not grow with the number of intervals
    assert union.total == pytest.approx(covered.sum() / 10, rel=1e-9)


def test_older_songs_go_first_and_fill_the_batch_in_priority_order():
    calls: list[list[int]] = []

    def run_batch(items):
        calls.append([priority for priority, _ in items])
        return list(items)

    async def main():
        batcher = MicroBatcher(run_batch, key=lambda item: item[1], max_batch=2)
        blocker = asyncio.ensure_future(batcher.submit((-1, "x"), priority=-1))  # occupies the worker
        await asyncio.sleep(0)
        waiting = [asyncio.ensure_future(batcher.submit((p, key), priority=p)) for p, key in [(5, "a"), (3, "b"), (1, "a"), (4, "a")]]
        await asyncio.gather(blocker, *waiting)

    asyncio.run(main())
    # after the first call: group "a" holds the oldest song (1); it is filled oldest first
    assert calls == [[-1], [1, 4], [3], [5]]


def test_a_group_waits_for_companions_while_they_keep_arriving():
    """On a virtual clock: arrival times are exact whatever the machine's load."""
    sizes: list[int] = []

    def run_batch(items):
        sizes.append(len(items))
        return items

    async def arrive(batcher, delays, expect=None):
        async def one(delay, index):
            await asyncio.sleep(delay)
            return await batcher.submit(index, expect=expect)

        return await asyncio.gather(*(one(delay, i) for i, delay in enumerate(delays)))

    def batcher(gap_s):
        return MicroBatcher(run_batch, key=lambda _: 0, max_batch=4, wait_s=0.5, gap_s=gap_s, executor=InlineExecutor())

    # requests 4 ms apart: the batcher (gap 10 ms) waits for all of them
    run_virtual(arrive(batcher(0.01), [0, 0.004, 0.008, 0.012]))
    assert sizes == [4]
    # a straggler beyond the gap starts the next batch
    sizes.clear()
    run_virtual(arrive(batcher(0.01), [0, 0.004, 0.1]))
    assert sizes == [2, 1]
    # when only two songs can share the batch, two is full: nobody waits for the gap
    sizes.clear()
    started = run_virtual(_timed(arrive(batcher(0.2), [0, 0], expect=2)))
    assert sizes == [2] and started < 0.1


async def _timed(coroutine) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    await coroutine
    return loop.time() - start


@pytest.mark.parametrize("follow_ups, expected", [(True, [2, 4, 4, 2]), (False, [2, 2, 2, 2, 2, 2])])
def test_a_group_waits_for_members_whose_next_request_is_due(follow_ups, expected):
    """Songs A, B start 60 ms before C, D, and each sends its next window 80 ms after getting
    the last (longer than the 20 ms gap). Knowing A and B come back, the late pair waits for
    them and all four run in step; without that knowledge the pairs stay out of step. (On a
    virtual clock: the timeline is exact whatever the machine's load.)"""
    batches: list[list[tuple[str, int]]] = []

    def run_batch(items):
        batches.append(sorted(items))
        return items

    async def song(batcher, name, start):
        await asyncio.sleep(start)
        for window in range(3):
            await batcher.submit((name, window), expect=4, member=name, follow_up=follow_ups and window < 2)
            await asyncio.sleep(0.08)

    async def main():
        batcher = MicroBatcher(run_batch, key=lambda _: 0, max_batch=4, wait_s=1.0, gap_s=0.02, executor=InlineExecutor())
        await asyncio.gather(*(song(batcher, name, start) for name, start in [("a", 0), ("b", 0), ("c", 0.06), ("d", 0.06)]))

    run_virtual(main())
    assert [len(b) for b in batches] == expected
    assert sorted(item for b in batches for item in b) == sorted((n, w) for n in "abcd" for w in range(3))
