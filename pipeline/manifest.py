"""The run manifest, streamed: rows go to Parquet as songs finish, not kept until the end.

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

from pipeline.storage import RunStorage

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
