"""Validation of a :class:`models.jukebox.JukeboxModel` sampling request, done before any sampling.

:func:`check_request` checks every argument of ``JukeboxModel._sample`` (music tokens, labels,
levels, song length, seeds, batch sizes, offset, window hop and sampling options) and settles
them into a :class:`SamplingRequest`: normalised tensors, the song seeds and one
:class:`LevelJob` per sampled prior. Each check raises a ValueError naming the bad value and what
was expected; nothing is sampled until all have passed. :func:`check_prompt` does the same for
``primed_sample``'s prompt audio.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.checks import is_int, is_number
from models.config import JukeboxConfig, JukeboxPriorConfig
from models.prior.conditioners import ARTIST, FIRST_GENRE
from models.prior.sampling import SamplingOptions
from models.windows import LevelGeometry, Window, length_for_seconds, level_geometries

UPSAMPLER_TEMPERATURE = 0.99  # the original notebook's temperature for both upsamplers
SONG_SEED_HIGH = 2**62  # song seeds drawn from torch's global generator when none are given
N_HEADER_LABELS = FIRST_GENRE  # [total_length, offset, duration, artist] precede the genres in a label row


@dataclass(frozen=True)
class LevelJob:
    """Everything needed to sample one prior's level, settled before any sampling starts."""

    geometry: LevelGeometry
    windows: tuple[Window, ...]
    options: SamplingOptions
    batch_size: int


@dataclass(frozen=True)
class SamplingRequest:
    """A checked sampling request.

    ``tokens``: one int64 [batch, length_i] tensor per prior (top first); ``levels``: sorted prior
    indices to sample; ``total_length`` / ``offset``: in audio samples; ``labels``: one int64
    [batch, width_i] tensor per prior; ``song_seeds``: one per row; ``geometries``: per prior, with
    the request's hop; ``jobs``: prior index -> its :class:`LevelJob`, for each sampled level.
    """

    tokens: tuple[torch.Tensor, ...]
    levels: tuple[int, ...]
    total_length: int
    labels: tuple[torch.Tensor, ...]
    song_seeds: tuple[int, ...]
    offset: int
    geometries: tuple[LevelGeometry, ...]
    jobs: Mapping[int, LevelJob]


def describe(value: Any) -> str:
    """A short description of a bad argument for error messages (shape, length or type)."""
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


def check_request(
    config: JukeboxConfig,
    prior_configs: Sequence[JukeboxPriorConfig],
    top_raw_to_tokens: int,
    music_tokens: Sequence[torch.Tensor | None],
    labels: Sequence[torch.Tensor],
    sample_levels: Sequence[int] | int | None,
    *,
    chunk_size: int | None,
    sampling_temperature: float | Sequence[float],
    lower_batch_size: int,
    max_batch_size: int,
    sample_length_in_seconds: float,
    sample_tokens: int | None,
    offset: int,
    sample_length: int | None,
    seeds: Sequence[int] | None,
    hop_fraction: float | Sequence[float] | None,
    top_k: int | Sequence[int],
    top_p: float | Sequence[float],
) -> SamplingRequest:
    """Check every argument of ``JukeboxModel._sample`` (see there) and settle the windows.

    ``prior_configs``: the model's prior configs with the shared settings applied;
    ``top_raw_to_tokens``: audio samples per top-level token. Song seeds are drawn from torch's
    global generator (when ``seeds`` is None) after the tokens, levels, length and labels pass.
    """
    n_priors = config.nb_priors
    tokens = check_music_tokens(music_tokens, n_priors, config.vqvae_config.nb_discrete_codes)
    batch = tokens[0].shape[0]
    levels = check_sample_levels(sample_levels, n_priors)
    total_length = check_total_length(config, top_raw_to_tokens, sample_length, sample_length_in_seconds)
    labels = check_labels(labels, batch, config, prior_configs)
    song_seeds = check_song_seeds(seeds, batch)
    if sample_tokens is not None and (not is_int(sample_tokens) or sample_tokens < 1):
        raise ValueError(f"sample_tokens must be None or an int >= 1, got {sample_tokens!r}")
    for name, size in (("max_batch_size", max_batch_size), ("lower_batch_size", lower_batch_size)):
        if not is_int(size) or size < 1:
            raise ValueError(f"{name} must be an int >= 1, got {size!r}")
    if not is_int(offset) or offset < 0:
        raise ValueError(f"offset must be an int number of audio samples >= 0, got {offset!r}")
    geometries = level_geometries(config, hop_fraction)
    options = sampling_options_per_prior(n_priors, sampling_temperature, top_k, top_p, chunk_size)
    max_new = None if sample_tokens is None else int(sample_tokens)
    jobs: dict[int, LevelJob] = {}
    for index in levels:
        windows = geometries[index].windows(total_length, tokens[index].shape[1], max_new)
        size = int(max_batch_size if index == 0 else lower_batch_size)
        jobs[index] = LevelJob(geometries[index], tuple(windows), options[index], size)
    check_windows(config, int(offset), total_length, jobs, tokens)
    return SamplingRequest(
        tuple(tokens), tuple(levels), total_length, tuple(labels), tuple(song_seeds), int(offset), tuple(geometries), jobs
    )


