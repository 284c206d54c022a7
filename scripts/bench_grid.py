"""Benchmark: a grid of short songs through the pipeline at max batch 1, 4 and 16.

Every run uses the same local Ray session, the tiny model and the same grid (``--songs`` songs:
artists x genres x seeds, ``--duration`` seconds each); only the stages' ``max_batch`` differs
(the number of songs in flight follows it: ``max_batch * num_actors``). For each it prints songs
per hour and every stage's tokens per second of wall time side by side, then the mean batch
size each stage reached; the last line is JSON::

    {"max_batch": {"1": {"songs_per_hour": ..., "tokens_per_s": {stage: ...}}, "4": {...}, "16": {...}}}

Songs per hour count the wall time from the first call to the last song's completion (models
load once, before it). Usage: ``python scripts/bench_grid.py [--songs 32] [--duration 0.5]
[--batches 1 4 16] [--out DIR] [extra Hydra overrides]``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import ray
import yaml
from hydra import compose, initialize_config_module

from pipeline.execute.runner import run

ARTISTS = ["Alan Jackson", "Ella Fitzgerald", "Nina Simone", "Johnny Cash"]
GENRES = [["country"], ["jazz"], ["soul"], ["blues"]]
STAGES = ("top", "middle", "bottom", "decode")


def grid_overrides(n_songs: int, duration: float, out: Path) -> list[str]:
    """A grid file of ``n_songs`` songs (artists x genres x samples) and the override using it."""
    cells = len(ARTISTS) * len(GENRES)
    if n_songs % cells and n_songs > cells:
        raise ValueError(f"--songs must be at most {cells} or a multiple of it, got {n_songs}")
    artists, genres = (ARTISTS, GENRES) if n_songs >= cells else (ARTISTS[: max(1, n_songs // len(GENRES))], GENRES)
    n_samples = max(1, n_songs // (len(artists) * len(genres)))
    grid = {
        "name": "bench",
        "base": {"duration_s": duration, "lyrics": "la la la, a song to sing along", "seed": 1},
        "product": {"artist": artists, "genres": genres},
        "n_samples": n_samples,
    }
    path = out / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return [f"songs_grid={path}"]


def _run_batch(max_batch: int, out: Path, grid: list[str], overrides: list[str]) -> dict:
    with initialize_config_module(config_module="conf", version_base=None):
        cfg = compose(
            config_name="config",
            overrides=[
                *grid,
                f"output.url={out / f'batch{max_batch}'}",
                "scheduler.progress_interval_s=5",
                *[f"stages.{stage}.max_batch={max_batch}" for stage in STAGES],
                *overrides,
            ],
        )
    started = time.time()
    result = run(cfg)
    total = time.time() - started
    summary = result.summary
    wall = summary.wall_s
    return {
        "songs": result.n_songs,
        "songs_per_hour": result.n_songs / wall * 3600,
        "wall_s": wall,
        "total_s": total,
        "tokens_per_s": {stage: summary.stages[stage]["tokens"] / wall for stage in STAGES},
        "busy_s": {stage: summary.stages[stage]["busy_s"] for stage in STAGES},
        "mean_batch": {stage: summary.stages[stage]["mean_batch"] for stage in STAGES},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, default=32, help="songs in the grid (default 32)")
    parser.add_argument("--duration", type=float, default=0.5, help="song length in seconds (default 0.5)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16], help="max batch sizes (default 1 4 16)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: a temporary one)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_grid"))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(include_dashboard=False, log_to_driver=False)
    out.mkdir(parents=True, exist_ok=True)
    grid = grid_overrides(args.songs, args.duration, out)
    results = {}
    try:
        for max_batch in args.batches:
            results[str(max_batch)] = _run_batch(max_batch, out, grid, args.overrides)
    finally:
        ray.shutdown()
    header = ["max batch", "songs/hour", "wall s", *[f"{s} tok/s" for s in STAGES], *[f"{s} batch" for s in STAGES]]
    print(" | ".join(f"{h:>12}" for h in header))
    for max_batch, r in results.items():
        cells = [max_batch, f"{r['songs_per_hour']:.0f}", f"{r['wall_s']:.2f}",
                 *[f"{r['tokens_per_s'][s]:.0f}" for s in STAGES], *[f"{r['mean_batch'][s]:.1f}" for s in STAGES]]
        print(" | ".join(f"{c:>12}" for c in cells))
    base = results.get("1")
    if base:
        for max_batch, r in results.items():
            print(f"max batch {max_batch}: {r['songs_per_hour'] / base['songs_per_hour']:.2f}x the songs per hour of max batch 1")
    line = {"max_batch": {k: {"songs_per_hour": v["songs_per_hour"], "tokens_per_s": v["tokens_per_s"]} for k, v in results.items()}}
    print(json.dumps(line))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
