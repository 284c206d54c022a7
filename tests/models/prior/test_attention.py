"""Every attention kind: full path == masked dense oracle; prefill and static one-token steps == full path."""
from __future__ import annotations

import pytest
import torch

from models.config import AttentionKind
from models.prior.attention import SparseAttention, allowed_keys
from models.prior.kv_cache import LayerKVCache
from models.prior.step_reads import StepLayout
from tests.models.prior import single_thread  # noqa: F401  (autouse fixture)

WIDTH, N_CTX, BLOCKS, SPREAD, ENCODER_LEN, N_LYRIC_STATES = 16, 24, 4, 2, 5, 7
BLOCK_CTX = N_CTX // BLOCKS
SELF_KINDS = [kind for kind in AttentionKind if kind is not AttentionKind.CROSS]


def make_attention(kind: AttentionKind, mask: bool = True) -> SparseAttention:
    torch.manual_seed(list(AttentionKind).index(kind))
    attn = SparseAttention(WIDTH, WIDTH, 2, kind, N_CTX, BLOCKS, spread=SPREAD, encoder_len=ENCODER_LEN, mask=mask)
    with torch.no_grad():
        for param in attn.parameters():
            param.normal_(0, 0.3)
    return attn.eval()


def inputs(batch: int = 2, length: int = N_CTX, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, WIDTH, generator=gen), torch.randn(batch, N_LYRIC_STATES, WIDTH, generator=gen)


def new_cache(attn: SparseAttention, batch: int, encoder_states: torch.Tensor, cls=LayerKVCache) -> LayerKVCache:
    if attn.kind is AttentionKind.CROSS:
        cache = cls(batch, attn.n_heads, encoder_states.shape[1], attn.head_dim)
        attn.fill_cross_cache(cache, encoder_states)
        return cache
    capacity, ring, spare = attn.cache_spec()
    cache = cls(batch, attn.n_heads, capacity, attn.head_dim, ring=ring, spare=spare)
    cache.keys.fill_(float("nan"))  # a prefill read of a never-written slot would poison the output
    cache.values.fill_(float("nan"))
    return cache


@pytest.mark.parametrize("mask", [True, False])
@pytest.mark.parametrize("kind", list(AttentionKind), ids=lambda k: k.value)
def test_full_path_equals_masked_dense_oracle(kind, mask):
    attn = make_attention(kind, mask)
    hidden, encoder_states = inputs()
    with torch.no_grad():
        query, key, value = attn._qkv(hidden, encoder_states)
        full, _ = attn._full_context(query, key, value, record=False)
        oracle = attn.masked_dense_context(query, key, value)
    torch.testing.assert_close(full, oracle, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunks", [[1] * N_CTX, [N_CTX], [5, 5, 5, 5, 4], [7, 1, 1, 9, 6], [3, 1, 13, 1, 6]], ids=str)
@pytest.mark.parametrize("kind", list(AttentionKind), ids=lambda k: k.value)
def test_cached_path_equals_full_sequence(kind, chunks):
    """Prefill chunks and one-token steps, in any split, reproduce the full-sequence output."""
    attn = make_attention(kind)
    hidden, encoder_states = inputs()
    cache = new_cache(attn, hidden.shape[0], encoder_states)
    with torch.no_grad():
        full, _ = attn(hidden, encoder_states)
        pieces, start = [], 0
        for size in chunks:
            pieces.append(attn.forward_cached(hidden[:, start : start + size], start, cache))
            start += size
    cached = torch.cat(pieces, dim=1)
    assert torch.isfinite(cached).all()
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("prefix", [0, 5, 13])
@pytest.mark.parametrize("kind", list(AttentionKind), ids=lambda k: k.value)
def test_static_steps_equal_the_full_sequence(kind, prefix):
    """A prefill of ``prefix`` positions, then one static step per position (the position a
    tensor), through the ring buffers' wrap-around, reproduce the full-sequence output. Slots a
    step must not see hold huge garbage, so reading one would show."""
    attn = make_attention(kind)
    hidden, encoder_states = inputs()
    cache = new_cache(attn, hidden.shape[0], encoder_states)
    if kind is not AttentionKind.CROSS:
        garbage = 1e4 * torch.randn(cache.keys.shape, generator=torch.Generator().manual_seed(1))
        cache.keys.zero_().narrow(2, 0, cache.capacity).copy_(garbage.narrow(2, 0, cache.capacity))
        cache.values.zero_().narrow(2, 0, cache.capacity).copy_(-garbage.narrow(2, 0, cache.capacity))
    layout = StepLayout(attn.geometry(), [kind], "cpu", torch.float32)
    with torch.no_grad():
        full, _ = attn(hidden, encoder_states)
        pieces = [attn.forward_cached(hidden[:, :prefix], 0, cache)] if prefix else []
        for t in range(prefix, N_CTX):
            reads = layout.reads(torch.tensor([t]))[kind]
            context = attn.step(attn.c_attn(hidden[:, t]), reads, cache)
            pieces.append(attn.c_proj(context)[:, None])
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_summary_steps_read_only_the_ends_of_finished_blocks():
    for kind, per_block in ((AttentionKind.SUMMARY, 1), (AttentionKind.SUMMARY_SPREAD, SPREAD)):
        attn = make_attention(kind)
        for t in range(N_CTX):
            expected = [
                end - back
                for end in range(BLOCK_CTX, (BLOCKS - 1) * BLOCK_CTX + 1, BLOCK_CTX)
                for back in range(per_block, 0, -1)
                if end - back <= t
            ]
            assert attn.summary_positions(t + 1) == expected, (kind, t)


def test_allowed_keys_rules():
    positions = torch.arange(N_CTX)
    rules = dict(block_ctx=BLOCK_CTX, blocks=BLOCKS, spread=SPREAD, prime_len=8)
    block = allowed_keys(AttentionKind.BLOCK, positions, positions, **rules)
    assert block[7].nonzero().flatten().tolist() == [6, 7]
    column = allowed_keys(AttentionKind.TRANSPOSE_BLOCK, positions, positions, **rules)
    assert column[20].nonzero().flatten().tolist() == [2, 8, 14, 20]
    previous = allowed_keys(AttentionKind.PREV_BLOCK, positions, positions, **rules)
    assert previous[13].nonzero().flatten().tolist() == list(range(6, 12))
    assert not previous[:BLOCK_CTX].any()
    prime = allowed_keys(AttentionKind.PRIME, positions, positions, **rules)
    assert prime[20].nonzero().flatten().tolist() == list(range(8))
    summary = allowed_keys(AttentionKind.SUMMARY, positions, positions, **rules)
    assert summary[23].nonzero().flatten().tolist() == [5, 11, 17]


@pytest.mark.parametrize("kind", list(AttentionKind), ids=lambda k: k.value)
def test_recorded_probabilities_are_those_the_layer_uses(kind):
    attn = make_attention(kind)
    hidden, encoder_states = inputs()
    with torch.no_grad():
        output, probs = attn(hidden, encoder_states, record=True)
        plain, _ = attn(hidden, encoder_states)
    torch.testing.assert_close(output, plain, atol=1e-5, rtol=1e-5)
    n_keys = N_LYRIC_STATES if kind is AttentionKind.CROSS else N_CTX
    if kind is AttentionKind.PRIME:  # music queries x lyric keys only
        assert probs.shape == (2, 2, N_CTX - ENCODER_LEN, ENCODER_LEN)
        return
    assert probs.shape == (2, 2, N_CTX, n_keys)
    positions = torch.arange(N_CTX)
    allowed = allowed_keys(kind, positions, torch.arange(n_keys), **attn.rule_kwargs())
    assert not probs[..., ~allowed].any()
    with_null = kind in (AttentionKind.SUMMARY, AttentionKind.SUMMARY_SPREAD, AttentionKind.PREV_BLOCK)
    if not with_null:  # null keys take the rest of the mass
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, 2, N_CTX))


