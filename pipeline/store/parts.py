"""The pieces a run stores as it goes.

One sampled chunk or decoded audio segment per Parquet part, their schemas, and the finished
songs' token files' schema.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa


# One sampled chunk of one song's level: tokens [start, end) plus how and when it was made.
CHUNK_SCHEMA = pa.schema(
    [
        ("song_id", pa.string()),
        ("level", pa.int8()),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("tokens", pa.list_(pa.int32())),
        ("started_at", pa.float64()),
        ("finished_at", pa.float64()),
        ("compute_s", pa.float64()),
        ("batch_size", pa.int32()),
        ("node_id", pa.string()),
    ]
)


# One decoded segment: the audio of tokens [start, end) of ``level``, samples interleaved.
AUDIO_SCHEMA = pa.schema(
    [
        ("song_id", pa.string()),
        ("level", pa.int8()),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("channels", pa.int32()),
        ("audio", pa.list_(pa.float32())),
        ("started_at", pa.float64()),
        ("finished_at", pa.float64()),
        ("compute_s", pa.float64()),
        ("batch_size", pa.int32()),
        ("node_id", pa.string()),
    ]
)


# A finished song's tokens at one level (the level is the hive partition of the path).
TOKENS_SCHEMA = pa.schema([("song_id", pa.string()), ("n_tokens", pa.int64()), ("tokens", pa.list_(pa.int32()))])


@dataclass(frozen=True)
class PartInfo:
    """A part file found in storage: ``kind`` is ``"level"`` (tokens) or ``"audio"``."""

    kind: str
    level: int
    start: int
    end: int
    path: str


def _one_row(schema: pa.Schema, values: dict[str, Any], list_column: str, items: np.ndarray) -> pa.RecordBatch:
    """A one-row record batch of ``schema``: scalar ``values`` plus ``items`` as the one list
    cell of ``list_column`` (built from arrays: several times faster than from Python rows)."""
    arrays = []
    for schema_field in schema:
        if schema_field.name == list_column:
            offsets = pa.array([0, len(items)], type=pa.int32())
            arrays.append(pa.ListArray.from_arrays(offsets, pa.array(items, type=schema_field.type.value_type)))
        elif schema_field.type == pa.float64():
            # pyarrow infers double from a Python float ~50x faster than it converts to a given double type
            arrays.append(pa.array([float(values[schema_field.name])]))
        else:
            arrays.append(pa.array([values[schema_field.name]], type=schema_field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def chunk_batch(
    song_id: str,
    level: int,
    start: int,
    tokens: np.ndarray,
    *,
    started_at: float,
    finished_at: float,
    compute_s: float,
    batch_size: int,
    node_id: str = "",
) -> pa.RecordBatch:
    """A one-row CHUNK_SCHEMA record batch holding ``tokens`` (int [n]) at positions [start, start + n)."""
    tokens = np.ascontiguousarray(tokens, dtype=np.int32).reshape(-1)
    values = dict(song_id=song_id, level=level, start=start, end=start + len(tokens), started_at=started_at,
                  finished_at=finished_at, compute_s=compute_s, batch_size=batch_size, node_id=node_id)
    return _one_row(CHUNK_SCHEMA, values, "tokens", tokens)


def audio_batch(
    song_id: str,
    level: int,
    start: int,
    end: int,
    audio: np.ndarray,
    *,
    started_at: float,
    finished_at: float,
    compute_s: float,
    batch_size: int,
    node_id: str = "",
) -> pa.RecordBatch:
    """A one-row AUDIO_SCHEMA record batch of ``audio`` (float32 [samples, channels])."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2:
        raise ValueError(f"audio must be [samples, channels], got shape {audio.shape}")
    values = dict(song_id=song_id, level=level, start=start, end=end, channels=audio.shape[1], started_at=started_at,
                  finished_at=finished_at, compute_s=compute_s, batch_size=batch_size, node_id=node_id)
    return _one_row(AUDIO_SCHEMA, values, "audio", np.ascontiguousarray(audio).reshape(-1))


@dataclass(frozen=True)
class Chunk:
    """Tokens ``[start, end)`` of one song's level as they travel between actors, and how they
    were made (the columns of CHUNK_SCHEMA).

    Tokens travel as a numpy array: Ray passes one several times faster than an Arrow batch
    (measured ~0.2 ms less per call argument), and a window call has one to three of them.
    ``stats`` are the stats of the call that made the chunk, for the driver's progress.
    """

    song_id: str
    level: int
    start: int
    tokens: np.ndarray
    started_at: float
    finished_at: float
    compute_s: float
    batch_size: int
    node_id: str = ""
    stats: dict[str, Any] | None = None

    @property
    def end(self) -> int:
        return self.start + len(self.tokens)

    def to_batch(self) -> pa.RecordBatch:
        """The chunk as a one-row CHUNK_SCHEMA record batch (what a part file holds)."""
        return chunk_batch(
            self.song_id, self.level, self.start, self.tokens, started_at=self.started_at, finished_at=self.finished_at,
            compute_s=self.compute_s, batch_size=self.batch_size, node_id=self.node_id,
        )

    @classmethod
    def from_batch(cls, batch: pa.RecordBatch | pa.Table) -> Chunk:
        """A chunk from a one-row CHUNK_SCHEMA batch (a stored part)."""
        value = {name: batch.column(name)[0].as_py() for name in CHUNK_SCHEMA.names if name != "tokens"}
        value.pop("end")
        return cls(tokens=np.ascontiguousarray(chunk_tokens(batch), dtype=np.int32), **value)


def chunk_tokens(batch: pa.RecordBatch | pa.Table) -> np.ndarray:
    """The tokens (int32 [n]) of a one-row chunk batch, without copying when possible."""
    column = batch.column("tokens")
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.values.to_numpy(zero_copy_only=False)


def chunk_audio(batch: pa.RecordBatch | pa.Table) -> np.ndarray:
    """The audio (float32 [samples, channels]) of a one-row audio batch."""
    column = batch.column("audio")
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    channels = batch.column("channels")[0].as_py()
    return column.values.to_numpy(zero_copy_only=False).reshape(-1, channels)
