"""Where transformers 4.40.2 is wrong we follow the original OpenAI code; each difference is pinned here."""
from __future__ import annotations

import pytest
import torch

from models.config import AttentionKind, JukeboxPriorConfig
from models.prior import JukeboxPrior, relevant_lyric_tokens
from tests.models.prior import build_pair, hf_config, make_labels, random_tokens, single_thread  # noqa: F401

TOTAL_LENGTH = 3 * 64 * 128 + 1000


def test_upsampler_windows_are_conditioned_on_their_own_slice_of_the_upper_level():
    reference, ours = build_pair("upsampler_1")
    ratio, needed = ours.cond_downsample, ours.n_ctx // ours.cond_downsample
    upper = random_tokens(1, 3 * needed, ours.config.music_vocab_size)  # three windows' worth
    (ours_window,) = ours.get_music_tokens_conds([upper], 64, 64 + ours.n_ctx)
    assert torch.equal(ours_window, upper[:, 64 // ratio : (64 + ours.n_ctx) // ratio])
    (last,) = ours.get_music_tokens_conds([upper], 150, 150 + ours.n_ctx)  # past the end: zero-padded
    assert last.shape == (1, needed) and torch.equal(last[:, : 3 * needed - 150 // ratio], upper[:, 150 // ratio :])
    assert not last[:, 3 * needed - 150 // ratio :].any()
    # The reference hands every window the whole upper sequence.
    (theirs,) = reference.get_music_tokens_conds([upper], 64, 64 + ours.n_ctx)
    assert torch.equal(theirs, upper)


@pytest.mark.parametrize("variant", ["upsampler_1", "upsampler_2", "no_lyrics"])
def test_loss_of_a_prior_without_lyrics(variant):
    reference, ours = build_pair(variant)
    labels = make_labels(ours, 2)
    metadata = ours.get_metadata(labels, 0, TOTAL_LENGTH, 0)
    tokens = random_tokens(2, ours.n_ctx, ours.config.music_vocab_size)
    conds = [random_tokens(2, 16, ours.config.music_vocab_size, 1)] if ours.level else []
    with pytest.raises(AttributeError):
        reference.forward_tokens(tokens, conds, metadata)
    loss, metrics = ours.forward_tokens(tokens, conds, metadata)
    assert torch.isfinite(loss) and metrics["encoder_loss"] == 0
    torch.testing.assert_close(loss, metrics["next_token_prediction_loss"])


def test_batched_loss_with_a_separate_lyrics_encoder():
    reference, ours = build_pair("separate_lyrics")
    metadata = ours.get_metadata(make_labels(ours, 2, same_lyrics=True), 0, TOTAL_LENGTH, 0)
    tokens = random_tokens(2, ours.n_ctx, ours.config.music_vocab_size)
    with pytest.raises(RuntimeError, match="view"):
        reference.forward_tokens(tokens, [], metadata)
    loss, metrics = ours.forward_tokens(tokens, [], metadata)
    per_row = [ours.forward_tokens(tokens[i : i + 1], [], metadata[i : i + 1])[1]["encoder_loss"] for i in range(2)]
    torch.testing.assert_close(metrics["encoder_loss"], sum(per_row) / 2)
    assert torch.isfinite(loss)


def test_full_dense_attention_builds_dense_layers():
    from transformers import JukeboxPrior as HFPrior

    config = hf_config("full_dense")
    with pytest.raises(KeyError, match="dense_attention"):
        HFPrior(config, level=0)
    ours = JukeboxPrior(JukeboxPriorConfig.from_dict(config.to_dict()))
    assert ours.prior.transformer.kinds == [AttentionKind.DENSE] * config.num_layers


def test_offset_is_in_audio_samples():
    reference, ours = build_pair("no_lyrics")
    labels = make_labels(ours, 1)
    start, offset = 2, 1000
    assert int(ours.get_metadata(labels, start, TOTAL_LENGTH, offset)[0, 1]) == offset + start * ours.raw_to_tokens
    assert int(reference.get_metadata(labels, start, TOTAL_LENGTH, offset)[0, 1]) == (offset + start) * ours.raw_to_tokens
    # With no offset (every sampling call of the reference) both agree.
    assert torch.equal(ours.get_metadata(labels, start, TOTAL_LENGTH, 0), reference.get_metadata(labels, start, TOTAL_LENGTH, 0))


def test_each_row_windows_its_own_lyrics():
    reference, ours = build_pair("merged_lyrics")
    labels = make_labels(ours, 2, n_lyrics=50)
    head, n = 4 + ours.config.max_nb_genres, ours.nb_relevant_lyric_tokens
    metadata = ours.get_metadata(labels, 64, TOTAL_LENGTH, 0)
    for row in range(2):
        own, _ = relevant_lyric_tokens(labels[row, head:], n, metadata[row, 0], metadata[row, 1], metadata[row, 2])
        assert torch.equal(metadata[row, head:], own)
    theirs = reference.get_metadata(labels, 64, TOTAL_LENGTH, 0)
    assert torch.equal(theirs[1, head:], theirs[0, head:])  # row 0's lyrics for everyone
    assert not torch.equal(metadata[1, head:], metadata[0, head:])


def test_attention_weights_are_probabilities_not_projection_weights():
    reference, ours = build_pair("merged_lyrics")
    metadata = ours.get_metadata(make_labels(ours, 2, same_lyrics=True), 0, TOTAL_LENGTH, 0)
    tokens = random_tokens(2, ours.n_ctx, ours.config.music_vocab_size)
    layer = ours.config.alignment_layer
    with torch.no_grad():
        (theirs,) = reference.forward_tokens(tokens, [], metadata, get_attn_weights={layer})
        (weights,) = ours.forward_tokens(tokens, [], metadata, get_attn_weights={layer})
    assert torch.equal(theirs, reference.prior.transformer._attn_mods[layer].attn.c_attn.weight)
    assert weights.shape == (2, ours.config.n_heads, ours.n_ctx, ours.nb_relevant_lyric_tokens)
    assert (weights >= 0).all() and (weights.sum(-1) <= 1 + 1e-6).all()


def test_a_prior_without_lyrics_reads_only_its_genre_slots():
    reference, ours = build_pair("no_lyrics")
    labels = make_labels(ours, 1)
    with_lyrics = torch.cat([labels, torch.tensor([[5, 6, 1]])], dim=1)  # a label row that also carries lyrics
    plain = ours.get_cond(None, ours.get_metadata(labels, 0, TOTAL_LENGTH, 0))
    padded = ours.get_cond(None, ours.get_metadata(with_lyrics, 0, TOTAL_LENGTH, 0))
    torch.testing.assert_close(padded[1], plain[1])
    theirs = reference.get_cond(None, reference.get_metadata(with_lyrics, 0, TOTAL_LENGTH, 0))
    assert not torch.allclose(theirs[1], plain[1])  # the reference embeds the lyric ids as genres
