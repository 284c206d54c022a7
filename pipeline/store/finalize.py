"""Closing a finished song: compact its parts, write its WAVs, its marker and its manifest row.

Runs on the decode actor once every window and audio segment of a song is stored. It gets the
song's token chunks as arguments (from this run's calls, or read from the parts an earlier,
interrupted run left) and reads the audio segments back from storage. The marker is written last
and the parts removed after it: a crash at any point leaves either the parts or the marker. The
marker records the size and checksum of every file it closes (:mod:`pipeline.store.verify` checks them
on resume); paths in it and in the manifest row are relative to the output root.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from models.prior.sampling import SamplingOptions
from pipeline import faults
from pipeline.run.spec import SongSpec, level_stage
from pipeline.store.parts import Chunk, PartInfo, chunk_audio
from pipeline.store.writer import RunStorage

logger = logging.getLogger(__name__)

PROMPT_NOTE_FILE = "prompt.json"  # parts/{song}/prompt.json: how an audio prompt was read (resampling, mixing)


@dataclass(frozen=True)
class FinalizeJob:
    """What closing a song needs to know (everything else is read from its parts)."""

    song: SongSpec
    seed: int
    total_length: int
    sampling_rate: int
    n_tokens: dict[int, int]
    options: dict[int, SamplingOptions]
    audio_level: int
    decoded_levels: tuple[int, ...]
    model: str
    init_seed: int | None
    fingerprint: dict[str, Any]
    wav_subtype: str
    keep_parts: bool
    prompt_tokens: dict[int, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


Spanned = TypeVar("Spanned", PartInfo, Chunk)


def _tile(items: list[Spanned], n_tokens: int, what: str) -> list[Spanned]:
    """Parts or chunks sorted by start; RuntimeError unless they cover [0, n_tokens) exactly once."""
    items = sorted(items, key=lambda item: item.start)
    position = 0
    for item in items:
        if item.start != position:
            raise RuntimeError(f"{what}: pieces leave a gap or overlap at token {position} (the next starts at {item.start})")
        position = item.end
    if position != n_tokens:
        raise RuntimeError(f"{what}: pieces end at token {position}, expected {n_tokens}")
    return items


def finalize_song(storage: RunStorage, job: FinalizeJob, chunks: Sequence[Chunk] | None = None) -> dict[str, Any]:
    """Compact one song's parts into its final files; returns its manifest row.

    ``chunks``: every token chunk of the song's sampled levels, when the caller has them (they
    are then not read back from their parts: most of the work of closing a song); None reads
    them from storage.
    """
    song_id = job.song.id
    marker_path = storage.marker_path(song_id)
    if storage.fs.exists(marker_path):  # a retried call after the song was closed
        if not job.keep_parts:
            storage.remove_parts(song_id)  # the earlier attempt may have died before removing them
        return storage.read_json(marker_path)["row"]
    parts = storage.list_parts(song_id)
    row = _song_row(storage, job)
    if chunks is None:
        chunks = [Chunk.from_batch(storage.read_part(p.path)) for p in parts if p.kind == "level" and p.level in job.n_tokens]
    files: dict[str, dict[str, Any]] = {}
    started, finished = _write_tokens(storage, job, chunks, row, files)
    finished += _write_audio(storage, job, parts, row, files)
    faults.point("finalize.files_written")
    row["started_at"] = min(started) if started else None
    row["finished_at"] = max(finished) if finished else time.time()
    storage.write_json(marker_path, {"row": row, "fingerprint": job.fingerprint, "files": files})
    faults.point("finalize.marker_written")
    if not job.keep_parts:
        storage.remove_parts(song_id)
    return row


def _song_row(storage: RunStorage, job: FinalizeJob) -> dict[str, Any]:
    """The manifest row's conditioning and timing columns (the files' columns come later)."""
    row: dict[str, Any] = {
        "song_id": job.song.id,
        "artist": job.song.artist,
        "genres": list(job.song.genres),
        "lyrics": job.song.lyrics,
        "seed": job.seed,
        "model": job.model,
        "init_seed": job.init_seed,
        "requested_duration_s": job.song.duration_s,
        "duration_s": job.total_length / job.sampling_rate,
        "total_length": job.total_length,
        "sampling_rate": job.sampling_rate,
        "levels": [level_stage(level).value for level in sorted(job.n_tokens, reverse=True)],
        "audio_level": job.audio_level,
        "prompt": job.song.prompt,
        **job.extra,
    }
    note_path = storage.path("parts", job.song.id, PROMPT_NOTE_FILE)
    if job.song.prompt is not None and storage.fs.exists(note_path):
        row["prompt_note"] = storage.read_json(note_path).get("text")
    return row


def _write_tokens(storage: RunStorage, job: FinalizeJob, chunks: Sequence[Chunk], row: dict[str, Any],
                  files: dict[str, dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Each sampled level's token file, its columns in ``row``; the chunks' start and end times."""
    started, finished = [], []
    for level, n_tokens in job.n_tokens.items():
        name = level_stage(level).value
        level_chunks = _tile([c for c in chunks if c.level == level], n_tokens, f"song {job.song.id!r} level {level}")
        stored = storage.write_tokens(job.song.id, level, np.concatenate([c.tokens for c in level_chunks]))
        files[stored.path] = stored.record()
        row[f"{name}_tokens_path"] = stored.path
        row[f"{name}_n_tokens"] = n_tokens
        n_prompt = job.prompt_tokens.get(level, 0)
        row[f"{name}_prompt_tokens"] = n_prompt
        sampled = level_chunks[1:] if n_prompt else level_chunks  # the prompt's chunk was encoded or read, not sampled
        row[f"{name}_windows"] = len(sampled)
        row[f"{name}_compute_s"] = float(sum(c.compute_s for c in sampled))
        options = job.options[level]
        row[f"{name}_temperature"], row[f"{name}_top_k"], row[f"{name}_top_p"] = options.temperature, options.top_k, options.top_p
        started += [c.started_at for c in level_chunks]
        finished += [c.finished_at for c in level_chunks]
    return started, finished


def _write_audio(storage: RunStorage, job: FinalizeJob, parts: Sequence[PartInfo], row: dict[str, Any],
                 files: dict[str, dict[str, Any]]) -> list[float]:
    """The song's WAV and previews from their decoded pieces, their columns in ``row``; the
    pieces' end times."""
    decode_compute, finished = 0.0, []
    for level in job.decoded_levels:
        level_parts = _tile(
            [p for p in parts if p.kind == "audio" and p.level == level], job.n_tokens[level], f"song {job.song.id!r} audio of level {level}"
        )
        batches = [storage.read_part(p.path) for p in level_parts]
        audio = np.concatenate([chunk_audio(b) for b in batches])
        decode_compute += float(sum(b.column("compute_s")[0].as_py() for b in batches))
        finished += [b.column("finished_at")[0].as_py() for b in batches]
        path = storage.audio_path(job.song.id) if level == job.audio_level else storage.preview_path(job.song.id, level)
        stored = storage.write_wav(path, audio, job.sampling_rate, job.wav_subtype)
        files[stored.path] = stored.record()
        if level == job.audio_level:
            row["audio_path"] = stored.path
            row["audio_samples"], row["channels"] = audio.shape
        else:
            row[f"{level_stage(level).value}_preview_path"] = stored.path
    row["decode_compute_s"] = decode_compute
    return finished