def test_ring_cache_keeps_the_last_positions_in_order():
    cache = LayerKVCache(1, 1, 4, 1, ring=True)
    values = torch.arange(10, dtype=torch.float).view(1, 1, 10, 1)
    cache.write(0, values[:, :, :3], values[:, :, :3])
    cache.write(3, values[:, :, 3:10], values[:, :, 3:10])  # longer than the ring: keeps 6..9
    keys, _ = cache.gather(6, 10)
    assert keys.flatten().tolist() == [6, 7, 8, 9]
    keys, _ = cache.view(8, 10)
    assert keys.flatten().tolist() == [8, 9]
    cache.store(torch.tensor([10 % 4]), values[:, :, :1] + 10, values[:, :, :1] + 10)
    assert cache.gather(7, 11)[0].flatten().tolist() == [7, 8, 9, 10]


def test_flat_cache_refuses_positions_past_its_end_and_views_its_first_rows():
    cache = LayerKVCache(2, 1, 4, 3, spare=1)
    with pytest.raises(IndexError):
        cache.write(3, torch.zeros(2, 1, 2, 3), torch.zeros(2, 1, 2, 3))
    assert cache.keys.shape == (2, 1, 5, 3)
    first = cache.rows(1)
    first.write(0, torch.ones(1, 1, 4, 3), torch.ones(1, 1, 4, 3))
    assert cache.keys[0, :, :4].eq(1).all() and not cache.keys[0, :, 4:].any() and not cache.keys[1].any()
    with pytest.raises(ValueError, match="3 rows"):
        cache.rows(3)
    cache.reset()
    assert not cache.keys.any() and not cache.values.any()


@pytest.mark.parametrize("boolean", [True, False])
def test_one_query_attention_written_out_equals_the_kernel(boolean):
    """The compiled step's attention (products and sums) is the attention kernel's."""
    from torch.nn import functional as F

    from models.prior.attention import one_query_attention

    gen = torch.Generator().manual_seed(3)
    query, key, value = (torch.randn(2, 3, n, 8, generator=gen) for n in (1, 11, 11))
    seen = torch.rand(1, 11, generator=gen) < 0.6
    seen[0, 0] = True
    mask = seen if boolean else torch.zeros(1, 11).masked_fill(~seen, float("-inf"))
    expected = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
    torch.testing.assert_close(one_query_attention(query, key, value, mask), expected, atol=1e-6, rtol=1e-5)
