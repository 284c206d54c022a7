"""The encode stage's actor: audio files to tokens, for encode-only runs and for song prompts.

An encode-only run (``mode: encode``) sends every input file to :meth:`EncodeActor.encode_file`:
the actor reads it, resamples and mixes it to the model's rate and channels
(:func:`pipeline.store.audio_input.load_audio`), encodes it with the VQ-VAE (batched across files of
equal length by a :class:`~pipeline.execute.batching.MicroBatcher`), writes one token file per level in
the pipeline's layout (``tokens/level={L}/{song}.parquet``), then its completion marker, and
returns the file's manifest row (with the resampling / down-mix note).

A generation run whose songs have prompts sends each such song to :meth:`EncodeActor.prompt`,
which encodes the prompt audio (or reads a dataset song's tokens) and stores the first chunk of
every sampled level, the one the song's windows continue from.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from pipeline.actors.base import ActorSettings, StageActor, StageFactory
from pipeline.actors.messages import CallStats, EncodeFileTask, PromptTask
from pipeline.run.prompts import read_dataset_prompt
from pipeline.run.spec import PromptRef, level_stage
from pipeline.store.audio_input import load_audio
from pipeline.store.finalize import PROMPT_NOTE_FILE
from pipeline.store.parts import Chunk
from pipeline.store.writer import RunStorage
from stages.encode import EncodeRequest, EncodeResult


class EncodeActor(StageActor):
    """Encodes audio with the run's VQ-VAE (``factory`` builds a :class:`~stages.encode.EncodeStage`).

    Args:
        sampling_rate, channels: the model's audio format; inputs are converted to it.
    """

    def __init__(
        self,
        factory: StageFactory,
        storage: RunStorage,
        settings: ActorSettings = ActorSettings(),
        *,
        sampling_rate: int,
        channels: int,
    ) -> None:
        super().__init__("encode", factory, storage, settings)
        self.sampling_rate = sampling_rate
        self.channels = channels
        self.batcher = self._batcher(self.stage_impl.run_batch, EncodeRequest.batch_key)

    async def _encode(self, song_id: str, url: str, n_samples: int | None = None) -> tuple[EncodeResult, dict[str, Any], float]:
        """Read, convert and encode one file (its first ``n_samples`` when given)."""
        entered = time.time()
        audio, note = await asyncio.to_thread(load_audio, url, self.sampling_rate, self.channels)
        if n_samples is not None:
            if audio.shape[0] < n_samples:
                raise ValueError(f"{url}: {audio.shape[0]} samples after conversion, {n_samples} needed")
            audio = audio[:n_samples]
        result = await self.batcher.submit(EncodeRequest(song_id, audio))
        return result, note.to_dict(), entered

    async def encode_file(self, task: EncodeFileTask) -> tuple[dict[str, Any], CallStats]:
        """Encode one input file, store its tokens and marker; its manifest row and the call's
        stats (progress counts audio samples).

        A file whose marker exists (a retried call) is not encoded again.
        """
        song_id = task.source.song_id
        marker = self.storage.marker_path(song_id)
        if await asyncio.to_thread(self.storage.fs.exists, marker):
            row = (await asyncio.to_thread(self.storage.read_json, marker))["row"]
            now = time.time()
            return row, self._stats(song_id, -1, 0, 0, now, now, now, 1)
        result, note, entered = await self._encode(song_id, task.source.url)
        row: dict[str, Any] = {
            "song_id": song_id,
            "song_index": task.index,
            "source_url": task.source.url,
            "model": task.model,
            "init_seed": task.init_seed,
            "sampling_rate": self.sampling_rate,
            "channels": self.channels,
            "total_length": result.n_samples,
            "duration_s": result.n_samples / self.sampling_rate,
            "original_sampling_rate": note["original_sampling_rate"],
            "original_channels": note["original_channels"],
            "original_frames": note["original_frames"],
            "resampled": note["resampled"],
            "channel_mix": note["channel_mix"],
            "audio_note": note["text"],
            **(task.labels or {}),
            "encode_compute_s": result.compute_s,
            "batch_size": result.batch_size,
            "started_at": entered,
        }

        def store() -> None:
            files = {}
            for level in result.levels:
                name = level_stage(level).value
                tokens = result.level_tokens(level)
                stored = self.storage.write_tokens(song_id, level, tokens)
                files[stored.path] = stored.record()
                row[f"{name}_n_tokens"] = len(tokens)
                row[f"{name}_tokens_path"] = stored.path
            row["finished_at"] = time.time()
            self.storage.write_json(marker, {"row": row, "fingerprint": task.fingerprint(), "files": files})

        await asyncio.to_thread(store)
        stats = self._stats(song_id, -1, 0, result.n_samples, entered, result.started_at, result.finished_at, result.batch_size)
        return row, stats

    async def prompt(self, task: PromptTask) -> tuple[Any, ...]:
        """Store a song's prompt as chunk 0 of each of ``task.levels``; returns those chunks (in
        ``task.levels`` order) and the call's stats."""
        entered = time.time()
        ref = PromptRef.parse(task.prompt)
        if ref.audio is not None:
            result, note, _ = await self._encode(task.song_id, ref.audio, task.prompt_samples)
            tokens = [result.level_tokens(level)[:n] for level, n in zip(task.levels, task.n_tokens)]
            timing = dict(started_at=result.started_at, finished_at=result.finished_at,
                          compute_s=result.compute_s, batch_size=result.batch_size)
            await asyncio.to_thread(self.storage.write_json, self.storage.path("parts", task.song_id, PROMPT_NOTE_FILE), note)
        else:
            tokens = await asyncio.to_thread(
                lambda: [read_dataset_prompt(ref, level, n) for level, n in zip(task.levels, task.n_tokens)]
            )
            now = time.time()
            timing = dict(started_at=entered, finished_at=now, compute_s=0.0, batch_size=1)
        chunks = []
        for level, level_tokens in zip(task.levels, tokens):
            chunk = Chunk(task.song_id, level, 0, level_tokens, node_id=self.info["node_id"], **timing)
            await self._store(self.storage.write_chunk, chunk.to_batch())
            chunks.append(chunk)
        stats = self._stats(task.song_id, -1, 0, sum(task.n_tokens), entered, timing["started_at"], timing["finished_at"],
                            timing["batch_size"])
        return (*chunks, stats)
