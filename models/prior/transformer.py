"""The priors' transformer: layer norm, MLP, residual block and the stack of blocks.

State-dict layout (``_attn_mods.{i}.attn / layer_norm_0 / mlp.c_fc / mlp.c_proj / layer_norm_1``)
matches transformers' ``JukeboxLayerStack``.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import NamedTuple
import torch
from torch import nn
from torch.nn import functional as F

from models.config import AttentionKind, JukeboxPriorConfig, attention_kind
from models.prior.attention import Conv1D, SparseAttention
from models.prior.kv_cache import KVCache, LayerKVCache
from models.prior.step_reads import StackGeometry, StepLayout, StepReads


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def _gelu_fast(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_python": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": _gelu_fast,
    "quick_gelu": _quick_gelu,
    "swish": F.silu,
    "silu": F.silu,
    "elu": F.elu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation function called ``name`` (transformers' ``ACT2FN`` names)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}: expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


# Compiled, a matrix product with fewer weights than this is written out as products and a sum,
# which inductor fuses with its neighbours: below it the BLAS call costs more than its arithmetic
# (a tiny model's step), above it the BLAS streams the weights faster than a generated loop.
_WRITTEN_OUT_WEIGHTS = 1 << 16


def affine(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``inputs @ weight + bias`` of inputs [B, in] and a [in, out] weight: [B, out] (the decode step's products)."""
    if torch.compiler.is_compiling() and weight.numel() <= _WRITTEN_OUT_WEIGHTS:
        product = (inputs.unsqueeze(-1) * weight).sum(-2)
        return product if bias is None else product + bias
    return torch.mm(inputs, weight) if bias is None else torch.addmm(bias, inputs, weight)


class LayerNorm(nn.LayerNorm):
    """LayerNorm whose output keeps the input dtype (under autocast it computes in float32)."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(hidden_states, self.normalized_shape, self.weight, self.bias, self.eps).to(hidden_states.dtype)


class MLP(nn.Module):
    """``c_proj(act(c_fc(x)))``: width -> mlp_width -> width."""

    def __init__(self, width: int, mlp_width: int, act_fn: str, resid_dropout: float = 0.0, init_std: float = 0.02):
        super().__init__()
        self.c_fc = Conv1D(width, mlp_width, init_std)
        self.c_proj = Conv1D(mlp_width, width, init_std)
        self.act = activation(act_fn)
        self.dropout = nn.Dropout(resid_dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """float [..., width] -> [..., width]."""
        return self.dropout(self.c_proj(self.act(self.c_fc(hidden_states))))


class TransformerBlock(nn.Module):
    """``a = attn(ln0(x)); m = mlp(ln1(x + a)); out = x + res_scale * (a + m)``.

    The MLP reads the attention output added to the residual, but the block's output adds both
    branches to the *input* (the Jukebox block, not the usual pre-LN block).
    """

    def __init__(self, attn: SparseAttention, width: int, mlp: MLP, res_scale: float = 1.0):
        super().__init__()
        self.attn = attn
        self.layer_norm_0 = LayerNorm(width)
        self.mlp = mlp
        self.layer_norm_1 = LayerNorm(width)
        self.res_scale = res_scale

    @property
    def kind(self) -> AttentionKind:
        return self.attn.kind

    def _combine(self, hidden_states: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        mixed = self.mlp(self.layer_norm_1(hidden_states + attended))
        if self.res_scale == 1.0:
            return hidden_states + attended + mixed
        return hidden_states + self.res_scale * (attended + mixed)

    def forward(self, hidden_states: torch.Tensor, encoder_states: torch.Tensor | None = None, record: bool = False):
        """Whole sequence: hidden_states [B, T, width] -> ([B, T, width], attention probabilities or None)."""
        attended, probs = self.attn(self.layer_norm_0(hidden_states), encoder_states, record)
        return self._combine(hidden_states, attended), probs

    def forward_cached(self, hidden_states: torch.Tensor, start: int, cache: LayerKVCache) -> torch.Tensor:
        """Positions ``[start, start + n)``: hidden_states [B, n, width] -> [B, n, width]."""
        return self._combine(hidden_states, self.attn.forward_cached(self.layer_norm_0(hidden_states), start, cache))

    def step_weights(self) -> BlockWeights:
        """This block's tensors as plain references for :meth:`step`."""
        attn, mlp, norm0, norm1 = self.attn, self.mlp, self.layer_norm_0, self.layer_norm_1
        return BlockWeights(
            attn, norm0.normalized_shape, norm0.eps, norm0.weight, norm0.bias, attn.c_attn.weight, attn.c_attn.bias,
            attn.c_proj.weight, attn.c_proj.bias, norm1.eps, norm1.weight, norm1.bias, mlp.c_fc.weight, mlp.c_fc.bias,
            mlp.act, mlp.c_proj.weight, mlp.c_proj.bias, self.res_scale,
        )

    @staticmethod
    def step(w: BlockWeights, hidden_states: torch.Tensor, reads: StepReads, cache: LayerKVCache) -> torch.Tensor:
        """The static one-token step of a block with weights ``w`` (:meth:`step_weights`):
        float [B, width] -> [B, width] (:mod:`models.prior.step_reads`).

        The computation of :meth:`forward_cached` on one position (inference only), in as few
        tensor operations as possible.
        """
        normed = F.layer_norm(hidden_states, w.norm_shape, w.norm0_weight, w.norm0_bias, w.norm0_eps)
        context = w.attn.step(affine(normed, w.attn_weight, w.attn_bias), reads, cache)
        attended = affine(context, w.proj_weight, w.proj_bias)
        mixed_in = hidden_states + attended
        normed = F.layer_norm(mixed_in, w.norm_shape, w.norm1_weight, w.norm1_bias, w.norm1_eps)
        mixed = affine(w.act(affine(normed, w.fc_weight, w.fc_bias)), w.mlp_proj_weight, w.mlp_proj_bias)
        if w.res_scale == 1.0:
            return mixed_in + mixed
        return hidden_states + w.res_scale * (attended + mixed)


