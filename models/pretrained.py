"""Base class of the models that load and save ``save_pretrained`` directories."""
from __future__ import annotations

import logging
from typing import Any, TypeVar

import fsspec
import torch
from torch import nn

from models.checkpoint import assign_state_dict, read_state_dict, save_pretrained_state_dict
from models.config import JukeboxConfig, JukeboxPriorConfig, JukeboxVQVAEConfig, read_config_dict
from models.meta import empty_on_meta
from models.presets import is_preset

logger = logging.getLogger(__name__)

M = TypeVar("M", bound="PreTrainedModule")


def _exists(path: str) -> bool:
    fs, root = fsspec.core.url_to_fs(str(path))
    return fs.exists(root)


class PreTrainedModule(nn.Module):
    """An ``nn.Module`` built from one typed config object kept as ``self.config``.

    ``from_pretrained`` reads a directory written by transformers 4.40.2 (or by our
    ``save_pretrained``): of the whole model, or of this component alone. A component is read out
    of a whole-model directory too (``JukeboxVQVAE`` from ``vqvae.*``, ``JukeboxPrior`` from
    ``priors.{level}.*``), opening only the shards that hold it.
    """

    config_class: type | None = None

    @classmethod
    def _resolve(cls, data: dict[str, Any], level: int | None) -> tuple[Any, str, dict[str, Any]]:
        """(config, key prefix in the checkpoint, constructor keyword arguments) for this class."""
        whole = data.get("model_type") == "jukebox"
        if cls.config_class is JukeboxConfig:
            if not whole:
                raise ValueError(f"{cls.__name__} needs a whole-model config (model_type 'jukebox'), got {data.get('model_type')!r}")
            return JukeboxConfig.from_dict(data), "", {}
        if cls.config_class is JukeboxVQVAEConfig:
            if whole:
                return JukeboxVQVAEConfig.from_dict(data["vqvae_config"]), "vqvae.", {}
            return JukeboxVQVAEConfig.from_dict(data), "", {}
        if cls.config_class is JukeboxPriorConfig:
            if whole:
                full = JukeboxConfig.from_dict(data)
                level = 0 if level is None else level
                if not 0 <= level < full.nb_priors:
                    raise ValueError(f"level={level} is out of range: the model has {full.nb_priors} priors (0 is the top)")
                return full.shared_prior_config(level), f"priors.{level}.", {"level": level, "nb_priors": full.nb_priors}
            config = JukeboxPriorConfig.from_dict(data)
            return config, "", {"level": config.level if level is None else level}
        raise TypeError(f"{cls.__name__}.config_class must be one of the Jukebox configs, got {cls.config_class}")

    @classmethod
    def from_pretrained(
        cls: type[M],
        path: str,
        *,
        level: int | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
    ) -> M:
        """Build the model on the meta device and load its weights memory-mapped.

        Args:
            path: a ``save_pretrained`` directory, local or any fsspec URL; or the name of a model
                preset (``"tiny"``, ``"1b_lyrics"``, ...; a path that exists wins), which gives that
                preset with its default weights (:mod:`models.loading`).
            level: which prior to read from a whole-model directory (0 is the top prior).
            dtype: cast the weights to this dtype; ``None`` keeps the stored dtype.
            device: where the weights end up.
        """
        from models.loading import from_preset  # the loaders build on this class

        if not _exists(path) and is_preset(str(path)):
            return from_preset(cls, str(path), level=level, dtype=dtype, device=device)
        data = read_config_dict(path)
        config, prefix, kwargs = cls._resolve(data, level)
        with empty_on_meta():
            model = cls(config, **kwargs)
        state = read_state_dict(path, prefix=prefix)
        assign_state_dict(model, state, str(path))
        if dtype is not None or str(device) != "cpu":
            model.to(device=device, dtype=dtype)
        return model.eval()

    def save_pretrained(self, save_directory: str, *, safe_serialization: bool = True, max_shard_size: int | str = "5GB") -> list[str]:
        """Write ``config.json`` and the weights as transformers does (sharded above ``max_shard_size``)."""
        return save_pretrained_state_dict(
            self.config, self.state_dict(), save_directory, safe_serialization=safe_serialization, max_shard_size=max_shard_size
        )
