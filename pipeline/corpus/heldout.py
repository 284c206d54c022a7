"""Held-out corpus songs as the measures of :mod:`models.evaluation` take them: audio, tokens
encoded by a model's VQ-VAE with each prior's labels, and the style feature's threshold.

The songs are made again from the corpus seed (they never depend on files on disk), so
``scripts/bench_quality.py`` and the tests measure the same songs the recipe held out.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from models.evaluation import median_peak_hz
from models.tokenizer import JukeboxTokenizer
from models.training import TokenSong
from pipeline.corpus.songs import corpus_songs, render_song
from pipeline.corpus.styles import STYLES
from pipeline.corpus.synth import SAMPLE_RATE

# The two styles the conditioning check tells apart (the default run's two songs), low register first.
SEPARATED_STYLES = ("country", "jazz")


@dataclass(frozen=True)
class HeldoutSong:
    """A held-out song: its style, mono float32 audio [samples] at 44.1 kHz and lyrics."""

    style: str
    audio: np.ndarray
    lyrics: str

    @property
    def genre(self) -> str:
        return STYLES[self.style].genre

    @property
    def artist(self) -> str:
        return STYLES[self.style].artist


def heldout_songs(corpus_seed: int = 0, per_style: int = 4, seconds: float = 6.0,
                  styles: Sequence[str] = tuple(STYLES)) -> list[HeldoutSong]:
    """The first ``per_style`` held-out songs of each style, ``seconds`` long (what the corpus
    command writes under ``heldout/`` with the same seed and length)."""
    return [HeldoutSong(song.style, *render_song(song.style, song.seed, seconds))
            for song in corpus_songs(corpus_seed, "heldout", per_style, tuple(styles))]


def audio_batch(songs: Sequence[HeldoutSong], hop: int) -> torch.Tensor:
    """The songs as float32 [batch, samples, 1], cut to their shortest length in whole ``hop``s."""
    length = min(len(s.audio) for s in songs) // hop * hop
    return torch.from_numpy(np.stack([s.audio[:length] for s in songs]))[:, :, None]


@torch.no_grad()
def token_songs(vqvae, tokenizer: JukeboxTokenizer, songs: Sequence[HeldoutSong], nb_priors: int = 3) -> list[list[TokenSong]]:
    """Per prior (top first), the songs as :class:`~models.training.TokenSong` : their tokens
    encoded by ``vqvae`` (and the level above for upsamplers) with that prior's labels row."""
    hop = vqvae.hop_lengths[-1]
    per_prior: list[list[TokenSong]] = [[] for _ in range(nb_priors)]
    for song in songs:
        audio = torch.from_numpy(song.audio[: len(song.audio) // hop * hop])[None, :, None]
        codes = [c[0].numpy() for c in vqvae.encode(audio, 0, vqvae.levels)]  # finest first
        rows = tokenizer.encode(song.artist, [song.genre], song.lyrics)
        for index in range(nb_priors):
            level = nb_priors - 1 - index
            upper = codes[level + 1] if index > 0 else None
            per_prior[index].append(TokenSong(codes[level], upper, np.asarray(rows[index], dtype=np.int64), len(song.audio)))
    return per_prior


def style_feature(audio) -> float:
    """The feature that tells the separated styles apart: the median per-frame peak frequency
    (Hz) of mono audio at 44.1 kHz (:func:`models.evaluation.median_peak_hz`)."""
    return median_peak_hz(audio, SAMPLE_RATE)


def feature_threshold(low: Sequence[float], high: Sequence[float]) -> float:
    """The threshold between two styles' feature values: the geometric mean of their medians
    (pitch is heard on a log scale). Fixed from held-out corpus songs before anything is sampled."""
    low_median, high_median = float(np.median(low)), float(np.median(high))
    if not 0 < low_median < high_median:
        raise ValueError(f"the low style's median {low_median:.1f} must lie below the high style's {high_median:.1f}")
    return math.sqrt(low_median * high_median)


def separation_accuracy(threshold: float, low: Sequence[float], high: Sequence[float]) -> float:
    """The share of songs on their style's side of ``threshold`` (low below, high above)."""
    right = sum(v < threshold for v in low) + sum(v > threshold for v in high)
    return right / (len(low) + len(high))
