"""What the one-token step of each attention kind writes and reads in its cache, with fixed shapes.

The static decode step (:meth:`models.prior.autoregressive.ConditionalAutoregressive.step`) takes
the position ``t`` as a 0-dim long tensor, so that one function serves every position of every
window, eager, under ``torch.compile(fullgraph=True, dynamic=False)`` and captured in a CUDA graph.
Nothing here branches on ``t`` in Python: each kind reads a fixed set of cache slots and masks
the ones the query at ``t`` may not see.

Cache layout per kind (``slots = capacity + spare``; ``bc = block_ctx``):

==================  =============================  ==============================================
kind                slots                          one-token step at position ``t``
==================  =============================  ==============================================
dense               ``n_ctx``                      write ``t``; read all, see ``s <= t``
block               ring ``bc``                    write ``t % bc``; read all, see ``s <= t % bc``
transpose-block     ``n_ctx``                      write ``t``; read the ``blocks`` slots of
                                                   column ``t % bc``, see rows ``<= t // bc``
previous-block      ring ``2 bc`` + 1 null         write ``t % 2bc``; read all, see the half
                                                   holding block ``t // bc - 1`` (only the null
                                                   in the first block: output zero)
summary(-spread)    ``n_ctx`` + ``n_null`` nulls   write ``t``; read the nulls and the block ends,
                                                   see the nulls and the ends ``<= t``
prime               ``prime_len`` + 1 spare        write ``min(t, prime_len)`` (the spare slot
                                                   takes positions past the lyrics); read all,
                                                   see ``s <= t`` below ``prime_len``
cross               lyric states                   no write; read all, see all
==================  =============================  ==============================================

A null slot is never written and stays zero: a zero key with a zero value, which takes part in
the softmax but adds nothing (as :func:`models.prior.attention.null_keys`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from models.config import AttentionKind


@dataclass(frozen=True)
class StackGeometry:
    """The geometry every layer of a stack shares.

    Attributes:
        n_ctx: positions of the sequence (lyrics included when merged).
        block_ctx: positions per block (``n_ctx // blocks``).
        blocks: number of blocks.
        spread: positions per block read by summary-spread attention (None when unused).
        prime_len: leading positions prime attention reads.
    """

    n_ctx: int
    block_ctx: int
    blocks: int
    spread: int | None
    prime_len: int

    def n_null(self, kind: AttentionKind) -> int:
        """Null key slots of ``kind``'s cache."""
        if kind is AttentionKind.SUMMARY:
            return 1
        if kind is AttentionKind.SUMMARY_SPREAD:
            return self.spread
        return 1 if kind is AttentionKind.PREV_BLOCK else 0

    def cache_spec(self, kind: AttentionKind) -> tuple[int, bool, int]:
        """(capacity in positions, ring, spare slots after them) of a sampling cache of ``kind``."""
        if kind is AttentionKind.BLOCK:
            return self.block_ctx, True, 0
        if kind is AttentionKind.PREV_BLOCK:
            return 2 * self.block_ctx, True, 1
        if kind is AttentionKind.PRIME:
            return self.prime_len, False, 1
        return self.n_ctx, False, self.n_null(kind)

    def summary_positions(self, kind: AttentionKind) -> list[int]:
        """Positions summary(-spread) attention reads: the last 1 (``spread``) of blocks 0..blocks-2."""
        last = self.spread if kind is AttentionKind.SUMMARY_SPREAD else 1
        ends = range(self.block_ctx, (self.blocks - 1) * self.block_ctx + 1, self.block_ctx)
        return [end - back for end in ends for back in range(last, 0, -1)]


class StepReads(NamedTuple):
    """The cache accesses of one kind at one position (see the module docstring).

    slot: long [1], the slot the position's key/value go to; None: no write (cross).
    index: long [n_read], the slots read in this order; None: every slot.
    mask: [1, n_read], which of them the query sees: additive (0 seen, -inf not) in the cache's
        dtype, or bool (True seen); None: all.
    """

    slot: torch.Tensor | None
    index: torch.Tensor | None
    mask: torch.Tensor | None


class StepLayout:
    """Per-position :class:`StepReads` of the kinds of one stack, on one device.

    Every kind's write slot, read slots and mask (additive, in ``dtype``) at every position are
    tabulated once here; a step looks up its position's row (three small index operations,
    shared by every layer). Dense attention's mask, a prefix of ``n_ctx`` slots, is computed
    instead of tabulated (``n_ctx`` squared entries).
    """

    def __init__(self, geometry: StackGeometry, kinds: list[AttentionKind], device: torch.device | str, dtype: torch.dtype):
        self.geometry = geometry
        self.kinds = list(dict.fromkeys(kinds))
        g, long = geometry, dict(dtype=torch.long, device=device)
        bc = g.block_ctx
        t = torch.arange(g.n_ctx, **long)[:, None]  # [n_ctx, 1]: every query position
        slots, masks, self._index = {}, {}, {}
        for kind in self.kinds:
            if kind is AttentionKind.BLOCK:
                slots[kind] = t % bc
                masks[kind] = torch.arange(bc, **long) <= t % bc
            elif kind is AttentionKind.TRANSPOSE_BLOCK:
                slots[kind] = t
                self._index[kind] = t % bc + bc * torch.arange(g.blocks, **long)
                masks[kind] = torch.arange(g.blocks, **long) <= t // bc
            elif kind is AttentionKind.PREV_BLOCK:
                # Slot s of the ring holds half s // bc; the null slot (last) is half -1. Block
                # b >= 1 sees the half holding block b - 1, i.e. (b + 1) % 2; block 0 the null.
                half = torch.cat([torch.arange(2 * bc, **long) // bc, torch.full((1,), -1, **long)])
                block = t // bc
                slots[kind] = t % (2 * bc)
                masks[kind] = half == torch.where(block > 0, (block + 1) % 2, -1)
            elif kind is AttentionKind.PRIME:
                # The spare slot takes positions from prime_len on and is never seen.
                slots[kind] = t.clamp(max=g.prime_len)
                masks[kind] = torch.arange(g.prime_len + 1, **long) <= t.clamp(max=g.prime_len - 1)
            elif kind in (AttentionKind.SUMMARY, AttentionKind.SUMMARY_SPREAD):
                n_null, positions = g.n_null(kind), g.summary_positions(kind)
                slots[kind] = t
                self._index[kind] = torch.tensor([g.n_ctx + i for i in range(n_null)] + positions, **long)
                masks[kind] = torch.tensor([-1] * n_null + positions, **long) <= t  # nulls: seen from everywhere
            elif kind is AttentionKind.DENSE:
                slots[kind] = t
                self._dense_positions = torch.arange(g.n_ctx, **long)
        # One table per quantity, one column block per kind: a step reads one row of each.
        self._slot_kinds = list(slots)
        self._slots = torch.cat([slots[kind] for kind in self._slot_kinds], dim=1) if slots else None
        self._mask_spans: dict[AttentionKind, tuple[int, int]] = {}
        offset = 0
        for kind, mask in masks.items():
            self._mask_spans[kind] = (offset, mask.shape[1])
            offset += mask.shape[1]
        # Additive masks: the CPU attention kernels take them faster than boolean ones.
        seen = torch.cat(list(masks.values()), dim=1) if masks else None
        self._masks = None if seen is None else torch.zeros(seen.shape, dtype=dtype, device=device).masked_fill_(~seen, float("-inf"))
        self._transpose = AttentionKind.TRANSPOSE_BLOCK in self._index
        self._device = device
        self._memo: dict[int, dict[AttentionKind, StepReads]] = {}

    def reads_at(self, position: int) -> dict[AttentionKind, StepReads]:
        """:meth:`reads` of a position given as an int, memoised: what the eager step is handed
        instead of the few small tensor operations per step (compiled or captured steps compute
        :meth:`reads` from their position tensor)."""
        reads = self._memo.get(position)
        if reads is None:
            reads = self._memo[position] = self.reads(torch.tensor([position], device=self._device))
        return reads

    def reads(self, position: torch.Tensor) -> dict[AttentionKind, StepReads]:
        """{kind: its :class:`StepReads` at ``position``} for every kind of the stack; position: long [1]."""
        t = position
        slots = None if self._slots is None else self._slots.index_select(0, t)[0]
        masks = None if self._masks is None else self._masks.index_select(0, t)
        column = self._index[AttentionKind.TRANSPOSE_BLOCK].index_select(0, t)[0] if self._transpose else None
        reads = {}
        for number, kind in enumerate(self._slot_kinds):
            slot = slots[number : number + 1]
            if kind is AttentionKind.DENSE:
                reads[kind] = StepReads(slot, None, (self._dense_positions <= t).view(1, -1))
                continue
            first, width = self._mask_spans[kind]
            index = column if kind is AttentionKind.TRANSPOSE_BLOCK else self._index.get(kind)
            reads[kind] = StepReads(slot, index, masks[:, first : first + width])
        if AttentionKind.CROSS in self.kinds:
            reads[AttentionKind.CROSS] = StepReads(None, None, None)
        return reads
