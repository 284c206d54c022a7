"""Measure how often batching changes a song's tokens (the README's flip rate).

Runs the same grid of short songs twice through the real pipeline on one local Ray: once with
one song in flight (every window sampled alone, batch 1) and once with the default batching
(windows of many songs share forward passes). Seeds are per song and window, so the two outputs
differ only where a batched forward pass rounded differently and a draw fell within that
rounding of the boundary between two tokens. Prints, per level, the songs and tokens that differ,
then a JSON line::

    {"songs": 200, "duration_s": 0.1, "differing_songs": ..., "levels": {"bottom": {"tokens": ..., "differing": ...}, ...}}

Usage: ``python scripts/bench_batch_invariance.py [--songs 200] [--duration 0.1] [--out DIR]``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile

import numpy as np
import pyarrow.parquet as pq
from hydra import compose, initialize_config_module

from pipeline.execute.runner import run

LEVELS = {"top": 2, "middle": 1, "bottom": 0}


def _run(out: str, songs: int, duration: float, *overrides: str, keep_ray: bool = False):
    grid = (f"songs_grid={{base: {{duration_s: {duration}, lyrics: la la, genres: [country], artist: Alan Jackson}}, "
            f"product: {{seed: [{', '.join(str(s) for s in range(songs))}]}}}}")
    with initialize_config_module(config_module="conf", version_base=None):
        cfg = compose(config_name="config", overrides=[grid, f"output.url={out}", "scheduler.progress_interval_s=30",
                                                       *overrides])
    return run(cfg, keep_ray=keep_ray)


def _tokens(result) -> dict[tuple[str, str], np.ndarray]:
    return {(row["song_id"], name): np.asarray(pq.read_table(f"{result.output_url}/{row[f'{name}_tokens_path']}")
                                               .column("tokens")[0].as_py())
            for row in result.rows for name in LEVELS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--songs", type=int, default=200)
    parser.add_argument("--duration", type=float, default=0.1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = args.out or tempfile.mkdtemp(prefix="bench-invariance-")
    # one local Ray, started by the first run as any run starts it (loopback, its own token), kept for the second
    alone = _tokens(_run(os.path.join(out, "alone"), args.songs, args.duration, "scheduler.max_songs_in_flight=1", keep_ray=True))
    batched = _tokens(_run(os.path.join(out, "batched"), args.songs, args.duration))
    levels, songs = {}, set()
    for name in LEVELS:
        keys = [key for key in alone if key[1] == name]
        differing = {key: int((alone[key] != batched[key]).sum()) for key in keys if not np.array_equal(alone[key], batched[key])}
        songs |= {song for song, _ in differing}
        levels[name] = {"tokens": int(sum(alone[key].size for key in keys)), "differing": int(sum(differing.values())),
                        "differing_songs": len(differing)}
        print(f"{name:7s} {levels[name]['differing']} of {levels[name]['tokens']} tokens differ, in "
              f"{levels[name]['differing_songs']} of {args.songs} songs")
    print(f"songs with any difference: {len(songs)} of {args.songs}")
    print(json.dumps({"songs": args.songs, "duration_s": args.duration, "differing_songs": len(songs), "levels": levels}))


if __name__ == "__main__":
    main()
