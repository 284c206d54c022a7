"""The Ray actors wrapping each stage.

Every actor is asyncio-based: Ray hands it a call once the call's ObjectRef arguments exist, the
actor answers calls out of order, and a :class:`~pipeline.batching.MicroBatcher` gathers
concurrent window calls (of any songs) into batched forward passes on one worker thread. A chunk
and a decoded audio segment are written to storage as soon as they exist (a chunk by the driver,
which collects it; a segment by the decode actor before its call returns), so finished work
survives any later failure. A window call returns its :class:`~pipeline.storage.Chunk` (fed to
the windows and decodes that need it), carrying the small stats dict the driver uses for progress.
"""
from __future__ import annotations

import asyncio
import dataclasses
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
from pipeline import builders, faults
from pipeline.batching import MicroBatcher
from pipeline.finalize import FinalizeJob, finalize_song
from pipeline.storage import Chunk, RunStorage, audio_batch
from stages.decode import DecodeRequest, DecodeResult
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
    priority: int = 0  # the song's place in the run: older songs are batched first
    peers: int | None = None  # songs in flight on the actor: the most that could share a batch
    follow_up: bool = False  # the song sends this actor another window after this one


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
    priority: int = 0
    peers: int | None = None
    follow_up: bool = False  # the song sends this actor another segment after this one


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
"""Builds a stage object inside an actor from its device and max batch (see :mod:`pipeline.builders`)."""


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


class TokenizeActor(StageActor):
    """Labels of a song for every level (``factory`` builds a :class:`~stages.tokenize.TokenizeStage`)."""

    def __init__(
        self, factory: StageFactory, storage: RunStorage, num_gpus: float = 0.0, torch_threads: int = 1, nice: int = 0
    ) -> None:
        super().__init__("tokenize", factory, storage, num_gpus, torch_threads, nice=nice)

    async def tokenize(self, song_id: str, conditioning: Conditioning) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
        started = time.time()
        labels = self.stage_impl.labels(conditioning)
        return labels, self._stats(song_id, -1, 0, 0, started, started, time.time(), 1)


class PriorActor(StageActor):
    """Samples windows of one level, batched across songs (``factory`` builds a
    :class:`~stages.prior_window.PriorWindowStage`)."""

    def __init__(
        self,
        stage: str,
        level: int,
        factory: StageFactory,
        storage: RunStorage,
        *,
        max_batch: int = 1,
        batch_wait_ms: float = 0.0,
        num_gpus: float = 0.0,
        torch_threads: int = 1,
        nice: int = 0,
    ) -> None:
        super().__init__(stage, factory, storage, num_gpus, torch_threads, max_batch, nice)
        self.level = level
        self.batcher = self._batcher(self._sample_batch, WindowRequest.batch_key, max_batch, batch_wait_ms)

    def _sample_batch(self, requests: list[WindowRequest]) -> list[Chunk]:
        """Sample a batch; the chunks (stored by the driver, which receives them anyway: the
        actor sampling the finest level is the pipeline's bottleneck, and a part write costs it
        ~0.75 ms of Python per window)."""
        chunks = [
            Chunk(request.song_id, self.level, request.start + len(request.context), result.tokens,
                  result.started_at, result.finished_at, result.compute_s, result.batch_size, self.info["node_id"])
            for request, result in zip(requests, self.stage_impl.run_batch(requests))
        ]
        faults.point(f"{self.stage}.batch")
        return chunks

    async def sample(self, task: WindowTask, labels: dict[int, np.ndarray], *chunks: Chunk | str) -> Chunk:
        """Sample one window; returns its chunk, with the call's stats (``Chunk.stats``).

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
        chunk = await self.batcher.submit(request, task.priority, task.peers, task.song_id, task.follow_up)
        stats = self._stats(
            task.song_id, task.level, chunk.start, chunk.end, entered, chunk.started_at, chunk.finished_at, chunk.batch_size
        )
        return dataclasses.replace(chunk, stats=stats)


class DecodeActor(StageActor):
    """Decodes chunks of tokens into audio segments, batched across songs (``factory`` builds a
    :class:`~stages.decode.DecodeStage`)."""

    def __init__(
        self,
        factory: StageFactory,
        storage: RunStorage,
        *,
        max_batch: int = 1,
        batch_wait_ms: float = 0.0,
        num_gpus: float = 0.0,
        torch_threads: int = 1,
        nice: int = 0,
    ) -> None:
        super().__init__("decode", factory, storage, num_gpus, torch_threads, max_batch, nice)
        self.batcher = self._batcher(self._decode_batch, DecodeRequest.batch_key, max_batch, batch_wait_ms)

    def _decode_batch(self, requests: list[DecodeRequest]) -> list[tuple[pa.RecordBatch, DecodeResult]]:
        """Decode a batch, then make (and on a local disk store, right away) its audio parts."""
        out = []
        for request, result in zip(requests, self.stage_impl.run_batch(requests)):
            batch = audio_batch(
                request.song_id, request.level, request.start, request.end, result.audio,
                started_at=result.started_at, finished_at=result.finished_at,
                compute_s=result.compute_s, batch_size=result.batch_size, node_id=self.info["node_id"],
            )
            if self.storage.is_local:
                faults.point("decode.part")
                self.storage.write_audio_part(batch)
            out.append((batch, result))
        return out

    async def receptive_field(self, level: int) -> int:
        """The decoder's receptive field at ``level`` in tokens (the margin chunks need)."""
        return await asyncio.to_thread(self.stage_impl.receptive_field, level)

    async def decode(self, task: DecodeTask, *chunks: Chunk | str) -> dict[str, Any]:
        """Decode one segment and store it; returns its stats (the audio goes to storage only)."""
        entered = time.time()
        chunks = await self._load(chunks)
        tokens = assemble(chunks, task.level, task.lo, task.hi)
        request = DecodeRequest(task.song_id, task.level, tokens, task.lo, task.start, task.end)
        batch, result = await self.batcher.submit(request, task.priority, task.peers, task.song_id, task.follow_up)
        if not self.storage.is_local:
            await asyncio.to_thread(self.storage.write_audio_part, batch)
        return self._stats(task.song_id, task.level, task.start, task.end, entered, result.started_at, result.finished_at, result.batch_size)

    async def finalize(self, job: FinalizeJob, *chunks: Chunk | str) -> dict[str, Any]:
        """Compact a finished song into its final files (I/O on a side thread); its manifest row.

        ``chunks``: every token chunk of the song's sampled levels (or their parts' paths).
        """
        loaded = await self._load(chunks)
        return await asyncio.to_thread(finalize_song, self.storage, job, loaded)
