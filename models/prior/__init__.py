"""Jukebox priors: sparse transformers over VQ-VAE tokens, their conditioners and a fast sampler."""
from models.prior.attention import SparseAttention, allowed_keys
from models.prior.autoregressive import ConditionalAutoregressive, LyricEncoder
from models.prior.conditioners import LabelConditioner, MusicTokenConditioner, RangeEmbedding, relevant_lyric_tokens
from models.prior.kv_cache import KVCache, LayerKVCache
from models.prior.prior import JukeboxPrior
from models.prior.sampling import GlobalDrawer, SamplingOptions, SeededDrawer, filter_logits
from models.prior.transformer import LayerStack

__all__ = [
    "ConditionalAutoregressive",
    "GlobalDrawer",
    "JukeboxPrior",
    "KVCache",
    "LabelConditioner",
    "LayerKVCache",
    "LayerStack",
    "LyricEncoder",
    "MusicTokenConditioner",
    "RangeEmbedding",
    "SamplingOptions",
    "SeededDrawer",
    "SparseAttention",
    "allowed_keys",
    "filter_logits",
    "relevant_lyric_tokens",
]
