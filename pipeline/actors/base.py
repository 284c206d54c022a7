"""What every stage actor shares: torch threads, device, identity, the run's storage, its stage object; and assembling token spans from chunks."""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import torch

from pipeline.actors import builders
from pipeline.execute.batching import MicroBatcher
from pipeline.store.parts import Chunk
from pipeline.store.writer import RunStorage


def assemble(chunks: Sequence[Chunk], level: int, lo: int, hi: int) -> np.ndarray:
    """Tokens [lo, hi) of ``level`` (int32 [hi - lo]) from chunks covering them.

    Chunks of other levels are ignored.
    """
    out = np.empty(hi - lo, dtype=np.int32)
    covered = 0
    for chunk in chunks:
        if chunk.level != level:
            continue
        a, b = max(chunk.start, lo), min(chunk.end, hi)
        if a < b:
            out[a - lo : b - lo] = chunk.tokens[a - chunk.start : b - chunk.start]
            covered += b - a
    if covered != hi - lo:
        raise RuntimeError(f"chunks of level {level} cover {covered} of the {hi - lo} tokens [{lo}, {hi}) a call needs")
    return out


def _actor_info(stage: str, device: torch.device) -> dict[str, Any]:
    context = ray.get_runtime_context()
    return {
        "stage": stage,
        "actor_id": context.get_actor_id(),
        "name": context.get_actor_name(),
        "node_id": context.get_node_id(),
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "pid": os.getpid(),
        "device": str(device),
    }


StageFactory = Callable[[torch.device, int], Any]


class StageActor:
    """What every stage actor shares: threads, device, identity, storage, its stage object."""

    def __init__(
        self,
        stage: str,
        factory: StageFactory,
        storage: RunStorage,
        num_gpus: float,
        torch_threads: int,
        max_batch: int = 1,
        nice: int = 0,
    ) -> None:
        torch.set_num_threads(torch_threads)
        if nice:
            os.nice(nice)
        self.stage = stage
        self.storage = storage
        self.device = builders.device_for(num_gpus)
        self.info = _actor_info(stage, self.device)
        self.stage_impl = factory(self.device, max_batch)

    def _batcher(self, run_batch: Callable[[list[Any]], Sequence[Any]], key: Callable[[Any], Any], max_batch: int,
                 batch_wait_ms: float) -> MicroBatcher:
        """The actor's batcher: ``run_batch`` on groups of requests with equal ``key``."""
        return MicroBatcher(run_batch, key, max_batch=max_batch, wait_s=batch_wait_ms / 1000.0)

    async def _load(self, chunks: tuple[Chunk | str, ...]) -> list[Chunk]:
        """Chunk arguments as chunks: paths (parts stored by an earlier run) are read."""
        if not any(isinstance(chunk, str) for chunk in chunks):
            return list(chunks)

        def read() -> list[Chunk]:
            return [Chunk.from_batch(self.storage.read_part(c)) if isinstance(c, str) else c for c in chunks]

        return await asyncio.to_thread(read)

    async def _store(self, write: Callable[[pa.RecordBatch], str], batch: pa.RecordBatch) -> None:
        """Write a part: inline on a local disk (well under a millisecond), on a side thread for
        remote stores whose writes take longer."""
        if self.storage.is_local:
            write(batch)
        else:
            await asyncio.to_thread(write, batch)

    async def ready(self) -> dict[str, Any]:
        """Where the actor runs (node, GPU ids, pid); answers once the model is loaded."""
        return self.info

    def _stats(
        self, task_song: str, level: int, start: int, end: int, entered: float, started: float, finished: float, batch: int
    ) -> dict[str, Any]:
        """A call's stats: what it made, its forward pass [started, finished) shared by ``batch``
        calls, and the span [entered, returned) the actor spent on it (inputs, model, storage)."""
        return {
            "stage": self.stage,
            "song_id": task_song,
            "level": level,
            "start": start,
            "end": end,
            "entered_at": entered,
            "started_at": started,
            "finished_at": finished,
            "returned_at": time.time(),
            "compute_s": (finished - started) / batch,
            "batch_size": batch,
            "actor": self.info["name"] or self.info["actor_id"],
        }
