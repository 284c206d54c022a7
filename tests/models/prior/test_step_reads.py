"""The static step's cache reads: per kind and position, exactly the keys of the kind's rule, in a
fixed number of slots."""
from __future__ import annotations

import pytest
import torch

from models.config import AttentionKind
from models.prior.attention import allowed_keys, null_keys
from models.prior.step_reads import StackGeometry, StepLayout
from tests.models.prior import single_thread  # noqa: F401  (autouse fixture)

N_CTX, BLOCKS, SPREAD, ENCODER_LEN = 40, 5, 3, 9
GEOMETRY = StackGeometry(N_CTX, N_CTX // BLOCKS, BLOCKS, SPREAD, (ENCODER_LEN // BLOCKS + 1) * BLOCKS)
SELF_KINDS = [kind for kind in AttentionKind if kind is not AttentionKind.CROSS]


def held_positions(kind: AttentionKind, layout: StepLayout, t: int) -> list[int | None]:
    """Position each slot of ``kind``'s cache holds once positions 0..t were stored by the static
    steps (None: never written, i.e. a null or unused slot)."""
    capacity, _, spare = GEOMETRY.cache_spec(kind)
    held: list[int | None] = [None] * (capacity + spare)
    for position in range(t + 1):
        held[int(layout.reads(torch.tensor([position]))[kind].slot)] = position
    return held


@pytest.mark.parametrize("kind", SELF_KINDS, ids=lambda k: k.value)
def test_each_position_sees_exactly_the_keys_of_its_kind(kind):
    layout = StepLayout(GEOMETRY, [kind, AttentionKind.CROSS], "cpu", torch.float32)
    capacity, _, spare = GEOMETRY.cache_spec(kind)
    rules = dict(block_ctx=GEOMETRY.block_ctx, blocks=BLOCKS, spread=SPREAD, prime_len=GEOMETRY.prime_len)
    sizes = set()
    for t in range(N_CTX):
        reads = layout.reads(torch.tensor([t]))[kind]
        held = held_positions(kind, layout, t)
        slots = range(capacity + spare) if reads.index is None else reads.index.tolist()
        seen = (reads.mask if reads.mask.dtype == torch.bool else reads.mask == 0).flatten().tolist()
        assert len(seen) == len(slots)
        sizes.add(len(slots))
        seen_positions = sorted(held[s] for s, see in zip(slots, seen) if see and held[s] is not None)
        n_null_seen = sum(1 for s, see in zip(slots, seen) if see and held[s] is None)
        expected = allowed_keys(kind, torch.tensor([t]), torch.arange(t + 1), **rules)[0].nonzero().flatten().tolist()
        n_null, null_seen = null_keys(kind, torch.tensor([t]), block_ctx=GEOMETRY.block_ctx, spread=SPREAD)
        assert seen_positions == expected, (kind, t)
        assert n_null_seen == (n_null if bool(null_seen[0]) else 0), (kind, t)
        # Null slots are spare slots no step writes: they stay zero keys.
        assert all(s >= capacity for s, see in zip(slots, seen) if see and held[s] is None), (kind, t)
    assert len(sizes) == 1, f"{kind.value} reads {sorted(sizes)} slots depending on the position"
    bc = GEOMETRY.block_ctx
    most = {AttentionKind.BLOCK: bc, AttentionKind.TRANSPOSE_BLOCK: BLOCKS, AttentionKind.PREV_BLOCK: 2 * bc + 1,
            AttentionKind.PRIME: GEOMETRY.prime_len + 1, AttentionKind.DENSE: N_CTX,
            AttentionKind.SUMMARY: 1 + BLOCKS - 1, AttentionKind.SUMMARY_SPREAD: SPREAD * BLOCKS}[kind]
    assert sizes == {most}


def test_cross_attention_reads_every_state_unmasked():
    reads = StepLayout(GEOMETRY, [AttentionKind.CROSS], "cpu", torch.float32).reads(torch.tensor([7]))
    assert reads == {AttentionKind.CROSS: (None, None, None)}


def test_masks_come_in_the_cache_dtype():
    layout = StepLayout(GEOMETRY, [AttentionKind.BLOCK], "cpu", torch.bfloat16)
    mask = layout.reads(torch.tensor([3]))[AttentionKind.BLOCK].mask
    assert mask.dtype == torch.bfloat16
    assert mask.flatten().tolist() == [0.0] * 4 + [float("-inf")] * (GEOMETRY.block_ctx - 4)
