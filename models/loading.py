"""One entry point for getting a model or one of its parts from a preset name or a checkpoint.

``source`` is either a preset (``"tiny"``, ``"1b_lyrics"``, ... or a preset YAML path) or a
``save_pretrained`` directory (local or fsspec URL). A preset gives, with ``weights="default"``,
the trained weights the package ships for it (``tiny``: :mod:`models.shipped`), and otherwise
seeded random weights, the same for every process given ``init_seed``. Loading one component
opens only that component's tensors, so a pipeline stage holding the bottom upsampler never
reads the top prior.
"""
from __future__ import annotations

import logging
from enum import Enum

import torch

from models.checkpoint import assign_state_dict
from models.config import JukeboxConfig, read_config_dict
from models.meta import empty_on_meta
from models.presets import is_preset, load_preset
from models.seeding import derive_seed
from models.shipped import Weights, describe_weights, read_shipped_state, uses_shipped_weights

logger = logging.getLogger(__name__)


class ServingDtype(str, Enum):
    """The dtype priors sample in: weights, KV cache and activations (logits stay float32)."""

    AUTO = "auto"  # bfloat16 on CUDA, float32 elsewhere
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"


def resolve_dtype(dtype: ServingDtype | str | torch.dtype | None, device: torch.device | str) -> torch.dtype | None:
    """The torch dtype of a serving dtype on ``device`` (``auto``: bfloat16 on CUDA, else float32).

    A torch dtype or None (keep the stored dtype) passes through. ValueError names a bad value.
    """
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        dtype = ServingDtype(dtype)
    except ValueError:
        raise ValueError(f"dtype must be one of {[d.value for d in ServingDtype]}, got {dtype!r}") from None
    if dtype is ServingDtype.AUTO:
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return getattr(torch, dtype.value)


def _component_seed(init_seed: int, component: str) -> int:
    return derive_seed("init", init_seed, component)


def _seeded_build(init_seed: int, component: str, build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_component_seed(init_seed, component))
        return build()


def load_model_config(source: str) -> JukeboxConfig:
    """The :class:`JukeboxConfig` of a preset or checkpoint, without reading any weights."""
    if is_preset(source):
        return load_preset(source)
    try:
        data = read_config_dict(source)
    except FileNotFoundError as err:
        raise ValueError(f"model source {source!r} is neither a preset nor a checkpoint directory: {err}") from err
    if data.get("model_type") != "jukebox":
        raise ValueError(f"checkpoint {source!r} holds a {data.get('model_type')!r} config, expected a whole Jukebox model ('jukebox')")
    return JukeboxConfig.from_dict(data)


def _shipped(module_class, preset: str, prefix: str, build_args: tuple, build_kwargs: dict):
    """A component of ``preset`` with the package's trained weights (stored in float16, given
    in float32 unless a dtype is asked for)."""
    with empty_on_meta():
        module = module_class(*build_args, **build_kwargs)
    assign_state_dict(module, read_shipped_state(preset, prefix), f"the shipped weights of preset {preset!r}")
    return module


def _finish(module, device, dtype):
    if dtype is not None or str(device) != "cpu":
        module.to(device=device, dtype=dtype)
    return module.eval()


_CODEBOOK_INIT_SECONDS = 2.0


@torch.no_grad()
def _init_codebooks_from_noise(vqvae) -> None:
    """Random weights leave all-zero codebooks (every token 0). Draw each level's codes from the
    encoder's latents of seeded noise, as training initialises them from its first batch."""
    config = vqvae.config
    n_samples = max(int(_CODEBOOK_INIT_SECONDS * 44100), config.hop_lengths[-1] * 8)
    n_samples -= n_samples % config.hop_lengths[-1]
    noise = torch.randn(1, config.conv_input_shape, n_samples) * 0.1
    for level, encoder in enumerate(vqvae.encoders):
        latents = encoder(noise)  # [1, embed_dim, tokens]
        vqvae.bottleneck.level_blocks[level].init_from_data(latents[0].t().contiguous())


def load_vqvae(source: str, *, init_seed: int = 0, weights: Weights | str = Weights.DEFAULT,
               device: torch.device | str = "cpu", dtype: torch.dtype | None = None):
    """The VQ-VAE of a preset (its shipped weights, or random from ``init_seed``: see
    ``weights``) or of a checkpoint."""
    from models.vqvae import JukeboxVQVAE

    weights = Weights.parse(weights)
    if is_preset(source):
        config = load_preset(source)
        if uses_shipped_weights(source, weights):
            return _finish(_shipped(JukeboxVQVAE, source, "vqvae.", (config.vqvae_config,), {}), device, dtype)

        def build():
            vqvae = JukeboxVQVAE(config.vqvae_config).eval()
            _init_codebooks_from_noise(vqvae)
            return vqvae

        vqvae = _seeded_build(init_seed, "vqvae", build)
        return _finish(vqvae, device, dtype)
    load_model_config(source)  # a clear error for a path that is no checkpoint
    return JukeboxVQVAE.from_pretrained(source, dtype=dtype, device=device)


