"""Helpers shared by ``bench_realsize.py`` and ``bench_gpu.py``: priors at the released models'
shapes with every weight written, a decode session set at a given position, step timing, and
this machine's read bandwidth.

Imports only torch and the model modules a one-token step needs (no Ray, Hydra, tokenizer or
audio packages), so that it runs wherever the sampler does.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from models.config import JukeboxPriorConfig
from models.presets import load_preset
from models.prior.autoregressive import ConditionalAutoregressive
from models.prior.decoder import DecodeSession


@dataclass(frozen=True)
class PriorShape:
    """The transformer of one prior of a preset, optionally with fewer layers.

    Attributes:
        name: label in the output.
        preset: ``conf/model`` preset name.
        prior_index: 0 the top prior.
        layers: transformer layers to build (None: the preset's). Layers keep the preset's
            attention pattern from layer 0 on.
        position: the window position steps are timed at, as a fraction of the window: the middle
            of the new tokens of a window of this level (top: hop 1/8, so 15/16; upsamplers: hop
            1/2, so 3/4).
    """

    name: str
    preset: str
    prior_index: int
    layers: int | None = None
    position: float = 0.75

    def config(self) -> JukeboxPriorConfig:
        config = load_preset(self.preset).shared_prior_config(self.prior_index)
        if self.layers is None:
            return config
        data = {**config.to_dict(), "num_layers": self.layers, "alignment_layer": 0}
        return JukeboxPriorConfig.from_dict(data)


def autoregressive_kwargs(config: JukeboxPriorConfig) -> dict:
    """The keyword arguments ``JukeboxPrior`` builds its ``ConditionalAutoregressive`` with."""
    conditioned = config.level != 0 or config.metadata_conditioning
    if config.is_encoder_decoder:
        return dict(n_ctx=config.nb_relevant_lyric_tokens + config.n_ctx,
                    embed_dim=config.lyric_vocab_size + config.music_vocab_size,
                    audio_conditioning=conditioned, metadata_conditioning=True)
    return dict(audio_conditioning=conditioned, metadata_conditioning=config.metadata_conditioning)


def write_weights_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Write every parameter (in place, on its device): layer-norm weights near 1, others small
    normal noise. A weight never written maps to the kernel's zero page and reads twice as fast
    as it can (transformers leaves its Conv1D weights as ``torch.empty``)."""
    with torch.no_grad():
        for index, (name, param) in enumerate(sorted(module.named_parameters())):
            generator = torch.Generator(param.device).manual_seed(seed * 100_003 + index)
            noise = torch.empty(param.shape, dtype=torch.float32, device=param.device).normal_(generator=generator)
            if "layer_norm" in name and name.endswith("weight"):
                param.copy_(1.0 + 0.05 * noise)
            else:
                param.copy_(0.02 * noise)
    return module


def build_model(shape: PriorShape, dtype: torch.dtype, device: torch.device, seed: int = 0) -> ConditionalAutoregressive:
    """The ``ConditionalAutoregressive`` of ``shape`` in ``dtype`` on ``device``, weights written."""
    config = shape.config()
    with torch.device(device):
        model = ConditionalAutoregressive(config, **autoregressive_kwargs(config))
    return write_weights_(model.to(dtype).eval(), seed)


def step_position(shape: PriorShape, model: ConditionalAutoregressive) -> int:
    """The position steps of ``shape`` are timed at (see :class:`PriorShape`)."""
    return min(int(shape.position * model.n_ctx), model.n_ctx - 64)


def session_at(model: ConditionalAutoregressive, batch: int, position: int, seed: int = 0) -> DecodeSession:
    """A session of ``batch`` rows as if positions ``[0, position)`` were in its cache (random
    keys/values: a step's cost does not depend on their values)."""
    if not 0 <= position < model.n_ctx:
        raise ValueError(f"position {position} is outside the model's {model.n_ctx} positions")
    device, dtype = model.embed_tokens.weight.device, model.embed_tokens.weight.dtype
    generator = torch.Generator(device).manual_seed(seed)

    def noise(*shape: int) -> torch.Tensor:
        return (0.5 * torch.randn(*shape, generator=generator, device=device)).to(dtype)

    session = model.decoder.session(batch)
    n_cond = model.n_ctx if model.audio_conditioning else 1
    with torch.no_grad():
        session.begin(noise(batch, n_cond, model.width), noise(batch, model.width), None)
        for layer in session.cache.layers:
            for buffer in (layer.keys, layer.values):
                buffer[:, :, : layer.capacity].copy_(noise(*buffer[:, :, : layer.capacity].shape))
    return session


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[int], object], n: int, device: torch.device, warmup: int = 2) -> list[float]:
    """Wall seconds of ``fn(i)`` for i in range(n), each synchronised, after ``warmup`` calls."""
    for i in range(warmup):
        fn(i)
    synchronize(device)
    times = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def step_seconds(session: DecodeSession, position: int, n: int, device: torch.device) -> float:
    """Median seconds of one step of ``session`` at positions ``position, position + 1, ...``."""
    token = torch.zeros(session.batch, dtype=torch.long, device=device)
    with torch.inference_mode():
        times = time_calls(lambda i: session.logits(token, position + i), n, device)
    return statistics.median(times)


