"""The presets say what OpenAI released: every setting that changes the computation, per prior.

The table below is written from shared/ORIGINAL_HPARAMS.md (the original's ``hparams.py`` and
``make_models.py``), not from our YAML files. Each preset's *effective* prior configs (what
``JukeboxModel`` builds, model-wide settings applied) are held against it, and the built modules
on the meta device are checked for what ``merged_decoder`` and the label layout change.
"""
from __future__ import annotations

import inspect

import pytest
import torch

from models.config import AttentionPattern
from models.jukebox import UPSAMPLER_TEMPERATURE, JukeboxModel
from models.presets import load_preset, preset_tokenizer_settings

RELEASE_VQVAE = dict(
    levels=3, res_downs_t=[3, 2, 2], res_strides_t=[2, 2, 2], embed_dim=64, nb_discrete_codes=2048, lmu=0.99,
    commit=0.02, multipliers=[2, 1, 1], res_conv_width=32, res_conv_depth=4, res_convolution_multiplier=1,
    res_dilation_growth_rate=3, res_dilation_cycle=None, conv_input_shape=1,
    # hop fraction 0.5, 0.5, 0.125 for the original's levels 0, 1, 2: prior order (top first) here
    hop_fraction=[0.125, 0.5, 0.5],
)

# Defaults no released prior overrides: m_attn 0.25, m_mlp 1, spread None, zero_out False,
# res_scale False, and causal masks (the original's ConditionalAutoregressive2D default).
DEFAULTS = dict(attention_multiplier=0.25, mlp_multiplier=1.0, spread=None, zero_out=False, attn_res_scale=False, mask=True,
                sampling_rate=44100, act_fn="quick_gelu", music_vocab_size=2048, attn_dropout=0, resid_dropout=0, emb_dropout=0)

UPSAMPLER = dict(
    n_ctx=8192, hidden_size=1920, num_layers=72, n_heads=1, attention_pattern=AttentionPattern.RAW_COLUMN_PREVIOUS_ROW.value,
    blocks=128, init_scale=0.4, metadata_dims=[120, 4111], max_nb_genres=5, nb_relevant_lyric_tokens=0,
    merged_decoder=False, res_conv_width=1024, res_conv_depth=16, res_dilation_growth_rate=3, res_dilation_cycle=8,
    res_downs_t=[3, 2, 2], res_strides_t=[2, 2, 2],
)
MIDDLE = dict(UPSAMPLER, conv_res_scale=True)  # the original's upsampler_level_1 sets cond_res_scale
BOTTOM = dict(UPSAMPLER, conv_res_scale=False)

TOP = {
    "5b": dict(
        n_ctx=8192, hidden_size=4800, num_layers=72, n_heads=8, attention_pattern=AttentionPattern.RAW_COLUMN_PREVIOUS_ROW.value,
        blocks=128, init_scale=0.1, metadata_dims=[120, 4111], timing_dims=128, max_nb_genres=5,
        nb_relevant_lyric_tokens=0, min_duration=60.0, max_duration=600.0, merged_decoder=True,
    ),
    "5b_lyrics": dict(
        n_ctx=8192, hidden_size=4800, num_layers=79, n_heads=8,
        attention_pattern=AttentionPattern.LARGE_SEPARATED_ENC_DEC_W_LYRICS.value, blocks=128, init_scale=0.1,
        metadata_dims=[120, 4111], timing_dims=128, max_nb_genres=5, nb_relevant_lyric_tokens=512, lyric_vocab_size=80,
        is_encoder_decoder=False, encoder_loss_fraction=0.4, alignment_layer=68, alignment_head=2,
        min_duration=23.8, max_duration=600.0, merged_decoder=True,
    ),
    "1b_lyrics": dict(
        n_ctx=6144, hidden_size=2048, num_layers=72, n_heads=2, attention_pattern=AttentionPattern.ENC_DEC_WITH_LYRICS.value,
        blocks=64, init_scale=0.2, metadata_dims=[604, 7898], timing_dims=64, max_nb_genres=1,
        nb_relevant_lyric_tokens=384, lyric_vocab_size=79, is_encoder_decoder=True, encoder_loss_fraction=0.4,
        alignment_layer=63, alignment_head=0, min_duration=17.84, max_duration=600.0, merged_decoder=False,
    ),
}
LYRIC_ENCODER_5B = dict(hidden_size=1280, num_layers=18, n_heads=4, attention_pattern=AttentionPattern.RAW_COLUMN_PREVIOUS_ROW.value,
                        blocks=32, init_scale=0.7, attention_multiplier=0.25, mlp_multiplier=1.0, mask=True)
