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
from models.jukebox import JukeboxModel, SampledTokens
from models.loading import load_model, load_model_config, load_prior, load_vqvae
from models.prior import JukeboxPrior
from models.prior.sampling import SamplingOptions
from models.tokenizer import JukeboxTokenizer
from models.vqvae import JukeboxVQVAE

__all__ = [
    "AttentionKind",
    "AttentionPattern",
    "JukeboxConfig",
    "JukeboxPriorConfig",
    "JukeboxVQVAEConfig",
    "JukeboxModel",
    "JukeboxPrior",
    "JukeboxTokenizer",
    "JukeboxVQVAE",
    "SampledTokens",
    "SamplingOptions",
    "attention_kind",
    "load_model",
    "load_model_config",
    "load_prior",
    "load_vqvae",
]
