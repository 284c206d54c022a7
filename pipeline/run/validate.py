"""Checks of a run against its model, inputs, output and resources, before Ray starts or any
weights load.

Only the model's config and vocabulary are read (a preset's YAML or a checkpoint's
``config.json`` and vocabulary files), the headers of the checkpoint's weight files (every tensor
present at the shape the config gives, no file truncated: :func:`models.checkpoint.check_checkpoint`),
and the headers of prompt and input audio files. So a bad song list or grid, an unknown artist or
genre, an unknown preset or one whose YAML does not parse, a missing or damaged checkpoint, an
unreadable audio file, a URL whose file system the run's processes do not share
(:mod:`pipeline.run.urls`), an unwritable output or resources a local Ray will not have
(:mod:`pipeline.actors.cluster`) fail in seconds, with a message naming the field and the value, instead of
after minutes of model loading. Songs are checked one at a time as the grid expands: nothing but
their ids (for duplicates) is held.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import psutil
import ray
import torch
import yaml

from models.config import JukeboxConfig
from models.jukebox import JukeboxModel
from models.loading import resolve_dtype
from models.meta import empty_on_meta
from models.presets import available_presets, is_preset
from models.windows import LevelGeometry, length_for_seconds
from pipeline.actors import builders
from pipeline.actors.cluster import check_resources, describe_local, local_nodes
from pipeline.actors.pools import needed_stages
from pipeline.execute.plan import PlanCounter
from pipeline.run.config import RunConfig, RunMode
from pipeline.run.grid import GridSong, duplicate_error
from pipeline.run.labels import SongLabels, match_labels, read_labels
from pipeline.run.prompts import available_samples
from pipeline.run.spec import N_LEVELS, SAMPLING_STAGES, Stage, stage_level
from pipeline.run.spec import SongSpec
from pipeline.run.urls import check_shared_url
from pipeline.run.vocabulary import VocabularyCheck, check_vocabulary, load_tokenizer
from pipeline.store.audio_input import AudioSource, conversion_notes, scan_audio
from pipeline.store.ownership import check_output_folder
from pipeline.store.writer import RunStorage

logger = logging.getLogger(__name__)

_MAX_SAMPLES = 2**62  # durations beyond this many samples are refused before lengths are computed


@dataclass(frozen=True)
class ValidatedRun:
    """The facts a run needs from its model and inputs, found without loading weights.

    Attributes:
        model: the model's config.
        geometries: window geometry per VQ-VAE level.
        summary: songs, windows and tokens per level the run means (:meth:`PlanCounter.summary`),
            or for an encode-only run the files and seconds of audio.
        vocabulary: unknown artist/genre names (when allowed), per song.
        prompt_samples: per distinct prompt, the audio samples it offers at the model's rate.
        sources: the audio files of an encode-only run.
        labels: per song id of ``sources``, its labels from ``encode.labels_url`` (empty without one).
        needs_encoder: some song has a prompt, or the run encodes: the encode pool is needed.
    """

    model: JukeboxConfig
    geometries: dict[int, LevelGeometry]
    summary: dict[str, Any]
    vocabulary: VocabularyCheck = VocabularyCheck(())
    prompt_samples: dict[str, int] = field(default_factory=dict)
    sources: tuple[AudioSource, ...] = ()
    labels: dict[str, SongLabels] = field(default_factory=dict)
    needs_encoder: bool = False

    @property
    def top_raw_to_tokens(self) -> int:
        return self.geometries[N_LEVELS - 1].raw_to_tokens

    def total_length(self, song: SongSpec) -> int:
        """A song's length in audio samples (whole top-level tokens)."""
        return length_for_seconds(song.duration_s, self.model.sampling_rate, self.top_raw_to_tokens)

    def song_prompt_samples(self, song: SongSpec) -> int:
        """Samples of a song's prompt it keeps: all the prompt offers, or ``prompt_s`` of it, cut
        to whole top-level tokens (0 without a prompt)."""
        if song.prompt is None:
            return 0
        samples = self.prompt_samples[song.prompt]
        if song.prompt_s is not None:
            samples = min(samples, int(song.prompt_s * self.model.sampling_rate))
        return samples // self.top_raw_to_tokens * self.top_raw_to_tokens


def _model_config(cfg: RunConfig) -> JukeboxConfig:
    """The model's config; for a checkpoint, its weight files' headers are checked against it."""
    spec = cfg.model
    if spec.checkpoint is None and not is_preset(str(spec.preset)):
        raise ValueError(f"model.preset={spec.preset!r}: unknown preset; expected one of {available_presets()}, a "
                         "preset YAML file, or set model.checkpoint")
    field_name = "model.checkpoint" if spec.checkpoint is not None else "model.preset"
    if spec.checkpoint is not None:
        check_shared_url(spec.checkpoint, field_name)  # every actor loads its weights from there
    try:
        config = builders.model_config(spec.source)
        if spec.checkpoint is not None:
            builders.check_checkpoint_weights(spec.checkpoint, config)
    except yaml.YAMLError as err:
        raise ValueError(f"{field_name}={spec.source!r}: not valid YAML: {err}") from err
    except (ValueError, TypeError, KeyError, OSError) as err:  # a malformed config.json / preset file
        reason = str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
        raise ValueError(f"{field_name}={spec.source!r}: {reason}") from err
    return config


