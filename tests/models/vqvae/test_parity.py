"""Parity of our JukeboxVQVAE with transformers 4.40.2's on several tiny configurations."""
from __future__ import annotations

import pytest
import torch

from tests.models.vqvae import (
    TINY_CONFIGS,
    make_audio,
    ours_from,
    reference_with_data_codebooks,
    reversed_codebooks,
)

transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-5


@pytest.fixture(scope="module", params=sorted(TINY_CONFIGS))
def pair(request):
    """(hf_config, reference, ours, top_hop) sharing one state dict, both in eval mode."""
    hf_config, reference, top_hop = reference_with_data_codebooks(TINY_CONFIGS[request.param])
    ours = ours_from(hf_config, reference.state_dict())
    return hf_config, reference, ours, top_hop


def test_state_dict_keys_and_shapes_match(pair):
    _, reference, ours, _ = pair
    ref_shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    our_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert our_shapes == ref_shapes


def test_encode_gives_identical_tokens_at_every_level(pair):
    hf_config, reference, ours, top_hop = pair
    audio = make_audio(3, 6 * top_hop + 3, hf_config.conv_input_shape, seed=1)
    with torch.no_grad():
        expected = reference.encode(audio)
        got = ours.encode(audio)
    assert len(got) == len(expected) == hf_config.levels
    for level, (ours_tokens, ref_tokens) in enumerate(zip(got, expected)):
        assert ours_tokens.dtype == torch.int64
        assert torch.equal(ours_tokens, ref_tokens), f"level {level}"
        # The codebooks come from real latents, so the comparison is not between constant tokens.
        assert ref_tokens.unique().numel() > 1, f"level {level} tokens are all {ref_tokens[0, 0]}"


def test_encode_level_ranges_match(pair):
    hf_config, reference, ours, top_hop = pair
    audio = make_audio(2, 4 * top_hop, hf_config.conv_input_shape, seed=2)
    levels = hf_config.levels
    with torch.no_grad():
        for start in range(levels):
            for end in range(start + 1, levels + 1):
                expected = reference.encode(audio, start_level=start, end_level=end)
                got = ours.encode(audio, start_level=start, end_level=end)
                assert [t.shape for t in got] == [t.shape for t in expected]
                assert all(torch.equal(a, b) for a, b in zip(got, expected)), (start, end)


