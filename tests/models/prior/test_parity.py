"""Parity with transformers 4.40.2's JukeboxPrior on tiny random models of every variant."""
from __future__ import annotations

import pytest
import torch

from models.config import AttentionKind, JukeboxPriorConfig
from models.prior import JukeboxPrior
from tests.models.prior import build_pair, hf_config, make_labels, random_tokens, single_thread  # noqa: F401

VARIANTS = ["merged_lyrics", "separate_lyrics", "no_lyrics", "upsampler_1", "upsampler_2"]
TOTAL_LENGTH = 3 * 64 * 128 + 1000  # a song of about three top-level windows, in samples


@pytest.fixture(scope="module", autouse=True)
def _quiet_reference():
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    yield
    hf_logging.enable_progress_bar()


@pytest.fixture(scope="module")
def pairs():
    return {variant: build_pair(variant, seed=index) for index, variant in enumerate(VARIANTS)}


def window_inputs(prior: JukeboxPrior, batch: int, start: int = 0, seed: int = 0):
    """(metadata, upper-level conditioning list or None) for a window, rows sharing their lyrics."""
    labels = make_labels(prior, batch, n_lyrics=50, seed=seed, same_lyrics=True)
    metadata = prior.get_metadata(labels, start, TOTAL_LENGTH, 0)
    conds = None
    if prior.level:
        conds = [random_tokens(batch, prior.n_ctx // prior.cond_downsample, prior.config.music_vocab_size, seed + 1)]
    return metadata, conds


def reference_logits(reference, tokens, conds, metadata):
    """The reference's teacher-forced logits, through its own pieces (its forward_tokens crashes
    for priors without lyrics and for batched lyric encoders)."""
    with torch.no_grad():
        if reference.is_encoder_decoder:
            _, metrics = reference.forward_tokens(tokens, conds or [], metadata, get_preds=True)
            return metrics["preds"]
        conditioning, start_emb, lyric_tokens = reference.get_cond(conds or [], metadata)
        states = reference.get_encoder_states(lyric_tokens)
        return reference.prior(tokens, conditioning, start_emb, states, get_preds=True)[1]


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_matches_and_builds_on_meta(variant, pairs):
    reference, ours = pairs[variant]
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == theirs
    with torch.device("meta"):
        meta = JukeboxPrior(ours.config, level=ours.level)
    assert {k: tuple(v.shape) for k, v in meta.state_dict().items()} == theirs
    assert not list(ours.buffers())


@pytest.mark.parametrize("variant", VARIANTS)
def test_teacher_forced_logits_match(variant, pairs):
    reference, ours = pairs[variant]
    metadata, conds = window_inputs(ours, batch=2)
    tokens = random_tokens(2, ours.n_ctx, ours.config.music_vocab_size, seed=3)
    expected = reference_logits(reference, tokens, conds, metadata)
    with torch.no_grad():
        loss, metrics = ours.forward_tokens(tokens, conds or [], metadata, get_preds=True)
    torch.testing.assert_close(metrics["preds"], expected, atol=1e-4, rtol=1e-4)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("variant", ["merged_lyrics", "separate_lyrics"])
def test_losses_match_where_the_reference_computes_them(variant, pairs):
    reference, ours = pairs[variant]
    metadata, conds = window_inputs(ours, batch=1)  # the reference's lyric encoder loss needs batch 1
    tokens = random_tokens(1, ours.n_ctx, ours.config.music_vocab_size, seed=4)
    with torch.no_grad():
        expected_loss, expected = reference.forward_tokens(tokens, [], metadata)
        loss, metrics = ours.forward_tokens(tokens, [], metadata)
    torch.testing.assert_close(loss, expected_loss, atol=1e-5, rtol=1e-5)
    for name in ("bpd", "encoder_loss", "next_token_prediction_loss"):
        torch.testing.assert_close(metrics[name], expected[name], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_metadata_timing_and_lyric_windows_match(variant, pairs):
    reference, ours = pairs[variant]
    for n_lyrics in (5, 16, 50, 300):
        labels = make_labels(ours, 1, n_lyrics=n_lyrics, seed=n_lyrics)
        for start in (0, 17, 64, 3 * 64 - 64):
            expected, expected_indices = reference.get_metadata(labels, start, TOTAL_LENGTH, 0, get_indices=True)
            metadata, indices = ours.get_metadata(labels, start, TOTAL_LENGTH, 0, get_indices=True)
            assert torch.equal(metadata, expected)
            assert indices == expected_indices
            with torch.no_grad():
                conds = None if not ours.level else [random_tokens(1, 16, ours.config.music_vocab_size, start)]
                for got, want in zip(ours.get_cond(conds, metadata), reference.get_cond(conds, metadata)):
                    if want is None:
                        assert got is None
                    else:
                        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("primed", [False, True], ids=["ancestral", "primed"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_argmax_sampling_matches(variant, primed, pairs):
    """top_k=1 through the documented ``sample``: identical tokens for a whole window."""
    reference, ours = pairs[variant]
    metadata, conds = window_inputs(ours, batch=2, start=64)
    context = random_tokens(2, 23, ours.config.music_vocab_size, seed=9) if primed else None
    with torch.no_grad():
        expected = reference.sample(2, music_tokens=context, music_tokens_conds=conds, metadata=metadata, top_k=1, chunk_size=7)
    got = ours.sample(2, music_tokens=context, music_tokens_conds=conds, metadata=metadata, top_k=1, chunk_size=7)
    assert got.shape == (2, ours.n_ctx)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("variant, batch", [("merged_lyrics", 2), ("separate_lyrics", 1)])
def test_alignment_weights_match_the_reference_attention(variant, batch, pairs):
    """Our alignment = the probabilities the reference computes (and stores) in the alignment layer."""
    reference, ours = pairs[variant]
    metadata, _ = window_inputs(ours, batch=batch)
    tokens = random_tokens(batch, ours.n_ctx, ours.config.music_vocab_size, seed=5)
    layer, head = ours.config.alignment_layer, ours.config.alignment_head
    assert ours.prior.transformer.kinds[layer] in (AttentionKind.PRIME, AttentionKind.CROSS)
    with torch.no_grad():
        reference.forward_tokens(tokens, [], metadata, get_attn_weights={layer})
    expected = reference.prior.transformer._attn_mods[layer].attn.attention_prob[:, head]
    weights = ours.get_alignment_weights(tokens, metadata)
    assert weights.shape == (batch, ours.n_ctx, ours.nb_relevant_lyric_tokens)
    torch.testing.assert_close(weights, expected.float(), atol=1e-5, rtol=1e-4)


def test_full_dense_prior_matches_a_reference_patched_to_dense(monkeypatch):
    from transformers.models.jukebox import modeling_jukebox

    monkeypatch.setitem(modeling_jukebox.ATTENTION_PATTERNS, "full_dense_attention", lambda layer: "dense_attn")
    reference, ours = build_pair("full_dense", seed=7)
    assert ours.prior.transformer.kinds == [AttentionKind.DENSE] * 2
    metadata, _ = window_inputs(ours, batch=2)
    tokens = random_tokens(2, ours.n_ctx, ours.config.music_vocab_size, seed=6)
    torch.testing.assert_close(
        ours.forward_tokens(tokens, [], metadata, get_preds=True)[1]["preds"],
        reference_logits(reference, tokens, None, metadata),
        atol=1e-4,
        rtol=1e-4,
    )
    context = tokens[:, :20]
    with torch.no_grad():
        expected = reference.sample(2, music_tokens=context, metadata=metadata, top_k=1, chunk_size=6)
    assert torch.equal(ours.sample(2, music_tokens=context, metadata=metadata, top_k=1, chunk_size=6), expected)


def test_config_round_trip_keeps_the_reference_fields():
    config = hf_config("separate_lyrics")
    ours = JukeboxPriorConfig.from_dict(config.to_dict())
    assert ours.encoder_config.hidden_size == config.encoder_config.hidden_size
    assert ours.attention_pattern == config.attention_pattern and ours.is_encoder_decoder is False