def _where(cfg: RunConfig, item: GridSong, index: int) -> str:
    if cfg.songs_grid is not None:
        return f"songs_grid song {item.song.id!r} ({item.source})"
    return f"songs[{index}] ({item.song.id!r})"


def _check_length(model: JukeboxConfig, top: LevelGeometry, total: int, where: str) -> None:
    rate = model.sampling_rate
    if total < top.raw_to_tokens:
        raise ValueError(f"{where}: shorter than one top-level token ({top.raw_to_tokens} samples = {top.raw_to_tokens / rate:.4f} s)")
    if total < model.min_duration * rate:
        raise ValueError(f"{where}: below the model's min_duration={model.min_duration} s")
    if total >= model.max_duration * rate:
        raise ValueError(f"{where}: not below the model's max_duration={model.max_duration} s")
    window_span = top.n_ctx * top.raw_to_tokens
    if window_span > model.max_duration * rate:
        raise ValueError(f"{where}: the top prior's window ({window_span} samples) exceeds the model's max_duration")


def _validate_songs(cfg: RunConfig, model: JukeboxConfig, geometries: dict[int, LevelGeometry]) -> ValidatedRun:
    """One pass over the songs (a grid expands lazily): ids, lengths, prompts, plan counts."""
    top = geometries[N_LEVELS - 1]
    sampled = [stage_level(s) for s in cfg.sampling.levels]
    raw = {level: geometries[level].raw_to_tokens for level in sampled}
    counter = PlanCounter(list(geometries.values()), sampled, model.sampling_rate)
    seen: dict[str, GridSong] = {}
    checked_lengths: set[int] = set()
    prompts: dict[str, int] = {}
    partial = ValidatedRun(model=model, geometries=geometries, summary={}, prompt_samples=prompts)
    for index, item in enumerate(cfg.iter_songs()):
        song = item.song
        first = seen.setdefault(song.id, item)
        if first is not item:
            raise duplicate_error(first, item) if cfg.songs_grid is not None else ValueError(
                f"songs[{index}].id: duplicate song id {song.id!r}; every song needs its own id")
        where = f"{_where(cfg, item, index)}.duration_s={song.duration_s}"
        if not song.duration_s * model.sampling_rate < _MAX_SAMPLES:  # not even a sample count
            raise ValueError(f"{where}: not below the model's max_duration={model.max_duration} s")
        total = partial.total_length(song)
        if total not in checked_lengths:
            _check_length(model, top, total, where)
            for level in sampled:
                try:
                    geometries[level].windows(total)
                except ValueError as err:
                    raise ValueError(f"{where}: {err}") from err
            checked_lengths.add(total)
        prompt_samples = 0
        if song.prompt is not None:
            if song.prompt not in prompts:
                ref = song.prompt_ref
                check_shared_url(ref.audio if ref.audio is not None else str(ref.dataset),  # actors read it
                                 f"{_where(cfg, item, index)}.prompt")
                try:
                    prompts[song.prompt] = available_samples(ref, model.sampling_rate, raw)
                except ValueError as err:
                    raise ValueError(f"{_where(cfg, item, index)}: {err}") from err
            prompt_samples = partial.song_prompt_samples(song)
            if prompt_samples == 0:
                raise ValueError(
                    f"{_where(cfg, item, index)}: prompt {song.prompt!r} is shorter than one top-level token "
                    f"({top.raw_to_tokens} samples)"
                )
            if prompt_samples >= total:
                raise ValueError(
                    f"{_where(cfg, item, index)}: the prompt ({prompt_samples / model.sampling_rate:.3f} s of "
                    f"{song.prompt!r}) is not shorter than the song ({total / model.sampling_rate:.3f} s): set prompt_s "
                    "or a longer duration_s"
                )
        counter.add(total, prompt_samples)
    vocabulary = check_vocabulary(cfg.iter_songs(), load_tokenizer(cfg.model.source), allow_unknown=cfg.allow_unknown_names)
    if not vocabulary.ok:
        logger.warning("running with names the model does not know (encoded as the unknown id):\n%s", vocabulary.describe())
    summary = counter.summary()
    summary["mode"] = cfg.mode.value
    summary["songs_in_flight"] = cfg.songs_in_flight()
    return ValidatedRun(
        model=model, geometries=geometries, summary=summary, vocabulary=vocabulary,
        prompt_samples=prompts, needs_encoder=bool(prompts),
    )


