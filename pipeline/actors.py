"""The Ray actors wrapping each stage.

Every actor is asyncio-based: Ray hands it a call once the call's ObjectRef arguments exist, the
actor answers calls out of order, and a :class:`~pipeline.batching.MicroBatcher` gathers
concurrent window calls (of any songs) into batched forward passes on one worker thread. A chunk
is written to storage as soon as it is sampled, before the call returns, so a finished window
survives any later failure. Calls return the chunk (an Arrow record batch, fed to the windows
that need it) and a small stats dict the driver uses for progress.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import torch

from models.prior.sampling import SamplingOptions
from pipeline import builders
from pipeline.batching import MicroBatcher
from pipeline.finalize import FinalizeJob, finalize_song
from pipeline.storage import RunStorage, audio_batch, chunk_batch, chunk_tokens
from stages.decode import DecodeRequest
from stages.prior_window import WindowRequest
from stages.tokenize import Conditioning

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowTask:
    """One window to sample; the call's chunk arguments hold its context and upper tokens."""

    song_id: str
    level: int
    index: int
    start: int
    n_context: int
    n_new: int
    total_length: int
    seed: int
    options: SamplingOptions
    upper_span: tuple[int, int] | None


@dataclass(frozen=True)
class DecodeTask:
    """One audio segment to decode: tokens [start, end) of ``level`` from [lo, hi)."""

    song_id: str
    level: int
    index: int
    start: int
    end: int
    lo: int
    hi: int


def assemble(chunks: Sequence[pa.RecordBatch], level: int, lo: int, hi: int) -> np.ndarray:
    """Tokens [lo, hi) of ``level`` (int32 [hi - lo]) from chunk record batches covering them.

    Chunks of other levels are ignored.
    """
    out = np.empty(hi - lo, dtype=np.int32)
    covered = 0
    for chunk in chunks:
        if chunk.column("level")[0].as_py() != level:
            continue
        start, end = chunk.column("start")[0].as_py(), chunk.column("end")[0].as_py()
        a, b = max(start, lo), min(end, hi)
        if a < b:
            out[a - lo : b - lo] = chunk_tokens(chunk)[a - start : b - start]
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
"""Builds a stage object inside an actor from its device and max batch (see :mod:`pipeline.builders`)."""


class _StageActor:
    """What every stage actor shares: threads, device, identity, storage, its stage object."""

    def __init__(
        self,
        stage: str,
        factory: StageFactory,
        storage_url: str,
        num_gpus: float,
        torch_threads: int,
        max_batch: int = 1,
        nice: int = 0,
    ) -> None:
        torch.set_num_threads(torch_threads)
        if nice:
            os.nice(nice)
        self.stage = stage
        self.storage = RunStorage(storage_url)
        self.device = builders.device_for(num_gpus)
        self.info = _actor_info(stage, self.device)
        self.stage_impl = factory(self.device, max_batch)

    async def _load(self, chunks: tuple[pa.RecordBatch | str, ...]) -> list[pa.RecordBatch]:
        """Chunk arguments as record batches: paths (parts stored by an earlier run) are read."""
        if not any(isinstance(chunk, str) for chunk in chunks):
            return list(chunks)

        def read() -> list[pa.RecordBatch]:
            return [self.storage.read_part(c) if isinstance(c, str) else c for c in chunks]

        return await asyncio.to_thread(read)

    async def _store(self, write: Callable[[pa.RecordBatch], str], batch: pa.RecordBatch) -> None:
        """Write a part: inline on a local disk (well under a millisecond, and off the critical
        path's thread hops), on a side thread for remote stores whose writes take longer."""
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


class TokenizeActor(_StageActor):
    """Labels of a song for every level (``factory`` builds a :class:`~stages.tokenize.TokenizeStage`)."""

    def __init__(
        self, factory: StageFactory, storage_url: str, num_gpus: float = 0.0, torch_threads: int = 1, nice: int = 0
    ) -> None:
        super().__init__("tokenize", factory, storage_url, num_gpus, torch_threads, nice=nice)

    async def tokenize(self, song_id: str, conditioning: Conditioning) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
        started = time.time()
        labels = self.stage_impl.labels(conditioning)
        return labels, self._stats(song_id, -1, 0, 0, started, started, time.time(), 1)


