"""GPU sampling speed of the 1b_lyrics priors at full depth in bfloat16 (random, written weights).

For the top prior (width 2048, 72 layers, lyrics merged: n_ctx 6144 + 384) and the upsampler
shape (width 1920, 72 layers, n_ctx 8192; the middle and bottom priors share it), at batch 1, 16
and 64:

- ms per decode step, eager and replaying a CUDA graph, at the middle of a window's new tokens,
  and with the graph through ``decode_n_tokens`` with the seeded draw (ms per token);
- the fraction of the HBM bandwidth bound: bytes a step must read (every transformer weight in
  bf16, the float32 output projection) over the bandwidth measured here (``sum`` of 4 GiB) and
  the GPU's nominal one;
- tokens/s per level and the prefill of one window's context (reported apart);
- projected GPU minutes per minute of audio: the top level's 20.7k, the middle's 82.7k and the
  bottom's 330.8k tokens per minute at that batch's step time, plus one prefill per window
  (hops 1/8 and 1/2 of the window), divided by the batch (songs sampled together); and
  song-minutes per GPU-hour.

Numbers, then one JSON line. Needs torch, numpy, pyyaml, fsspec and safetensors only:
    PYTHONPATH=. python scripts/bench_gpu.py               # on one H100/H200: a few minutes
    PYTHONPATH=. python scripts/bench_gpu.py --dry-run     # the tiny preset on CPU, seconds
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from bench_steps import (
    PriorShape, build_model, describe, load_average, read_bandwidth, session_at, step_bytes, step_position,
    synchronize,
)
from models.presets import load_preset
from models.prior.decoder import DecodeOptions
from models.prior.sampling import SamplingOptions, SeededDrawer
from models.windows import level_geometries

# Nominal HBM bandwidth (bytes/s) by device name.
NOMINAL_BANDWIDTH = {"H200": 4.8e12, "H100": 3.35e12, "A100": 2.0e12, "L40S": 0.864e12}
SECONDS_PER_MINUTE = 60


def nominal_bandwidth(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((value for key, value in NOMINAL_BANDWIDTH.items() if key in name), None)


def loop_seconds(fn, n: int, device: torch.device, warmup: int = 3) -> float:
    """Seconds per call of ``fn(i)`` over ``n`` back-to-back calls (one synchronisation at the
    end: a sampler does not wait for the GPU between steps)."""
    for i in range(warmup):
        fn(i)
    synchronize(device)
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    synchronize(device)
    return (time.perf_counter() - start) / n


def level_plan(preset: str) -> list[dict]:
    """Per prior (top first): tokens per minute of audio, new tokens and context per window."""
    config = load_preset(preset)
    plan = []
    for geometry, prior in zip(level_geometries(config), config.prior_configs):
        tokens_per_minute = SECONDS_PER_MINUTE * config.sampling_rate / geometry.raw_to_tokens
        hop = geometry.hop_length
        plan.append({"tokens_per_minute": tokens_per_minute, "new_per_window": hop,
                     "context_per_window": geometry.n_ctx - hop + prior.nb_relevant_lyric_tokens * prior.is_encoder_decoder,
                     "windows_per_minute": tokens_per_minute / hop})
    return plan


def prefill_seconds(model, batch: int, n_context: int, chunk: int, device: torch.device) -> float:
    """Seconds to prefill ``n_context`` positions of ``batch`` rows (one window's context)."""
    session = session_at(model, batch, 0)
    context = torch.randint(0, model.embed_dim, (batch, n_context), device=device)
    conditioning = session.buffers.conditioning
    start = session.buffers.start[:, None]
    with torch.inference_mode():
        model.prefill(context[:, :chunk], session.cache, conditioning, start, chunk)  # warm-up
        synchronize(device)
        begin = time.perf_counter()
        model.prefill(context, session.cache, conditioning, start, chunk)
        synchronize(device)
    return time.perf_counter() - begin


def bench_level(shape: PriorShape, n_context: int, dtype, device, batches, steps, chunk, graphs: bool, compile_: bool,
                bandwidth: float, nominal: float | None) -> dict:
    """Every figure of one prior shape (module docstring); ``n_context``: a window's context."""
    model = build_model(shape, dtype, device)
    position = step_position(shape, model)
    bound_s = step_bytes(model) / bandwidth
    out = {**describe(shape.config(), model), "position": position, "bound_ms_measured": bound_s * 1e3,
           "bound_ms_nominal": None if nominal is None else step_bytes(model) / nominal * 1e3, "batches": {}}
    modes = [("eager", DecodeOptions(cuda_graphs=False))]
    if graphs:
        modes.append(("graph", DecodeOptions(cuda_graphs=True)))
    if compile_:
        modes.append(("compiled_graph" if graphs else "compiled", DecodeOptions(compile=True, cuda_graphs=graphs)))
    for batch in batches:
        row = {}
        for name, options in modes:
            model.set_decode_options(options)
            session = session_at(model, batch, position)
            token = torch.zeros(batch, dtype=torch.long, device=device)
            with torch.inference_mode():
                row[f"{name}_ms"] = loop_seconds(lambda i: session.logits(token, position + i), steps, device) * 1e3
        best_name = min((name for name, _ in modes), key=lambda name: row[f"{name}_ms"])
        model.set_decode_options(dict(modes)[best_name])
        session = session_at(model, batch, position)
        drawer = SeededDrawer(SamplingOptions(temperature=0.98), list(range(batch)), steps, device)
        last = torch.zeros(batch, dtype=torch.long, device=device)
        with torch.inference_mode():
            model.decode_n_tokens(session, last, position, 2, drawer)  # warm-up
            synchronize(device)
            begin = time.perf_counter()
            model.decode_n_tokens(session, last, position, steps, drawer)
            synchronize(device)
        row["with_draw_ms_per_token"] = (time.perf_counter() - begin) / steps * 1e3
        step_s = row[f"{best_name}_ms"] / 1e3
        row["best"] = best_name
        row["fraction_of_bound_measured"] = bound_s / step_s
        row["fraction_of_bound_nominal"] = None if nominal is None else step_bytes(model) / nominal / step_s
        row["tokens_per_s"] = batch / (row["with_draw_ms_per_token"] / 1e3)
        model.set_decode_options(DecodeOptions(cuda_graphs=False))
        row["prefill_s"] = prefill_seconds(model, batch, n_context, chunk, device)
        out["batches"][batch] = row
        print(f"  {shape.name:9s} batch {batch:3d}: " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def project(levels: dict, plan: list[dict], batches) -> dict:
    """GPU minutes per minute of audio and song-minutes per GPU-hour, per batch size."""
    out = {}
    shapes = ["top", "upsampler", "upsampler"]  # prior order: top, middle, bottom
    for batch in batches:
        decode_s = prefill_s = 0.0
        for prior, shape in zip(plan, shapes):
            row = levels[shape]["batches"][batch]
            decode_s += prior["tokens_per_minute"] * row["with_draw_ms_per_token"] / 1e3 / batch
            prefill_s += prior["windows_per_minute"] * row["prefill_s"] / batch
        minutes = (decode_s + prefill_s) / SECONDS_PER_MINUTE
        out[batch] = {"gpu_minutes_per_audio_minute": minutes, "decode_minutes": decode_s / SECONDS_PER_MINUTE,
                      "prefill_minutes": prefill_s / SECONDS_PER_MINUTE, "song_minutes_per_gpu_hour": 60 / minutes}
        print(f"  batch {batch:3d}: {minutes:.3f} device minutes per minute of audio (decode {decode_s / 60:.3f}, prefill "
              f"{prefill_s / 60:.3f}); {60 / minutes:.1f} song-minutes per device-hour", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="the tiny preset on CPU (no CUDA graphs): checks the script")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="default 1 16 64 (dry run: 1 2 4)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per figure (default 50; dry run 8)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--chunk", type=int, default=1024, help="prefill chunk (positions)")
    parser.add_argument("--compile", action="store_true", help="also torch.compile the step (adds minutes)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 4; dry run 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads or (1 if args.dry_run else 4))
    preset = "tiny" if args.dry_run else "1b_lyrics"
    device = torch.device("cpu" if args.dry_run else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA device (or --dry-run)")
    batches = args.batches or ([1, 2, 4] if args.dry_run else [1, 16, 64])
    steps = args.steps or (8 if args.dry_run else 50)
    dtype = getattr(torch, args.dtype)
    started = time.perf_counter()
    env = {"torch": torch.__version__, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "cuda": torch.version.cuda, "dtype": args.dtype, "preset": preset, "load": load_average()}
    measured = read_bandwidth(device, n_bytes=(64 << 20) if args.dry_run else (4 << 30))
    nominal = nominal_bandwidth(device)
    print(f"{env}\nread bandwidth {measured}, nominal {nominal}", flush=True)
    plan = level_plan(preset)
    shapes = {"top": (PriorShape("top", preset, 0, position=15 / 16), plan[0]["context_per_window"]),
              "upsampler": (PriorShape("upsampler", preset, 1, position=3 / 4), plan[1]["context_per_window"])}
    levels = {}
    for name, (shape, n_context) in shapes.items():
        print(f"{name}: {preset} prior {shape.prior_index}, full depth, window context {n_context}", flush=True)
        levels[name] = bench_level(shape, n_context, dtype, device, batches, steps, args.chunk, device.type == "cuda",
                                   args.compile, measured["sum_GB_s"] * 1e9, nominal)
    device_name = "CPU, dry run" if args.dry_run else env["device"]
    print(f"projection (top + middle + bottom, one prefill per window; device: {device_name}):", flush=True)
    projection = project(levels, plan, batches)
    figures = {"env": env, "bandwidth": measured, "nominal_bandwidth": nominal, "plan": plan, "levels": levels,
               "projection": projection, "wall_s": time.perf_counter() - started}
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
