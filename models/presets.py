"""Model presets: YAML files in ``conf/model/`` describing the released models and a tiny one.

Each file is a :class:`~models.config.JukeboxConfig` dict (the layout transformers writes) plus a
``tokenizer`` section with the settings the model was trained with (label versions per prior,
number of genres, lyric length). The files are package data of ``conf``, read through
``importlib.resources``: an installed wheel has them as the source checkout does.
"""
from __future__ import annotations

import functools
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from models.config import JukeboxConfig


def _preset_dir() -> Traversable:
    return resources.files("conf") / "model"


def available_presets() -> list[str]:
    """Names of the presets shipped in ``conf/model/``."""
    return sorted(entry.name[: -len(".yaml")] for entry in _preset_dir().iterdir() if entry.name.endswith(".yaml"))


@functools.lru_cache(maxsize=None)
def _read_preset(name: str) -> dict[str, Any]:
    source: Traversable | Path = Path(name) if name.endswith((".yaml", ".yml")) else _preset_dir() / f"{name}.yaml"
    if not source.is_file():
        raise ValueError(f"unknown model preset {name!r}: expected one of {available_presets()} or a path to a YAML file")
    try:
        data = yaml.safe_load(source.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"model preset {name!r} is not valid YAML: {' '.join(str(err).split())}") from err
    if not isinstance(data, dict):
        raise ValueError(f"model preset {name!r} must hold a mapping, got {type(data).__name__}")
    return data


def is_preset(name: str) -> bool:
    """Whether ``name`` names a shipped preset or a preset YAML file."""
    return name in available_presets() or (name.endswith((".yaml", ".yml")) and Path(name).is_file())


def load_preset(name: str) -> JukeboxConfig:
    """The :class:`JukeboxConfig` of preset ``name`` (e.g. ``"tiny"``, ``"1b_lyrics"``)."""
    data = {k: v for k, v in _read_preset(name).items() if k != "tokenizer"}
    return JukeboxConfig.from_dict(data)


def preset_tokenizer_settings(name: str) -> dict[str, Any]:
    """Tokenizer keyword arguments (``version``, ``n_genres``, ``max_n_lyric_tokens``) of a preset."""
    return dict(_read_preset(name).get("tokenizer", {}))
