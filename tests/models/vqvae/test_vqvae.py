"""Invariants of our JukeboxVQVAE: shapes, batch independence, chunking, meta loading, errors."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from models.config import JukeboxVQVAEConfig
from models.vqvae import JukeboxVQVAE, VectorQuantiser
from tests.models.vqvae import TINY_CONFIGS, make_audio


def _config(name: str = "three_levels_mono", **overrides) -> JukeboxVQVAEConfig:
    kwargs = {"sample_length": 4096, **TINY_CONFIGS[name], **overrides}
    return JukeboxVQVAEConfig(**kwargs)


def _randomise_codebooks(model: JukeboxVQVAE, seed: int = 0) -> JukeboxVQVAE:
    """Codebooks drawn from the model's own latents (a fresh model's are all zero)."""
    audio = make_audio(2, 8 * model.hop_lengths[-1], model.config.conv_input_shape, seed=seed)
    torch.manual_seed(seed)
    with torch.no_grad():
        channels_first = audio.permute(0, 2, 1)
        for encoder, block in zip(model.encoders, model.bottleneck.level_blocks):
            block.init_from_data(encoder(channels_first).permute(0, 2, 1).reshape(-1, block.embed_dim))
    return model.eval()


@pytest.fixture(scope="module", params=["three_levels_mono", "two_levels_stereo_res_scale"])
def model(request) -> JukeboxVQVAE:
    torch.manual_seed(0)
    return _randomise_codebooks(JukeboxVQVAE(_config(request.param)))


def test_sizes_of_the_released_configuration():
    with torch.device("meta"):
        released = JukeboxVQVAE(JukeboxVQVAEConfig())
    assert released.levels == 3
    assert released.downsamples == (8, 4, 4)
    assert released.hop_lengths == (8, 32, 128)
    assert released.nb_discrete_codes == 2048
    assert released.sample_length == 1058304
    assert released.samples_to_tokens(1058304, 2) == 8268
    assert released.tokens_to_samples(10, 0) == 80


def test_round_trip_shapes_equal_input_at_every_level(model):
    audio = make_audio(2, 4 * model.hop_lengths[-1], model.config.conv_input_shape, seed=1)
    with torch.no_grad():
        tokens = model.encode(audio)
        for level in range(model.levels):
            assert tokens[level].shape == (2, model.samples_to_tokens(audio.shape[1], level))
            assert model.decode(tokens[level:], start_level=level).shape == audio.shape


def test_token_counts_follow_samples_to_tokens_for_ragged_lengths(model):
    samples = 3 * model.hop_lengths[-1] + model.hop_lengths[0] + 1
    audio = make_audio(1, samples, model.config.conv_input_shape, seed=2)
    with torch.no_grad():
        tokens = model.encode(audio)
    assert [t.shape[1] for t in tokens] == [samples // hop for hop in model.hop_lengths]


def test_encode_is_batch_invariant(model):
    audio = make_audio(3, 4 * model.hop_lengths[-1], model.config.conv_input_shape, seed=3)
    with torch.no_grad():
        batched = model.encode(audio)
        single = [model.encode(audio[i : i + 1]) for i in range(3)]
    for level in range(model.levels):
        assert torch.equal(batched[level], torch.cat([s[level] for s in single]))


def test_decode_is_batch_invariant(model):
    generator = torch.Generator().manual_seed(4)
    tokens = torch.randint(0, model.nb_discrete_codes, (3, 6), generator=generator)
    with torch.no_grad():
        batched = model.decode([tokens], start_level=model.levels - 1)
        single = torch.cat([model.decode([tokens[i : i + 1]], start_level=model.levels - 1) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-6)


@pytest.mark.parametrize("bs_chunks", [2, 3, 5])
def test_bs_chunks_give_identical_results(model, bs_chunks):
    audio = make_audio(3, 4 * model.hop_lengths[-1], model.config.conv_input_shape, seed=5)
    with torch.no_grad():
        whole = model.encode(audio)
        chunked = model.encode(audio, bs_chunks=bs_chunks)
        assert all(torch.equal(a, b) for a, b in zip(whole, chunked))
        decoded = model.decode(whole, bs_chunks=1)
        decoded_chunked = model.decode(whole, bs_chunks=bs_chunks)
    torch.testing.assert_close(decoded, decoded_chunked, rtol=0, atol=1e-6)


def test_decode_uses_only_the_start_level_tokens(model):
    """As the reference: each level reconstructs audio on its own; higher levels are validated only."""
    audio = make_audio(2, 2 * model.hop_lengths[-1], model.config.conv_input_shape, seed=6)
    with torch.no_grad():
        tokens = model.encode(audio)
        alone = model.decode(tokens[:1])
        other = [tokens[0]] + [torch.zeros_like(t) for t in tokens[1:]]
        assert torch.equal(model.decode(other), alone)


def test_encode_picks_the_nearest_code(model):
    audio = make_audio(2, 2 * model.hop_lengths[-1], model.config.conv_input_shape, seed=7)
    with torch.no_grad():
        tokens = model.encode(audio)
        for level in range(model.levels):
            latent = model.encoders[level](audio.permute(0, 2, 1))
            vectors = latent.permute(0, 2, 1).reshape(-1, model.config.embed_dim)
            codebook = model.bottleneck.level_blocks[level].codebook
            distances = torch.cdist(vectors.double(), codebook.double())
            chosen = distances.gather(1, tokens[level].reshape(-1, 1)).squeeze(1)
            assert torch.all(chosen <= distances.min(dim=1).values + 1e-5)


def test_quantise_ignores_autocast():
    torch.manual_seed(0)
    block = VectorQuantiser(64, 8)
    block.load_state_dict({"codebook": torch.randn(64, 8)})
    vectors = torch.randn(2000, 8)
    expected = block.quantise(vectors)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(block.quantise(vectors), expected)


def test_shapes_trace_on_the_meta_device():
    with torch.device("meta"):
        released = JukeboxVQVAE(JukeboxVQVAEConfig())
        tokens = released.encode(torch.empty(2, 1024, 1))
        audio = released.decode(tokens[1:], start_level=1)
    assert [t.shape for t in tokens] == [(2, 128), (2, 32), (2, 8)]
    assert audio.shape == (2, 1024, 1)


def test_forward_reconstructions_and_loss(model):
    audio = make_audio(2, 2 * model.hop_lengths[-1], model.config.conv_input_shape, seed=8)
    with torch.no_grad():
        output = model(audio)
        tokens = model.encode(audio)
        for level, states in enumerate(output.dequantised_states):
            # Eval-mode forward reconstructs exactly what decode(encode(x)) gives.
            expected = model.decode(tokens[level:], start_level=level)
            torch.testing.assert_close(states, expected, rtol=0, atol=1e-6)
    assert len(output.commit_losses) == model.levels
    assert all(c.dim() == 0 and c.item() >= 0 for c in output.commit_losses)
    torch.testing.assert_close(output.loss, model.commit * sum(output.commit_losses))


def test_works_under_inference_mode(model):
    audio = make_audio(1, 2 * model.hop_lengths[-1], model.config.conv_input_shape, seed=9)
    with torch.no_grad():
        expected = model.encode(audio)
    with torch.inference_mode():
        tokens = model.encode(audio)
        decoded = model.decode(tokens)
        output = model(audio)
    assert all(torch.equal(a, b) for a, b in zip(tokens, expected))
    assert decoded.shape == audio.shape and output.loss.dim() == 0


def test_meta_construction_then_assign_load(model):
    with torch.device("meta"):
        empty = JukeboxVQVAE(model.config)
    assert all(t.is_meta for t in empty.state_dict().values())
    empty.load_state_dict(model.state_dict(), strict=True, assign=True)
    empty.eval()
    leftovers = [name for name, t in [*empty.named_parameters(), *empty.named_buffers()] if t.is_meta]
    assert leftovers == []
    for ours, theirs in zip(model.bottleneck.level_blocks, empty.bottleneck.level_blocks):
        assert theirs.initialised
        assert torch.equal(theirs.ema_sum, ours.codebook) and torch.equal(theirs.ema_count, torch.ones_like(theirs.ema_count))
    audio = make_audio(2, 2 * model.hop_lengths[-1], model.config.conv_input_shape, seed=10)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(empty.encode(audio), model.encode(audio)))
    empty.reset_non_persistent_buffers()


def test_codebook_is_persistent_and_ema_state_is_not():
    block = VectorQuantiser(8, 4)
    assert set(block.state_dict()) == {"codebook"}
    assert {name for name, _ in block.named_buffers()} == {"codebook", "ema_sum", "ema_count"}


def test_ema_update_moves_used_codes_and_redraws_dead_ones():
    torch.manual_seed(0)
    block = VectorQuantiser(4, 2, mu=0.5)
    block.load_state_dict({"codebook": torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 10.0], [10.0, -10.0]])})
    vectors = torch.tensor([[1.0, 1.0], [1.0, -1.0], [9.0, 9.0], [11.0, 11.0]] * 2)
    tokens = block.quantise(vectors)
    assert tokens.tolist() == [0, 0, 1, 1] * 2
    stats = block.ema_update(vectors, tokens)
    # Used codes: count 0.5 * 1 + 0.5 * 4 = 2.5 >= 1; centre = EMA of sums / EMA of counts:
    # code 0: (0.5 * [0, 0] + 0.5 * [4, 0]) / 2.5, code 1: (0.5 * [10, 10] + 0.5 * [40, 40]) / 2.5.
    torch.testing.assert_close(block.codebook[0], torch.tensor([0.8, 0.0]))
    torch.testing.assert_close(block.codebook[1], torch.tensor([10.0, 10.0]))
    # Dead codes (count 0.5 < 1) are replaced by (noisy) data vectors.
    for dead in (2, 3):
        assert torch.cdist(block.codebook[dead : dead + 1], vectors).min() < 0.1
    assert stats.used_curr.item() == 2 and stats.usage.item() == 2
    torch.testing.assert_close(stats.entropy, torch.log(torch.tensor(2.0)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda(model):
    audio = make_audio(2, 2 * model.hop_lengths[-1], model.config.conv_input_shape, seed=11)
    cuda_model = JukeboxVQVAE(model.config).eval()
    cuda_model.load_state_dict(model.state_dict())
    cuda_model.to("cuda")
    with torch.inference_mode():
        tokens = cuda_model.encode(audio.cuda())
        decoded = cuda_model.decode(tokens)
        expected = model.decode([t.cpu() for t in tokens])
    assert all(t.device.type == "cuda" for t in tokens)
    torch.testing.assert_close(decoded.cpu(), expected, rtol=1e-3, atol=1e-3)


# -- errors ------------------------------------------------------------------------------------


def test_bad_audio_is_refused(model):
    channels = model.config.conv_input_shape
    good = make_audio(1, model.hop_lengths[-1], channels)
    with pytest.raises(ValueError, match=r"\[batch, samples, channels\]"):
        model.encode(good[0])
    with pytest.raises(ValueError, match=f"conv_input_shape={channels}"):
        model.encode(good.repeat(1, 1, channels + 1))
    with pytest.raises(ValueError, match="floating point"):
        model.encode(good.long())
    with pytest.raises(ValueError, match="fewer than one token"):
        model.encode(good[:, : model.hop_lengths[-1] - 1])
    # Short audio is fine when only the fine levels are asked for.
    assert model.encode(good[:, : model.hop_lengths[0]], end_level=1)[0].shape == (1, 1)
    with pytest.raises(ValueError, match="conv_input_shape"):
        model(good.repeat(1, 1, channels + 1))


def test_bad_tokens_are_refused(model):
    codes = model.nb_discrete_codes
    with pytest.raises(ValueError, match=rf"outside \[0, {codes}\)"):
        model.decode([torch.tensor([[0, codes]])])
    with pytest.raises(ValueError, match="outside"):
        model.decode([torch.tensor([[-1, 0]])])
    with pytest.raises(ValueError, match="must be integer"):
        model.decode([torch.zeros(1, 2)])
    with pytest.raises(ValueError, match=r"must be \[batch=1, length\]"):
        model.decode([torch.zeros(1, 2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long)])
    with pytest.raises(ValueError, match="a list of 1 to"):
        model.decode(torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="a list of 1 to"):
        model.decode([])
    with pytest.raises(ValueError, match="a list of 1 to 1"):
        model.decode([torch.zeros(1, 2, dtype=torch.long)] * 2, start_level=model.levels - 1)


@pytest.mark.parametrize("start_level, end_level", [(-1, None), (0, 0), (1, 1), (0, 99), (99, None)])
def test_bad_level_ranges_are_refused(model, start_level, end_level):
    audio = make_audio(1, model.hop_lengths[-1], model.config.conv_input_shape)
    with pytest.raises(ValueError, match="start_level"):
        model.encode(audio, start_level=start_level, end_level=end_level)
    with pytest.raises(ValueError, match="start_level"):
        model.decode([torch.zeros(1, 1, dtype=torch.long)], start_level=start_level, end_level=end_level)


def test_bad_levels_and_chunks_are_refused(model):
    with pytest.raises(ValueError, match="level must be in"):
        model.samples_to_tokens(100, model.levels)
    audio = make_audio(1, model.hop_lengths[-1], model.config.conv_input_shape)
    with pytest.raises(ValueError, match="bs_chunks"):
        model.encode(audio, bs_chunks=0)
    with pytest.raises(ValueError, match="bs_chunks"):
        model.decode([torch.zeros(1, 1, dtype=torch.long)], bs_chunks=1.5)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(res_strides_t=[2, 3, 2]), r"res_strides_t\[1\] = 3"),
        (dict(res_downs_t=[2, 0, 1]), r"res_downs_t\[1\] >= 1"),
    ],
)
def test_inexact_architectures_are_refused(overrides, message):
    config = dataclasses.replace(_config(), **overrides)
    with pytest.raises(ValueError, match=message):
        JukeboxVQVAE(config)
