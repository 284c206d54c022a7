"""Training batches from corpora held in memory: random audio crops, random token windows.

Which crops or windows form step ``s``'s global batch is a pure function of ``(seed, s)``: every
rank draws the same list and takes its own contiguous slice, so the global batch is the same for
any number of ranks (and a resumed step sees the same data). Positions are drawn uniformly over
every valid (item, start) pair, so long songs give proportionally more windows, as random crops
of a concatenated corpus would.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from models.prior import JukeboxPrior

TRAIN_STREAM, CALIBRATION_STREAM = 0, 1


@dataclass(frozen=True)
class Pick:
    """One crop or window: ``item`` of the corpus, from position ``start``."""

    item: int
    start: int


@dataclass(frozen=True)
class CropSampler:
    """Uniform random windows of ``window`` positions, starting at multiples of ``align``.

    Args:
        lengths: positions (samples or tokens) of each corpus item; items shorter than the
            window give none.
        window: positions per crop.
        align: starts are multiples of this (an upsampler's windows start on upper-level tokens).
    """

    lengths: tuple[int, ...]
    window: int
    align: int = 1
    _ends: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.window < 1 or self.align < 1:
            raise ValueError(f"window and align must be >= 1, got window={self.window}, align={self.align}")
        lengths = np.asarray(self.lengths, dtype=np.int64)
        counts = np.where(lengths >= self.window, (lengths - self.window) // self.align + 1, 0)
        if counts.sum() == 0:
            raise ValueError(f"no item of {len(self.lengths)} holds a window of {self.window} positions (longest: {max(self.lengths, default=0)})")
        object.__setattr__(self, "_ends", np.cumsum(counts))

    @property
    def n_windows(self) -> int:
        """Distinct windows the corpus offers."""
        return int(self._ends[-1])

    def draw(self, seed: int, step: int, n: int, stream: int = TRAIN_STREAM) -> list[Pick]:
        """The ``n`` picks of step ``step`` (the same for every caller given the same arguments)."""
        rng = np.random.default_rng([int(seed), int(stream), int(step)])
        flat = rng.integers(0, self.n_windows, size=n)
        items = np.searchsorted(self._ends, flat, side="right")
        before = np.concatenate([[0], self._ends[:-1]])[items]
        return [Pick(int(i), int(f - b) * self.align) for i, f, b in zip(items, flat, before)]


def shard(picks: Sequence[Pick], rank: int, world: int) -> list[Pick]:
    """Rank ``rank``'s contiguous share of a global batch (its size must divide by ``world``)."""
    if len(picks) % world:
        raise ValueError(f"a global batch of {len(picks)} does not split evenly over {world} ranks")
    size = len(picks) // world
    return list(picks[rank * size : (rank + 1) * size])


def audio_crops(songs: Sequence[np.ndarray], picks: Sequence[Pick], crop: int) -> torch.Tensor:
    """Crops of float [samples, channels] songs -> float32 [len(picks), crop, channels]."""
    return torch.from_numpy(np.stack([songs[p.item][p.start : p.start + crop] for p in picks]).astype(np.float32, copy=False))


@dataclass(frozen=True)
class TokenSong:
    """One song of a prior's training corpus.

    Attributes:
        tokens: int [n] the prior's level.
        upper: int [n // r] the level above (upsamplers), else None.
        labels: int64 label row of this prior (tokenizer layout, timing placeholders 0).
        total_length: the song's length in audio samples.
    """

    tokens: np.ndarray
    upper: np.ndarray | None
    labels: np.ndarray
    total_length: int


def prior_inputs(prior: JukeboxPrior, songs: Sequence[TokenSong], picks: Sequence[Pick]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """The windows ``picks`` as the inputs of :class:`~models.training.prior_objective.PriorObjective`:
    tokens long [B, n_ctx], upper long [B, n_ctx // r] or None, metadata long [B, M] (timing of
    each window set, lyrics windowed)."""
    n_ctx = prior.n_ctx
    tokens = torch.from_numpy(np.stack([songs[p.item].tokens[p.start : p.start + n_ctx] for p in picks]).astype(np.int64))
    upper = None
    if prior.level != 0:
        ratio = prior.cond_downsample
        upper = torch.from_numpy(np.stack([
            songs[p.item].upper[p.start // ratio : (p.start + n_ctx) // ratio] for p in picks
        ]).astype(np.int64))
    rows = [torch.tensor(songs[p.item].labels, dtype=torch.long) for p in picks]  # a copy: the corpus may be read-only
    metadata = prior.get_metadata(rows, [p.start for p in picks], [songs[p.item].total_length for p in picks], 0)
    return tokens, upper, metadata
