"""The attention layer of the Jukebox priors: every Sparse Transformer layer kind, full or cached.

A prior's context of ``n_ctx`` positions is factored into ``blocks`` blocks of ``block_ctx``
positions. Each layer kind lets the query at position ``t`` see a different set of keys ``s``:

==================  ====================================================================
dense               every ``s <= t``
block               ``s <= t`` in the same block as ``t``
transpose-block     ``s <= t`` in the same column (``s % block_ctx == t % block_ctx``)
previous-block      every position of the block before ``t``'s (none for the first block)
summary             the last position of each earlier block, plus one null key
summary-spread      the last ``spread`` positions of each earlier block, plus ``spread`` nulls
prime               ``s <= t`` among the first ``prime_len`` positions (the lyrics of a
                    merged lyrics/music sequence, rounded up to a multiple of ``blocks``)
cross               every lyric-encoder state
==================  ====================================================================

A null key is a zero key with a zero value: it takes part in the softmax but adds nothing.
"``s <= t``" applies when the layer masks (``mask=True``, as in every released prior); sampling
is always causal.

Three paths compute the same thing:

- :meth:`SparseAttention.forward` takes a whole sequence and uses the block structure directly
  (blocks as a batch dimension), the cost of a sparse layer staying linear in ``n_ctx`` per block.
- :meth:`SparseAttention.forward_cached` (prefill) takes the next positions of a sequence being
  sampled and a :class:`~models.prior.kv_cache.LayerKVCache`: the chunk attends to the cached
  past plus itself under the kind's mask (:func:`allowed_keys`).
- :meth:`SparseAttention.step` (decoding) takes one position given as a tensor and reads a fixed
  set of cache slots per kind under a mask (:mod:`models.prior.step_reads`): a block, a column of
  ``blocks`` keys, a pair of blocks..., so its cost grows at most linearly with the context and
  its shapes never depend on the position.

State-dict layout (``c_attn``, ``c_enc_kv``, ``c_proj`` with ``[in, out]`` weights) matches
transformers' ``JukeboxAttention``.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from models.config import AttentionKind
from models.prior.kv_cache import LayerKVCache
from models.prior.step_reads import StackGeometry, StepReads

_BLOCKWISE = (AttentionKind.BLOCK, AttentionKind.TRANSPOSE_BLOCK, AttentionKind.PREV_BLOCK)
_SUMMARIES = (AttentionKind.SUMMARY, AttentionKind.SUMMARY_SPREAD)
# Kinds computed directly over [queries, keys] (the others use the block structure).
_DIRECT = (AttentionKind.DENSE, AttentionKind.PRIME, AttentionKind.CROSS)


class Conv1D(nn.Module):
    """Affine map ``x @ weight + bias`` with a ``[in_width, out_width]`` weight (GPT-2 layout)."""

    def __init__(self, in_width: int, out_width: int, init_std: float = 0.02):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_width, out_width))
        self.bias = nn.Parameter(torch.zeros(out_width))
        nn.init.normal_(self.weight, std=init_std)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """hidden_states: [..., in_width] -> [..., out_width]."""
        flat = hidden_states.reshape(-1, hidden_states.shape[-1])
        return torch.addmm(self.bias, flat, self.weight).view(*hidden_states.shape[:-1], self.weight.shape[1])


def allowed_keys(
    kind: AttentionKind,
    query_pos: torch.Tensor,
    key_pos: torch.Tensor,
    *,
    block_ctx: int,
    blocks: int,
    spread: int | None = None,
    prime_len: int = 0,
    causal: bool = True,
) -> torch.Tensor:
    """bool [n_queries, n_keys]: may the query at ``query_pos[i]`` see the key at ``key_pos[j]``.

    The rule of each kind (module docstring) over absolute positions, nulls excluded; cross
    attention allows everything. ``causal=False`` drops the ``s <= t`` part (unmasked layers).
    """
    t = query_pos[:, None]
    s = key_pos[None, :]
    if kind is AttentionKind.CROSS:
        return torch.ones(t.shape[0], s.shape[1], dtype=torch.bool, device=key_pos.device)
    if kind is AttentionKind.PREV_BLOCK:
        return s // block_ctx == t // block_ctx - 1
    allowed = s <= t if causal else torch.ones(t.shape[0], s.shape[1], dtype=torch.bool, device=key_pos.device)
    if kind is AttentionKind.BLOCK:
        allowed = allowed & (s // block_ctx == t // block_ctx)
    elif kind is AttentionKind.TRANSPOSE_BLOCK:
        allowed = allowed & (s % block_ctx == t % block_ctx)
    elif kind is AttentionKind.SUMMARY:
        allowed = allowed & (s % block_ctx == block_ctx - 1) & (s // block_ctx <= blocks - 2)
    elif kind is AttentionKind.SUMMARY_SPREAD:
        allowed = allowed & (s % block_ctx >= block_ctx - spread) & (s // block_ctx <= blocks - 2)
    elif kind is AttentionKind.PRIME:
        allowed = allowed & (s < prime_len)
    return allowed


def null_keys(kind: AttentionKind, query_pos: torch.Tensor, *, block_ctx: int, spread: int | None = None) -> tuple[int, torch.Tensor]:
    """(number of null keys, bool [n_queries] of the queries that see them) for ``kind``.

    Summary kinds always see theirs. Previous-block queries of the first block have no real key:
    they see one null key, which makes their output exactly zero (as the reference's zero block).
    """
    if kind is AttentionKind.SUMMARY:
        return 1, torch.ones_like(query_pos, dtype=torch.bool)
    if kind is AttentionKind.SUMMARY_SPREAD:
        return spread, torch.ones_like(query_pos, dtype=torch.bool)
    if kind is AttentionKind.PREV_BLOCK:
        return 1, query_pos < block_ctx
    return 0, torch.zeros_like(query_pos, dtype=torch.bool)


def masked_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, allowed: torch.Tensor, n_null: int = 0, null_allowed: torch.Tensor | None = None
) -> torch.Tensor:
    """Attention of query [B, H, q, d] over key/value [B, H, k, d] where ``allowed`` [q, k] is True,
    after ``n_null`` null keys seen by the queries flagged in ``null_allowed`` [q]. Every query
    must see at least one key."""
    if n_null:
        nulls = key.new_zeros(*key.shape[:2], n_null, key.shape[-1])
        key, value = torch.cat([nulls, key], dim=2), torch.cat([nulls, value], dim=2)
        allowed = torch.cat([null_allowed[:, None].expand(-1, n_null), allowed], dim=1)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=allowed)


def _attend_recording(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, allowed: torch.Tensor | None):
    """Plain softmax attention that also returns the float32 probabilities [B, H, q, k]."""
    scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * query.shape[-1] ** -0.5
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    probs = scores.softmax(dim=-1)
    return torch.matmul(probs.to(value.dtype), value), probs


def one_query_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Softmax attention of one query [B, H, 1, d] over key/value [B, H, n, d] under ``mask``
    [1, n] (additive, or bool: True seen) written out as products and sums: compiled, the whole
    of it fuses into two loops over the keys, cheaper than a call of the attention kernel.
    Returns [B, H, 1, d]."""
    scores = (query * key).sum(-1, keepdim=True) * query.shape[-1] ** -0.5  # [B, H, n, 1]
    if mask is not None:
        mask = mask.view(1, 1, -1, 1)
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    probs = torch.softmax(scores.float(), dim=2).to(value.dtype)
    return (probs * value).sum(2, keepdim=True)


class SparseAttention(nn.Module):
    """One attention layer of kind ``kind`` over a context of ``n_ctx`` positions.

    Args:
        width: model width (input and output channels).
        attn_width: total width of queries/keys/values (``n_heads * head_dim``).
        n_heads: attention heads.
        kind: the layer kind (:class:`models.config.AttentionKind`).
        n_ctx: positions of the sequence this layer runs over (lyrics included when merged).
        blocks: number of blocks the context is factored into (``block_ctx = n_ctx // blocks``).
        spread: positions per block seen by summary-spread attention.
        encoder_len: lyric tokens at the start of the sequence (prime) or encoder states (cross).
        mask: apply the causal part of the kinds' rules in the full-sequence path.
        attn_dropout, resid_dropout: dropout probabilities (training only).
        init_std: standard deviation of the initial projection weights.
    """

    def __init__(
        self,
        width: int,
        attn_width: int,
        n_heads: int,
        kind: AttentionKind | str,
        n_ctx: int,
        blocks: int,
        *,
        spread: int | None = None,
        encoder_len: int = 0,
        mask: bool = True,
        attn_dropout: float = 0.0,
        resid_dropout: float = 0.0,
        init_std: float = 0.02,
    ):
        super().__init__()
        self.kind = AttentionKind(kind)
        if attn_width % n_heads:
            raise ValueError(f"attention width {attn_width} is not divisible by n_heads={n_heads}")
        self.n_heads, self.head_dim, self.n_ctx, self.blocks = n_heads, attn_width // n_heads, n_ctx, blocks
        self.block_ctx = n_ctx // blocks
        if self.kind in _BLOCKWISE + _SUMMARIES and self.block_ctx < 1:
            raise ValueError(f"{self.kind.value} needs blocks <= n_ctx, got blocks={blocks}, n_ctx={n_ctx}")
        if self.kind is AttentionKind.SUMMARY_SPREAD and not (spread and 0 < spread <= self.block_ctx):
            raise ValueError(f"summary_spread_attn needs 0 < spread <= block_ctx={self.block_ctx}, got spread={spread}")
        self.spread, self.encoder_len, self.mask = spread, encoder_len, mask
        # Prime attention sees the lyrics rounded up to a whole number of `blocks` (always at least
        # one more position), as the original model was trained.
        self.prime_len = (encoder_len // blocks + 1) * blocks
        self.attn_dropout = attn_dropout
        if self.kind is AttentionKind.CROSS:
            self.c_attn = Conv1D(width, attn_width, init_std)
            self.c_enc_kv = Conv1D(width, 2 * attn_width, init_std)
        else:
            self.c_attn = Conv1D(width, 3 * attn_width, init_std)
        self.c_proj = Conv1D(attn_width, width, init_std)
        self.resid_dropout = nn.Dropout(resid_dropout)

    # ------------------------------------------------------------------ helpers
    def _split(self, projected: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
        """[B, T, parts * H * d] -> ``parts`` tensors [B, H, T, d]."""
        batch, length, _ = projected.shape
        split = projected.view(batch, length, parts, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return tuple(split.unbind(0))

    def _output(self, context: torch.Tensor) -> torch.Tensor:
        """context [B, H, T, d] -> [B, T, width]."""
        batch, _, length, _ = context.shape
        merged = context.transpose(1, 2).reshape(batch, length, self.n_heads * self.head_dim)
        return self.resid_dropout(self.c_proj(merged))

    def _encoder_kv(self, encoder_states: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if encoder_states is None:
            raise ValueError("a cross_attention layer needs the lyric encoder states, got None (a prior without lyrics?)")
        return self._split(self.c_enc_kv(encoder_states), 2)

    def _qkv(self, hidden_states: torch.Tensor, encoder_states: torch.Tensor | None):
        if self.kind is AttentionKind.CROSS:
            (query,) = self._split(self.c_attn(hidden_states), 1)
            return (query, *self._encoder_kv(encoder_states))
        return self._split(self.c_attn(hidden_states), 3)

    def summary_positions(self, length: int) -> list[int]:
        """Positions below ``length`` that summary(-spread) attention reads (ends of blocks 0..blocks-2)."""
        last = self.spread if self.kind is AttentionKind.SUMMARY_SPREAD else 1
        return [
            end - back
            for end in range(self.block_ctx, (self.blocks - 1) * self.block_ctx + 1, self.block_ctx)
            for back in range(last, 0, -1)
            if end - back < length
        ]

    def geometry(self) -> StackGeometry:
        """The context geometry of this layer (shared by every layer of its stack)."""
        return StackGeometry(self.n_ctx, self.block_ctx, self.blocks, self.spread, self.prime_len)

    def cache_spec(self) -> tuple[int, bool, int]:
        """(capacity, ring, spare slots) of the :class:`LayerKVCache` this layer needs when sampling."""
        return self.geometry().cache_spec(self.kind)

    def rule_kwargs(self) -> dict:
        """This layer's geometry as keyword arguments of :func:`allowed_keys`."""
        return {"block_ctx": self.block_ctx, "blocks": self.blocks, "spread": self.spread, "prime_len": self.prime_len}

    # ------------------------------------------------------------------ full sequence
    def forward(
        self, hidden_states: torch.Tensor, encoder_states: torch.Tensor | None = None, record: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention over a whole sequence.

        Args:
            hidden_states: float [B, T, width], positions 0..T-1.
            encoder_states: float [B, n_lyric, width] (cross attention only).
            record: also return the attention probabilities, float32 [B, H, T, keys]: over the
                encoder states for cross attention; for prime only music queries x lyric keys,
                [B, H, T - encoder_len, encoder_len]; for the other kinds over all T positions
                (computed densely, zero where the kind does not look: for inspection only).

        Returns:
            (output [B, T, width], probabilities or None).
        """
        query, key, value = self._qkv(hidden_states, encoder_states)
        if record and self.kind not in _DIRECT:
            return self._output(self.masked_dense_context(query, key, value)), self._dense_probabilities(query, key)
        context, probs = self._full_context(query, key, value, record)
        return self._output(context), probs

    def _full_context(self, query, key, value, record):
        """Context [B, H, T, d] of the whole sequence (and the probabilities of direct kinds if ``record``)."""
        kind, length, bc = self.kind, query.shape[2], self.block_ctx
        dropout = self.attn_dropout if self.training else 0.0
        if kind in _DIRECT:
            allowed = None
            if kind is AttentionKind.PRIME:
                key, value = key[:, :, : self.prime_len], value[:, :, : self.prime_len]
            if self.mask and kind is not AttentionKind.CROSS:
                positions = torch.arange(max(length, key.shape[2]), device=query.device)
                allowed = positions[None, : key.shape[2]] <= positions[:length, None]
            if record:
                context, probs = _attend_recording(query, key, value, allowed)
                if kind is AttentionKind.PRIME:
                    probs = probs[:, :, self.encoder_len :, : self.encoder_len]
                return context, probs
            return F.scaled_dot_product_attention(query, key, value, attn_mask=allowed, dropout_p=dropout), None
        if kind in _BLOCKWISE:
            pad = -length % bc
            if pad:
                query, key, value = (F.pad(x, (0, 0, 0, pad)) for x in (query, key, value))
            # [B, H, n_blocks, block_ctx, d]: blocks become a batch dimension.
            query, key, value = (x.unflatten(2, (-1, bc)) for x in (query, key, value))
            if kind is AttentionKind.TRANSPOSE_BLOCK:
                # [B, H, block_ctx, n_blocks, d]: attend along each column instead.
                query, key, value = (x.transpose(2, 3) for x in (query, key, value))
            elif kind is AttentionKind.PREV_BLOCK:
                # Block b attends to block b - 1; block 0 to a zero block (output zero).
                key, value = (F.pad(x[:, :, :-1], (0, 0, 0, 0, 1, 0)) for x in (key, value))
            causal = self.mask and kind is not AttentionKind.PREV_BLOCK
            context = F.scaled_dot_product_attention(query, key, value, is_causal=causal, dropout_p=dropout)
            if kind is AttentionKind.TRANSPOSE_BLOCK:
                context = context.transpose(2, 3)
            return context.flatten(2, 3)[:, :, :length], None
        # Summary kinds: the null keys, then only the block ends they read.
        positions = torch.tensor(self.summary_positions(length), dtype=torch.long, device=query.device)
        query_pos = torch.arange(length, device=query.device)
        n_null, null_allowed = null_keys(kind, query_pos, block_ctx=bc, spread=self.spread)
        allowed = positions[None, :] <= query_pos[:, None]
        if not self.mask:
            allowed = torch.ones_like(allowed)
        context = masked_attention(query, key[:, :, positions], value[:, :, positions], allowed, n_null, null_allowed)
        return context, None

    def _dense_probabilities(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """float32 [B, H, T, T] attention probabilities of a block-structured kind, spread over all
        positions (zero where the kind does not look; null keys left out)."""
        positions = torch.arange(query.shape[2], device=query.device)
        allowed = allowed_keys(self.kind, positions, positions, causal=self.mask, **self.rule_kwargs())
        n_null, null_allowed = null_keys(self.kind, positions, block_ctx=self.block_ctx, spread=self.spread)
        if n_null:
            key = torch.cat([key.new_zeros(*key.shape[:2], n_null, key.shape[-1]), key], dim=2)
            allowed = torch.cat([null_allowed[:, None].expand(-1, n_null), allowed], dim=1)
        _, probs = _attend_recording(query, key, key, allowed)
        return probs[..., n_null:]

    def masked_dense_context(self, query, key, value) -> torch.Tensor:
        """The full-sequence context computed densely from :func:`allowed_keys`: O(T^2), the
        oracle the block-structured path is tested against (and used when recording).

        query/key/value: [B, H, T, d] over positions 0..T-1 (cross: keys are the encoder states).
        """
        query_pos = torch.arange(query.shape[2], device=query.device)
        key_pos = torch.arange(key.shape[2], device=query.device)
        allowed = allowed_keys(self.kind, query_pos, key_pos, causal=self.mask, **self.rule_kwargs())
        n_null, null_allowed = null_keys(self.kind, query_pos, block_ctx=self.block_ctx, spread=self.spread)
        return masked_attention(query, key, value, allowed, n_null, null_allowed)

    # ------------------------------------------------------------------ cached (sampling)
    def fill_cross_cache(self, cache: LayerKVCache, encoder_states: torch.Tensor) -> None:
        """Write the keys/values of the lyric-encoder states [B, n_lyric, width] into ``cache``."""
        key, value = self._encoder_kv(encoder_states)
        cache.write(0, key.to(cache.keys.dtype), value.to(cache.values.dtype))

    def forward_cached(self, hidden_states: torch.Tensor, start: int, cache: LayerKVCache) -> torch.Tensor:
        """Attention for positions ``[start, start + n)`` of a sequence being sampled (the prefill path).

        Every earlier position must already be in ``cache``; this call adds its own keys/values.

        Args:
            hidden_states: float [B, n, width].
            start: absolute position of ``hidden_states[:, 0]``.
            cache: this layer's cache (cross attention: filled by :meth:`fill_cross_cache`).

        Returns:
            float [B, n, width].
        """
        if self.kind is AttentionKind.CROSS:
            (query,) = self._split(self.c_attn(hidden_states), 1)
            key, value = cache.view(0, cache.capacity)
            return self._output(F.scaled_dot_product_attention(query, key, value))
        query, key, value = self._split(self.c_attn(hidden_states), 3)
        return self._output(self._prefill_chunk(query, key, value, start, cache))

    def step(self, projected: torch.Tensor, reads: StepReads, cache: LayerKVCache) -> torch.Tensor:
        """The static one-token step: attention context of one position.

        Args:
            projected: ``c_attn`` of the normalised input, [B, 3 * attn_width] ([B, attn_width]
                of queries for cross attention).
            reads: this kind's slots and mask at the position (:class:`StepReads`).
            cache: this layer's cache; the position's key/value are stored in it first.

        Returns:
            context [B, attn_width] (before ``c_proj``).
        """
        batch, heads, dim = projected.shape[0], self.n_heads, self.head_dim
        if self.kind is AttentionKind.CROSS:
            query = projected.view(batch, heads, 1, dim)
            context = F.scaled_dot_product_attention(query, cache.keys, cache.values)
        else:
            query, key, value = projected.view(batch, 3, heads, 1, dim).unbind(1)
            cache.store(reads.slot, key, value)
            key, value = cache.read(reads.index)
            # Eager, the fused attention kernel is one call instead of five.
            if torch.compiler.is_compiling():
                context = one_query_attention(query, key, value, reads.mask)
            else:
                context = F.scaled_dot_product_attention(query, key, value, attn_mask=reads.mask)
        return context.view(batch, heads * dim)

    def _prefill_chunk(self, query, key, value, start: int, cache: LayerKVCache) -> torch.Tensor:
        """Several positions: attend to the cached past plus the chunk under the kind's mask, then store the chunk."""
        kind, bc, n = self.kind, self.block_ctx, query.shape[2]
        end = start + n
        if kind is AttentionKind.PRIME:
            n_store = max(0, min(end, self.prime_len) - start)
            past_key, past_value = cache.view(0, min(start, self.prime_len))
            new_key, new_value = key[:, :, :n_store], value[:, :, :n_store]
            low = 0
        else:
            n_store = n
            new_key, new_value = key, value
            low = 0
            if kind is AttentionKind.BLOCK:
                low = start - start % bc
            elif kind is AttentionKind.PREV_BLOCK:
                low = max(0, start - start % bc - bc)
            past_key, past_value = cache.gather(low, start)
        all_key, all_value = torch.cat([past_key, new_key], dim=2), torch.cat([past_value, new_value], dim=2)
        query_pos = torch.arange(start, end, device=query.device)
        key_pos = torch.arange(low, low + all_key.shape[2], device=query.device)
        allowed = allowed_keys(kind, query_pos, key_pos, causal=True, **self.rule_kwargs())
        n_null, null_allowed = null_keys(kind, query_pos, block_ctx=bc, spread=self.spread)
        context = masked_attention(query, all_key, all_value, allowed, n_null, null_allowed)
        if n_store:
            cache.write(start, key[:, :, :n_store], value[:, :, :n_store])
        return context
