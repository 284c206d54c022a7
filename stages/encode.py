"""Encoding stage: audio to VQ-VAE tokens of every level, for encode-only runs and priming.

Requests of equal length are stacked into one encoder call of at most ``max_batch`` rows. A long
file is encoded in chunks of ``chunk_samples`` so memory stays bounded whatever its length: each
chunk is encoded with ``margin`` extra samples on both sides (where the audio has them) and only
its own tokens are kept. The margin covers the encoders' receptive field, so chunked tokens equal
the tokens of the whole file encoded at once. No Ray, no storage: the pipeline wraps this class
in an actor.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.checks import is_int
from stages.batching import BatchedStage, BatchShare

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SAMPLES = 1 << 20  # about 24 s at 44.1 kHz


@dataclass(frozen=True)
class EncodeRequest:
    """Encode one song's audio.

    Attributes:
        song_id: the song, for bookkeeping only.
        audio: float32 [samples, channels], already at the model's rate and channel count.
    """

    song_id: str
    audio: np.ndarray

    def __post_init__(self) -> None:
        if not isinstance(self.audio, np.ndarray) or self.audio.ndim != 2:
            shape = getattr(self.audio, "shape", type(self.audio).__name__)
            raise ValueError(f"song {self.song_id!r}: audio must be a numpy array [samples, channels], got {shape}")

    def batch_key(self) -> Hashable:
        """Requests with equal keys encode in one batch (same length and channels)."""
        return self.audio.shape


@dataclass(frozen=True)
class EncodeResult(BatchShare):
    """Tokens of one request and the batch it was encoded in.

    Attributes:
        tokens: one int32 [n_samples // hop_lengths[level]] array per encoded level, finest first.
        levels: the VQ-VAE level of each entry of ``tokens``.
        n_samples: samples encoded: the audio cut to whole tokens of the coarsest level.
    """

    tokens: tuple[np.ndarray, ...]
    levels: tuple[int, ...]
    n_samples: int
    started_at: float
    finished_at: float
    batch_size: int

    def level_tokens(self, level: int) -> np.ndarray:
        """Tokens of one VQ-VAE level."""
        if level not in self.levels:
            raise ValueError(f"level {level} was not encoded; have levels {list(self.levels)}")
        return self.tokens[self.levels.index(level)]


def encoder_receptive_field(encoder: nn.Module) -> int:
    """Input samples that can influence one output of a chain of ``nn.Conv1d`` (in registration
    order, which is the forward order of our encoders): ``1 + sum((k - 1) * dilation * jump)``."""
    field, jump = 1, 1
    for module in encoder.modules():
        if isinstance(module, nn.Conv1d):
            field += (module.kernel_size[0] - 1) * module.dilation[0] * jump
            jump *= module.stride[0]
    return field


class EncodeStage(BatchedStage[EncodeRequest, EncodeResult]):
    """Encodes audio with a ``JukeboxVQVAE``.

    Args:
        vqvae: the VQ-VAE (``encode(audio, start_level, end_level)``, ``hop_lengths``, ``encoders``).
        max_batch: most songs per encoder call.
        device: where the VQ-VAE lives.
        levels: VQ-VAE levels to encode (default all), a contiguous range.
        chunk_samples: audio samples encoded per call and song (rounded to whole coarsest-level
            tokens); None uses ``DEFAULT_CHUNK_SAMPLES``.
    """

    def __init__(self, vqvae: nn.Module, max_batch: int = 1, device: torch.device | str = "cpu",
                 levels: Sequence[int] | None = None, chunk_samples: int | None = None) -> None:
        super().__init__(max_batch)
        n_levels = len(vqvae.hop_lengths)
        levels = tuple(range(n_levels)) if levels is None else tuple(sorted(set(levels)))
        if not levels or levels != tuple(range(levels[0], levels[-1] + 1)) or not 0 <= levels[0] <= levels[-1] < n_levels:
            raise ValueError(f"levels must be a contiguous range of VQ-VAE levels in [0, {n_levels}), got {levels}")
        self.vqvae = vqvae
        self.device = torch.device(device)
        self.levels = levels
        # Chunk edges fall on whole tokens of every encoded level.
        self.unit = int(vqvae.hop_lengths[levels[-1]])
        chunk = DEFAULT_CHUNK_SAMPLES if chunk_samples is None else chunk_samples
        if not is_int(chunk) or chunk < 1:
            raise ValueError(f"chunk_samples must be an integer >= 1 or None, got {chunk_samples!r}")
        self.chunk_samples = max(self.unit, chunk // self.unit * self.unit)
        field = max(encoder_receptive_field(vqvae.encoders[level]) for level in levels)
        self.margin = -(-field // self.unit) * self.unit
        logger.debug("encode stage: chunks of %d samples, margin %d samples", self.chunk_samples, self.margin)

    @torch.inference_mode()
    def _encode(self, audio: np.ndarray) -> list[np.ndarray]:
        """float [batch, samples, channels] -> int32 [batch, tokens] per level."""
        tensor = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(self.device)
        tokens = self.vqvae.encode(tensor, start_level=self.levels[0], end_level=self.levels[-1] + 1)
        return [t.cpu().numpy().astype(np.int32) for t in tokens]

    def _run(self, requests: Sequence[EncodeRequest]) -> list[EncodeResult]:
        """Encode requests sharing one :meth:`EncodeRequest.batch_key`, chunk by chunk."""
        first = requests[0]
        n_samples = first.audio.shape[0] // self.unit * self.unit
        if n_samples == 0:
            raise ValueError(f"song {first.song_id!r}: {first.audio.shape[0]} samples, fewer than one token of level "
                             f"{self.levels[-1]} ({self.unit} samples)")
        started = time.time()
        stacked = np.stack([r.audio[:n_samples] for r in requests])
        pieces: list[list[np.ndarray]] = [[] for _ in self.levels]
        for start in range(0, n_samples, self.chunk_samples):
            end = min(start + self.chunk_samples, n_samples)
            lo, hi = max(0, start - self.margin), min(n_samples, end + self.margin)
            for index, (level, tokens) in enumerate(zip(self.levels, self._encode(stacked[:, lo:hi]))):
                hop = int(self.vqvae.hop_lengths[level])
                pieces[index].append(tokens[:, (start - lo) // hop : (end - lo) // hop])
        finished = time.time()
        per_level = [np.concatenate(p, axis=1) for p in pieces]
        return [
            EncodeResult(tuple(np.ascontiguousarray(t[i]) for t in per_level), self.levels, n_samples,
                         started, finished, len(requests))
            for i in range(len(requests))
        ]