def check_prompt(raw_audio: torch.Tensor, sampling_rate: int | None, config: JukeboxConfig, top_raw_to_tokens: int) -> int:
    """Check ``primed_sample``'s prompt float [batch, samples, channels] at ``sampling_rate`` Hz
    (None = the config's); returns its usable length, cut to whole top-level tokens."""
    if sampling_rate is not None and sampling_rate != config.sampling_rate:
        raise ValueError(
            f"prompt audio at sampling_rate={sampling_rate} Hz, but the model works at "
            f"{config.sampling_rate} Hz: resample it first"
        )
    channels = config.vqvae_config.conv_input_shape
    if not isinstance(raw_audio, torch.Tensor) or raw_audio.dim() != 3 or raw_audio.shape[2] != channels:
        raise ValueError(
            f"raw_audio must be a float tensor [batch, samples, channels={channels}], got {describe(raw_audio)}"
        )
    if not raw_audio.is_floating_point():
        raise ValueError(f"raw_audio must be floating point, got {raw_audio.dtype}")
    top = top_raw_to_tokens
    usable = raw_audio.shape[1] // top * top
    if usable == 0:
        raise ValueError(f"prompt of {raw_audio.shape[1]} samples is shorter than one top-level token ({top} samples)")
    return usable


def check_music_tokens(music_tokens: Sequence[torch.Tensor | None], n_priors: int, codes: int) -> list[torch.Tensor]:
    """One int64 [batch, length] tensor per prior, codes inside the codebook [0, ``codes``)
    (None -> no tokens)."""
    if isinstance(music_tokens, torch.Tensor) or not isinstance(music_tokens, Sequence) or len(music_tokens) != n_priors:
        raise ValueError(
            f"music_tokens must be a list of {n_priors} tensors (one per prior, top first; None for none), "
            f"got {describe(music_tokens)}"
        )
    given = [t for t in music_tokens if isinstance(t, torch.Tensor) and t.dim() == 2]
    if not given:
        raise ValueError(f"music_tokens hold no [batch, length] tensor to set the batch size: {describe(music_tokens)}")
    batch, out = given[0].shape[0], []
    for index, level in enumerate(music_tokens):
        if level is None:
            level = torch.zeros(batch, 0, dtype=torch.long, device=given[0].device)
        if not isinstance(level, torch.Tensor) or level.dim() != 2 or level.shape[0] != batch:
            raise ValueError(f"music_tokens[{index}] must be an int tensor [batch={batch}, length], got {describe(level)}")
        if level.is_floating_point() or level.is_complex() or level.dtype == torch.bool:
            raise ValueError(f"music_tokens[{index}] must hold integer codes, got {level.dtype}")
        if level.numel() and (int(level.min()) < 0 or int(level.max()) >= codes):
            raise ValueError(
                f"music_tokens[{index}] holds codes in [{int(level.min())}, {int(level.max())}], "
                f"outside the codebook [0, {codes})"
            )
        out.append(level.long())
    return out


def check_sample_levels(sample_levels: Sequence[int] | int | None, n_priors: int) -> list[int]:
    """Sorted distinct prior indices to sample; None = all."""
    if sample_levels is None:
        return list(range(n_priors))
    levels = list(sample_levels) if isinstance(sample_levels, (list, tuple, range)) else [sample_levels]
    if any(not is_int(level) or not 0 <= level < n_priors for level in levels) or len(set(levels)) != len(levels):
        raise ValueError(
            f"sample_levels must be distinct prior indices in [0, {n_priors}) (0 = top prior), got {sample_levels!r}"
        )
    return sorted(int(level) for level in levels)


