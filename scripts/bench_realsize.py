"""Per-step sampling time at the released priors' real shapes, against transformers 4.40.2 and
against this machine's read-bandwidth bound measured in the same run.

Shapes (transformer layers reduced to fit a small machine; stated in the output): the 1b_lyrics
top prior (width 2048, lyrics merged into an n_ctx of 6144 + 384, blocks 64, 2 heads), its
upsamplers (width 1920, n_ctx 8192, blocks 128, 1 head; middle and bottom share the transformer
shape) and the 5b top prior (width 4800, n_ctx 8192, 8 heads). Every weight is written first
(transformers leaves its Conv1D weights as ``torch.empty``, which read as the kernel's zero page
twice as fast as real weights); ours and the reference hold the same values.

For each shape and batch size (1, 4, 16), median wall time of one step at the middle of a window's
new tokens (cache filled up to there):

- ours eager and ``torch.compile``d (compile time excluded): ``DecodeSession.logits`` (token
  embedding, every layer, float32 output projection);
- transformers: ``transformer(x, sample=True)`` then ``fc_proj_out`` on its own cache at the
  same position (it concatenates its cache every step, as when it samples);
- the bound: bytes a batch-1 step must read (all transformer weights and the output projection)
  over this machine's read bandwidth (``sum`` of a 1 GiB buffer; a float32 ``mv`` is also shown);
- the GEMM floor: only the step's matrix products on the same weights, back to back (what this
  machine's BLAS makes of streaming them: a step cannot be faster).

Numbers, then one JSON line. Usage:
    PYTHONPATH=. python scripts/bench_realsize.py [--threads 1] [--batches 1 4 16] [--no-compile]
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch
import transformers
from transformers.models.jukebox import modeling_jukebox as reference_module

from bench_steps import (
    PriorShape, autoregressive_kwargs, describe, gemm_floor_seconds, load_average, read_bandwidth, session_at,
    step_bytes, step_position, step_seconds, time_calls, write_weights_,
)
from models.prior.autoregressive import ConditionalAutoregressive
from models.prior.decoder import DecodeOptions

SHAPES = [
    PriorShape("1b_lyrics top", "1b_lyrics", 0, layers=6, position=15 / 16),
    PriorShape("upsampler", "1b_lyrics", 1, layers=6, position=3 / 4),
    PriorShape("5b top", "5b", 0, layers=3, position=15 / 16),
]


def build_pair(shape: PriorShape) -> tuple[torch.nn.Module, ConditionalAutoregressive]:
    """(transformers' model, ours) of ``shape`` with the same written weights, float32 on CPU."""
    config = shape.config()
    kwargs = autoregressive_kwargs(config)
    reference = reference_module.JukeboxConditionalAutoregressive(transformers.JukeboxPriorConfig(**config.to_dict()), **kwargs)
    write_weights_(reference.eval(), seed=1)
    ours = ConditionalAutoregressive(config, **kwargs).eval()
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def reference_step_seconds(reference, batch: int, position: int, n: int) -> float:
    """Median seconds of transformers' one-token step with its cache as after ``position`` tokens."""
    generator = torch.Generator().manual_seed(0)
    for layer in reference.transformer._attn_mods:
        attn = layer.attn
        attn.sample_t = position
        length = attn._suff_cache_len()
        width = attn.c_proj.weight.shape[0]
        attn.cache = {"key": torch.randn(batch, length, width, generator=generator),
                      "value": torch.randn(batch, length, width, generator=generator)}
    x = torch.randn(batch, 1, reference.width, generator=generator)
    with torch.no_grad():
        times = time_calls(lambda i: reference.fc_proj_out(reference.transformer(x, sample=True)), n, torch.device("cpu"))
    reference.transformer.del_cache()
    return statistics.median(times)


def bench_shape(shape: PriorShape, batches: list[int], steps: int, compile_: bool) -> dict:
    """Times of one shape (ratios to the bound are added at the end of the run)."""
    reference, ours = build_pair(shape)
    position = step_position(shape, ours)
    out = {**describe(shape.config(), ours), "position": position, "step_bytes": step_bytes(ours), "batches": {}}
    modes = [("eager", DecodeOptions())] + ([("compiled", DecodeOptions(compile=True))] if compile_ else [])
    for batch in batches:
        row = {}
        for name, options in modes:
            ours.set_decode_options(options)
            session = session_at(ours, batch, position)
            row[f"{name}_ms"] = step_seconds(session, position, steps, torch.device("cpu")) * 1e3
        ours.set_decode_options(DecodeOptions())  # frees the sessions' caches
        row["gemm_floor_ms"] = gemm_floor_seconds(ours, batch, steps, torch.device("cpu")) * 1e3
        row["transformers_ms"] = reference_step_seconds(reference, batch, position, steps) * 1e3
        best = min(row[f"{name}_ms"] for name, _ in modes)
        row["transformers_over_ours"] = row["transformers_ms"] / best
        row["ours_over_gemm_floor"] = best / row["gemm_floor_ms"]
        out["batches"][batch] = row
        print(f"  {shape.name:14s} batch {batch:2d}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
    first, last = min(batches), max(batches)
    if first != last:
        best_of = {b: min(v for k, v in out["batches"][b].items() if k in ("eager_ms", "compiled_ms")) for b in (first, last)}
        out[f"batch{last}_over_batch{first}"] = best_of[last] / best_of[first]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per figure (median kept)")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled figures")
    parser.add_argument("--shapes", nargs="+", default=[s.name for s in SHAPES], choices=[s.name for s in SHAPES])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()
    figures = {"threads": torch.get_num_threads(), "load_before": load_average(), "bandwidth": [], "shapes": {}}
    print(f"threads {torch.get_num_threads()}, load {figures['load_before']}", flush=True)
    for shape in SHAPES:
        if shape.name in args.shapes:
            figures["bandwidth"].append(read_bandwidth(torch.device("cpu")))
            print(f"read bandwidth {figures['bandwidth'][-1]}", flush=True)
            print(f"{shape.name}: {shape.preset} prior {shape.prior_index}, {shape.layers} layers (reduced)", flush=True)
            figures["shapes"][shape.name] = bench_shape(shape, args.batches, args.steps, not args.no_compile)
    figures["bandwidth"].append(read_bandwidth(torch.device("cpu")))
    figures["load_after"] = load_average()
    # The bound uses the best bandwidth of the run: other processes only ever lower it.
    bandwidth = max(b["sum_GB_s"] for b in figures["bandwidth"]) * 1e9
    print(f"bound: step bytes / {bandwidth / 1e9:.1f} GB/s (best read bandwidth of the run); load after {figures['load_after']}")
    for name, shape in figures["shapes"].items():
        shape["bound_ms"] = shape["step_bytes"] / bandwidth * 1e3
        for batch, row in shape["batches"].items():
            best = min(v for k, v in row.items() if k in ("eager_ms", "compiled_ms"))
            row["ours_over_bound"] = best / shape["bound_ms"]
        rows = ", ".join(f"batch {b}: {r['ours_over_bound']:.2f}" for b, r in shape["batches"].items())
        print(f"  {name:14s} bound {shape['bound_ms']:.2f} ms; ours / bound {rows}", flush=True)
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
