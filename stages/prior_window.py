"""Sampling stage: one prior sampling windows of many songs, batched across songs.

A request is one window of one song (its labels, its context at this level, the upper-level
tokens covering it, its seed). Requests whose tensors line up (same context, new and upper token
counts and the same options) are stacked into one ``sample_window`` call of at most
``max_batch`` rows, whatever their songs' lengths and their windows' positions: those go to the
prior per row. Because every row draws only from its own seed, a song's tokens are the same
whatever it is batched with. No Ray, no storage: the pipeline wraps this class in an actor.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from models.prior.sampling import SamplingOptions
from stages.batching import BatchedStage, BatchShare

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowRequest:
    """One window of one song at one level.

    Attributes:
        song_id: the song, for bookkeeping only.
        labels: int64 [label_len]: the tokenizer's labels for this prior.
        context: int [n_context]: this level's tokens at [start, start + n_context).
        upper: int [m]: the upper level's tokens covering the window, None for the top prior.
        start: window start in this level's tokens.
        n_new: tokens to sample after the context.
        total_length: song length in audio samples.
        seed: this window's seed (``window_seed(song_seed, level, start)``).
        options: sampling options.
        offset: audio offset in samples (as ``get_metadata``).
    """

    song_id: str
    labels: np.ndarray
    context: np.ndarray
    upper: np.ndarray | None
    start: int
    n_new: int
    total_length: int
    seed: int
    options: SamplingOptions
    offset: int = 0

    def batch_key(self) -> Hashable:
        """Requests with equal keys can be stacked into one ``sample_window`` call: labels may
        differ in length (the prior takes them as a list of rows), and start, song length and
        offset are given per row."""
        return (len(self.context), None if self.upper is None else len(self.upper), self.n_new, self.options)


@dataclass(frozen=True)
class WindowResult(BatchShare):
    """New tokens of one request (int32 [n_new]) and the batch it was sampled in."""

    tokens: np.ndarray
    started_at: float
    finished_at: float
    batch_size: int


class PriorWindowStage(BatchedStage[WindowRequest, WindowResult]):
    """Samples windows with one prior.

    Args:
        prior: a ``JukeboxPrior`` (or anything with its ``sample_window`` method).
        max_batch: most rows per ``sample_window`` call.
        device: where the prior lives; inputs are moved there.
    """

    def __init__(self, prior: torch.nn.Module, max_batch: int = 1, device: torch.device | str = "cpu") -> None:
        super().__init__(max_batch)
        self.prior = prior
        self.device = torch.device(device)

    def _run(self, requests: Sequence[WindowRequest]) -> list[WindowResult]:
        """Sample a batch of requests sharing one :meth:`WindowRequest.batch_key`."""
        first = requests[0]

        def stack(arrays: list[np.ndarray]) -> torch.Tensor:
            return torch.from_numpy(np.stack([np.asarray(a, dtype=np.int64) for a in arrays])).to(self.device)

        # A list of rows: songs with lyrics of different lengths share a batch.
        labels = [torch.tensor(np.asarray(r.labels), dtype=torch.long, device=self.device) for r in requests]
        context = stack([r.context for r in requests])
        upper = None if first.upper is None else stack([r.upper for r in requests])
        started = time.time()
        new = self.prior.sample_window(
            labels, context, upper, [r.start for r in requests], first.n_new, [r.total_length for r in requests],
            [r.seed for r in requests], first.options, offset=[r.offset for r in requests],
        )
        finished = time.time()
        expected = (len(requests), first.n_new)
        if tuple(new.shape) != expected:
            raise RuntimeError(f"sample_window returned shape {tuple(new.shape)}, expected {expected}")
        tokens = new.to("cpu", torch.int32).numpy()
        return [WindowResult(tokens[i].copy(), started, finished, len(requests)) for i in range(len(requests))]
