"""Static key/value cache for sampling: preallocated once, written at explicit positions.

Every attention layer gets a :class:`LayerKVCache` of shape ``[batch, heads, capacity, head_dim]``
sized for what that layer's kind can ever read, allocated before the first token:

- dense, transpose-block, summary kinds: the whole context (``capacity = n_ctx``), position ``p``
  in slot ``p``;
- block attention only ever reads the current block: a ring of ``block_ctx`` slots;
- previous-block attention reads the block before the current one: a ring of ``2 * block_ctx``
  slots;
- prime attention reads only the first ``prime_len`` positions: ``capacity = prime_len``, later
  positions are not stored;
- cross attention holds the projected lyric-encoder states, written once.

There is no hidden length or step counter: callers always say which positions they write and
read. Ring slots are ``position % capacity``; since window positions start at 0 and ring
capacities are whole blocks, a block (or the pair of blocks) always occupies contiguous slots,
so reads are views, not copies.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


class LayerKVCache:
    """Keys and values of one attention layer for one batch.

    Args:
        batch, n_heads, capacity, head_dim: shape of each of the two buffers.
        ring: position ``p`` lives in slot ``p % capacity`` (True) or slot ``p`` (False).
        dtype, device: of the buffers (the dtype the attention computes keys in).
    """

    def __init__(
        self,
        batch: int,
        n_heads: int,
        capacity: int,
        head_dim: int,
        *,
        ring: bool = False,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        if min(batch, n_heads, capacity, head_dim) <= 0:
            raise ValueError(
                f"LayerKVCache needs positive sizes, got batch={batch}, n_heads={n_heads}, capacity={capacity}, "
                f"head_dim={head_dim}"
            )
        self.ring = ring
        self.keys = torch.zeros(batch, n_heads, capacity, head_dim, dtype=dtype, device=device)
        self.values = torch.zeros_like(self.keys)

    @property
    def batch(self) -> int:
        return self.keys.shape[0]

    @property
    def capacity(self) -> int:
        return self.keys.shape[2]

    def resize(self, batch: int) -> None:
        """Reallocate for ``batch`` rows (contents are lost); a no-op when the batch is unchanged."""
        if batch != self.batch:
            _, n_heads, capacity, head_dim = self.keys.shape
            self.keys = self.keys.new_zeros(batch, n_heads, capacity, head_dim)
            self.values = torch.zeros_like(self.keys)

    def reset(self) -> None:
        """Zero both buffers (for hygiene: every position is written before it is read)."""
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

    def write_one(self, position: int, key: torch.Tensor, value: torch.Tensor) -> None:
        """Store the key/value [batch, heads, 1, head_dim] of one position (the decoding fast path)."""
        slot = position % self.capacity if self.ring else position
        self.keys.narrow(2, slot, 1).copy_(key)
        self.values.narrow(2, slot, 1).copy_(value)

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


class KVCache:
    """The caches of a whole layer stack: ``layers[i]`` belongs to layer ``i``."""

    def __init__(self, layers: Sequence[LayerKVCache]):
        self.layers = list(layers)

    def __getitem__(self, index: int) -> LayerKVCache:
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def batch(self) -> int:
        return self.layers[0].batch if self.layers else 0

    def resize(self, batch: int) -> None:
        """Reallocate every layer for ``batch`` rows (cross-attention states must be written again)."""
        for layer in self.layers:
            layer.resize(batch)

    def reset(self) -> None:
        """Zero every layer's buffers."""
        for layer in self.layers:
            layer.reset()
