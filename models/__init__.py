"""Jukebox in plain PyTorch: typed configs, tokenizer, VQ-VAE, priors and sampling.

Nothing here knows of Ray, Hydra or storage layouts; ``pipeline`` wires these parts together.

The names below are imported on first use (PEP 562), so that importing one part (say
``models.prior.autoregressive`` on a GPU machine for a benchmark) does not import the others and
their dependencies (the tokenizer's, for one).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AttentionKind": "models.config",
    "AttentionPattern": "models.config",
    "JukeboxConfig": "models.config",
    "JukeboxPriorConfig": "models.config",
    "JukeboxVQVAEConfig": "models.config",
    "attention_kind": "models.config",
    "JukeboxModel": "models.jukebox",
    "SampledTokens": "models.jukebox",
    "load_model": "models.loading",
    "load_model_config": "models.loading",
    "load_prior": "models.loading",
    "load_vqvae": "models.loading",
    "resolve_dtype": "models.loading",
    "JukeboxPrior": "models.prior.prior",
    "DecodeOptions": "models.prior.decoder",
    "SamplingOptions": "models.prior.sampling",
    "JukeboxTokenizer": "models.tokenizer",
    "JukeboxVQVAE": "models.vqvae",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
