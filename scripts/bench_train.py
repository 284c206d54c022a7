"""Benchmark: training steps/s and tokens/s of every component at 1 and 2 Ray Train workers.

A synthetic labelled corpus (``--songs`` melodies of ``--seconds`` s, two artists/genres) is
written, encoded once by the tiny model (with its labels), then each component trains for a
few steps on one local Ray with 1 worker and with 2 workers at the same global batch (each worker
``--threads`` torch threads, default 1). Per run: steps/s and tokens/s from the median step time after ``--warmup``
steps (the metrics file records every step's time), and the run's wall time with Ray Train's
start-up. Tokens are music tokens for the priors and codes of all three levels for the VQ-VAE
(``samples/s`` too). The last line is JSON::

    {"load": [1, 5, 15 min], "components": {"vqvae": {"1": {"steps_per_s": ..., "tokens_per_s": ..., "wall_s": ...}, "2": {...}}, ...}}

Usage: ``python scripts/bench_train.py [--steps 30] [--vqvae-steps 12] [--batch 8] [--crop 32768]
[--workers 1 2] [--threads 1] [--components vqvae top middle bottom] [--out DIR] [extra Hydra overrides]``.
Run ``uptime`` first: on a shared machine the numbers follow the load.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import ray
import soundfile
from hydra import compose, initialize_config_dir

from pipeline.execute.runner import run

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
STYLES = [("Alan Jackson", "country", 196.0), ("Ella Fitzgerald", "jazz", 330.0)]


def write_corpus(root: Path, n_songs: int, seconds: float, rate: int = 44100) -> Path:
    """``n_songs`` seeded melodies as WAV files and ``labels.csv`` beside them (returned)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(n_songs):
        artist, genre, base = STYLES[index % len(STYLES)]
        rng = np.random.default_rng(index)
        n = int(seconds * rate)
        frequency = np.repeat(base * 2 ** (rng.integers(0, 12, int(seconds * 8) + 1) / 12), rate // 8 + 1)[:n]
        phase = 2 * np.pi * np.cumsum(frequency) / rate
        soundfile.write(root / f"song{index:03d}.wav", (0.35 * np.sin(phase) + 0.15 * np.sin(2 * phase)).astype(np.float32), rate)
        rows.append({"file": f"song{index:03d}.wav", "artist": artist, "genres": genre, "lyrics": "la la la, a song to sing"})
    labels = root.parent / "labels.csv"
    with open(labels, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["file", "artist", "genres", "lyrics"])
        writer.writeheader()
        writer.writerows(rows)
    return labels


def _cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose(config_name="config", overrides=overrides)


def _train(component: str, workers: int, steps: int, args, audio: Path, tokens: Path, out: Path, extra: list[str]) -> dict:
    data = [f"train.audio_url={audio}"] if component == "vqvae" else [f"train.tokens_url={tokens}"]
    result = run(_cfg([
        "mode=train", f"train.component={component}", f"output.url={out}", f"train.name={component}-{workers}",
        f"train.steps={steps}", f"train.batch_size={args.batch}", f"train.num_workers={workers}", f"train.torch_threads={args.threads}",
        f"train.checkpoint_every={steps}", "train.progress_bar=false", f"train.log_every={steps}",
        f"train.vqvae.crop_samples={args.crop}", *data, *extra,
    ]))
    rows = result.rows[args.warmup:]
    step_s = statistics.median(r["step_s"] for r in rows)
    tokens_per_step = result.plan["tokens_per_step"]
    figures = {"steps_per_s": round(1 / step_s, 3), "tokens_per_s": round(tokens_per_step / step_s, 1),
               "wall_s": round(result.wall_s, 1), "final_loss": round(result.rows[-1]["loss"], 4)}
    if component == "vqvae":
        figures["samples_per_s"] = round(args.batch * args.crop / step_s, 1)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="steps per prior run")
    parser.add_argument("--vqvae-steps", type=int, default=12, help="steps per VQ-VAE run")
    parser.add_argument("--warmup", type=int, default=3, help="first steps left out of the timing")
    parser.add_argument("--batch", type=int, default=8, help="global batch (crops or windows per step)")
    parser.add_argument("--crop", type=int, default=32768, help="VQ-VAE crop in samples")
    parser.add_argument("--songs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--components", nargs="+", default=["vqvae", "top", "middle", "bottom"])
    parser.add_argument("--out", type=Path, default=None, help="working directory (default: a temporary one)")
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING)
    load = [round(x, 2) for x in os.getloadavg()]
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_train-"))
    labels = write_corpus(out / "audio", args.songs, args.seconds)
    ray.init(num_cpus=max(args.workers), include_dashboard=False, log_to_driver=False)
    try:
        tokens = out / "tokens"
        run(_cfg(["mode=encode", f"encode.input_url={out / 'audio'}", f"encode.labels_url={labels}", f"output.url={tokens}"]))
        results: dict[str, dict[str, dict]] = {}
        for component in args.components:
            steps = args.vqvae_steps if component == "vqvae" else args.steps
            for workers in args.workers:
                figures = _train(component, workers, steps, args, out / "audio", tokens, out / "runs", extra)
                results.setdefault(component, {})[str(workers)] = figures
                print(f"{component:7s} {workers} worker(s): {figures['steps_per_s']:7.3f} steps/s {figures['tokens_per_s']:10.1f} "
                      f"tokens/s  (wall {figures['wall_s']:.1f} s with start-up, final loss {figures['final_loss']})", flush=True)
    finally:
        ray.shutdown()
    print(json.dumps({"load": load, "batch": args.batch, "crop": args.crop, "threads": args.threads, "components": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