def load_prior(
    source: str, level: int, *, init_seed: int = 0, weights: Weights | str = Weights.DEFAULT,
    device: torch.device | str = "cpu", dtype: ServingDtype | str | torch.dtype | None = ServingDtype.AUTO,
):
    """Prior ``level`` (0 is the top prior) of a preset (its shipped weights, or random from
    ``init_seed``: see ``weights``) or of a checkpoint, in ``dtype``: a serving dtype (``"auto"``:
    bfloat16 on CUDA, float32 elsewhere; see :func:`resolve_dtype`), a torch dtype, or None to
    keep the stored one."""
    from models.prior import JukeboxPrior

    dtype = resolve_dtype(dtype, device)
    weights = Weights.parse(weights)
    if is_preset(source):
        config = load_preset(source)
        if not 0 <= level < config.nb_priors:
            raise ValueError(f"level={level} is out of range: the model has {config.nb_priors} priors (0 is the top)")
        if uses_shipped_weights(source, weights):
            prior = _shipped(JukeboxPrior, source, f"priors.{level}.", (config.shared_prior_config(level),),
                             {"level": level, "nb_priors": config.nb_priors})
            return _finish(prior, device, dtype)
        prior = _seeded_build(
            init_seed, f"prior{level}",
            lambda: JukeboxPrior(config.shared_prior_config(level), level=level, nb_priors=config.nb_priors),
        )
        return _finish(prior, device, dtype)
    load_model_config(source)
    return JukeboxPrior.from_pretrained(source, level=level, dtype=dtype, device=device)


def load_model(
    source: str, *, init_seed: int = 0, weights: Weights | str = Weights.DEFAULT, device: torch.device | str = "cpu",
    dtype: ServingDtype | str | torch.dtype | None = ServingDtype.AUTO,
):
    """The whole :class:`~models.jukebox.JukeboxModel`; a preset gives the same weights as its parts
    loaded one by one with :func:`load_vqvae` / :func:`load_prior` and the same ``init_seed`` and
    ``weights``.

    ``dtype`` (see :func:`resolve_dtype`) applies to the priors; the VQ-VAE stays float32, since
    its codebook distances decide which tokens a prompt encodes to.
    """
    from models.jukebox import JukeboxModel

    dtype = resolve_dtype(dtype, device)
    weights = Weights.parse(weights)
    if not is_preset(source):
        load_model_config(source)
        model = JukeboxModel.from_pretrained(source, device=device)
    elif uses_shipped_weights(source, weights):
        model = _finish(_shipped(JukeboxModel, source, "", (load_preset(source),), {}), device, None)
    else:
        config = load_preset(source)
        random = Weights.RANDOM
        state = {f"vqvae.{k}": v for k, v in load_vqvae(source, init_seed=init_seed, weights=random).state_dict().items()}
        for level in range(config.nb_priors):
            prior = load_prior(source, level, init_seed=init_seed, weights=random, dtype=None)
            state.update({f"priors.{level}.{k}": v for k, v in prior.state_dict().items()})
        with empty_on_meta():
            model = JukeboxModel(config)
        assign_state_dict(model, state, f"preset {source!r}")
        model = _finish(model, device, None)
    for prior in model.priors:
        _finish(prior, device, dtype)
    return model


def from_preset(cls: type, name: str, *, level: int | None = None, dtype: torch.dtype | None = None,
                device: torch.device | str = "cpu"):
    """What ``cls.from_pretrained(name)`` gives for a preset name: the model (``JukeboxModel``),
    VQ-VAE or prior ``level`` of preset ``name`` with its default weights (the shipped trained
    ones where the preset has them, else random from ``init_seed`` 0)."""
    from models.config import JukeboxPriorConfig, JukeboxVQVAEConfig

    logger.info("%s: %s", cls.__name__, describe_weights(name, Weights.DEFAULT, 0))
    if cls.config_class is JukeboxVQVAEConfig:
        return load_vqvae(name, device=device, dtype=dtype)
    if cls.config_class is JukeboxPriorConfig:
        return load_prior(name, 0 if level is None else level, device=device, dtype=dtype)
    return load_model(name, device=device, dtype=dtype)
