"""Benchmark: what a model learned, measured on held-out songs of the synthetic corpus and on
songs it samples (default: the ``tiny`` preset with the weights shipped in the package).

Figures (``pipeline.corpus.quality``):

- VQ-VAE reconstruction SNR per level (dB, finest first) on ``--heldout`` held-out songs per style;
- each prior's held-out cross-entropy (nats/token, top first) against log(codebook size);
- conditioning: the style feature (median per-frame peak frequency) and its threshold fixed on
  held-out country and jazz songs first, then ``--songs`` + ``--songs`` sampled songs of
  ``--seconds`` s (country, jazz; every song its own seed) classified by it: the accuracy;
- temperature: entropy of the sampled top-level tokens of ``--temperature-songs`` songs at 0.5
  and 1.2;
- the default run (``python -m pipeline`` with this model, run through the pipeline): each
  song's spectral peak, RMS, spectral flatness, and the two songs' waveform correlation.

Each figure is printed against the one stored in the shipped weights file (``--compare-to``,
default the package's ``tiny`` weights): the ratio, and whether it lies within 10 %. The last
line is JSON. Usage::

    python scripts/bench_quality.py [--model tiny|CHECKPOINT_DIR] [--weights default|random]
        [--songs 16] [--seconds 2] [--heldout 4] [--temperature-songs 8] [--no-default-run]
        [--threads 1] [--compare-to FILE.safetensors] [--json-out FILE]

Run ``uptime`` first: the figures do not depend on the load, the time taken does.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time

import torch

COMPARED = ("snr_db", "cross_entropy", "conditioning_accuracy", "entropy")


def _default_run(model_overrides: list[str]) -> dict:
    """Run the default job (two songs) with this model into a temporary folder; its tonal figures."""
    import pandas as pd
    import soundfile
    from hydra import compose, initialize_config_module

    from pipeline.corpus.quality import tonal_figures
    from pipeline.execute.runner import run

    with tempfile.TemporaryDirectory(prefix="bench-quality-") as out:
        with initialize_config_module(config_module="conf", version_base=None):
            cfg = compose(config_name="config", overrides=[f"output.url={out}", *model_overrides])
        run(cfg)
        songs = pd.read_parquet(os.path.join(out, "manifest.parquet")).sort_values("song_index")
        audio = [soundfile.read(os.path.join(out, path), dtype="float32")[0] for path in songs.audio_path]
        rate = int(songs.sampling_rate.iloc[0])
    figures = tonal_figures([a if a.ndim == 1 else a.mean(axis=1) for a in audio], rate)
    figures["songs"] = list(songs.song_id)
    return figures


def _scalars(figures: dict) -> dict[str, float]:
    """The compared figures, flat: ``snr_db.0``, ``cross_entropy.2``, ``entropy.0.5``..."""
    flat = {f"snr_db.{i}": v for i, v in enumerate(figures["snr_db"])}
    flat.update({f"cross_entropy.{i}": v for i, v in enumerate(figures["cross_entropy"])})
    flat["conditioning_accuracy"] = figures["conditioning"]["accuracy"]
    flat.update({f"entropy.{t}": v for t, v in figures["temperature"]["entropy"].items()})
    return flat


def compare(figures: dict, reference: dict, tolerance: float = 0.10) -> dict:
    """Per compared figure: this run's value, the reference's, their ratio and whether it lies
    within ``tolerance`` (relative); figures missing on either side are left out."""
    ours, theirs = _scalars(figures), _scalars(reference)
    table = {}
    for key in sorted(ours.keys() & theirs.keys()):
        a, b = ours[key], theirs[key]
        ratio = a / b if b else float("inf")
        table[key] = {"value": a, "reference": b, "ratio": round(ratio, 4), "within": abs(ratio - 1) <= tolerance}
    return table


def measure(args) -> dict:
    from models.loading import load_model
    from models.shipped import weights_tag
    from pipeline.actors.builders import build_tokenizer
    from pipeline.corpus.heldout import heldout_songs
    from pipeline.corpus.quality import SamplingRequest, conditioning_figures, heldout_figures, temperature_figures

    model = load_model(args.model, weights=args.weights)
    tokenizer = build_tokenizer(args.model)
    figures: dict = {"model": args.model, "weights": weights_tag(args.model, args.weights, 0)}
    began = time.perf_counter()
    heldout = heldout_songs(args.corpus_seed, args.heldout, args.heldout_seconds)
    figures.update(heldout_figures(model, tokenizer, heldout))
    print(f"held-out songs: {len(heldout)} of {args.heldout_seconds} s ({args.heldout} per style)")
    print(f"VQ-VAE reconstruction SNR per level (finest first): {figures['snr_db']} dB")
    print(f"prior cross-entropy (top first): {figures['cross_entropy']} nats/token; log(codebook) = {figures['log_codebook']}")
    request = SamplingRequest(seconds=args.seconds, batch=args.batch)
    figures["conditioning"] = conditioning_figures(model, tokenizer, heldout, args.songs, request)
    c = figures["conditioning"]
    print(f"conditioning: threshold {c['threshold_hz']} Hz on held-out {c['styles']} (medians of "
          f"{ {k: sorted(v) for k, v in c['heldout_hz'].items()} }); sampled {args.songs} + {args.songs} songs of "
          f"{args.seconds} s: accuracy {c['accuracy']:.3f}")
    figures["temperature"] = temperature_figures(model, tokenizer, args.temperature_songs, request=request)
    print(f"temperature: top-token entropy over {args.temperature_songs} songs {figures['temperature']['entropy']} nats")
    if not args.no_default_run:
        source = [f"model.checkpoint={args.model}"] if os.path.isdir(args.model) else [f"model.preset={args.model}"]
        figures["default_run"] = _default_run([*source, f"model.weights={args.weights}"])
        print(f"default run: {figures['default_run']}")
    figures["measure_s"] = round(time.perf_counter() - began, 1)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="preset name or checkpoint directory (default: tiny)")
    parser.add_argument("--weights", default="default", choices=["default", "random"], help="a preset's weights")
    parser.add_argument("--songs", type=int, default=16, help="sampled songs per style for the conditioning check")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of the sampled songs")
    parser.add_argument("--batch", type=int, default=16, help="songs per sampling call")
    parser.add_argument("--heldout", type=int, default=4, help="held-out songs per style")
    parser.add_argument("--heldout-seconds", type=float, default=6.0, help="length of the held-out songs")
    parser.add_argument("--corpus-seed", type=int, default=None, help="corpus seed (default: the compared file's, else 0)")
    parser.add_argument("--temperature-songs", type=int, default=8)
    parser.add_argument("--no-default-run", action="store_true", help="skip the default pipeline job")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--compare-to", default=None, help="a shipped weights file (default: the package's tiny weights)")
    parser.add_argument("--json-out", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from models.shipped import read_metadata_file, shipped_weights_file

    reference_file = args.compare_to or shipped_weights_file("tiny")
    reference = read_metadata_file(reference_file) if reference_file is not None else {}
    if args.corpus_seed is None:
        args.corpus_seed = int(reference.get("recipe", {}).get("corpus_seed", 0))
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    figures = measure(args)
    if reference.get("metrics"):
        figures["compared"] = compare(figures, reference["metrics"])
        for key, row in figures["compared"].items():
            print(f"  {key}: {row['value']} vs shipped {row['reference']} (x{row['ratio']}, {'within' if row['within'] else 'OUTSIDE'} 10%)")
    figures["load"] = [round(v, 2) for v in os.getloadavg()]
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump(figures, handle, indent=1)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
