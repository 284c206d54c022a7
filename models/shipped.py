"""Trained weights shipped inside the package, and which weights a preset loads.

A preset may ship trained weights as package data: ``models/weights/<preset>.safetensors``, the
whole model's state dict in float16 (keys ``vqvae.*`` and ``priors.{i}.*``, a tied weight stored
once), with metadata saying how it was made (``recipe``: corpus, steps, time) and what it scores
on held-out songs (``metrics``). Today the ``tiny`` preset ships weights trained on the synthetic
corpus (:mod:`pipeline.corpus`) by ``scripts/make_default_model.py``; the release presets
(``1b_lyrics``, ``5b``...) ship none: they are far larger than a package should be.

:class:`Weights` says what a preset loads: ``default`` its shipped weights when it has them
(seeded random weights otherwise), ``random`` seeded random weights always. A checkpoint directory
always loads its own weights.
"""
from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from enum import Enum
from importlib import resources
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from models.checkpoint import drop_tied
from models.presets import available_presets

WEIGHTS_DIR = "weights"  # under the models package
FORMAT = "jukebox-shipped-weights/1"
STORED_DTYPE = torch.float16
_JSON_FIELDS = ("config", "recipe", "metrics")


class Weights(str, Enum):
    """Which weights a preset gives.

    DEFAULT: the weights shipped with the package for that preset (``tiny``: trained on the
    synthetic corpus), seeded random weights for a preset that ships none.
    RANDOM: seeded random weights (``init_seed``), whatever the preset ships.
    """

    DEFAULT = "default"
    RANDOM = "random"

    @classmethod
    def parse(cls, value: Weights | str) -> Weights:
        """``value`` as a :class:`Weights`; ValueError naming the choices."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"weights={value!r}: expected one of {[w.value for w in cls]}") from None


def shipped_weights_file(preset: str):
    """The package file of ``preset``'s shipped weights (an ``importlib.resources`` path), or
    None when the preset ships none (release presets, preset YAML paths)."""
    if preset not in available_presets():
        return None
    path = resources.files("models") / WEIGHTS_DIR / f"{preset}.safetensors"
    return path if path.is_file() else None


def uses_shipped_weights(source: str, weights: Weights | str = Weights.DEFAULT) -> bool:
    """Whether loading ``source`` with ``weights`` reads the package's trained weights."""
    return Weights.parse(weights) is Weights.DEFAULT and shipped_weights_file(source) is not None


@functools.lru_cache(maxsize=4)
def _payload(preset: str) -> bytes:
    path = shipped_weights_file(preset)
    if path is None:
        raise ValueError(f"preset {preset!r} ships no trained weights (presets that do: {presets_with_weights()})")
    return path.read_bytes()


def presets_with_weights() -> list[str]:
    """The presets that ship trained weights."""
    return [name for name in available_presets() if shipped_weights_file(name) is not None]


@functools.lru_cache(maxsize=4)
def shipped_digest(preset: str) -> str:
    """sha256 of the shipped weights file (hex): what fingerprints of outputs made with it name
    (once per process: every song's fingerprint asks for it)."""
    return hashlib.sha256(_payload(preset)).hexdigest()


def _metadata(header: bytes) -> dict[str, Any]:
    raw = json.loads(header).get("__metadata__") or {}
    return {key: json.loads(value) if key in _JSON_FIELDS else value for key, value in raw.items()}


def shipped_metadata(preset: str) -> dict[str, Any]:
    """The shipped file's metadata: ``format``, ``preset``, ``config`` (the model config it was
    trained with), ``recipe`` and ``metrics`` (decoded from JSON)."""
    payload = _payload(preset)
    return _metadata(payload[8 : 8 + int.from_bytes(payload[:8], "little")])


def read_metadata_file(path) -> dict[str, Any]:
    """The metadata of a shipped weights file at ``path`` (a local path or resources path), as
    :func:`shipped_metadata` gives it; only the header is read."""
    with path.open("rb") if hasattr(path, "open") else open(path, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        return _metadata(handle.read(size))


def read_shipped_state(preset: str, prefix: str = "", dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The shipped tensors whose key starts with ``prefix`` (prefix removed), cast to ``dtype``."""
    state = safetensors_load(_payload(preset))
    return {key[len(prefix):]: value.to(dtype) for key, value in state.items() if key.startswith(prefix)}


def weights_tag(source: str, weights: Weights | str, init_seed: int) -> str:
    """What decides a model's weights, for fingerprints of the outputs made with them:
    ``shipped:<preset>:<sha256>`` , ``random:init_seed=<n>`` or ``checkpoint:<source>``."""
    from models.presets import is_preset

    if not is_preset(source):
        return f"checkpoint:{source}"
    if uses_shipped_weights(source, weights):
        return f"shipped:{source}:{shipped_digest(source)}"
    return f"random:init_seed={init_seed}"


def describe_weights(source: str, weights: Weights | str, init_seed: int) -> str:
    """One line saying which weights ``source`` loads (for the log at the start of a run)."""
    from models.presets import is_preset

    if not is_preset(source):
        return f"weights of checkpoint {source}"
    if uses_shipped_weights(source, weights):
        recipe = shipped_metadata(source).get("recipe", {})
        trained_on = recipe.get("trained_on", "a corpus")
        return (f"preset {source!r} with the trained weights shipped in the package (trained on {trained_on}; "
                f"sha256 {shipped_digest(source)[:12]}); model.weights=random for random ones")
    why = "model.weights=random" if Weights.parse(weights) is Weights.RANDOM else "the preset ships no trained weights"
    return (f"preset {source!r} with RANDOM weights (init_seed={init_seed}; {why}): untrained, its songs are noise; "
            "model.checkpoint gives a trained model")


def export_shipped_weights(
    state_dict: Mapping[str, torch.Tensor],
    tied: Mapping[str, str],
    path: str,
    *,
    preset: str,
    config: Mapping[str, Any],
    recipe: Mapping[str, Any],
    metrics: Mapping[str, Any],
) -> int:
    """Write a whole model's ``state_dict`` as a shipped weights file (float16, each tied weight
    once: ``tied`` as :func:`~models.checkpoint.tied_aliases` gives) at local ``path``; returns
    its size in bytes."""
    tensors = {key: value.detach().to("cpu", STORED_DTYPE).contiguous() for key, value in drop_tied(state_dict, tied).items()}
    bad = [key for key, value in tensors.items() if not torch.isfinite(value).all()]
    if bad:
        raise ValueError(f"weights not finite in float16 (overflow?): {bad[:8]}")
    metadata = {"format": FORMAT, "preset": preset, "config": json.dumps(dict(config), sort_keys=True),
                "recipe": json.dumps(dict(recipe), sort_keys=True), "metrics": json.dumps(dict(metrics), sort_keys=True)}
    payload = safetensors_save(dict(sorted(tensors.items())), metadata=metadata)
    with open(path, "wb") as handle:
        handle.write(payload)
    _payload.cache_clear()
    shipped_digest.cache_clear()
    return len(payload)
