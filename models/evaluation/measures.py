"""What a trained model has learned, measured on held-out songs: the VQ-VAE's reconstruction per
level, a prior's cross-entropy against the uniform guess, the entropy of sampled tokens.

Nothing here trains or samples on its own; callers give the models, audio and tokens.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from models.prior import JukeboxPrior
from models.training.batches import Pick, TokenSong, prior_inputs
from models.vqvae import JukeboxVQVAE


@torch.no_grad()
def reconstruction_snr(vqvae: JukeboxVQVAE, audio: torch.Tensor) -> list[float]:
    """Signal-to-noise ratio in dB of each level's reconstruction, finest level first.

    Args:
        audio: float [batch, samples, channels], ``samples`` a multiple of the top level's hop.

    Returns:
        Per VQ-VAE level, ``10 log10(sum x^2 / sum (x - decode(encode(x)))^2)`` over the batch.
    """
    if audio.dim() != 3 or audio.shape[1] % vqvae.hop_lengths[-1]:
        raise ValueError(f"audio must be [batch, samples, channels] with samples a multiple of {vqvae.hop_lengths[-1]}, "
                         f"got {tuple(audio.shape)}")
    target = audio.float()
    signal = float(target.pow(2).sum())
    if signal == 0.0:
        raise ValueError("the audio is silent: a signal-to-noise ratio needs a signal")
    snrs = []
    for level in range(vqvae.levels):
        codes = vqvae.encode(audio, level, level + 1)
        decoded = vqvae.decode(codes, level, level + 1).float()
        assert decoded.shape == target.shape, f"level {level} decoded {tuple(decoded.shape)} from {tuple(target.shape)}"
        snrs.append(10.0 * math.log10(signal / max(float((target - decoded).pow(2).sum()), 1e-30)))
    return snrs


def tiling_windows(songs: Sequence[TokenSong], n_ctx: int) -> list[Pick]:
    """Every whole window of ``n_ctx`` tokens that tiles each song from its start (no overlap)."""
    return [Pick(item, start) for item, song in enumerate(songs) for start in range(0, len(song.tokens) - n_ctx + 1, n_ctx)]


@torch.no_grad()
def prior_cross_entropy(prior: JukeboxPrior, songs: Sequence[TokenSong], max_batch: int = 16) -> float:
    """Teacher-forced next-token cross-entropy of ``prior`` in nats per token, averaged over every
    window of :func:`tiling_windows` (each with its song's labels and upper-level tokens).

    The uniform guess over a codebook of ``V`` codes scores ``log(V)``.
    """
    picks = tiling_windows(songs, prior.n_ctx)
    if not picks:
        raise ValueError(f"no song holds a window of {prior.n_ctx} tokens (longest: {max((len(s.tokens) for s in songs), default=0)})")
    was_training = prior.training
    prior.eval()
    total = 0.0
    try:
        for first in range(0, len(picks), max_batch):
            batch = picks[first : first + max_batch]
            tokens, upper, metadata = prior_inputs(prior, songs, batch)
            _, metrics = prior.forward_tokens(tokens, [upper] if upper is not None else (), metadata)
            total += float(metrics["next_token_prediction_loss"]) * len(batch)
    finally:
        prior.train(was_training)
    return total / len(picks) * math.log(2.0)  # the prior reports bits


def token_entropy(tokens: torch.Tensor | np.ndarray, vocab_size: int) -> float:
    """Entropy in nats of the empirical distribution of ``tokens`` (any shape, ints in
    ``[0, vocab_size)``): ``log(vocab_size)`` at most, 0 when one code is all there is."""
    values = np.asarray(tokens.cpu() if isinstance(tokens, torch.Tensor) else tokens).reshape(-1)
    if values.size == 0:
        raise ValueError("no tokens: the entropy of an empty sample is undefined")
    if values.min() < 0 or values.max() >= vocab_size:
        raise ValueError(f"tokens lie in [{values.min()}, {values.max()}], outside [0, {vocab_size})")
    p = np.bincount(values, minlength=vocab_size) / values.size
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())