def _validate_encode(cfg: RunConfig, model: JukeboxConfig, geometries: dict[int, LevelGeometry]) -> ValidatedRun:
    """The input files of an encode-only run: all readable, none shorter than a top-level token."""
    url = str(cfg.encode.input_url)
    check_shared_url(url, "encode.input_url")  # the encode actors read the files
    labels_url = cfg.encode.labels_url
    try:
        sources = scan_audio(url, skip_other_files=cfg.encode.skip_other_files, ignore=[labels_url] if labels_url else [])
    except ValueError as err:
        raise ValueError(f"encode.input_url: {err}") from err
    labels: dict[str, SongLabels] = {}
    if labels_url is not None:
        try:
            labels = match_labels(sources, read_labels(labels_url), labels_url)
        except ValueError as err:
            raise ValueError(f"encode.labels_url: {err}") from err
    top = geometries[N_LEVELS - 1].raw_to_tokens
    short = [s.url for s in sources if s.frames * model.sampling_rate // s.sampling_rate < top]
    if short:
        raise ValueError(f"encode.input_url: {len(short)} file(s) shorter than one top-level token ({top} samples at "
                         f"{model.sampling_rate} Hz): {short[:5]}")
    seconds = sum(s.duration_s for s in sources)
    summary = {"mode": cfg.mode.value, "files": len(sources), "audio_seconds": round(seconds, 3),
               "tokens": {str(level): int(seconds * model.sampling_rate) // g.raw_to_tokens
                          for level, g in sorted(geometries.items())}}
    converted = conversion_notes(sources, model.sampling_rate, model.vqvae_config.conv_input_shape)
    if converted:  # resampled or remixed on the way in: worth knowing before hours of encoding
        summary["converted"] = {"files": len(converted), "first": converted[:3]}
    if labels:
        summary["labelled"] = len(labels)
    return ValidatedRun(model=model, geometries=geometries, summary=summary, sources=tuple(sources), labels=labels,
                        needs_encoder=True)


def _check_host_memory(cfg: RunConfig, model: JukeboxConfig, stages: list[Stage]) -> None:
    """Each CPU stage actor of a local Ray holds its model's weights in this machine's memory:
    refuse a model whose one component alone is larger than that memory, before an actor tries
    to allocate it (a preset of width 1e6 asked an actor for 31.6 GB). Parameters are counted on
    the meta device (nothing allocated)."""
    with empty_on_meta():
        whole = JukeboxModel(model)
    total = psutil.virtual_memory().total
    for stage in stages:
        if cfg.stages[stage].num_gpus > 0 or stage is Stage.TOKENIZE:
            continue
        sampling = stage in SAMPLING_STAGES  # models/prior index 0 is the top level (VQ-VAE level 2)
        part = whole.priors[N_LEVELS - 1 - stage_level(stage)] if sampling else whole.vqvae
        dtype = resolve_dtype(cfg.model.dtype, "cpu") if sampling else torch.float32
        count = sum(p.numel() for p in part.parameters())
        needed = count * dtype.itemsize
        if needed > total:
            raise ValueError(
                f"model {cfg.model.source!r}: the {stage.value} stage's weights alone are {count:.3g} parameters, "
                f"{needed / 2**30:.1f} GiB in {str(dtype).removeprefix('torch.')}, and this machine has "
                f"{total / 2**30:.1f} GiB of memory; use a smaller model, GPUs (stages.{stage.value}.num_gpus), "
                "or a cluster (ray.address)"
            )


def validate_run(cfg: RunConfig) -> ValidatedRun:
    """Check everything that can be checked before loading models; ValueError naming the field."""
    check_shared_url(cfg.output.url, "output.url")
    check_output_folder(RunStorage(cfg.output.url))  # a folder this tool owns, or a new one
    model = _model_config(cfg)
    if model.nb_priors != N_LEVELS:
        raise ValueError(f"model {cfg.model.source!r} has {model.nb_priors} priors; the pipeline runs {N_LEVELS}-level Jukebox models")
    geometries = builders.geometries(model)
    if cfg.mode is RunMode.ENCODE:
        validated = _validate_encode(cfg, model, geometries)
    else:
        validated = _validate_songs(cfg, model, geometries)
    stages = needed_stages(cfg, prompts=validated.needs_encoder)
    if cfg.ray.address is None and not ray.is_initialized():
        # a local Ray is to be started: what the config fixes of it is known now (the live
        # cluster is checked once connected, before any placement group: runner.run)
        check_resources(cfg, stages, local_nodes(cfg), describe_local(cfg))
    if cfg.ray.address is None:  # the stages run on this machine (a local Ray, started now or already running)
        _check_host_memory(cfg, model, stages)
    if not cfg.dry_run:
        RunStorage(cfg.output.url).check_writable()
    return validated
