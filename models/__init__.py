"""Jukebox in plain PyTorch: typed configs, tokenizer, VQ-VAE, priors and sampling.

Nothing here knows of Ray, Hydra or storage layouts; ``pipeline`` wires these parts together.
"""
from models.config import (
    AttentionKind,
    AttentionPattern,
    JukeboxConfig,
    JukeboxPriorConfig,
    JukeboxVQVAEConfig,
    attention_kind,
)
from models.tokenizer import JukeboxTokenizer
from models.vqvae import JukeboxVQVAE

__all__ = [
    "AttentionKind",
    "AttentionPattern",
    "JukeboxConfig",
    "JukeboxPriorConfig",
    "JukeboxVQVAEConfig",
    "JukeboxTokenizer",
    "JukeboxVQVAE",
    "attention_kind",
]
