"""Checks of a run against its model and output, before Ray starts or any weights load.

Only the model's config is read (a preset's YAML or a checkpoint's ``config.json``), so a bad
song list, an unknown preset, a missing checkpoint or an unwritable output URL fails in a second,
with a message naming the field, instead of after minutes of model loading.
"""
from __future__ import annotations

from dataclasses import dataclass

from models.config import JukeboxConfig
from models.presets import available_presets, is_preset
from models.windows import LevelGeometry, length_for_seconds
from pipeline import builders
from pipeline.config import N_LEVELS, RunConfig, stage_level
from pipeline.storage import RunStorage


@dataclass(frozen=True)
class ValidatedRun:
    """The facts a run needs from its model, found without loading weights.

    Attributes:
        model: the model's config.
        geometries: window geometry per VQ-VAE level.
        total_lengths: per song id, its length in audio samples.
    """

    model: JukeboxConfig
    geometries: dict[int, LevelGeometry]
    total_lengths: dict[str, int]


def _model_config(cfg: RunConfig) -> JukeboxConfig:
    spec = cfg.model
    if spec.checkpoint is None and not is_preset(str(spec.preset)):
        raise ValueError(f"model.preset: unknown preset {spec.preset!r}; expected one of {available_presets()} or set model.checkpoint")
    try:
        return builders.model_config(spec.source)
    except ValueError as err:
        field = "model.checkpoint" if spec.checkpoint is not None else "model.preset"
        raise ValueError(f"{field}: {err}") from err


def validate_run(cfg: RunConfig) -> ValidatedRun:
    """Check everything that can be checked before loading models; ValueError naming the field."""
    model = _model_config(cfg)
    if model.nb_priors != N_LEVELS:
        raise ValueError(f"model {cfg.model.source!r} has {model.nb_priors} priors; the pipeline runs {N_LEVELS}-level Jukebox models")
    geometries = builders.geometries(model)
    top = geometries[N_LEVELS - 1]
    rate = model.sampling_rate
    sampled = [stage_level(s) for s in cfg.sampling.levels]
    total_lengths = {}
    for index, song in enumerate(cfg.songs):
        where = f"songs[{index}] ({song.id!r}).duration_s={song.duration_s}"
        total = length_for_seconds(song.duration_s, rate, top.raw_to_tokens)
        if total < top.raw_to_tokens:
            raise ValueError(f"{where}: shorter than one top-level token ({top.raw_to_tokens} samples = {top.raw_to_tokens / rate:.4f} s)")
        if total < model.min_duration * rate:
            raise ValueError(f"{where}: below the model's min_duration={model.min_duration} s")
        if total >= model.max_duration * rate:
            raise ValueError(f"{where}: not below the model's max_duration={model.max_duration} s")
        window_span = top.n_ctx * top.raw_to_tokens
        if window_span > model.max_duration * rate:
            raise ValueError(f"{where}: the top prior's window ({window_span} samples) exceeds the model's max_duration")
        for level in sampled:
            try:
                geometries[level].windows(total)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from err
        total_lengths[song.id] = total
    RunStorage(cfg.output.url).check_writable()
    return ValidatedRun(model=model, geometries=geometries, total_lengths=total_lengths)
