"""Per-step training metrics: kept by rank 0, logged, stored with every checkpoint.

The history up to a checkpoint is written into the checkpoint itself (``metrics.parquet``), so a
run resumed from it continues that history: steps recomputed after a failure replace nothing and
appear once. The driver publishes the last checkpoint's history as ``metrics.parquet`` and
``metrics.csv`` in the run's folder.
"""
from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.parquet"
METRICS_CSV = "metrics.csv"
# Columns shown in log lines, in this order, when a row has them.
_LOGGED = ("loss", "bits_per_token", "lyric_bits_per_token", "recon_l0", "spectral_l0", "usage_l0", "usage_l1",
           "usage_l2", "grad_norm", "tokens_per_s")


class MetricsHistory:
    """Rows of ``{"step": int, name: float, ...}``, one per optimisation step, in step order."""

    def __init__(self, rows: Iterable[Mapping[str, Any]] = ()) -> None:
        self.rows: list[dict[str, Any]] = [dict(row) for row in rows]

    def add(self, row: Mapping[str, Any]) -> None:
        if self.rows and row["step"] <= self.rows[-1]["step"]:
            raise ValueError(f"metrics of step {row['step']} come after step {self.rows[-1]['step']}")
        self.rows.append(dict(row))

    def table(self) -> pa.Table:
        """The rows as a table (columns in first-seen order; a metric a row lacks is null)."""
        names: dict[str, None] = {}
        for row in self.rows:
            names.update(dict.fromkeys(row))
        return pa.table({name: [row.get(name) for row in self.rows] for name in names})

    def parquet_bytes(self) -> bytes:
        sink = io.BytesIO()
        pq.write_table(self.table(), sink)
        return sink.getvalue()

    def csv_bytes(self) -> bytes:
        sink = io.BytesIO()
        pa_csv.write_csv(self.table(), sink)
        return sink.getvalue()

    @classmethod
    def from_parquet(cls, path: str) -> MetricsHistory:
        return cls(pq.read_table(path).to_pylist())


def log_line(component: str, row: Mapping[str, Any], steps: int) -> str:
    """One human-readable line of a step's metrics."""
    shown = [f"{name}={row[name]:.4g}" for name in _LOGGED if row.get(name) is not None]
    return f"train {component} step {row['step'] + 1}/{steps}: " + " ".join(shown)