TOKENIZER = {
    "5b": dict(version=["v2", "v2", "v2"], n_genres=5),
    "5b_lyrics": dict(version=["v2", "v2", "v2"], n_genres=5),
    "1b_lyrics": dict(version=["v3", "v2", "v2"], n_genres=[1, 5, 5]),
}


def _mismatches(config, table: dict) -> dict:
    return {key: (getattr(config, key), want) for key, want in table.items() if getattr(config, key) != want}


@pytest.mark.parametrize("preset", sorted(TOP))
def test_preset_computes_what_the_release_computes(preset):
    config = load_preset(preset)
    assert _mismatches(config.vqvae_config, RELEASE_VQVAE) == {}
    assert config.sampling_rate == 44100 and config.nb_priors == 3
    effective = [config.shared_prior_config(i) for i in range(3)]
    for index, table in enumerate([TOP[preset], MIDDLE, BOTTOM]):
        assert _mismatches(effective[index], {**DEFAULTS, **table}) == {}, f"prior {index} of {preset}"
    if preset == "5b_lyrics":
        assert _mismatches(effective[0].encoder_config, LYRIC_ENCODER_5B) == {}
    settings = preset_tokenizer_settings(preset)
    assert {k: settings[k] for k in TOKENIZER[preset]} == TOKENIZER[preset]


@pytest.mark.parametrize("preset", sorted(TOP))
def test_built_priors_tie_and_condition_as_released(preset):
    """merged_decoder=False: the conditioning is added again after the transformer and the output
    projection *is* the token embedding; upsamplers read their genre slots and no timing."""
    config = load_preset(preset)
    with torch.device("meta"):
        model = JukeboxModel(config)
    for index, prior in enumerate(model.priors):
        tied = not config.shared_prior_config(index).merged_decoder
        assert prior.prior.add_cond_after_transformer is tied
        assert (prior.prior.fc_proj_out.weight is prior.prior.embed_tokens.weight) is tied
        assert prior.metadata_embedding.max_nb_genres == (TOP[preset] if index == 0 else UPSAMPLER)["max_nb_genres"]
        assert prior.metadata_embedding.include_time_signal is (index == 0)


def test_sampling_defaults_are_the_originals():
    """temperature 0.98 for the top prior, 0.99 for the upsamplers (the original's sampling script);
    the pipeline's defaults are checked in tests/pipeline/test_config.py."""
    assert UPSAMPLER_TEMPERATURE == 0.99
    assert inspect.signature(JukeboxModel._sample).parameters["sampling_temperature"].default == 0.98


def test_tiny_keeps_the_structure_of_1b_lyrics():
    """The default model runs the code paths of the real 1b_lyrics model, at toy size."""
    tiny, release = load_preset("tiny"), load_preset("1b_lyrics")
    structure = ("attention_pattern", "is_encoder_decoder", "merged_decoder", "max_nb_genres", "mask", "metadata_dims",
                 "lyric_vocab_size", "conv_res_scale", "res_downs_t", "res_strides_t", "attention_multiplier", "act_fn")
    for index in range(3):
        ours, theirs = tiny.shared_prior_config(index), release.shared_prior_config(index)
        assert {k: getattr(ours, k) for k in structure} == {k: getattr(theirs, k) for k in structure}, index
        assert (ours.nb_relevant_lyric_tokens > 0) == (theirs.nb_relevant_lyric_tokens > 0)
    assert tiny.vqvae_config.hop_lengths == release.vqvae_config.hop_lengths == [8, 32, 128]
    assert preset_tokenizer_settings("tiny")["version"] == preset_tokenizer_settings("1b_lyrics")["version"]
    assert preset_tokenizer_settings("tiny")["n_genres"] == preset_tokenizer_settings("1b_lyrics")["n_genres"]
