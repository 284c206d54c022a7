"""Tokenization stage: a song's artist, genres and lyrics to the labels of every prior."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.tokenizer import JukeboxTokenizer


@dataclass(frozen=True)
class Conditioning:
    """What a song is conditioned on."""

    artist: str
    genres: tuple[str, ...]
    lyrics: str = ""


class TokenizeStage:
    """Labels per VQ-VAE level (0 = finest) for each song.

    Args:
        tokenizer: the model's tokenizer; it gives labels in prior order (top first).
        n_levels: number of priors/levels of the model.
    """

    def __init__(self, tokenizer: JukeboxTokenizer, n_levels: int) -> None:
        if len(tokenizer.version) != n_levels:
            raise ValueError(f"tokenizer has label versions for {len(tokenizer.version)} priors, the model has {n_levels}")
        self.tokenizer = tokenizer
        self.n_levels = n_levels

    def labels(self, song: Conditioning) -> dict[int, np.ndarray]:
        """int64 [label_len] labels of one song for each level."""
        per_prior = self.tokenizer.encode(song.artist, list(song.genres), song.lyrics)
        return {self.n_levels - 1 - index: np.asarray(ids, dtype=np.int64) for index, ids in enumerate(per_prior)}
