"""Encoding stage: same tokens as JukeboxVQVAE.encode, batched, unbatched and chunked."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.loading import load_vqvae
from stages.encode import EncodeRequest, EncodeStage, encoder_receptive_field
from tests.stages.batches import run_grouped


@pytest.fixture(scope="module")
def vqvae():
    """The tiny VQ-VAE with codebooks drawn from its own latents (a fresh codebook is all zeros,
    which would encode everything as token 0 and make any comparison vacuous)."""
    model = load_vqvae("tiny")
    generator = torch.Generator().manual_seed(0)
    probe = 0.3 * torch.randn(1, 1, 1 << 15, generator=generator)
    with torch.no_grad():
        for level, block in enumerate(model.bottleneck.level_blocks):
            latents = model.encoders[level](probe)[0].T  # [time, embed_dim]
            picks = torch.randint(0, latents.shape[0], (block.codebook.shape[0],), generator=generator)
            block.codebook.copy_(latents[picks] + 0.01 * torch.randn(block.codebook.shape, generator=generator))
    model.reset_non_persistent_buffers()
    return model


def reference_tokens(vqvae, audio):
    """Tokens of each level for [batch, samples, channels] audio cut to whole top-level tokens."""
    n = audio.shape[1] // vqvae.hop_lengths[-1] * vqvae.hop_lengths[-1]
    with torch.inference_mode():
        return [t.numpy() for t in vqvae.encode(torch.from_numpy(np.ascontiguousarray(audio[:, :n])))]


def real_mismatches(vqvae, audio, level, got, want, tolerance=1e-4):
    """Positions where ``got`` and ``want`` (tokens of ``audio`` [samples, 1] at ``level``) differ
    although the two codes are not equally near the latent. Convolutions over other batch sizes or
    lengths round differently, which may flip a near-tie (measured gaps down to 1e-5 with this
    codebook); anything else is a real difference."""
    where = np.flatnonzero(got != want)
    if where.size == 0:
        return where
    n = len(want) * vqvae.hop_lengths[level]
    with torch.inference_mode():
        latent = vqvae.encoders[level](torch.from_numpy(audio[None, :n]).permute(0, 2, 1))[0].T[where]
    codebook = vqvae.bottleneck.level_blocks[level].codebook
    distance = lambda tokens: ((latent - codebook[torch.from_numpy(tokens[where]).long()]) ** 2).sum(-1)
    assert where.size <= max(1, len(want) // 20), f"{where.size} of {len(want)} tokens differ at level {level}"
    return where[(distance(got) - distance(want)).abs().numpy() > tolerance]


def songs(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [EncodeRequest(f"song{i}", (0.3 * rng.standard_normal((n, 1))).astype(np.float32)) for i, n in enumerate(lengths)]


def test_tokens_equal_vqvae_encode_of_the_same_batch(vqvae):
    requests = songs([2000, 1200, 2000, 2000, 1200])
    alone = [reference_tokens(vqvae, r.audio[None]) for r in requests]
    assert len(np.unique(alone[0][0])) > 50  # the comparison is not vacuous
    for max_batch, batches in ((1, [[0], [1], [2], [3], [4]]), (2, [[0, 2], [1, 4], [3]]), (4, [[0, 2, 3], [1, 4]])):
        results = run_grouped(EncodeStage(vqvae, max_batch=max_batch), requests)
        for batch in batches:
            expected = reference_tokens(vqvae, np.stack([requests[i].audio for i in batch]))
            for row, index in enumerate(batch):
                result = results[index]
                assert result.batch_size == len(batch) and result.levels == (0, 1, 2)
                assert result.n_samples == requests[index].audio.shape[0] // 128 * 128
                for level in range(3):
                    tokens = result.level_tokens(level)
                    assert tokens.dtype == np.int32 and tokens.shape == (result.n_samples // vqvae.hop_lengths[level],)
                    np.testing.assert_array_equal(tokens, expected[level][row])
                    # batched or not, the same codes up to float-rounding near-ties
                    assert real_mismatches(vqvae, requests[index].audio, level, tokens, alone[index][level][0]).size == 0


def test_chunked_long_audio_equals_whole_audio(vqvae):
    request = songs([16000], seed=1)[0]
    expected = reference_tokens(vqvae, request.audio[None])
    stage = EncodeStage(vqvae, chunk_samples=4000)
    assert stage.chunk_samples == 3968 and stage.margin % 128 == 0
    assert stage.margin >= max(encoder_receptive_field(e) for e in vqvae.encoders)
    result = stage.run_batch([request])[0]
    for level in range(3):
        assert real_mismatches(vqvae, request.audio, level, result.level_tokens(level), expected[level][0]).size == 0
    # the margin is what makes chunks exact: without it, tokens near chunk edges change
    stage.margin = 0
    cut = stage.run_batch([request])[0]
    assert any((cut.level_tokens(level) != expected[level][0]).any() for level in range(3))


def test_some_levels_only(vqvae):
    request = songs([2000], seed=2)[0]
    expected = reference_tokens(vqvae, request.audio[None])
    result = EncodeStage(vqvae, levels=[2, 1]).run_batch([request])[0]
    assert result.levels == (1, 2) and len(result.tokens) == 2
    np.testing.assert_array_equal(result.level_tokens(2), expected[2][0])
    with pytest.raises(ValueError, match="level 0 was not encoded"):
        result.level_tokens(0)


def test_bad_input(vqvae):
    with pytest.raises(ValueError, match="fewer than one token of level 2"):
        EncodeStage(vqvae).run_batch(songs([100]))
    with pytest.raises(ValueError, match=r"audio must be a numpy array \[samples, channels\]"):
        EncodeRequest("x", np.zeros(1000, np.float32))
    with pytest.raises(ValueError, match="max_batch must be an integer >= 1"):
        EncodeStage(vqvae, max_batch=0)
    with pytest.raises(ValueError, match="contiguous range"):
        EncodeStage(vqvae, levels=[0, 2])
    with pytest.raises(ValueError, match="more than max_batch=1"):
        EncodeStage(vqvae).run_batch(songs([1000, 1000]))
