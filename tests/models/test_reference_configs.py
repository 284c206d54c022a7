"""Whatever transformers 4.40.2 can build, save and run loads here and computes the same.

A seeded draw of prior configurations over what the reference accepts (every attention pattern
it can run, lyrics merged / in a separate encoder / none, ``lyric_vocab_size`` 0, heads, widths,
blocks, ``merged_decoder`` both ways, 1 or 5 genre slots, upsamplers of both levels). Each
reference prior gets seeded noise in every weight first (transformers leaves many as
``torch.empty``, often zeros, which turns attention layers into the identity and hides
differences), is saved by transformers itself (safetensors, or sharded ``.bin``: transformers
cannot write a tied output projection to safetensors), loaded by our ``from_pretrained`` and run
against the reference: teacher-forced logits and greedy windows, ancestral and primed.
"""
from __future__ import annotations

import random
from typing import Any

import pytest
import torch

from models.prior import JukeboxPrior
from tests.models.prior import make_labels, randomize_, random_tokens
from tests.models.prior.test_parity import reference_logits

N_CONFIGS = 32
TOTAL_LENGTH = 3 * 64 * 128 + 1000
KINDS = ("merged_lyrics", "separate_lyrics", "no_lyrics", "upsampler")


@pytest.fixture(scope="module", autouse=True)
def _quiet_reference():
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    yield


def draw_config(index: int) -> dict[str, Any]:
    """The ``index``-th reference prior configuration (kinds in turn, the rest drawn)."""
    rng = random.Random(1000 + index)
    kind = KINDS[index % len(KINDS)]
    heads = rng.choice([1, 2, 4])
    config: dict[str, Any] = dict(
        hidden_size=rng.choice([16, 32, 48]),
        n_heads=heads,
        attention_multiplier=rng.choice([0.25, 0.5]),
        mlp_multiplier=rng.choice([0.5, 1.0, 2.0]),
        n_ctx=rng.choice([32, 64]),
        blocks=rng.choice([2, 4, 8]),
        mask=True,
        music_vocab_size=rng.choice([32, 48, 64]),
        metadata_dims=[rng.randint(3, 12), rng.randint(5, 20)],
        max_nb_genres=rng.choice([1, 5]),
        timing_dims=rng.choice([8, 16]),
        sampling_rate=4000,
        min_duration=0.0,
        max_duration=20.0,
        merged_decoder=rng.choice([True, False]),
        init_scale=rng.choice([0.2, 0.7]),
        level=0,
    )
    if kind == "merged_lyrics":
        # prime (and dense) layers at indices 15 mod 16: at least 16 layers
        config.update(attention_pattern="enc_dec_with_lyrics", is_encoder_decoder=True, num_layers=rng.choice([16, 17]),
                      nb_relevant_lyric_tokens=config["blocks"] * rng.choice([2, 3]), lyric_vocab_size=rng.choice([20, 79, 80]),
                      alignment_layer=15, alignment_head=rng.randrange(heads))
    elif kind == "separate_lyrics":
        n_lyrics = rng.choice([8, 16])
        config.update(attention_pattern="large_separated_enc_dec_w_lyrics", is_encoder_decoder=False,
                      num_layers=rng.choice([19, 21]), nb_relevant_lyric_tokens=n_lyrics, lyric_vocab_size=rng.choice([20, 80]),
                      alignment_layer=18, alignment_head=rng.randrange(heads),
                      encoder_config=dict(hidden_size=rng.choice([16, 24]), n_heads=2, attention_multiplier=0.5,
                                          num_layers=rng.choice([2, 3]), blocks=rng.choice([2, 4]), n_ctx=n_lyrics,
                                          attention_pattern="raw_column_previous_row_attention", mask=True,
                                          nb_relevant_lyric_tokens=0, lyric_vocab_size=20, music_vocab_size=32,
                                          is_encoder_decoder=False))
    elif kind == "no_lyrics":
        config.update(attention_pattern="raw_column_previous_row_attention", is_encoder_decoder=False,
                      num_layers=rng.choice([3, 4, 6]), nb_relevant_lyric_tokens=0, lyric_vocab_size=rng.choice([0, 80]))
    else:
        config.update(level=rng.choice([1, 2]), attention_pattern="raw_column_previous_row_attention",
                      is_encoder_decoder=False, num_layers=rng.choice([3, 4]), nb_relevant_lyric_tokens=0,
                      lyric_vocab_size=rng.choice([0, 80]), res_conv_width=16, res_conv_depth=rng.choice([1, 2]),
                      res_dilation_growth_rate=rng.choice([1, 3]), res_dilation_cycle=rng.choice([None, 2]),
                      conv_res_scale=rng.choice([True, False]), res_downs_t=[3, 2, 2], res_strides_t=[2, 2, 2])
    return config