def test_decode_matches_at_every_start_level(pair):
    hf_config, reference, ours, top_hop = pair
    generator = torch.Generator().manual_seed(3)
    tokens = [
        torch.randint(0, hf_config.nb_discrete_codes, (2, 5 * top_hop // int(hop)), generator=generator)
        for hop in reference.hop_lengths
    ]
    with torch.no_grad():
        for start in range(hf_config.levels):
            expected = reference.decode(tokens[start:], start_level=start)
            got = ours.decode(tokens[start:], start_level=start)
            assert got.shape == expected.shape == (2, 5 * top_hop, hf_config.conv_input_shape)
            assert (got - expected).abs().max().item() <= TOLERANCE, f"start level {start}"


def test_forward_eval_matches_reference_with_per_level_codebooks(pair):
    """Ours quantises level L with codebook L (original Jukebox). The reference does the same
    once its codebooks are loaded in reverse order (see ``reversed_codebooks``)."""
    hf_config, reference, ours, top_hop = pair
    audio = make_audio(2, 4 * top_hop, hf_config.conv_input_shape, seed=4)
    fixed = transformers.JukeboxVQVAE(hf_config).eval()
    fixed.load_state_dict(reversed_codebooks(reference.state_dict(), hf_config.levels))
    with torch.no_grad():
        ref_states, ref_loss = fixed(audio)
        got = ours(audio)
    assert len(got.dequantised_states) == len(ref_states) == hf_config.levels
    for level, (ours_states, ref) in enumerate(zip(got.dequantised_states, ref_states)):
        assert ours_states.shape == ref.shape == audio.shape
        assert (ours_states - ref).abs().max().item() <= TOLERANCE, f"level {level}"
    torch.testing.assert_close(got.loss, ref_loss, rtol=TOLERANCE, atol=1e-8)
    assert abs(got.loss.item() - hf_config.commit * sum(c.item() for c in got.commit_losses)) <= 1e-6


def test_reference_forward_uses_the_wrong_codebook_per_level(pair):
    """Pins transformers 4.40.2's bug: its forward quantises level L with codebook ``levels-1-L``."""
    hf_config, reference, ours, top_hop = pair
    if hf_config.levels < 2:
        pytest.skip("with one level the codebook order cannot matter")
    audio = make_audio(2, 4 * top_hop, hf_config.conv_input_shape, seed=5)
    with torch.no_grad():
        ref_states, _ = reference(audio)
        ours_states = ours(audio).dequantised_states
    assert not torch.allclose(ref_states[0], ours_states[0], atol=1e-4)


def test_decode_of_encode_reconstruction_matches(pair):
    hf_config, reference, ours, top_hop = pair
    audio = make_audio(2, 3 * top_hop, hf_config.conv_input_shape, seed=6)
    with torch.no_grad():
        for level in range(hf_config.levels):
            expected = reference.decode(reference.encode(audio, start_level=level), start_level=level)
            got = ours.decode(ours.encode(audio, start_level=level), start_level=level)
            assert (got - expected).abs().max().item() <= TOLERANCE


def _prepare_reference_ema(reference):
    """Put the reference's codebooks in the state ours takes after loading (original ``restore_k``)."""
    for block in reference.bottleneck.level_blocks:
        block.init = True
        block.codebook_sum = block.codebook.clone()
        block.codebook_elem = torch.ones(block.nb_discrete_codes)


@pytest.mark.parametrize("from_data", [False, True], ids=["from_checkpoint", "fresh_codebooks"])
def test_training_forward_and_codebook_updates_match(from_data):
    """Two seeded training steps: reconstructions, losses, updated codebooks and encoder gradients."""
    hf_config, reference, top_hop = reference_with_data_codebooks(TINY_CONFIGS["three_levels_mono"], seed=7)
    ours = ours_from(hf_config, reference.state_dict())
    reference = transformers.JukeboxVQVAE(hf_config)
    reference.load_state_dict(reversed_codebooks(ours.state_dict(), hf_config.levels))
    if from_data:
        # Fresh models: the first training step draws each codebook from that step's latents.
        for block in ours.bottleneck.level_blocks:
            block.initialised = False
    else:
        _prepare_reference_ema(reference)
    reference.train()
    ours.train()
    levels = hf_config.levels
    for step in range(2):
        # Step 0 has fewer latent vectors than codes at every level (codes are tiled with noise),
        # step 1 more at the finer levels.
        audio = make_audio(2, (2, 20)[step] * top_hop, hf_config.conv_input_shape, seed=10 + step)
        torch.manual_seed(123 + step)
        ref_states, ref_loss = reference(audio)
        torch.manual_seed(123 + step)
        got = ours(audio)
        torch.testing.assert_close(got.loss, ref_loss, rtol=TOLERANCE, atol=1e-8, msg=f"step {step}")
        for ours_states, ref in zip(got.dequantised_states, ref_states):
            assert (ours_states - ref).abs().max().item() <= TOLERANCE
        for level in range(levels):
            ref_codebook = reference.bottleneck.level_blocks[levels - 1 - level].codebook
            ours_codebook = ours.bottleneck.level_blocks[level].codebook
            assert (ours_codebook - ref_codebook).abs().max().item() <= TOLERANCE, f"step {step} level {level}"
        reference.zero_grad()
        ours.zero_grad()
        ref_loss.backward()
        got.loss.backward()
        ours_parameters = dict(ours.named_parameters())
        with_gradient = [(name, p.grad) for name, p in reference.named_parameters() if p.grad is not None]
        # The commit loss reaches every encoder parameter and no decoder parameter.
        assert {name.split(".")[0] for name, _ in with_gradient} == {"encoders"}
        assert len(with_gradient) == sum(1 for _ in reference.encoders.parameters())
        for name, ref_grad in with_gradient:
            assert (ours_parameters[name].grad - ref_grad).abs().max().item() <= TOLERANCE, name


@pytest.mark.parametrize("reverse_dilation", [True, False])
def test_decoder_conv_block_matches_reference_upsampler(reverse_dilation):
    """The block the priors reuse for their music-token upsampler, built from plain arguments."""
    from transformers.models.jukebox.modeling_jukebox import JukeboxDecoderConvBock

    from models.vqvae import DecoderConvBlock

    prior_config = transformers.JukeboxPriorConfig(
        res_convolution_multiplier=2, res_dilation_growth_rate=3, res_dilation_cycle=2, conv_res_scale=True
    )
    torch.manual_seed(0)
    reference = JukeboxDecoderConvBock(prior_config, 12, 6, 4, 2, 2, reverse_dilation=reverse_dilation).eval()
    ours = DecoderConvBlock(
        12, 6, 4, 2, 2, res_convolution_multiplier=2, dilation_growth_rate=3, dilation_cycle=2,
        conv_res_scale=True, reverse_dilation=reverse_dilation,
    ).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    dilations = [block.conv1d_1.dilation[0] for block in ours.upsample_block[0].resnet_block]
    assert dilations == ([3, 1, 3, 1] if reverse_dilation else [1, 3, 1, 3])
    hidden = torch.randn(2, 12, 7)
    with torch.no_grad():
        expected = reference(hidden)
        got = ours(hidden)
    assert got.shape == expected.shape == (2, 12, 28)
    assert (got - expected).abs().max().item() <= TOLERANCE
