"""Jukebox: one VQ-VAE and a cascade of priors, sampled window by window.

The priors are kept in the transformers order: ``priors[0]`` is the top prior, ``priors[-1]`` the
finest upsampler, and the music-token lists the sampling methods take and return follow it
(``music_tokens[i]`` belongs to ``priors[i]``; ``sample_levels`` are prior indices). Seeds use the
VQ-VAE level instead (0 the finest), see :mod:`models.windows`.

Differences from transformers 4.40.2, following the original OpenAI code:

- every upsampler window is conditioned on the upper-level tokens covering that window's span,
  not on the whole upper sequence;
- the top prior samples with ``sampling_temperature`` and ``max_batch_size``, the upsamplers with
  temperature 0.99 and ``lower_batch_size`` (the original notebook's settings);
- ``primed_sample`` hands each prior the prompt codes of its own level (the reference gives the
  VQ-VAE's finest-first list to the priors' top-first order);
- ``offset`` is in audio samples (the reference scales it by each level's samples per token);
- nothing is written to disk: ``save_results`` is accepted and ignored, alignments are returned
  on the result (:class:`SampledTokens`).

Every sampling request is checked up front by :mod:`models.sampling_checks`.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from models.config import JukeboxConfig, JukeboxPriorConfig
from models.pretrained import PreTrainedModule
from models.prior.decoder import DecodeOptions
from models.prior.prior import JukeboxPrior
from models.sampling_checks import (
    N_HEADER_LABELS,
    UPSAMPLER_TEMPERATURE,
    LevelJob,
    check_prompt,
    check_request,
    is_int,
    sampling_options_per_prior,
)
from models.seeding import window_seed
from models.vqvae import JukeboxVQVAE
from models.windows import LevelGeometry, get_starts, level_geometries

__all__ = ["UPSAMPLER_TEMPERATURE", "JukeboxModel", "SampledTokens", "sampling_options_per_prior"]

logger = logging.getLogger(__name__)


class SampledTokens(list):
    """Music tokens in prior order (top first), each int64 [batch, length], as ``_sample`` returns.

    ``alignments``: with ``compute_alignments=True`` and a lyric top prior, one float64 array
    [top_tokens, n_lyric_tokens] per sample (attention of the top prior's alignment head from
    each music token to each lyric token); otherwise None.
    """

    alignments: list[np.ndarray] | None = None


def _progress_bar(enabled: bool, total: int, description: str):
    """A tqdm bar counting sampled tokens (a disabled one when ``enabled`` is False)."""
    from tqdm.auto import tqdm  # only sampling through JukeboxModel shows progress

    return tqdm(total=total, desc=description, unit="tok", disable=not enabled, leave=False)


def _device_of(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


class JukeboxModel(PreTrainedModule):
    """The VQ-VAE (``vqvae``) and the priors (``priors``, top first); sampling methods, no ``forward``."""

    config_class = JukeboxConfig

    def __init__(
        self, config: JukeboxConfig, *, vqvae: nn.Module | None = None, priors: Sequence[nn.Module] | None = None
    ):
        """Build the model from ``config``. ``vqvae`` / ``priors`` replace the built components (e.g.
        stand-ins in tests); they must follow the config's geometry."""
        super().__init__()
        self.config = config
        # Prior configs with the model-wide settings applied, as the priors are built.
        self.prior_configs = self.set_shared_params(config)
        self.vqvae = JukeboxVQVAE(config.vqvae_config) if vqvae is None else vqvae
        if priors is None:
            priors = [JukeboxPrior(c, level=i, nb_priors=config.nb_priors) for i, c in enumerate(self.prior_configs)]
        if len(priors) != config.nb_priors:
            raise ValueError(f"got {len(priors)} priors for a config with nb_priors={config.nb_priors}")
        self.priors = nn.ModuleList(priors)
        self.geometries = level_geometries(config)

    def set_decode_options(self, options: DecodeOptions) -> None:
        """How every prior's one-token sampling step runs (eager, compiled, CUDA graphs)."""
        for prior in self.priors:
            prior.set_decode_options(options)

    @staticmethod
    def set_shared_params(model_config: JukeboxConfig) -> list[JukeboxPriorConfig]:
        """The prior configs with the model-wide sampling rate, timing and metadata settings applied
        (copies: ``model_config`` is left as written)."""
        return [model_config.shared_prior_config(i) for i in range(model_config.nb_priors)]

    # -- VQ-VAE -------------------------------------------------------------------------------

    def encode(
        self, input_audio: torch.Tensor, start_level: int = 0, end_level: int | None = None, bs_chunks: int = 1
    ) -> list[torch.LongTensor]:
        """Audio float [batch, samples, channels] -> int64 tokens per VQ-VAE level, finest first."""
        return self.vqvae.encode(input_audio, start_level, end_level, bs_chunks)

    def decode(
        self, music_tokens: Sequence[torch.Tensor], start_level: int = 0, end_level: int | None = None, bs_chunks: int = 1
    ) -> torch.Tensor:
        """Tokens in VQ-VAE order from ``start_level`` (finest first) -> audio float [batch, samples, channels].

        The sampling methods return prior order (top first): decode prior ``i``'s tokens with
        ``decode([tokens[i]], start_level=nb_priors - 1 - i)``. The audio carries no autograd
        graph (train through ``self.vqvae`` instead).
        """
        with torch.no_grad():
            return self.vqvae.decode(music_tokens, start_level, end_level, bs_chunks)

    # -- documented sampling methods ----------------------------------------------------------

    def ancestral_sample(self, labels: Sequence[torch.Tensor], n_samples: int = 1, **sampling_kwargs: Any) -> SampledTokens:
        """Sample ``n_samples`` songs from scratch, top prior first (keywords: :meth:`_sample`)."""
        if not is_int(n_samples) or n_samples < 1:
            raise ValueError(f"n_samples must be an int >= 1, got {n_samples!r}")
        sample_levels = sampling_kwargs.pop("sample_levels", list(range(self.config.nb_priors)))
        given = isinstance(labels, (list, tuple)) and labels and isinstance(labels[0], torch.Tensor)
        device = labels[0].device if given else torch.device("cpu")
        empty = [torch.zeros(int(n_samples), 0, dtype=torch.long, device=device) for _ in range(self.config.nb_priors)]
        return self._sample(empty, labels, sample_levels, **sampling_kwargs)

    def continue_sample(
        self, music_tokens: Sequence[torch.Tensor | None], labels: Sequence[torch.Tensor], **sampling_kwargs: Any
    ) -> SampledTokens:
        """Extend the given tokens (prior order) at every level to the sample length."""
        sample_levels = sampling_kwargs.pop("sample_levels", list(range(self.config.nb_priors)))
        return self._sample(music_tokens, labels, sample_levels, **sampling_kwargs)

    def upsample(
        self, music_tokens: Sequence[torch.Tensor | None], labels: Sequence[torch.Tensor], **sampling_kwargs: Any
    ) -> SampledTokens:
        """Sample every upsampler's level from the given upper-level tokens (prior order)."""
        sample_levels = sampling_kwargs.pop("sample_levels", list(range(1, self.config.nb_priors)))
        return self._sample(music_tokens, labels, sample_levels, **sampling_kwargs)

    def primed_sample(
        self, raw_audio: torch.Tensor, labels: Sequence[torch.Tensor], sampling_rate: int | None = None,
        **sampling_kwargs: Any,
    ) -> SampledTokens:
        """Continue a prompt ``raw_audio`` float [batch, samples, channels] at the config's sampling rate.

        The prompt is cut to whole top-level tokens (as the original), encoded at every level, and
        each level's codes are that level's context.
        """
        usable = check_prompt(raw_audio, sampling_rate, self.config, self.geometries[0].raw_to_tokens)
        sample_levels = sampling_kwargs.pop("sample_levels", list(range(self.config.nb_priors)))
        with torch.no_grad():
            codes = self.vqvae.encode(raw_audio[:, :usable], 0, self.config.nb_priors, raw_audio.shape[0])
        return self._sample(list(reversed(codes)), labels, sample_levels, **sampling_kwargs)

    def _sample(
        self,
        music_tokens: Sequence[torch.Tensor | None],
        labels: Sequence[torch.Tensor],
        sample_levels: Sequence[int] | None,
        metas: Any = None,
        chunk_size: int | None = 32,
        sampling_temperature: float | Sequence[float] = 0.98,
        lower_batch_size: int = 16,
        max_batch_size: int = 16,
        sample_length_in_seconds: float = 24,
        compute_alignments: bool = False,
        sample_tokens: int | None = None,
        offset: int = 0,
        save_results: bool = True,
        sample_length: int | None = None,
        *,
        seeds: Sequence[int] | None = None,
        hop_fraction: float | Sequence[float] | None = None,
        top_k: int | Sequence[int] = 0,
        top_p: float | Sequence[float] = 0.0,
        progress: bool = True,
    ) -> SampledTokens:
        """Sample the levels ``sample_levels`` (prior indices, done top first) of a batch of songs.

        Every argument is checked before any sampling starts (ValueError naming the bad value).

        Args:
            music_tokens: one int tensor [batch, length_i] per prior (top first; None = no tokens):
                context to continue at sampled levels, conditioning for the level below.
            labels: one int64 tensor per prior, [1 or batch, width], as the tokenizer gives them.
            sample_levels: prior indices to sample; None = all.
            metas: ignored (the reference only used it to name saved files).
            chunk_size: tokens per prefill chunk of a window's context (results do not depend on it).
            sampling_temperature: the top prior's temperature (upsamplers use 0.99), or one per prior.
            lower_batch_size / max_batch_size: rows per prior call for the upsamplers / the top prior.
            sample_length_in_seconds: song length when ``sample_length`` is None (cut to whole
                top-level tokens).
            compute_alignments: attach lyric alignments to the result (lyric top prior only).
            sample_tokens: stop each sampled level after this many new tokens (quick runs).
            offset: audio samples of the song before the sampled part (timing conditioning).
            save_results: accepted for compatibility; the model never writes files.
            sample_length: song length in audio samples.
            seeds: one song seed per row; window ``w`` of row ``r`` at VQ-VAE level ``L`` draws from
                ``window_seed(seeds[r], L, w.start)``, so tokens do not depend on batching. None
                draws the song seeds from torch's global generator (``torch.manual_seed`` applies).
            hop_fraction: window hop as a fraction of ``n_ctx``, one for all or one per prior; None =
                ``config.hop_fraction``.
            top_k, top_p: logit filters, one for all priors or one per prior.
            progress: show a progress bar per sampled level (tokens sampled, on stderr).

        Returns:
            :class:`SampledTokens`: one int64 [batch, length_i] tensor per prior, top first.
        """
        request = check_request(
            self.config, self.prior_configs, self.geometries[0].raw_to_tokens, music_tokens, labels, sample_levels,
            chunk_size=chunk_size, sampling_temperature=sampling_temperature, lower_batch_size=lower_batch_size,
            max_batch_size=max_batch_size, sample_length_in_seconds=sample_length_in_seconds,
            sample_tokens=sample_tokens, offset=offset, sample_length=sample_length, seeds=seeds,
            hop_fraction=hop_fraction, top_k=top_k, top_p=top_p,
        )
        tokens, song_seeds = list(request.tokens), list(request.song_seeds)
        total_length, offset = request.total_length, request.offset
        if save_results:
            logger.debug("save_results=True ignored: the model never writes files; save the returned tokens")

        # no_grad rather than inference_mode: the returned tokens stay ordinary tensors.
        with torch.no_grad():
            for index in request.levels:
                tokens[index] = self._sample_level(
                    request.jobs[index], tokens, request.labels[index], total_length, offset, song_seeds, progress
                )
            result = SampledTokens(tokens)
            if compute_alignments:
                result.alignments = self._alignments(
                    tokens[0], request.labels[0], total_length, offset, request.geometries[0]
                )
        return result

    # -- the sampling loop --------------------------------------------------------------------

    def _sample_level(
        self, job: LevelJob, tokens: list[torch.Tensor], labels: torch.Tensor, total_length: int, offset: int,
        song_seeds: list[int], progress: bool = True,
    ) -> torch.Tensor:
        """Run ``job``'s windows in order; returns the level's int64 tokens [batch, existing + new]."""
        geometry, index = job.geometry, job.geometry.prior_index
        existing = tokens[index]
        if not job.windows:
            return existing
        prior, batch = self.priors[index], existing.shape[0]
        device = _device_of(prior)
        logger.info(
            "prior %d (level %d): sampling %d tokens in %d windows for %d songs",
            index, geometry.level, sum(w.n_new for w in job.windows), len(job.windows), batch,
        )
        level = torch.empty(batch, job.windows[-1].end, dtype=torch.long, device=existing.device)
        level[:, : existing.shape[1]] = existing
        upper_level = tokens[index - 1] if geometry.upper_ratio is not None else None
        labels = labels.to(device)
        bar = _progress_bar(progress, sum(w.n_new for w in job.windows) * batch, f"prior {index} (level {geometry.level})")
        for window in job.windows:
            context = level[:, window.start : window.new_start].to(device)
            upper = None if upper_level is None else upper_level[:, slice(*geometry.upper_span(window))].to(device)
            for first in range(0, batch, job.batch_size):
                rows = slice(first, min(first + job.batch_size, batch))
                seeds = [window_seed(seed, geometry.level, window.start) for seed in song_seeds[rows]]
                new = prior.sample_window(
                    labels[rows], context[rows], None if upper is None else upper[rows],
                    window.start, window.n_new, total_length, seeds, job.options, offset=offset,
                )
                expected = (rows.stop - rows.start, window.n_new)
                assert tuple(new.shape) == expected, f"prior {index} sampled {tuple(new.shape)}, expected {expected}"
                level[rows, window.new_start : window.end] = new.to(level.device)
                bar.update(new.numel())
        bar.close()
        return level

    def _alignments(
        self, top_tokens: torch.Tensor, labels: torch.Tensor, total_length: int, offset: int, geometry: LevelGeometry
    ) -> list[np.ndarray] | None:
        """Attention of the top prior's alignment head from music to lyric tokens, stitched window by
        window as the original ``get_alignment``: float64 [top_tokens, n_lyric_tokens] per row."""
        prior = self.priors[0]
        if self.prior_configs[0].nb_relevant_lyric_tokens == 0:
            logger.warning("compute_alignments=True but the top prior does not attend to lyrics: no alignments")
            return None
        device = _device_of(prior)
        batch, n_tokens = top_tokens.shape
        n_ctx = geometry.n_ctx
        padded = torch.zeros(batch, max(n_tokens, n_ctx), dtype=torch.long, device=device)
        padded[:, :n_tokens] = top_tokens.to(device)
        labels = labels.to(device)
        n_lyrics = labels.shape[1] - N_HEADER_LABELS - self.prior_configs[0].max_nb_genres
        # A spare last column receives the padding positions (lyric index -1); it is dropped at the end.
        alignments = [np.zeros((padded.shape[1], n_lyrics + 1)) for _ in range(batch)]
        # Later windows are written first so that the earliest window covering a token wins.
        for start in reversed(get_starts(padded.shape[1], n_ctx, geometry.hop_length)):
            metadata, indices = prior.get_metadata(labels, start, total_length, offset, get_indices=True)
            weights = prior.get_alignment_weights(padded[:, start : start + n_ctx], metadata.to(device))
            weights = weights.double().cpu().numpy()  # [batch, n_ctx, nb_relevant_lyric_tokens]
            for row in range(batch):
                alignments[row][start : start + n_ctx, indices[row]] = weights[row]
        return [alignment[:n_tokens, :-1] for alignment in alignments]
