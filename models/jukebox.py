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
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from models.config import JukeboxConfig, JukeboxPriorConfig
from models.pretrained import PreTrainedModule
from models.prior.prior import JukeboxPrior
from models.prior.sampling import SamplingOptions
from models.seeding import window_seed
from models.vqvae import JukeboxVQVAE
from models.windows import LevelGeometry, Window, get_starts, length_for_seconds, level_geometries

logger = logging.getLogger(__name__)

UPSAMPLER_TEMPERATURE = 0.99  # the original notebook's temperature for both upsamplers
_SONG_SEED_HIGH = 2**62  # song seeds drawn from torch's global generator when none are given
_N_HEADER_LABELS = 4  # [total_length, offset, duration, artist] precede the genres in a label row


class SampledTokens(list):
    """Music tokens in prior order (top first), each int64 [batch, length], as ``_sample`` returns.

    ``alignments``: with ``compute_alignments=True`` and a lyric top prior, one float64 array
    [top_tokens, n_lyric_tokens] per sample (attention of the top prior's alignment head from
    each music token to each lyric token); otherwise None.
    """

    alignments: list[np.ndarray] | None = None


@dataclass(frozen=True)
class _LevelJob:
    """Everything needed to sample one prior's level, settled before any sampling starts."""

    geometry: LevelGeometry
    windows: tuple[Window, ...]
    options: SamplingOptions
    batch_size: int