def check_total_length(
    config: JukeboxConfig, top_raw_to_tokens: int, sample_length: int | None, sample_length_in_seconds: float
) -> int:
    """Song length in audio samples: at least one top-level token, inside the config's durations."""
    sampling_rate, top = config.sampling_rate, top_raw_to_tokens
    if sample_length is not None:
        if not is_int(sample_length):
            raise ValueError(f"sample_length must be an int number of audio samples, got {sample_length!r}")
        total, source = int(sample_length), f"sample_length={sample_length}"
    else:
        seconds = sample_length_in_seconds
        if not is_number(seconds) or not seconds > 0:
            raise ValueError(f"sample_length_in_seconds must be a positive number, got {seconds!r}")
        total, source = length_for_seconds(float(seconds), sampling_rate, top), f"sample_length_in_seconds={seconds}"
    if total < top:
        raise ValueError(f"{source} gives {total} samples, shorter than one top-level token ({top} samples)")
    seconds = total / sampling_rate
    if total >= config.max_duration * sampling_rate:
        raise ValueError(f"{source} ({seconds:.2f} s) is not below the config's max_duration={config.max_duration} s")
    if total < config.min_duration * sampling_rate:
        raise ValueError(
            f"{source} ({seconds:.2f} s) is shorter than the config's min_duration={config.min_duration} s, "
            f"where the top prior's timing embedding starts: load the model with a smaller min_duration"
        )
    return total


def check_windows(
    config: JukeboxConfig, offset: int, total_length: int, jobs: Mapping[int, LevelJob], tokens: Sequence[torch.Tensor]
) -> None:
    """Each window's timing (``offset + start * raw_to_tokens``) lies inside the song, and each
    upsampler window has the upper-level tokens of its span (given or sampled in this call)."""
    max_samples = config.max_duration * config.sampling_rate
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
                    f"{position + job.geometry.n_ctx * raw}, past max_duration={config.max_duration} s"
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


def check_labels(
    labels: Sequence[torch.Tensor], batch: int, config: JukeboxConfig, prior_configs: Sequence[JukeboxPriorConfig]
) -> list[torch.Tensor]:
    """One label tensor per prior: int64 [batch, width], the width and ids its prior reads."""
    n_priors = config.nb_priors
    if isinstance(labels, torch.Tensor) or not isinstance(labels, Sequence) or len(labels) != n_priors:
        raise ValueError(
            f"labels must be a list of {n_priors} tensors (one per prior, top first, as the tokenizer gives), "
            f"got {describe(labels)}"
        )
    out = []
    for index, (label, prior) in enumerate(zip(labels, prior_configs)):
        n_meta = N_HEADER_LABELS + prior.max_nb_genres
        if not isinstance(label, torch.Tensor) or label.dim() not in (1, 2) or label.is_floating_point():
            raise ValueError(f"labels[{index}] must be an int tensor [1 or batch={batch}, width], got {describe(label)}")
        label = label.long().reshape(1, -1) if label.dim() == 1 else label.long()
        if label.shape[0] not in (1, batch):
            raise ValueError(f"labels[{index}] has {label.shape[0]} rows for a batch of {batch}: give 1 row or {batch}")
        lyrics, width = prior.nb_relevant_lyric_tokens > 0, label.shape[1]
        if width < n_meta or (not lyrics and width != n_meta):
            layout = f"[total_length, offset, duration, artist, {prior.max_nb_genres} genre slot(s)]"
            raise ValueError(
                f"labels[{index}] has width {width}, but prior {index} reads {layout}"
                f"{' + lyric ids' if lyrics else ''}: width {'>= ' if lyrics else ''}{n_meta}. "
                f"Labels made for another prior, or by a tokenizer with another n_genres?"
            )
        if prior.metadata_conditioning:
            n_genres, n_artists = prior.metadata_dims
            artists, genres = label[:, ARTIST], label[:, FIRST_GENRE:n_meta]
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


def check_song_seeds(seeds: Sequence[int] | None, batch: int) -> list[int]:
    """One song seed per row (drawn from torch's global generator when None)."""
    if seeds is None:
        return [int(seed) for seed in torch.randint(0, SONG_SEED_HIGH, (batch,))]
    if isinstance(seeds, torch.Tensor):
        seeds = seeds.tolist()
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (Sequence, np.ndarray)) or len(seeds) != batch:
        raise ValueError(f"seeds must hold one int per song ({batch}), got {seeds!r}")
    if not all(is_int(seed) for seed in seeds):
        raise ValueError(f"seeds must hold one int per song ({batch}), got {seeds!r}")
    return [int(seed) for seed in seeds]
