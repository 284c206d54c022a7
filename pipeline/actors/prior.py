"""The sampling actors: windows of one level, batched across songs."""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from pipeline import faults
from pipeline.actors.base import ActorSettings, StageActor, StageFactory, assemble
from pipeline.actors.messages import WindowTask
from pipeline.store.parts import Chunk
from pipeline.store.writer import RunStorage
from stages.prior_window import WindowRequest


class PriorActor(StageActor):
    """Samples windows of one level, batched across songs (``factory`` builds a
    :class:`~stages.prior_window.PriorWindowStage`)."""

    def __init__(
        self,
        stage: str,
        level: int,
        factory: StageFactory,
        storage: RunStorage,
        settings: ActorSettings = ActorSettings(),
    ) -> None:
        super().__init__(stage, factory, storage, settings)
        self.level = level
        self.batcher = self._batcher(self._sample_batch, WindowRequest.batch_key)

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