class PriorActor(_StageActor):
    """Samples windows of one level, batched across songs (``factory`` builds a
    :class:`~stages.prior_window.PriorWindowStage`)."""

    def __init__(
        self,
        stage: str,
        level: int,
        factory: StageFactory,
        storage_url: str,
        *,
        max_batch: int = 1,
        batch_wait_ms: float = 0.0,
        num_gpus: float = 0.0,
        torch_threads: int = 1,
        nice: int = 0,
    ) -> None:
        super().__init__(stage, factory, storage_url, num_gpus, torch_threads, max_batch, nice)
        self.level = level
        self.batcher = MicroBatcher(
            self.stage_impl.run_batch, WindowRequest.batch_key, max_batch=max_batch, wait_s=batch_wait_ms / 1000.0
        )

    async def sample(
        self, task: WindowTask, labels: dict[int, np.ndarray], *chunks: pa.RecordBatch | str
    ) -> tuple[pa.RecordBatch, dict[str, Any]]:
        """Sample one window.

        Args:
            task: the window.
            labels: the song's labels per level.
            chunks: the chunks holding the window's context (this level) and upper tokens (the
                level above), or the paths of their stored parts. Ray starts the call once they
                all exist.
        """
        entered = time.time()
        if task.level != self.level:
            raise ValueError(f"{self.stage} actor samples level {self.level}, got a window of level {task.level}")
        chunks = await self._load(chunks)
        context_tokens = assemble(chunks, task.level, task.start, task.start + task.n_context)
        upper = None if task.upper_span is None else assemble(chunks, task.level + 1, *task.upper_span)
        request = WindowRequest(
            song_id=task.song_id,
            labels=labels[task.level],
            context=context_tokens,
            upper=upper,
            start=task.start,
            n_new=task.n_new,
            total_length=task.total_length,
            seed=task.seed,
            options=task.options,
        )
        result = await self.batcher.submit(request)
        new_start = task.start + task.n_context
        batch = chunk_batch(
            task.song_id, task.level, new_start, result.tokens,
            started_at=result.started_at, finished_at=result.finished_at,
            compute_s=result.compute_s, batch_size=result.batch_size, node_id=self.info["node_id"],
        )
        await self._store(self.storage.write_chunk, batch)
        stats = self._stats(
            task.song_id, task.level, new_start, new_start + task.n_new, entered, result.started_at, result.finished_at, result.batch_size
        )
        return batch, stats


class DecodeActor(_StageActor):
    """Decodes chunks of tokens into audio segments, batched across songs (``factory`` builds a
    :class:`~stages.decode.DecodeStage`)."""

    def __init__(
        self,
        factory: StageFactory,
        storage_url: str,
        *,
        max_batch: int = 1,
        batch_wait_ms: float = 0.0,
        num_gpus: float = 0.0,
        torch_threads: int = 1,
        nice: int = 0,
    ) -> None:
        super().__init__("decode", factory, storage_url, num_gpus, torch_threads, max_batch, nice)
        self.batcher = MicroBatcher(
            self.stage_impl.run_batch, DecodeRequest.batch_key, max_batch=max_batch, wait_s=batch_wait_ms / 1000.0
        )

    async def receptive_field(self, level: int) -> int:
        """The decoder's receptive field at ``level`` in tokens (the margin chunks need)."""
        return await asyncio.to_thread(self.stage_impl.receptive_field, level)

    async def decode(self, task: DecodeTask, *chunks: pa.RecordBatch | str) -> dict[str, Any]:
        """Decode one segment and store it; returns its stats (the audio goes to storage only)."""
        entered = time.time()
        chunks = await self._load(chunks)
        tokens = assemble(chunks, task.level, task.lo, task.hi)
        request = DecodeRequest(task.song_id, task.level, tokens, task.lo, task.start, task.end)
        result = await self.batcher.submit(request)
        batch = audio_batch(
            task.song_id, task.level, task.start, task.end, result.audio,
            started_at=result.started_at, finished_at=result.finished_at,
            compute_s=result.compute_s, batch_size=result.batch_size, node_id=self.info["node_id"],
        )
        await self._store(self.storage.write_audio_part, batch)
        return self._stats(task.song_id, task.level, task.start, task.end, entered, result.started_at, result.finished_at, result.batch_size)

    async def finalize(self, job: FinalizeJob) -> dict[str, Any]:
        """Compact a finished song's parts into its final files (I/O on a side thread); its manifest row."""
        return await asyncio.to_thread(finalize_song, self.storage.url, job)
