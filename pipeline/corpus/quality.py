"""Whether a model learned the corpus: every figure of ``scripts/bench_quality.py`` and of the
recipe's metrics, measured on held-out corpus songs and on songs the model samples.

- ``snr_db``: the VQ-VAE's reconstruction SNR per level (finest first);
- ``cross_entropy``: each prior's held-out next-token cross-entropy (nats/token, top first),
  against ``log(codebook size)``, the uniform guess;
- ``conditioning``: the style feature's threshold fixed on held-out country and jazz songs,
  then songs sampled with those two genres classified by it;
- ``temperature``: the entropy of sampled top-level tokens at a low and a high temperature;
- :func:`tonal_figures`: spectral peak, RMS, flatness and cross-correlation of finished songs.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from models.evaluation import (
    prior_cross_entropy,
    reconstruction_snr,
    rms,
    spectral_flatness,
    spectral_peak_hz,
    token_entropy,
    waveform_correlation,
)
from models.tokenizer import JukeboxTokenizer
from pipeline.corpus.heldout import (
    SEPARATED_STYLES,
    HeldoutSong,
    audio_batch,
    feature_threshold,
    separation_accuracy,
    style_feature,
    token_songs,
)
from pipeline.corpus.styles import STYLES


def heldout_figures(model, tokenizer: JukeboxTokenizer, songs: Sequence[HeldoutSong]) -> dict:
    """``snr_db`` per VQ-VAE level and ``cross_entropy`` per prior on held-out ``songs``, with
    ``log_codebook`` (nats) to compare the latter with."""
    vqvae = model.vqvae
    snr = reconstruction_snr(vqvae, audio_batch(songs, vqvae.hop_lengths[-1]))
    per_prior = token_songs(vqvae, tokenizer, songs, len(model.priors))
    cross_entropy = [prior_cross_entropy(prior, tokens) for prior, tokens in zip(model.priors, per_prior)]
    return {"snr_db": [round(v, 3) for v in snr], "cross_entropy": [round(v, 4) for v in cross_entropy],
            "log_codebook": round(math.log(vqvae.config.nb_discrete_codes), 4)}


def style_labels(tokenizer: JukeboxTokenizer, style: str) -> list[torch.Tensor]:
    """The labels of a song of ``style`` (its genre, artist and first two lyric lines), one
    int64 [1, width] row per prior."""
    spec = STYLES[style]
    return tokenizer(spec.artist, spec.genre, " ".join(spec.lyrics[:2]))["input_ids"]


@dataclass(frozen=True)
class SamplingRequest:
    """How songs are sampled for the conditioning and temperature checks."""

    seconds: float = 2.0
    batch: int = 16
    progress: bool = False


def sample_songs(model, tokenizer: JukeboxTokenizer, style: str, seeds: Sequence[int], request: SamplingRequest,
                 levels: Sequence[int] | None = None, temperature: float = 0.98) -> list[torch.Tensor]:
    """Sample one song per seed with ``style``'s labels; returns per prior (top first) the int64
    tokens [len(seeds), n] of the sampled ``levels`` (prior indices; None: all)."""
    tokens = model.ancestral_sample(
        style_labels(tokenizer, style), n_samples=len(seeds), sample_length_in_seconds=request.seconds,
        seeds=list(seeds), sampling_temperature=temperature, max_batch_size=request.batch, lower_batch_size=request.batch,
        sample_levels=list(range(len(model.priors))) if levels is None else list(levels), progress=request.progress,
    )
    return list(tokens)


def conditioning_figures(model, tokenizer: JukeboxTokenizer, heldout: Sequence[HeldoutSong], n_per_style: int,
                         request: SamplingRequest = SamplingRequest(), first_seed: int = 1000) -> dict:
    """Fix the style feature's threshold on the held-out songs of :data:`SEPARATED_STYLES`, then
    sample ``n_per_style`` songs of each (seeds ``first_seed + i`` and ``first_seed + 1000 + i``),
    decode them and classify each by the threshold."""
    low_style, high_style = SEPARATED_STYLES
    held = {style: [style_feature(s.audio) for s in heldout if s.style == style] for style in SEPARATED_STYLES}
    if not held[low_style] or not held[high_style]:
        raise ValueError(f"the held-out songs hold no {low_style} or no {high_style} song: the threshold needs both")
    threshold = feature_threshold(held[low_style], held[high_style])  # fixed before anything is sampled
    sampled: dict[str, list[float]] = {}
    for offset, style in enumerate(SEPARATED_STYLES):
        seeds = [first_seed + 1000 * offset + i for i in range(n_per_style)]
        bottom = sample_songs(model, tokenizer, style, seeds, request)[-1]
        audio = model.decode([bottom], start_level=0)
        sampled[style] = [style_feature(song[:, 0]) for song in audio]
    return {
        "feature": "median per-frame peak frequency (Hz)",
        "styles": list(SEPARATED_STYLES),
        "threshold_hz": round(threshold, 1),
        "heldout_hz": {style: [round(v, 1) for v in values] for style, values in held.items()},
        "sampled_hz": {style: [round(v, 1) for v in values] for style, values in sampled.items()},
        "songs_per_style": n_per_style,
        "seconds": request.seconds,
        "accuracy": round(separation_accuracy(threshold, sampled[low_style], sampled[high_style]), 4),
    }


def temperature_figures(model, tokenizer: JukeboxTokenizer, n_songs: int = 8, temperatures: Sequence[float] = (0.5, 1.2),
                        request: SamplingRequest = SamplingRequest(), first_seed: int = 3000) -> dict:
    """Entropy (nats) of the empirical distribution of the top-level tokens of ``n_songs``
    songs (half of each separated style) sampled at each temperature."""
    entropies = {}
    vocab = model.vqvae.config.nb_discrete_codes
    for temperature in temperatures:
        tokens = []
        for offset, style in enumerate(SEPARATED_STYLES):
            count = n_songs // 2 + (n_songs % 2 if offset == 0 else 0)
            seeds = [first_seed + 1000 * offset + i for i in range(count)]
            tokens.append(sample_songs(model, tokenizer, style, seeds, request, levels=[0], temperature=temperature)[0])
        entropies[str(temperature)] = round(token_entropy(torch.cat(tokens), vocab), 4)
    return {"songs": n_songs, "seconds": request.seconds, "entropy": entropies, "log_codebook": round(math.log(vocab), 4)}


def tonal_figures(songs: Sequence, sampling_rate: int) -> dict:
    """Per song (mono float audio [samples]): spectral peak (Hz), RMS, spectral flatness; and the
    largest absolute waveform correlation between two songs."""
    figures = {
        "peak_hz": [round(spectral_peak_hz(s, sampling_rate), 1) for s in songs],
        "rms": [round(rms(s), 4) for s in songs],
        "flatness": [round(spectral_flatness(s), 4) for s in songs],
    }
    pairs = [abs(waveform_correlation(a, b)) for i, a in enumerate(songs) for b in songs[i + 1 :]]
    figures["max_abs_correlation"] = round(max(pairs), 4) if pairs else 0.0
    return figures
