"""Decoding stage: VQ-VAE tokens of one level to audio, one chunk of a song at a time.

The decoder is convolutional, so a chunk decoded alone differs from the same span decoded as part
of the whole song near its edges. A request therefore carries ``margin`` extra tokens on each side
(where the song has them) and only the chunk's own span of the output is kept: with a margin at
least the decoder's receptive field, chunked audio equals whole-song audio (up to float rounding),
and audio can be produced while later tokens are still being sampled. No Ray, no storage.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from stages.batching import BatchedStage, BatchShare

logger = logging.getLogger(__name__)

_MAX_PROBE = 1 << 16  # tokens on each side of the probe's cut
_RELATIVE_TOLERANCE = 1e-5  # differences below this share of the peak are float rounding


@dataclass(frozen=True)
class DecodeRequest:
    """Decode tokens [start, end) of one song's ``level``.

    Attributes:
        song_id: the song, for bookkeeping only.
        level: VQ-VAE level of the tokens (0 = finest).
        tokens: int [hi - lo]: the level's tokens at [lo, hi), with lo <= start < end <= hi.
        lo: position of ``tokens[0]`` in the level.
        start, end: the span whose audio is returned.
    """

    song_id: str
    level: int
    tokens: np.ndarray
    lo: int
    start: int
    end: int

    def __post_init__(self) -> None:
        hi = self.lo + len(self.tokens)
        if not self.lo <= self.start < self.end <= hi:
            raise ValueError(f"song {self.song_id!r}: span [{self.start}, {self.end}) is not inside the given tokens [{self.lo}, {hi})")

    def batch_key(self) -> Hashable:
        """Requests with equal keys decode in one batch (same level, input length and crop)."""
        return (self.level, len(self.tokens), self.start - self.lo, self.end - self.lo)


@dataclass(frozen=True)
class DecodeResult(BatchShare):
    """Audio (float32 [samples, channels]) of one request and the batch it was decoded in."""

    audio: np.ndarray
    started_at: float
    finished_at: float
    batch_size: int


class DecodeStage(BatchedStage[DecodeRequest, DecodeResult]):
    """Decodes chunks with a ``JukeboxVQVAE``.

    Args:
        vqvae: the VQ-VAE (``decode(tokens_list, start_level, end_level)``, ``hop_lengths``).
        max_batch: most chunks per decoder call.
        device: where the VQ-VAE lives.
    """

    def __init__(self, vqvae: torch.nn.Module, max_batch: int = 1, device: torch.device | str = "cpu") -> None:
        super().__init__(max_batch)
        self.vqvae = vqvae
        self.device = torch.device(device)
        self._receptive_fields: dict[int, int] = {}

    def hop_length(self, level: int) -> int:
        """Audio samples per token of ``level``."""
        return int(self.vqvae.hop_lengths[level])

    @torch.inference_mode()
    def _decode(self, tokens: torch.Tensor, level: int) -> torch.Tensor:
        return self.vqvae.decode([tokens.to(self.device)], start_level=level, end_level=level + 1).float().cpu()

    def receptive_field(self, level: int) -> int:
        """Tokens next to a cut whose decoded audio the cut changes (measured once per level).

        Decodes a random sequence whole and as two halves: the halves' audio differs from the
        whole's only near the cut, within the decoder's receptive field, which is the margin a
        chunk needs on each side. The probe grows until the difference stays clear of its ends.
        """
        if level in self._receptive_fields:
            return self._receptive_fields[level]
        codes = int(self.vqvae.nb_discrete_codes)
        hop = self.hop_length(level)
        generator = torch.Generator().manual_seed(level)
        half = 32
        while True:
            tokens = torch.randint(0, codes, (1, 2 * half), generator=generator)
            whole = self._decode(tokens, level)
            parts = torch.cat([self._decode(tokens[:, :half], level), self._decode(tokens[:, half:], level)], dim=1)
            tolerance = _RELATIVE_TOLERANCE * float(whole.abs().max()) + 1e-12
            moved = torch.nonzero((whole - parts).abs().amax(dim=(0, 2)) > tolerance).flatten()
            if moved.numel() == 0:
                reach = 0
                break
            first, last = int(moved.min()) // hop, int(moved.max()) // hop
            reach = max(half - first, last + 1 - half)
            if first > 0 and last < 2 * half - 1:
                break
            if half >= _MAX_PROBE:
                raise RuntimeError(f"level {level}: the decoder's receptive field exceeds {_MAX_PROBE} tokens; set audio.margin_tokens")
            half *= 2
        self._receptive_fields[level] = reach
        logger.info("VQ-VAE level %d: decoder receptive field %d tokens each side", level, reach)
        return reach

    def _run(self, requests: Sequence[DecodeRequest]) -> list[DecodeResult]:
        """Decode requests sharing one :meth:`DecodeRequest.batch_key`."""
        first = requests[0]
        tokens = torch.from_numpy(np.stack([np.asarray(r.tokens, dtype=np.int64) for r in requests]))
        hop = self.hop_length(first.level)
        started = time.time()
        audio = self._decode(tokens, first.level)
        finished = time.time()
        crop = audio[:, (first.start - first.lo) * hop : (first.end - first.lo) * hop].numpy()
        return [DecodeResult(np.ascontiguousarray(crop[i]), started, finished, len(requests)) for i in range(len(requests))]
