"""The run manifest: its columns (a generation run's, an encode-only run's), streamed to Parquet
as songs finish, not kept until the end.

A run of 100k songs must not hold 100k manifest rows in the driver. :class:`ManifestWriter`
buffers at most ``rows_per_group`` rows, writes each full buffer as a row group of one Parquet
file under a temporary name, and on :meth:`~ManifestWriter.close` moves the file to
``manifest.parquet`` (so a reader never sees half a manifest, and a failed run leaves none).
Rows are in the order songs finished; the ``song_index`` column gives each song's position in the
song list or grid (sort by it for that order). Paths in it are relative to the output root.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from pipeline.run.spec import SAMPLING_STAGES
from pipeline.store.writer import RunStorage

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.parquet"


def rows_table(rows: list[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows as a table of ``schema`` (missing columns are null, extra keys ignored)."""
    return pa.Table.from_pylist([{name: row.get(name) for name in schema.names} for row in rows], schema=schema)


class ManifestWriter:
    """Appends manifest rows to a Parquet file in bounded memory (written through the run's
    storage, published whole by :meth:`close`).

    Args:
        storage: the run's storage; the manifest goes to its ``manifest.parquet``.
        schema: the manifest's columns.
        rows_per_group: rows buffered before a row group is written.
    """

    def __init__(self, storage: RunStorage, schema: pa.Schema, rows_per_group: int = 256) -> None:
        if rows_per_group < 1:
            raise ValueError(f"rows_per_group must be >= 1, got {rows_per_group}")
        self.storage = storage
        self.schema = schema
        self.rows_per_group = rows_per_group
        self.path = storage.path(MANIFEST_NAME)
        self._stream = storage.parquet_stream(self.path, schema)
        self._buffer: list[Mapping[str, Any]] = []
        self.count = 0

    def add(self, row: Mapping[str, Any]) -> None:
        """Queue one song's row; a full buffer is written at once."""
        self._buffer.append(row)
        self.count += 1
        if len(self._buffer) >= self.rows_per_group:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._stream.write(rows_table(self._buffer, self.schema))
            self._buffer = []

    def close(self) -> str:
        """Write what is buffered and publish the manifest; returns its path."""
        self._flush()
        return self._stream.close()

    def abort(self) -> None:
        """Drop the unfinished manifest (a failed run publishes none)."""
        self._stream.abort()
        self._buffer = []


_STAGE_NAMES = [s.value for s in SAMPLING_STAGES]  # the sampled levels' column prefixes


ENCODE_MANIFEST_SCHEMA = pa.schema(
    [
        ("song_id", pa.string()),
        ("song_index", pa.int64()),
        ("source_url", pa.string()),
        ("model", pa.string()),
        ("init_seed", pa.int64()),
        ("sampling_rate", pa.int64()),
        ("channels", pa.int64()),
        ("total_length", pa.int64()),
        ("duration_s", pa.float64()),
        ("original_sampling_rate", pa.int64()),
        ("original_channels", pa.int64()),
        ("original_frames", pa.int64()),
        ("resampled", pa.bool_()),
        ("channel_mix", pa.string()),
        ("audio_note", pa.string()),
        # labels from encode.labels_url (null without one): what prior training conditions on
        ("artist", pa.string()),
        ("genres", pa.list_(pa.string())),
        ("lyrics", pa.string()),
        *[(f"{name}_{field}", kind) for name in _STAGE_NAMES for field, kind in (
            ("n_tokens", pa.int64()),
            ("tokens_path", pa.string()),
        )],
        ("encode_compute_s", pa.float64()),
        ("batch_size", pa.int64()),
        ("started_at", pa.float64()),
        ("finished_at", pa.float64()),
    ]
)


MANIFEST_SCHEMA = pa.schema(
    [
        ("song_id", pa.string()),
        ("song_index", pa.int64()),
        ("grid_cell", pa.int64()),
        ("grid_sample", pa.int64()),
        ("sampling_overrides", pa.string()),
        ("unknown_names", pa.list_(pa.string())),
        ("prompt", pa.string()),
        ("prompt_s", pa.float64()),
        ("prompt_note", pa.string()),
        ("artist", pa.string()),
        ("genres", pa.list_(pa.string())),
        ("lyrics", pa.string()),
        ("seed", pa.int64()),
        ("model", pa.string()),
        ("init_seed", pa.int64()),
        ("requested_duration_s", pa.float64()),
        ("duration_s", pa.float64()),
        ("total_length", pa.int64()),
        ("sampling_rate", pa.int64()),
        ("levels", pa.list_(pa.string())),
        ("audio_level", pa.int64()),
        ("audio_path", pa.string()),
        ("audio_samples", pa.int64()),
        ("channels", pa.int64()),
        *[(f"{name}_{field}", kind) for name in _STAGE_NAMES for field, kind in (
            ("n_tokens", pa.int64()),
            ("prompt_tokens", pa.int64()),
            ("tokens_path", pa.string()),
            ("preview_path", pa.string()),
            ("windows", pa.int64()),
            ("temperature", pa.float64()),
            ("top_k", pa.int64()),
            ("top_p", pa.float64()),
            ("compute_s", pa.float64()),
        )],
        ("decode_compute_s", pa.float64()),
        ("started_at", pa.float64()),
        ("finished_at", pa.float64()),
    ]
)