def _device_of(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return f"{len(value)} entries"
    return type(value).__name__


def _per_prior(name: str, value: Any, n_priors: int, others: Any = None) -> list[Any]:
    """One value per prior: a list as given, or a scalar for all (for the top only if ``others`` is set)."""
    if isinstance(value, (list, tuple)):
        if len(value) != n_priors:
            raise ValueError(f"{name} needs one value per prior ({n_priors}, top first), got {list(value)}")
        return list(value)
    return [value] + [value if others is None else others] * (n_priors - 1)


def sampling_options_per_prior(
    n_priors: int,
    sampling_temperature: float | Sequence[float] = 0.98,
    top_k: int | Sequence[int] = 0,
    top_p: float | Sequence[float] = 0.0,
    chunk_size: int | None = 32,
) -> list[SamplingOptions]:
    """The options each prior samples with (top first), as ``JukeboxModel._sample`` uses them.

    A scalar ``sampling_temperature`` is the top prior's; the upsamplers then use 0.99 (the
    original's settings). ``top_k`` / ``top_p`` scalars apply to every prior. Lists give one value
    per prior. Raises ValueError naming the prior and the bad option.
    """
    temperatures = _per_prior("sampling_temperature", sampling_temperature, n_priors, UPSAMPLER_TEMPERATURE)
    top_ks, top_ps = _per_prior("top_k", top_k, n_priors), _per_prior("top_p", top_p, n_priors)
    options = []
    for index in range(n_priors):
        try:
            options.append(SamplingOptions(temperatures[index], top_ks[index], top_ps[index], chunk_size))
        except (TypeError, ValueError) as err:
            raise ValueError(f"sampling options of prior {index}: {err}") from err
    return options


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
        ``decode([tokens[i]], start_level=nb_priors - 1 - i)``.
        """
        return self.vqvae.decode(music_tokens, start_level, end_level, bs_chunks)

    # -- documented sampling methods ----------------------------------------------------------

    def ancestral_sample(self, labels: Sequence[torch.Tensor], n_samples: int = 1, **sampling_kwargs: Any) -> SampledTokens:
        """Sample ``n_samples`` songs from scratch, top prior first (keywords: :meth:`_sample`)."""
        if not _is_int(n_samples) or n_samples < 1:
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
        if sampling_rate is not None and sampling_rate != self.config.sampling_rate:
            raise ValueError(
                f"prompt audio at sampling_rate={sampling_rate} Hz, but the model works at "
                f"{self.config.sampling_rate} Hz: resample it first"
            )
        channels = self.config.vqvae_config.conv_input_shape
        if not isinstance(raw_audio, torch.Tensor) or raw_audio.dim() != 3 or raw_audio.shape[2] != channels:
            raise ValueError(
                f"raw_audio must be a float tensor [batch, samples, channels={channels}], got {_describe(raw_audio)}"
            )
        if not raw_audio.is_floating_point():
            raise ValueError(f"raw_audio must be floating point, got {raw_audio.dtype}")
        top = self.geometries[0].raw_to_tokens
        usable = raw_audio.shape[1] // top * top
        if usable == 0:
            raise ValueError(f"prompt of {raw_audio.shape[1]} samples is shorter than one top-level token ({top} samples)")
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

        Returns:
            :class:`SampledTokens`: one int64 [batch, length_i] tensor per prior, top first.
        """
        n_priors = self.config.nb_priors
        tokens = self._check_music_tokens(music_tokens)
        batch = tokens[0].shape[0]
        levels = self._check_sample_levels(sample_levels)
        total_length = self._total_length(sample_length, sample_length_in_seconds)
        labels = self._check_labels(labels, batch)
        song_seeds = self._song_seeds(seeds, batch)
        if sample_tokens is not None and (not _is_int(sample_tokens) or sample_tokens < 1):
            raise ValueError(f"sample_tokens must be None or an int >= 1, got {sample_tokens!r}")
        for name, size in (("max_batch_size", max_batch_size), ("lower_batch_size", lower_batch_size)):
            if not _is_int(size) or size < 1:
                raise ValueError(f"{name} must be an int >= 1, got {size!r}")
        if not _is_int(offset) or offset < 0:
            raise ValueError(f"offset must be an int number of audio samples >= 0, got {offset!r}")
        geometries = level_geometries(self.config, hop_fraction)
        options = sampling_options_per_prior(n_priors, sampling_temperature, top_k, top_p, chunk_size)
        max_new = None if sample_tokens is None else int(sample_tokens)
        jobs: dict[int, _LevelJob] = {}
        for index in levels:
            windows = geometries[index].windows(total_length, tokens[index].shape[1], max_new)
            size = int(max_batch_size if index == 0 else lower_batch_size)
            jobs[index] = _LevelJob(geometries[index], tuple(windows), options[index], size)
        self._check_windows(int(offset), total_length, jobs, tokens)
        if save_results:
            logger.debug("save_results=True ignored: the model never writes files; save the returned tokens")

        # no_grad rather than inference_mode: the returned tokens stay ordinary tensors.
        with torch.no_grad():
            for index in levels:
                tokens[index] = self._sample_level(jobs[index], tokens, labels[index], total_length, int(offset), song_seeds)
            result = SampledTokens(tokens)
            if compute_alignments:
                result.alignments = self._alignments(tokens[0], labels[0], total_length, int(offset), geometries[0])
        return result

    # -- the sampling loop --------------------------------------------------------------------

    def _sample_level(
        self, job: _LevelJob, tokens: list[torch.Tensor], labels: torch.Tensor, total_length: int, offset: int,
        song_seeds: list[int],
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
        n_lyrics = labels.shape[1] - _N_HEADER_LABELS - self.config.max_nb_genres
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

    # -- validation (all before any sampling) -------------------------------------------------

    def _check_music_tokens(self, music_tokens: Sequence[torch.Tensor | None]) -> list[torch.Tensor]:
        """One int64 [batch, length] tensor per prior, codes inside the codebook (None -> no tokens)."""
        n_priors, codes = self.config.nb_priors, self.config.vqvae_config.nb_discrete_codes
        if isinstance(music_tokens, torch.Tensor) or not isinstance(music_tokens, Sequence) or len(music_tokens) != n_priors:
            raise ValueError(
                f"music_tokens must be a list of {n_priors} tensors (one per prior, top first; None for none), "
                f"got {_describe(music_tokens)}"
            )
        given = [t for t in music_tokens if isinstance(t, torch.Tensor) and t.dim() == 2]
        if not given:
            raise ValueError(f"music_tokens hold no [batch, length] tensor to set the batch size: {_describe(music_tokens)}")
        batch, out = given[0].shape[0], []
        for index, level in enumerate(music_tokens):
            if level is None:
                level = torch.zeros(batch, 0, dtype=torch.long, device=given[0].device)
            if not isinstance(level, torch.Tensor) or level.dim() != 2 or level.shape[0] != batch:
                raise ValueError(f"music_tokens[{index}] must be an int tensor [batch={batch}, length], got {_describe(level)}")
            if level.is_floating_point() or level.is_complex() or level.dtype == torch.bool:
                raise ValueError(f"music_tokens[{index}] must hold integer codes, got {level.dtype}")
            if level.numel() and (int(level.min()) < 0 or int(level.max()) >= codes):
                raise ValueError(
                    f"music_tokens[{index}] holds codes in [{int(level.min())}, {int(level.max())}], "
                    f"outside the codebook [0, {codes})"
                )
            out.append(level.long())
        return out

    def _check_sample_levels(self, sample_levels: Sequence[int] | int | None) -> list[int]:
        n_priors = self.config.nb_priors
        if sample_levels is None:
            return list(range(n_priors))
        levels = list(sample_levels) if isinstance(sample_levels, (list, tuple, range)) else [sample_levels]
        if any(not _is_int(level) or not 0 <= level < n_priors for level in levels) or len(set(levels)) != len(levels):
            raise ValueError(
                f"sample_levels must be distinct prior indices in [0, {n_priors}) (0 = top prior), got {sample_levels!r}"
            )
        return sorted(int(level) for level in levels)

    def _total_length(self, sample_length: int | None, sample_length_in_seconds: float) -> int:
        """Song length in audio samples: at least one top-level token, inside the config's durations."""
        sampling_rate, top = self.config.sampling_rate, self.geometries[0].raw_to_tokens
        if sample_length is not None:
            if not _is_int(sample_length):
                raise ValueError(f"sample_length must be an int number of audio samples, got {sample_length!r}")
            total, source = int(sample_length), f"sample_length={sample_length}"
        else:
            seconds = sample_length_in_seconds
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float, np.number)) or not seconds > 0:
                raise ValueError(f"sample_length_in_seconds must be a positive number, got {seconds!r}")
            total, source = length_for_seconds(float(seconds), sampling_rate, top), f"sample_length_in_seconds={seconds}"
        if total < top:
            raise ValueError(f"{source} gives {total} samples, shorter than one top-level token ({top} samples)")
        seconds = total / sampling_rate
        if total >= self.config.max_duration * sampling_rate:
            raise ValueError(f"{source} ({seconds:.2f} s) is not below the config's max_duration={self.config.max_duration} s")
        if total < self.config.min_duration * sampling_rate:
            raise ValueError(
                f"{source} ({seconds:.2f} s) is shorter than the config's min_duration={self.config.min_duration} s, "
                f"where the top prior's timing embedding starts: load the model with a smaller min_duration"
            )
        return total

    def _check_windows(self, offset: int, total_length: int, jobs: dict[int, _LevelJob], tokens: list[torch.Tensor]):
        """Each window's timing (``offset + start * raw_to_tokens``) lies inside the song, and each
        upsampler window has the upper-level tokens of its span (given or sampled in this call)."""
        max_samples = self.config.max_duration * self.config.sampling_rate
        for index, job in jobs.items():
            raw = job.geometry.raw_to_tokens
            for window in job.windows:
                position = offset + window.start * raw
                if position >= total_length:
                    raise ValueError(
                        f"offset={offset} puts prior {index}'s window at token {window.start} at sample {position}, "
                        f"past the end of the {total_length}-sample song"
                    )
                if index == 0 and position + job.geometry.n_ctx * raw > max_samples:
                    raise ValueError(
                        f"offset={offset}: the top prior's window at token {window.start} spans samples up to "
                        f"{position + job.geometry.n_ctx * raw}, past max_duration={self.config.max_duration} s"
                    )
            if not job.windows or job.geometry.upper_ratio is None:
                continue
            needed = max(job.geometry.upper_span(window)[1] for window in job.windows)
            available = tokens[index - 1].shape[1]
            if index - 1 in jobs and jobs[index - 1].windows:
                available = max(available, jobs[index - 1].windows[-1].end)
            if available < needed:
                raise ValueError(
                    f"music tokens of inconsistent lengths: prior {index} needs {needed} tokens of prior {index - 1} "
                    f"(the level above) to condition its windows up to token {job.windows[-1].end}, but prior "
                    f"{index - 1} has {available}"
                )

    def _check_labels(self, labels: Sequence[torch.Tensor], batch: int) -> list[torch.Tensor]:
        """One label tensor per prior: int64 [batch, width], the width and ids its prior reads."""
        n_priors = self.config.nb_priors
        if isinstance(labels, torch.Tensor) or not isinstance(labels, Sequence) or len(labels) != n_priors:
            raise ValueError(
                f"labels must be a list of {n_priors} tensors (one per prior, top first, as the tokenizer gives), "
                f"got {_describe(labels)}"
            )
        n_meta = _N_HEADER_LABELS + self.config.max_nb_genres
        out = []
        for index, (label, prior) in enumerate(zip(labels, self.prior_configs)):
            if not isinstance(label, torch.Tensor) or label.dim() not in (1, 2) or label.is_floating_point():
                raise ValueError(f"labels[{index}] must be an int tensor [1 or batch={batch}, width], got {_describe(label)}")
            label = label.long().reshape(1, -1) if label.dim() == 1 else label.long()
            if label.shape[0] not in (1, batch):
                raise ValueError(f"labels[{index}] has {label.shape[0]} rows for a batch of {batch}: give 1 row or {batch}")
            lyrics, width = prior.nb_relevant_lyric_tokens > 0, label.shape[1]
            if width < n_meta or (not lyrics and width != n_meta):
                layout = f"[total_length, offset, duration, artist, {self.config.max_nb_genres} genre slot(s)]"
                raise ValueError(
                    f"labels[{index}] has width {width}, but prior {index} reads {layout}"
                    f"{' + lyric ids' if lyrics else ''}: width {'>= ' if lyrics else ''}{n_meta}. "
                    f"Labels made for another prior, or by a tokenizer with another n_genres?"
                )
            if prior.metadata_conditioning:
                n_genres, n_artists = prior.metadata_dims
                artists, genres = label[:, 3], label[:, 4:n_meta]
                if int(artists.min()) < 0 or int(artists.max()) >= n_artists:
                    raise ValueError(f"labels[{index}] artist ids {artists.tolist()} outside prior {index}'s [0, {n_artists})")
                if int(genres.min()) < -1 or int(genres.max()) >= n_genres:
                    raise ValueError(
                        f"labels[{index}] genre ids {genres.tolist()} outside prior {index}'s [-1, {n_genres}) (-1 = empty)"
                    )
            lyric_ids = label[:, n_meta:]
            if lyric_ids.numel() and (int(lyric_ids.min()) < 0 or int(lyric_ids.max()) >= prior.lyric_vocab_size):
                raise ValueError(f"labels[{index}] lyric ids outside prior {index}'s vocabulary [0, {prior.lyric_vocab_size})")
            out.append(label.expand(batch, -1))
        return out

    @staticmethod
    def _song_seeds(seeds: Sequence[int] | None, batch: int) -> list[int]:
        """One song seed per row (drawn from torch's global generator when None)."""
        if seeds is None:
            return [int(seed) for seed in torch.randint(0, _SONG_SEED_HIGH, (batch,))]
        if isinstance(seeds, torch.Tensor):
            seeds = seeds.tolist()
        if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (Sequence, np.ndarray)) or len(seeds) != batch:
            raise ValueError(f"seeds must hold one int per song ({batch}), got {seeds!r}")
        if not all(_is_int(seed) for seed in seeds):
            raise ValueError(f"seeds must hold one int per song ({batch}), got {seeds!r}")
        return [int(seed) for seed in seeds]
