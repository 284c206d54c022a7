"""The decode actor: chunks of tokens into audio segments (batched across songs), and closing
finished songs."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import pyarrow as pa

from pipeline import faults
from pipeline.actors.base import ActorSettings, StageActor, StageFactory, assemble
from pipeline.actors.messages import DecodeTask
from pipeline.store.finalize import FinalizeJob, finalize_song
from pipeline.store.parts import Chunk, audio_batch
from pipeline.store.writer import RunStorage
from stages.decode import DecodeRequest, DecodeResult


class DecodeActor(StageActor):
    """Decodes chunks of tokens into audio segments, batched across songs (``factory`` builds a
    :class:`~stages.decode.DecodeStage`)."""

    def __init__(self, factory: StageFactory, storage: RunStorage, settings: ActorSettings = ActorSettings()) -> None:
        super().__init__("decode", factory, storage, settings)
        self.batcher = self._batcher(self._decode_batch, DecodeRequest.batch_key)

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