class BlockWeights(NamedTuple):
    """One block's tensors and settings as plain references, for the one-token step.

    Gathered once per window: eager, a step of a small model would otherwise spend more time in
    ``nn.Module`` attribute lookups (about 20 per block, half a microsecond each) than in its
    kernels. Compiled or captured steps see the same tensors.
    """

    attn: SparseAttention
    norm_shape: tuple[int, ...]
    norm0_eps: float
    norm0_weight: torch.Tensor
    norm0_bias: torch.Tensor
    attn_weight: torch.Tensor
    attn_bias: torch.Tensor
    proj_weight: torch.Tensor
    proj_bias: torch.Tensor
    norm1_eps: float
    norm1_weight: torch.Tensor
    norm1_bias: torch.Tensor
    fc_weight: torch.Tensor
    fc_bias: torch.Tensor
    act: Callable[[torch.Tensor], torch.Tensor]
    mlp_proj_weight: torch.Tensor
    mlp_proj_bias: torch.Tensor
    res_scale: float


class LayerStack(nn.Module):
    """``len(kinds)`` transformer blocks; block ``i`` attends with kind ``kinds[i]``.

    Args:
        kinds: the attention kind of each layer.
        width: model width.
        n_heads: attention heads.
        attn_width: total attention width (``n_heads * head_dim``).
        mlp_width: hidden width of the MLPs.
        n_ctx: sequence length the layers are built for (``block_ctx = n_ctx // blocks``).
        blocks: number of blocks of the sparse kinds.
        spread: summary-spread positions per block.
        encoder_len: lyric tokens (prime: leading positions of the sequence; cross: encoder states).
        mask: causal masking in the full-sequence path.
        act_fn: MLP activation name.
        res_scale: weight of each block's residual branches.
        attn_dropout, resid_dropout: dropout probabilities.
        init_std: initial weight standard deviation of the projections.
    """

    def __init__(
        self,
        kinds: Sequence[AttentionKind],
        width: int,
        n_heads: int,
        attn_width: int,
        mlp_width: int,
        n_ctx: int,
        blocks: int,
        *,
        spread: int | None = None,
        encoder_len: int = 0,
        mask: bool = True,
        act_fn: str = "quick_gelu",
        res_scale: float = 1.0,
        attn_dropout: float = 0.0,
        resid_dropout: float = 0.0,
        init_std: float = 0.02,
    ):
        super().__init__()
        self.n_ctx, self.width, self.encoder_len = n_ctx, width, encoder_len
        self._attn_mods = nn.ModuleList(
            TransformerBlock(
                SparseAttention(
                    width, attn_width, n_heads, kind, n_ctx, blocks, spread=spread, encoder_len=encoder_len, mask=mask,
                    attn_dropout=attn_dropout, resid_dropout=resid_dropout, init_std=init_std,
                ),
                width,
                MLP(width, mlp_width, act_fn, resid_dropout, init_std),
                res_scale,
            )
            for kind in kinds
        )

    @classmethod
    def from_config(cls, config: JukeboxPriorConfig, n_ctx: int) -> LayerStack:
        """The stack a prior config describes, over sequences of ``n_ctx`` positions."""
        kinds = [attention_kind(config.attention_pattern, i) for i in range(config.num_layers)]
        return cls(
            kinds,
            config.hidden_size,
            config.n_heads,
            int(config.attention_multiplier * config.hidden_size),
            int(config.mlp_multiplier * config.hidden_size),
            n_ctx,
            config.blocks,
            spread=config.spread,
            encoder_len=config.nb_relevant_lyric_tokens,
            mask=config.mask,
            act_fn=config.act_fn,
            res_scale=1.0 / config.num_layers if config.attn_res_scale else 1.0,
            attn_dropout=config.attn_dropout,
            resid_dropout=config.resid_dropout,
            init_std=0.0 if config.zero_out else 0.02 * config.init_scale,
        )

    @property
    def kinds(self) -> list[AttentionKind]:
        return [layer.kind for layer in self._attn_mods]

    def forward(
        self, hidden_states: torch.Tensor, encoder_states: torch.Tensor | None = None, record_layers: Collection[int] = ()
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Whole sequence: hidden_states float [B, T, width] -> (same shape, {layer: attention probabilities}).

        ``record_layers``: indices of the layers whose attention probabilities to return
        (dense, prime and cross layers only, see :meth:`SparseAttention.forward`).
        """
        recorded: dict[int, torch.Tensor] = {}
        for index, layer in enumerate(self._attn_mods):
            hidden_states, probs = layer(hidden_states, encoder_states, index in record_layers)
            if probs is not None:
                recorded[index] = probs
        return hidden_states, recorded

    @property
    def geometry(self) -> StackGeometry:
        """The context geometry shared by every layer."""
        return self._attn_mods[0].attn.geometry()

    def new_cache(self, batch: int, dtype: torch.dtype, device: torch.device | str) -> KVCache:
        """A preallocated, zeroed cache for sampling ``batch`` sequences (cross layers: call
        :meth:`fill_cross_caches` with the window's lyric-encoder states)."""
        caches = []
        for layer in self._attn_mods:
            attn = layer.attn
            if attn.kind is AttentionKind.CROSS:
                capacity, ring, spare = self.encoder_len, False, 0
            else:
                capacity, ring, spare = attn.cache_spec()
            caches.append(
                LayerKVCache(batch, attn.n_heads, capacity, attn.head_dim, ring=ring, spare=spare, dtype=dtype, device=device)
            )
        return KVCache(caches, StepLayout(self.geometry, self.kinds, device, dtype))

    def fill_cross_caches(self, cache: KVCache, encoder_states: torch.Tensor | None) -> None:
        """Write the keys/values of the lyric-encoder states [B, encoder_len, width] into the cross layers' caches."""
        for layer, layer_cache in zip(self._attn_mods, cache.layers):
            if layer.kind is AttentionKind.CROSS:
                if encoder_states is None:
                    raise ValueError("this stack has cross_attention layers: sampling needs the lyric encoder states")
                if encoder_states.shape[1] != layer_cache.capacity:
                    raise ValueError(
                        f"got {encoder_states.shape[1]} lyric-encoder states, the cross layers read {layer_cache.capacity}"
                    )
                layer.attn.fill_cross_cache(layer_cache, encoder_states)

    def forward_cached(self, hidden_states: torch.Tensor, start: int, cache: KVCache) -> torch.Tensor:
        """Positions ``[start, start + n)`` of sequences being sampled: [B, n, width] -> [B, n, width]."""
        for layer, layer_cache in zip(self._attn_mods, cache.layers):
            hidden_states = layer.forward_cached(hidden_states, start, layer_cache)
        return hidden_states

    def step_weights(self) -> list[BlockWeights]:
        """Every block's :class:`BlockWeights`, for :meth:`step`."""
        return [layer.step_weights() for layer in self._attn_mods]

    def step(
        self,
        hidden_states: torch.Tensor,
        position: torch.Tensor,
        cache: KVCache,
        weights: list[BlockWeights],
        reads: dict[AttentionKind, StepReads] | None = None,
    ) -> torch.Tensor:
        """The static one-token step of ``position`` (long [1]) through every layer:
        float [B, width] -> [B, width]. ``cache`` comes from :meth:`new_cache`, ``weights`` from
        :meth:`step_weights`; ``reads``: the cache layout's reads at ``position`` when the caller
        has them (None: computed here)."""
        if reads is None:
            reads = cache.layout.reads(position)
        for w, layer_cache in zip(weights, cache.layers):
            hidden_states = TransformerBlock.step(w, hidden_states, reads[w.attn.kind], layer_cache)
        return hidden_states


def positional_init_std(config: JukeboxPriorConfig) -> float:
    """Initial standard deviation of positional/timing embeddings (0.01 * init_scale)."""
    return 0.01 * config.init_scale


def embedding_init_std(config: JukeboxPriorConfig) -> float:
    """Initial standard deviation of token embeddings (0.02 * init_scale)."""
    return 0.02 * config.init_scale


__all__ = [
    "ACTIVATIONS",
    "BlockWeights",
    "LayerNorm",
    "LayerStack",
    "MLP",
    "TransformerBlock",
    "activation",
    "affine",
    "embedding_init_std",
    "positional_init_std",
]
