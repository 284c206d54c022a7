"""Benchmark: one long song through the pipeline, pipelined versus level by level.

Both runs use the same local Ray session, the tiny model, the same song (the ``long_song``
experiment: at least 8 top-level windows) and the same stage resources; only
``scheduler.mode`` differs. For each it prints the time to the first decoded audio, the wall
time, every stage's busy time and the overlap (sum of stage busy times / wall time); the last
line is JSON::

    {"pipelined": {"first_audio_s": ..., "wall_s": ..., "overlap": ...}, "level_by_level": {...}}

Usage: ``python scripts/bench_pipeline.py [--duration 4.0] [--out DIR] [extra Hydra overrides]``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import ray
from hydra import compose, initialize_config_module

from pipeline.execute.runner import run

MODES = ("pipelined", "level_by_level")


def _run_mode(mode: str, out: Path, duration: float, overrides: list[str]) -> dict:
    with initialize_config_module(config_module="conf", version_base=None):
        cfg = compose(
            config_name="config",
            overrides=[
                "experiment=long_song",
                f"songs.0.duration_s={duration}",
                f"output.url={out / mode}",
                f"scheduler.mode={mode}",
                "scheduler.progress_interval_s=5",
                *overrides,
            ],
        )
    result = run(cfg)
    summary = result.summary
    top_windows = result.rows[0]["top_windows"]
    return {
        "first_audio_s": summary.first_audio_s,
        "wall_s": summary.wall_s,
        "overlap": summary.overlap,
        "top_windows": top_windows,
        "busy_s": {stage: row["busy_s"] for stage, row in summary.stages.items()},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0, help="song length in seconds (default 4.0)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: a temporary one)")
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        results = {mode: _run_mode(mode, out, args.duration, overrides) for mode in MODES}
    finally:
        ray.shutdown()
    stages = list(results[MODES[0]]["busy_s"])
    print(f"one {args.duration:.1f} s song, tiny model, {results[MODES[0]]['top_windows']} top-level windows; outputs in {out}")
    print(f"{'':24s}" + "".join(f"{mode:>16s}" for mode in MODES))
    for label, key in (("first decoded audio (s)", "first_audio_s"), ("wall time (s)", "wall_s"), ("overlap", "overlap")):
        print(f"{label:24s}" + "".join(f"{results[mode][key]:16.2f}" for mode in MODES))
    for stage in stages:
        print(f"{'busy ' + stage + ' (s)':24s}" + "".join(f"{results[mode]['busy_s'][stage]:16.2f}" for mode in MODES))
    pipelined, levels = results["pipelined"], results["level_by_level"]
    print(
        f"first audio {pipelined['first_audio_s'] / levels['first_audio_s']:.3f}x of level-by-level (target <= 0.25), "
        f"overlap {pipelined['overlap']:.2f} (target >= 1.6), wall {pipelined['wall_s'] / levels['wall_s']:.2f}x (target <= 1.0)"
    )
    print(json.dumps({mode: {k: results[mode][k] for k in ("first_audio_s", "wall_s", "overlap")} for mode in MODES}))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