def gemm_floor_seconds(model: ConditionalAutoregressive, batch: int, n: int, device: torch.device) -> float:
    """Median seconds of only the matrix products of one step (every block's four, then the
    float32 output projection) on the model's own weights: what this device's BLAS makes of the
    weight streaming, the floor a step cannot beat whatever its other operations cost."""
    weights = model.step_weights()
    products = [pair for w in weights.blocks for pair in (
        (w.attn_bias, w.attn_weight), (w.proj_bias, w.proj_weight), (w.fc_bias, w.fc_weight), (w.mlp_proj_bias, w.mlp_proj_weight))]
    dtype = weights.embed.dtype
    inputs = {width: torch.randn(batch, width, device=device).to(dtype) for width in {w.shape[0] for _, w in products}}
    hidden = torch.randn(batch, model.width, device=device)

    def run(i: int) -> None:
        for bias, weight in products:
            torch.addmm(bias, inputs[weight.shape[0]], weight)
        torch.nn.functional.linear(hidden, weights.head)

    with torch.inference_mode():
        return statistics.median(time_calls(run, n, device))


def step_bytes(model: ConditionalAutoregressive) -> int:
    """Bytes a batch-1 step must read at least: every transformer weight, the output projection
    (float32) and the token's embedding and position rows (small)."""
    stack = sum(p.numel() * p.element_size() for p in model.transformer.parameters())
    return stack + model.fc_proj_out.weight.numel() * 4


def read_bandwidth(device: torch.device, n_bytes: int = 1 << 30, repeats: int = 5) -> dict[str, float]:
    """Bytes/s of this device reading a written buffer of ``n_bytes`` (best of ``repeats``):
    ``sum``, a reduction, and ``mv``, a float32 matrix-vector product (what a batch-1 step does)."""
    n = n_bytes // 4
    buffer = torch.empty(n, dtype=torch.float32, device=device).normal_()
    side = int(n**0.5)
    matrix, vector = buffer[: side * side].view(side, side), torch.randn(side, device=device)
    out = {}
    for name, fn in (("sum", lambda i: buffer.sum()), ("mv", lambda i: torch.mv(matrix, vector))):
        seconds = min(time_calls(fn, repeats, device, warmup=1))
        size = n * 4 if name == "sum" else side * side * 4
        out[f"{name}_GB_s"] = size / seconds / 1e9
    del buffer, matrix
    return out


def load_average() -> float | None:
    """The 1-minute load average (None where the OS does not report it)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def describe(config: JukeboxPriorConfig, model: ConditionalAutoregressive) -> dict:
    """Shape facts of a built model for the output."""
    return {"width": config.hidden_size, "layers": config.num_layers, "n_ctx": model.n_ctx, "blocks": config.blocks,
            "heads": config.n_heads, "pattern": config.attention_pattern, "vocab": model.embed_dim,
            "step_weight_MB": step_bytes(model) / 1e6}


def replace_layers(shape: PriorShape, layers: int | None) -> PriorShape:
    return shape if layers is None else dataclasses.replace(shape, layers=layers)
