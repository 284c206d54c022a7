"""The training corpus, read once on the driver and shared with every worker through Ray's
object store (one copy per node; workers map it without copying).

- VQ-VAE: every usable audio file, converted to the model's rate and channels
  (:func:`pipeline.store.audio_input.load_audio`), float32 [samples, channels];
- priors: per song, the prior's level of tokens (and the level above for upsamplers) from the
  token dataset, int16, with its labels row.

The whole corpus is held in memory: about 10.6 MB per minute of audio for the VQ-VAE (float32
at 44.1 kHz), 0.7 MB per minute for the bottom upsampler's tokens.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from models.training import TokenSong
from pipeline.store.audio_input import AudioSource, load_audio
from pipeline.store.writer import RunStorage
from pipeline.train.validate import TokenSongInfo, TrainPlan

logger = logging.getLogger(__name__)


def load_audio_corpus(sources: Sequence[AudioSource], sampling_rate: int, channels: int) -> list[np.ndarray]:
    """Every file as float32 [samples, channels] at the model's rate and channel count."""
    songs = []
    for source in sources:
        audio, note = load_audio(source, sampling_rate, channels)
        if note.resampled or note.channel_mix != "none":
            logger.info("%s: %s", source.url, note.text)
        songs.append(np.ascontiguousarray(audio, dtype=np.float32))
    return songs


def _read_level(storage: RunStorage, song: TokenSongInfo, level: int, vocab: int) -> np.ndarray:
    try:
        tokens = storage.read_tokens(song.song_id, level)
    except (OSError, ValueError) as err:
        raise ValueError(f"train.tokens_url: cannot read level {level} tokens of {song.song_id!r}: {err}") from err
    if len(tokens) and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
        raise ValueError(f"train.tokens_url: level {level} tokens of {song.song_id!r} lie in [{int(tokens.min())}, "
                         f"{int(tokens.max())}], outside the model's codebook [0, {vocab}): encoded by another VQ-VAE?")
    # int16 holds every codebook index of the released models (2048 codes) in half the memory
    return tokens.astype(np.int16 if vocab <= np.iinfo(np.int16).max else np.int32)


def load_token_corpus(plan: TrainPlan) -> list[TokenSong]:
    """The prior's songs with their tokens (and the upper level's for upsamplers) and labels."""
    storage = RunStorage(str(plan.spec.tokens_url))
    level = plan.component.vqvae_level()
    vocab = plan.model.vqvae_config.nb_discrete_codes
    songs = []
    for info in plan.songs:
        tokens = _read_level(storage, info, level, vocab)
        if len(tokens) != info.n_tokens:
            raise ValueError(f"train.tokens_url: {info.song_id!r} has {len(tokens)} level {level} tokens, its manifest row says {info.n_tokens}")
        upper = _read_level(storage, info, level + 1, vocab) if plan.prior_index else None
        if upper is not None and len(upper) < len(tokens) // plan.align:
            raise ValueError(f"train.tokens_url: {info.song_id!r} has {len(upper)} level {level + 1} tokens, too few to "
                             f"condition its {len(tokens)} level {level} tokens")
        songs.append(TokenSong(tokens, upper, info.labels, info.total_length))
    return songs
