"""Static key/value cache for sampling: preallocated once, written at explicit positions.

Every attention layer gets a :class:`LayerKVCache` of keys and values, each of shape
``[batch, heads, slots, head_dim]``. Its ``capacity`` positions are sized for what that layer's
kind can ever read, allocated before the first token:

- dense, transpose-block, summary kinds: the whole context (``capacity = n_ctx``), position ``p``
  in slot ``p``;
- block attention only ever reads the current block: a ring of ``block_ctx`` slots;
- previous-block attention reads the block before the current one: a ring of ``2 * block_ctx``
  slots;
- prime attention reads only the first ``prime_len`` positions: ``capacity = prime_len``, later
  positions are not stored;
- cross attention holds the projected lyric-encoder states, written once per window.

``spare`` slots after the ``capacity`` ones serve the static one-token step
(:mod:`models.prior.step_reads`): never-written null keys, or the slot prime attention writes
positions past the lyrics to.

There is no hidden length or step counter: callers always say which positions they write and
read. Ring slots are ``position % capacity``; since window positions start at 0 and ring
capacities are whole blocks, a block (or the pair of blocks) always occupies contiguous slots.

A :class:`KVCache` is allocated for the largest batch it serves; :meth:`KVCache.rows` gives the
cache of its first ``b`` rows as views, so every batch size shares one allocation (and a CUDA
graph captured on those views stays valid while the allocation lives).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from models.prior.step_reads import StepLayout


class LayerKVCache:
    """Keys and values of one attention layer for one batch.

    Args:
        batch, n_heads, capacity, head_dim: shape of the keys (and of the values).
        ring: position ``p`` lives in slot ``p % capacity`` (True) or slot ``p`` (False).
        spare: extra slots after the ``capacity`` ones (zero until written).
        dtype, device: of the buffers (the dtype the attention computes keys in).
        buffers: existing (keys, values) ``[batch, n_heads, capacity + spare, head_dim]`` to use
            instead of allocating them.
    """

    def __init__(
        self,
        batch: int,
        n_heads: int,
        capacity: int,
        head_dim: int,
        *,
        ring: bool = False,
        spare: int = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        buffers: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        if min(batch, n_heads, capacity, head_dim) <= 0 or spare < 0:
            raise ValueError(
                f"LayerKVCache needs positive sizes, got batch={batch}, n_heads={n_heads}, capacity={capacity}, "
                f"head_dim={head_dim}, spare={spare}"
            )
        self.ring, self.capacity, self.spare = ring, capacity, spare
        if buffers is None:
            keys = torch.zeros(batch, n_heads, capacity + spare, head_dim, dtype=dtype, device=device)
            buffers = keys, torch.zeros_like(keys)
        self.keys, self.values = buffers
        expected = (batch, n_heads, capacity + spare, head_dim)
        assert tuple(self.keys.shape) == tuple(self.values.shape) == expected, (
            f"buffers of shapes {tuple(self.keys.shape)}, {tuple(self.values.shape)}, expected {expected}"
        )

    @property
    def batch(self) -> int:
        return self.keys.shape[0]

    def rows(self, batch: int) -> LayerKVCache:
        """The cache of the first ``batch`` rows, sharing this one's buffers."""
        if not 0 < batch <= self.batch:
            raise ValueError(f"cannot view {batch} rows of a cache of {self.batch}")
        _, n_heads, _, head_dim = self.keys.shape
        return LayerKVCache(
            batch, n_heads, self.capacity, head_dim, ring=self.ring, spare=self.spare,
            buffers=(self.keys[:batch], self.values[:batch]),
        )

    def reset(self) -> None:
        """Zero the buffers: spare slots become null keys again, nothing of an earlier window is left."""
        self.keys.zero_()
        self.values.zero_()

    def write(self, start: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Store keys/values [batch, heads, n, head_dim] of positions ``[start, start + n)``.

        A ring keeps only the last ``capacity`` of them (the earlier ones could never be read).
        """
        n = keys.shape[2]
        if self.ring:
            keep = min(n, self.capacity)
            first = start + n - keep
            slot = first % self.capacity
            head = min(keep, self.capacity - slot)
            self.keys[:, :, slot : slot + head].copy_(keys[:, :, n - keep : n - keep + head])
            self.values[:, :, slot : slot + head].copy_(values[:, :, n - keep : n - keep + head])
            if head < keep:
                self.keys[:, :, : keep - head].copy_(keys[:, :, n - keep + head :])
                self.values[:, :, : keep - head].copy_(values[:, :, n - keep + head :])
            return
        if start < 0 or start + n > self.capacity:
            raise IndexError(f"positions [{start}, {start + n}) do not fit a cache of {self.capacity} positions")
        self.keys[:, :, start : start + n].copy_(keys)
        self.values[:, :, start : start + n].copy_(values)

    def view(self, lo: int, hi: int, step: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of the keys/values of positions ``lo, lo + step, ...`` below ``hi`` (no copy).

        For a ring, the positions must occupy contiguous slots (a block, or a block pair).
        """
        if self.ring:
            slot = lo % self.capacity
            assert slot + (hi - lo) <= self.capacity, f"ring read [{lo}, {hi}) wraps a {self.capacity}-slot cache"
            lo, hi = slot, slot + (hi - lo)
        return self.keys[:, :, lo:hi:step], self.values[:, :, lo:hi:step]

    def gather(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values of positions ``[lo, hi)`` in order, even when they wrap around a ring."""
        if not self.ring or hi <= lo:
            return self.view(lo, hi)
        assert hi - lo <= self.capacity, f"positions [{lo}, {hi}) exceed a {self.capacity}-slot ring"
        slots = torch.arange(lo, hi, device=self.keys.device) % self.capacity
        return self.keys.index_select(2, slots), self.values.index_select(2, slots)

    def store(self, slot: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
        """Write one position's key and value [batch, heads, 1, head_dim] at ``slot`` (long [1])."""
        self.keys.index_copy_(2, slot, key)
        self.values.index_copy_(2, slot, value)

    def read(self, index: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values [batch, heads, n_read, head_dim] of the slots ``index`` (long [n_read]; None: all)."""
        if index is None:
            return self.keys, self.values
        batch, heads, slots, dim = self.keys.shape
        # On [batch * heads, slots, head_dim] views: the index kernel along dim 1 of a 3-d
        # tensor is a few times cheaper than along dim 2 of a 4-d one.
        return tuple(
            buffer.view(batch * heads, slots, dim).index_select(1, index).view(batch, heads, -1, dim)
            for buffer in (self.keys, self.values)
        )


class KVCache:
    """The caches of a whole layer stack: ``layers[i]`` belongs to layer ``i``.

    ``layout``: the per-position reads of the static one-token step (None for a cache used only
    by prefill, e.g. in tests of one layer).
    """

    def __init__(self, layers: Sequence[LayerKVCache], layout: StepLayout | None = None):
        self.layers = list(layers)
        self.layout = layout

    def __getitem__(self, index: int) -> LayerKVCache:
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def batch(self) -> int:
        return self.layers[0].batch if self.layers else 0

    def rows(self, batch: int) -> KVCache:
        """The cache of the first ``batch`` rows, sharing every layer's buffers."""
        return KVCache([layer.rows(batch) for layer in self.layers], self.layout)

    def reset(self) -> None:
        """Zero every layer's buffers."""
        for layer in self.layers:
            layer.reset()