def _kind(index: int) -> str:
    return KINDS[index % len(KINDS)]


@pytest.mark.slow
def test_the_draw_covers_what_the_issue_lists():
    configs = [draw_config(i) for i in range(N_CONFIGS)]
    assert len(configs) >= 30
    assert {c["attention_pattern"] for c in configs} == {"enc_dec_with_lyrics", "large_separated_enc_dec_w_lyrics",
                                                          "raw_column_previous_row_attention"}
    assert {c["merged_decoder"] for c in configs} == {True, False}
    assert {c["max_nb_genres"] for c in configs} == {1, 5}
    assert any(c["lyric_vocab_size"] == 0 for c in configs)
    assert {c["n_heads"] for c in configs} == {1, 2, 4} and {c["blocks"] for c in configs} == {2, 4, 8}
    assert {c["level"] for c in configs} == {0, 1, 2}


def _inputs(prior: JukeboxPrior, seed: int):
    labels = make_labels(prior, 2, n_lyrics=30, seed=seed, same_lyrics=True)
    metadata = prior.get_metadata(labels, prior.n_ctx, TOTAL_LENGTH, 0)
    conds = None
    if prior.level:
        conds = [random_tokens(2, prior.n_ctx // prior.cond_downsample, prior.config.music_vocab_size, seed + 1)]
    return metadata, conds


@pytest.mark.slow
@pytest.mark.parametrize("index", range(N_CONFIGS))
def test_reference_prior_saved_by_transformers_loads_and_computes_the_same(index, tmp_path):
    from transformers import JukeboxPrior as HFPrior
    from transformers import JukeboxPriorConfig as HFPriorConfig

    kwargs = draw_config(index)
    reference_config = HFPriorConfig(**kwargs)
    reference = randomize_(HFPrior(reference_config, level=kwargs["level"]), seed=index).eval()
    tied = not kwargs["merged_decoder"]
    # transformers refuses to write a tied projection to safetensors: those go to sharded .bin
    safetensors = not tied and index % 2 == 0
    reference.save_pretrained(str(tmp_path), safe_serialization=safetensors, max_shard_size="500KB" if safetensors else "40KB")
    assert any(p.name.endswith(".safetensors" if safetensors else ".bin") for p in tmp_path.iterdir())

    ours = JukeboxPrior.from_pretrained(str(tmp_path))
    assert (ours.prior.fc_proj_out.weight is ours.prior.embed_tokens.weight) is tied
    for key, tensor in reference.state_dict().items():
        assert torch.equal(ours.state_dict()[key], tensor), key

    metadata, conds = _inputs(ours, seed=index)
    tokens = random_tokens(2, ours.n_ctx, ours.config.music_vocab_size, seed=index + 3)
    want = reference_logits(reference, tokens, conds, metadata)
    with torch.no_grad():
        got = ours.forward_tokens(tokens, conds or [], metadata, get_preds=True)[1]["preds"]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)

    for context in (None, tokens[:, : ours.n_ctx // 3]):
        with torch.no_grad():
            expected = reference.sample(2, music_tokens=context, music_tokens_conds=conds, metadata=metadata, top_k=1,
                                        chunk_size=5, sample_tokens=ours.n_ctx // 2 + (0 if context is None else context.shape[1]))
        sampled = ours.sample(2, music_tokens=context, music_tokens_conds=conds, metadata=metadata, top_k=1, chunk_size=5,
                              sample_tokens=ours.n_ctx // 2 + (0 if context is None else context.shape[1]))
        assert torch.equal(sampled, expected), f"config {index} ({_kind(index)}), context={context is not None}"
