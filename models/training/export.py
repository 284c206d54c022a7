"""Writing a trained component back into a whole-model ``save_pretrained`` directory.

A training checkpoint is a whole :class:`~models.jukebox.JukeboxModel` directory: the trained
component's weights plus every other component's weights as they were loaded, so it loads
everywhere a converted model does (``JukeboxModel.from_pretrained``, ``load_prior``,
``load_vqvae``, the pipeline's ``model.checkpoint``).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from models.checkpoint import save_pretrained_state_dict, tied_aliases
from models.checks import is_int
from models.config import JukeboxConfig


def component_prefix(config: JukeboxConfig, component: str | int) -> str:
    """Key prefix of a component in a whole-model state dict: ``"vqvae."`` or ``"priors.{i}."``
    (``component`` is ``"vqvae"`` or a prior index, 0 the top prior)."""
    if component == "vqvae":
        return "vqvae."
    if not is_int(component) or not 0 <= component < config.nb_priors:
        raise ValueError(f"component must be 'vqvae' or a prior index in [0, {config.nb_priors}), got {component!r}")
    return f"priors.{component}."


def save_model_with_component(
    config: JukeboxConfig,
    base_state: Mapping[str, torch.Tensor],
    component: str | int,
    module: nn.Module,
    directory: str,
) -> list[str]:
    """Write ``config`` and ``base_state`` with ``module``'s weights in place of ``component``'s.

    Args:
        config: the whole model's config.
        base_state: the whole model's state dict (the other components' weights).
        component: ``"vqvae"`` or a prior index (0 = top).
        module: the trained component (its ``state_dict`` keys without prefix).
        directory: output directory, local or fsspec URL.

    Returns:
        The files written.
    """
    prefix = component_prefix(config, component)
    aliases = tied_aliases(module)  # a tied weight's second name: a directory may hold either
    trained = {prefix + key: value for key, value in module.state_dict().items() if key not in aliases}
    expected = {key for key in base_state if key.startswith(prefix) and key[len(prefix):] not in aliases}
    if expected != trained.keys():
        missing, extra = sorted(expected - trained.keys()), sorted(trained.keys() - expected)
        raise ValueError(f"the trained {component!r} does not match the model's {prefix}* tensors: missing {missing[:8]}, unexpected {extra[:8]}")
    state = {key: value for key, value in base_state.items() if not key.startswith(prefix)}
    state.update(trained)
    return save_pretrained_state_dict(config, state, directory)  # a tied weight is written once
