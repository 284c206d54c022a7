"""Turning logits into tokens: sampling options, top-k/top-p filtering, per-row seeded draws, and
the up-front validation of a ``sample_window`` request (:func:`check_window_request`).

Everything here is a pure function of its inputs except the two drawers, which own their
randomness explicitly:

- :class:`SeededDrawer` gives every batch row its own ``torch.Generator`` seeded by the caller
  (``window_seed`` of the row's song), and draws all of that row's random numbers for a window up
  front. A row's tokens therefore depend only on its own logits and seed, never on which rows it
  is batched with or in which order.
- :class:`GlobalDrawer` draws from the global torch RNG, like the reference's
  ``torch.distributions.Categorical(logits=...).sample()``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch.nn import functional as F

from models.checks import is_int, is_number
from models.seeding import generator_for


@dataclass(frozen=True)
class SamplingOptions:
    """Options of one sampling call, validated on construction.

    Attributes:
        temperature: logits are divided by it before filtering; must be > 0.
        top_k: keep only the ``top_k`` most likely tokens (0 keeps all); must be >= 0.
        top_p: keep the smallest set of most likely tokens whose probability reaches ``top_p``
            (0 disables nucleus filtering); must be in [0, 1].
        chunk_size: prefill the context this many positions at a time (None: all at once);
            must be None or > 0. Results do not depend on it.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.0
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        if not is_number(self.temperature) or not (
            math.isfinite(self.temperature) and self.temperature > 0
        ):
            raise ValueError(f"SamplingOptions.temperature must be a finite number > 0, got {self.temperature!r}")
        if not is_int(self.top_k) or self.top_k < 0:
            raise ValueError(f"SamplingOptions.top_k must be an int >= 0 (0 disables it), got {self.top_k!r}")
        if not is_number(self.top_p) or not 0.0 <= self.top_p <= 1.0:
            raise ValueError(f"SamplingOptions.top_p must be a number in [0, 1] (0 disables it), got {self.top_p!r}")
        if self.chunk_size is not None and (
            not is_int(self.chunk_size) or self.chunk_size <= 0
        ):
            raise ValueError(f"SamplingOptions.chunk_size must be None or an int > 0, got {self.chunk_size!r}")


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0, filter_value: float = -math.inf) -> torch.Tensor:
    """Top-k then nucleus (top-p) filtering of ``logits`` [..., vocab]; returns a new tensor.

    Top-k keeps every token whose logit is at least the k-th largest (ties are kept). Top-p keeps
    the most likely tokens up to and including the first one at which the cumulative probability
    exceeds ``top_p`` (so at least one token always survives). Rows are filtered independently.
    """
    vocab = logits.shape[-1]
    top_k = min(top_k, vocab)
    if top_k > 0:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, filter_value)
    if top_p > 0.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = F.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # Drop a token when the mass *before* it already exceeds top_p: the first token that
        # crosses the threshold stays.
        drop_sorted = torch.zeros_like(cumulative, dtype=torch.bool)
        drop_sorted[..., 1:] = cumulative[..., :-1] > top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, filter_value)
    return logits


