"""The one place that turns a model source (preset name or checkpoint) into stage objects."""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import fsspec
import torch

from models.checkpoint import check_checkpoint
from models.config import JukeboxConfig
from models.loading import ServingDtype, load_model_config, load_prior, load_vqvae
from models.meta import empty_on_meta
from models.presets import is_preset, preset_tokenizer_settings
from models.prior.decoder import DecodeOptions
from models.shipped import Weights
from models.tokenizer import ARTISTS_FILE, JukeboxTokenizer, UnknownNamePolicy
from models.windows import LevelGeometry, level_geometries
from pipeline.run.spec import SAMPLING_STAGES, Stage, stage_level
from stages.decode import DecodeStage
from stages.encode import EncodeStage
from stages.prior_window import PriorWindowStage
from stages.tokenize import TokenizeStage

logger = logging.getLogger(__name__)


def model_config(source: str) -> JukeboxConfig:
    """The model's config without loading weights; ValueError naming the source if unusable."""
    if not is_preset(source):
        fs, root = fsspec.core.url_to_fs(source)
        if not fs.exists(root):
            raise ValueError(f"{source!r} does not exist (expected a save_pretrained directory, local or a URL)")
    return load_model_config(source)


def check_checkpoint_weights(source: str, config: JukeboxConfig) -> None:
    """Check a checkpoint's weight files (headers only: whole files, every tensor at its shape)
    against the model ``config`` describes; :class:`~models.checkpoint.CheckpointError` if not."""
    from models.jukebox import JukeboxModel  # the whole model, built on the meta device: nothing allocated

    with empty_on_meta():
        model = JukeboxModel(config)
    check_checkpoint(model, source)


def geometries(config: JukeboxConfig) -> dict[int, LevelGeometry]:
    """Window geometry per VQ-VAE level."""
    return {g.level: g for g in level_geometries(config)}


def stage_factories(
    source: str,
    init_seed: int,
    chunk_samples: int | None = None,
    *,
    dtype: ServingDtype | str = ServingDtype.AUTO,
    decode: DecodeOptions = DecodeOptions(),
    weights: Weights = Weights.DEFAULT,
) -> dict[Stage, Callable[[torch.device, int], Any]]:
    """Per stage, a picklable callable ``(device, max_batch) -> stage object`` run inside an actor.

    ``chunk_samples`` bounds the audio the encode stage encodes per call (see ``EncodeStage``);
    ``dtype`` and ``decode`` say how the sampling stages' priors run (see ``ModelSpec``).
    ``weights`` and ``init_seed`` say which weights a preset loads (:mod:`models.shipped`).
    """
    init = {"init_seed": init_seed, "weights": weights}
    factories: dict[Stage, Callable[[torch.device, int], Any]] = {
        Stage.TOKENIZE: functools.partial(build_tokenize_stage, source),
        Stage.ENCODE: functools.partial(build_encode_stage, source, chunk_samples=chunk_samples, **init),
    }
    for stage in SAMPLING_STAGES:
        factories[stage] = functools.partial(
            build_prior_stage, source, stage_level(stage), **init, dtype=dtype, decode=decode
        )
    factories[Stage.DECODE] = functools.partial(build_decode_stage, source, **init)
    return factories


def device_for(num_gpus: float) -> torch.device:
    """cuda when the actor was given a GPU and CUDA works, else cpu."""
    if num_gpus > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def build_tokenizer(source: str) -> JukeboxTokenizer:
    """The tokenizer a model was trained with: a preset's settings, or a checkpoint's vocabulary.

    A checkpoint directory without vocabulary files uses the shipped vocabulary with the genre
    slots its config gives each prior.
    """
    # the run checks every name up front (pipeline.run.vocabulary), once, with the songs that use it
    quiet = UnknownNamePolicy.IGNORE
    if is_preset(source):
        return JukeboxTokenizer(**preset_tokenizer_settings(source), on_unknown_name=quiet)
    fs, root = fsspec.core.url_to_fs(source)
    if fs.exists(f"{root.rstrip('/')}/{ARTISTS_FILE}"):
        return JukeboxTokenizer.from_pretrained(source, on_unknown_name=quiet)
    config = load_model_config(source)
    logger.info("checkpoint %s has no tokenizer files: using the shipped vocabulary", source)
    slots = [config.shared_prior_config(i).max_nb_genres for i in range(config.nb_priors)]
    return JukeboxTokenizer(n_genres=slots, on_unknown_name=quiet)


def build_tokenize_stage(source: str, device: torch.device | None = None, max_batch: int = 1) -> TokenizeStage:
    """The tokenization stage of a model (``device`` and ``max_batch`` unused: it is pure Python)."""
    config = load_model_config(source)
    return TokenizeStage(build_tokenizer(source), config.nb_priors)


def build_prior_stage(
    source: str,
    level: int,
    device: torch.device,
    max_batch: int,
    *,
    init_seed: int,
    weights: Weights = Weights.DEFAULT,
    dtype: ServingDtype | str = ServingDtype.AUTO,
    decode: DecodeOptions = DecodeOptions(),
) -> PriorWindowStage:
    """The sampling stage of VQ-VAE ``level`` (0 = finest), its prior in serving ``dtype`` with its
    one-token step run as ``decode`` says (the actor keeps the step's buffers and CUDA graphs)."""
    config = load_model_config(source)
    prior_index = config.nb_priors - 1 - level
    prior = load_prior(source, prior_index, init_seed=init_seed, weights=weights, device=device, dtype=dtype)
    prior.set_decode_options(decode)
    return PriorWindowStage(prior, max_batch=max_batch, device=device)


def build_decode_stage(source: str, device: torch.device, max_batch: int, *, init_seed: int,
                       weights: Weights = Weights.DEFAULT) -> DecodeStage:
    vqvae = load_vqvae(source, init_seed=init_seed, weights=weights, device=device)
    return DecodeStage(vqvae, max_batch=max_batch, device=device)


def build_encode_stage(
    source: str, device: torch.device, max_batch: int, *, init_seed: int, weights: Weights = Weights.DEFAULT,
    chunk_samples: int | None = None,
) -> EncodeStage:
    """The VQ-VAE encoding stage (every level), for encode-only runs and prompts."""
    vqvae = load_vqvae(source, init_seed=init_seed, weights=weights, device=device)
    return EncodeStage(vqvae, max_batch=max_batch, device=device, chunk_samples=chunk_samples)
