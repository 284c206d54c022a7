"""DecodeStage: chunks decoded with a margin equal the whole song decoded at once."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.loading import load_vqvae
from stages.decode import DecodeRequest, DecodeStage
from tests.stages.batches import run_grouped


@pytest.fixture(scope="module")
def vqvae():
    model = load_vqvae("tiny", init_seed=0)
    # Random codes, so that audio depends on the tokens whatever the preset's codebook holds.
    generator = torch.Generator().manual_seed(0)
    for block in model.bottleneck.level_blocks:
        block.codebook.copy_(torch.randn(block.codebook.shape, generator=generator))
    return model


@pytest.mark.parametrize("level", [0, 1, 2])
def test_chunked_decode_equals_whole(vqvae, level):
    stage = DecodeStage(vqvae, max_batch=4)
    margin = stage.receptive_field(level)
    assert 0 < margin < 1000
    tokens = torch.randint(0, 256, (1, 700), generator=torch.Generator().manual_seed(level))
    with torch.inference_mode():
        whole = vqvae.decode([tokens], start_level=level, end_level=level + 1)[0].numpy()
    n = tokens.shape[1]
    requests = []
    for start in range(0, n, 128):
        end = min(n, start + 128)
        lo, hi = max(0, start - margin), min(n, end + margin)
        requests.append(DecodeRequest("song", level, tokens[0, lo:hi].numpy(), lo, start, end))
    results = run_grouped(stage, requests)
    audio = np.concatenate([r.audio for r in results])
    hop = stage.hop_length(level)
    assert audio.shape == whole.shape == (n * hop, 1)
    np.testing.assert_allclose(audio, whole, atol=1e-4 * np.abs(whole).max())
    # Without the margin the chunk edges differ: the margin is doing the work.
    bare = np.concatenate([r.audio for r in run_grouped(stage, [DecodeRequest("s", level, tokens[0, s : min(n, s + 128)].numpy(), s, s, min(n, s + 128)) for s in range(0, n, 128)])])
    assert np.abs(bare - whole).max() > 1e-3 * np.abs(whole).max()


def test_decode_request_checks_its_span():
    with pytest.raises(ValueError, match="not inside"):
        DecodeRequest("s", 0, np.zeros(10, np.int64), lo=5, start=4, end=8)
    with pytest.raises(ValueError, match="not inside"):
        DecodeRequest("s", 0, np.zeros(10, np.int64), lo=0, start=4, end=11)


def test_batches_group_equal_shapes(vqvae):
    stage = DecodeStage(vqvae, max_batch=8)
    tokens = np.arange(64) % 256
    requests = [DecodeRequest(f"s{i}", 0, tokens, 0, 8, 56) for i in range(3)] + [DecodeRequest("x", 0, tokens[:32], 0, 0, 32)]
    results = run_grouped(stage, requests)
    assert [r.batch_size for r in results] == [3, 3, 3, 1]
    np.testing.assert_array_equal(results[0].audio, results[1].audio)
    assert results[0].audio.shape == (48 * 8, 1) and results[3].audio.shape == (32 * 8, 1)