def token_probabilities(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 0.0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Probabilities [..., vocab] (``dtype``) after temperature and top-k/top-p filtering of ``logits``."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    if top_k or top_p:
        logits = filter_logits(logits, top_k, top_p)
    return F.softmax(logits, dim=-1, dtype=dtype)


def draw_with_uniforms(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.LongTensor:
    """Inverse-CDF draw: one token per row of ``probs`` [batch, vocab] from ``uniforms`` [batch] in [0, 1).

    Row ``i`` uses only ``probs[i]`` and ``uniforms[i]``. A token of probability 0 is never drawn.
    """
    levels = (1.0 - uniforms.to(probs.device, torch.float64)).clamp_(min=torch.finfo(torch.float64).tiny)
    return _draw_inverse_cdf(probs, levels)


def _draw_inverse_cdf(probs: torch.Tensor, levels: torch.Tensor) -> torch.LongTensor:
    """Tokens long [batch] at which the cumulative mass of ``probs`` reaches ``levels`` [batch] in (0, 1]."""
    cdf = probs.to(torch.float64).cumsum(dim=-1)
    # A strictly positive target lands on a token whose cumulative mass increased (one with
    # non-zero probability); a target <= the total mass never runs past the last token.
    target = levels.view(-1, 1) * cdf[:, -1:]
    return torch.searchsorted(cdf, target).view(-1)


class TokenDrawer(Protocol):
    """Picks one token per row from logits [batch, vocab] at decoding step ``step`` (0-based)."""

    def __call__(self, logits: torch.Tensor, step: int) -> torch.LongTensor: ...


class SeededDrawer:
    """Per-row seeded sampling for a window of ``n_steps`` tokens.

    Row ``i`` draws its ``n_steps`` uniforms from ``generator_for(seeds[i])`` (on the CPU, so the
    numbers do not depend on the device either) when the drawer is built; step ``t`` then uses
    uniform ``t`` of each row.
    """

    def __init__(self, options: SamplingOptions, seeds: Sequence[int], n_steps: int, device: torch.device | str):
        self.options = options
        rows = [torch.rand(n_steps, generator=generator_for(int(seed)), dtype=torch.float64) for seed in seeds]
        uniforms = torch.stack(rows) if rows else torch.empty(0, n_steps, dtype=torch.float64)
        # Stored as 1 - u, in (0, 1]: the cumulative level each step's token must reach.
        self.levels = (1.0 - uniforms).to(device)

    def __call__(self, logits: torch.Tensor, step: int) -> torch.LongTensor:
        o = self.options
        probs = token_probabilities(logits, o.temperature, o.top_k, o.top_p, dtype=torch.float64)
        return _draw_inverse_cdf(probs, self.levels[:, step])


class GlobalDrawer:
    """Sampling from the global torch RNG (reference behaviour of ``JukeboxPrior.sample``)."""

    def __init__(self, options: SamplingOptions):
        self.options = options

    def __call__(self, logits: torch.Tensor, step: int) -> torch.LongTensor:
        o = self.options
        probs = token_probabilities(logits, o.temperature, o.top_k, o.top_p)
        return torch.multinomial(probs, 1).squeeze(-1)


PerRow = int | Sequence[int]
"""One int for every row of a batch, or a sequence of one int per row."""


def per_row(value: PerRow, batch: int, name: str) -> list[int]:
    """``value`` as a list of ``batch`` ints (an int repeated, or a sequence of ``batch`` ints).

    Raises:
        ValueError: naming ``name`` when ``value`` is neither an int nor ``batch`` ints.
    """
    if is_int(value):
        return [value] * batch
    if isinstance(value, torch.Tensor) and value.dim() == 1 and not value.dtype.is_floating_point:
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != batch:
        raise ValueError(f"{name} must be an int or a sequence of {batch} ints (one per row), got {value!r}")
    if not all(is_int(v) for v in value):
        raise ValueError(f"{name} must hold ints, got {list(value)!r}")
    return list(value)


def check_window_request(
    labels: Any,
    context: Any,
    upper: Any,
    start: Any,
    n_new: Any,
    total_length: Any,
    seeds: Any,
    options: Any,
    offset: Any,
    *,
    n_ctx: int,
    music_vocab_size: int,
    max_length: float,
    raw_to_tokens: int,
    upper_ratio: int | None,
) -> None:
    """Raise ValueError, naming the argument, unless the arguments of ``JukeboxPrior.sample_window``
    describe a window this prior can sample (see its docstring).

    Keyword arguments describe the prior: its window, codebook size, longest song (samples), audio
    samples per token and tokens per upper-level token (None for the top prior).
    """
    if not isinstance(options, SamplingOptions):
        raise ValueError(f"options must be a SamplingOptions, got {type(options).__name__}")
    if not isinstance(context, torch.Tensor) or context.dim() != 2 or context.dtype.is_floating_point:
        raise ValueError(f"context must be an integer tensor [batch, n_context], got {getattr(context, 'shape', context)!r}")
    batch, n_context = context.shape
    vocab = music_vocab_size
    if batch == 0:
        raise ValueError("sample_window needs at least one row (context has batch size 0)")
    if context.numel() and (int(context.min()) < 0 or int(context.max()) >= vocab):
        raise ValueError(f"context tokens must be in [0, {vocab}), got values in [{int(context.min())}, {int(context.max())}]")
    if not is_int(n_new) or n_new < 1:
        raise ValueError(f"n_new must be an int >= 1, got {n_new!r}")
    given = {"start": (start, 0), "total_length": (total_length, 1), "offset": (offset, 0)}
    rows = {}
    for name, (value, low) in given.items():
        rows[name] = per_row(value, batch, name)
        if any(v < low for v in rows[name]):
            raise ValueError(f"{name} must be >= {low} (an int, or one per row), got {value!r}")
    if n_context + n_new > n_ctx:
        raise ValueError(f"n_context={n_context} + n_new={n_new} exceeds this prior's window n_ctx={n_ctx}")
    for row, (row_start, row_total, row_offset) in enumerate(zip(rows["start"], rows["total_length"], rows["offset"])):
        where = "" if batch == 1 else f"row {row}: "
        if row_total > max_length:
            raise ValueError(f"{where}total_length={row_total} samples exceeds this prior's max_duration ({max_length:.0f} samples)")
        if row_offset >= row_total or row_start * raw_to_tokens >= row_total:
            raise ValueError(
                f"{where}window start {row_start} (sample {row_start * raw_to_tokens}) and offset {row_offset} must lie "
                f"inside the song of {row_total} samples"
            )
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or len(seeds) != batch or not all(is_int(s) for s in seeds):
        raise ValueError(f"seeds must be a sequence of {batch} ints (one per row), got {seeds!r}")
    n_rows = labels.shape[0] if isinstance(labels, torch.Tensor) and labels.dim() == 2 else len(labels)
    if n_rows != batch:
        raise ValueError(f"labels have {n_rows} rows, context has {batch}")
    if upper_ratio is None:
        if upper is not None:
            raise ValueError("the top prior has no upper level: upper must be None")
        return
    # The upper tokens from position start // r must cover the window's span; a whole window's
    # worth (n_ctx // r) is the most the conditioner reads. Rows share m: it must cover the row
    # that needs the most.
    needed = max((s + n_context + n_new) // upper_ratio - s // upper_ratio for s in rows["start"])
    most = n_ctx // upper_ratio
    if not isinstance(upper, torch.Tensor) or upper.dim() != 2 or upper.shape[0] != batch or not needed <= upper.shape[1] <= most:
        raise ValueError(
            f"upper must be an integer tensor [{batch}, m] with {needed} <= m <= {most} (upper positions from "
            f"{[s // upper_ratio for s in rows['start']]} covering this window), got "
            f"{tuple(upper.shape) if isinstance(upper, torch.Tensor) else upper!r}"
        )
    if upper.dtype.is_floating_point or int(upper.min()) < 0 or int(upper.max()) >= vocab:
        raise ValueError(f"upper tokens must be integers in [0, {vocab}), got {upper.dtype} in [{upper.min()}, {upper.max()}]")
