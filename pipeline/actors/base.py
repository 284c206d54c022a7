"""What every stage actor shares.

Torch threads, device, identity, the run's storage, its stage object; and assembling token
spans from chunks.
"""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import torch

from pipeline.actors import builders
from pipeline.actors.messages import CallStats
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


@dataclass(frozen=True)
class ActorSettings:
    """How a stage actor runs (its pool's settings).

    Attributes:
        num_gpus: GPUs per actor (fractions allowed); 0 runs on CPU.
        torch_threads: torch's intra-op threads in the actor's process.
        nice: niceness added to the process (a lower priority for stages that may wait).
        max_batch: most requests per forward pass.
        batch_wait_ms: how long a batch may wait for more requests.
    """

    num_gpus: float = 0.0
    torch_threads: int = 1
    nice: int = 0
    max_batch: int = 1
    batch_wait_ms: float = 0.0


class StageActor:
    """What every stage actor shares: threads, device, identity, storage, its stage object."""

    def __init__(self, stage: str, factory: StageFactory, storage: RunStorage, settings: ActorSettings) -> None:
        torch.set_num_threads(settings.torch_threads)
        if settings.nice:
            os.nice(settings.nice)
        self.stage = stage
        self.storage = storage
        self.settings = settings
        self.device = builders.device_for(settings.num_gpus)
        self.info = _actor_info(stage, self.device)
        self.stage_impl = factory(self.device, settings.max_batch)

    def _batcher(self, run_batch: Callable[[list[Any]], Sequence[Any]], key: Callable[[Any], Any]) -> MicroBatcher:
        """The actor's batcher: ``run_batch`` on groups of requests with equal ``key``."""
        return MicroBatcher(run_batch, key, max_batch=self.settings.max_batch, wait_s=self.settings.batch_wait_ms / 1000.0)

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
    ) -> CallStats:
        """A call's stats: what it made, its forward pass [started, finished) shared by ``batch``
        calls, and the span [entered, now) the actor spent on it (inputs, model, storage)."""
        return CallStats(
            stage=self.stage, song_id=task_song, level=level, start=start, end=end, entered_at=entered, started_at=started,
            finished_at=finished, returned_at=time.time(), batch_size=batch, actor=self.info["name"] or self.info["actor_id"],
        )
