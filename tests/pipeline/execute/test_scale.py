"""Scheduling at scale: 2,000 planned songs stream through the pipeline in bounded driver memory.

The scheduler is under test, not the model: songs are one top-level token long and the top
prior is a counting stand-in, so each song is a handful of cheap calls (labels, one window, one
decoded segment, compaction). Between the 200th and the 2,000th finished song, the driver's
Python heap (tracemalloc) and the object references it holds must not grow: the grid is
expanded lazily, plans exist only for songs in flight, references are dropped when a song
closes, and manifest rows are streamed to storage instead of kept.
"""
from __future__ import annotations

import logging
import tracemalloc

import pyarrow.parquet as pq
import pytest
import ray

from pipeline.execute.runner import run, to_run_config
from tests.pipeline.fakes import counting_factories

N_SONGS = 2000
FIRST, LATE, LAST = 200, 1800, N_SONGS
HEAP_TOLERANCE = 256 * 1024  # bytes; measured growth is ~0 (+-50 KB); keeping each song's row would add ~2 MB


def _owned_references() -> int:
    """Object references the driver process holds (its core worker's reference table)."""
    return len(ray._private.worker.global_worker.core_worker.get_all_reference_counts())


@pytest.mark.slow
def test_driver_memory_stays_flat_over_2000_songs(ray_session, make_cfg):
    cfg = make_cfg("sampling.levels=[top]", "stages.top.max_batch=16", "stages.decode.max_batch=16", "scheduler.progress_interval_s=5")
    cfg.songs_grid = {
        "name": "scale",
        "base": {"duration_s": 0.003, "genres": ["country"], "lyrics": "la"},
        "product": {"artist": ["Alan Jackson", "Ella Fitzgerald", "Nina Simone", "Johnny Cash"], "seed": list(range(N_SONGS // 4))},
    }
    seen = {"songs": 0}

    def on_song_done(row: dict) -> None:
        seen["songs"] += 1
        if seen["songs"] in (FIRST, LATE, LAST):
            seen[seen["songs"]] = (tracemalloc.get_traced_memory()[0], _owned_references())

    pipeline_logger = logging.getLogger("pipeline")
    level = pipeline_logger.level
    pipeline_logger.setLevel(logging.WARNING)  # pytest keeps every captured log record (and its arguments)
    tracemalloc.start()
    try:
        result = run(cfg, factories=counting_factories(), on_song_done=on_song_done)
    finally:
        tracemalloc.stop()
        pipeline_logger.setLevel(level)
    assert result.n_songs == N_SONGS == seen["songs"]
    (heap_first, refs_first), (heap_last, _) = seen[FIRST], seen[LAST]
    assert heap_last - heap_first < HEAP_TOLERANCE, f"driver heap grew by {heap_last - heap_first} bytes from song {FIRST} to {LAST}"
    # References are bounded by the songs in flight (a few per song), not by the songs done.
    in_flight = to_run_config(cfg).songs_in_flight()
    assert max(refs_first, seen[LATE][1]) <= 8 * in_flight < LATE, (refs_first, seen[LATE][1], in_flight)
    manifest = pq.read_table(result.manifest_path, columns=["song_id", "song_index", "top_n_tokens"])
    assert manifest.num_rows == N_SONGS and sorted(manifest.column("song_index").to_pylist()) == list(range(N_SONGS))
    assert set(manifest.column("top_n_tokens").to_pylist()) == {1}
