"""Typed configs: transformers-compatible dicts and files, validation that names the field."""
import json

import pytest

from models.config import (
    AttentionKind,
    AttentionPattern,
    JukeboxConfig,
    JukeboxPriorConfig,
    JukeboxVQVAEConfig,
    attention_kind,
)
from models.presets import available_presets, load_preset

transformers = pytest.importorskip("transformers")


def test_defaults_match_reference():
    ours, ref = JukeboxConfig(), transformers.JukeboxConfig()
    ref_dict = ref.to_dict()
    ours_dict = ours.to_dict()
    for key in ("nb_priors", "sampling_rate", "timing_dims", "min_duration", "max_duration", "max_nb_genres",
                "metadata_conditioning", "hop_fraction"):
        assert ours_dict[key] == ref_dict[key], key
    for ours_prior, ref_prior in zip(ours_dict["prior_config_list"], ref_dict["prior_config_list"]):
        for key in JukeboxPriorConfig.field_names():
            if key != "level":
                assert ours_prior[key] == ref_prior[key], key
    for key in JukeboxVQVAEConfig.field_names():
        assert ours_dict["vqvae_config"][key] == ref_dict["vqvae_config"][key], key


@pytest.mark.parametrize("preset", available_presets())
def test_preset_round_trips_through_reference(preset, tmp_path):
    ours = load_preset(preset)
    # ours -> config.json -> transformers -> config.json -> ours
    ours.save_pretrained(str(tmp_path / "a"))
    ref = transformers.JukeboxConfig.from_pretrained(str(tmp_path / "a"))
    ref.save_pretrained(str(tmp_path / "b"))
    back = JukeboxConfig.from_pretrained(str(tmp_path / "b"))
    assert back == ours
    assert json.loads((tmp_path / "b" / "config.json").read_text())["model_type"] == "jukebox"
    assert [p.n_ctx for p in ref.prior_configs] == [p.n_ctx for p in ours.prior_configs]


def test_component_configs_read_from_whole_model_file(tmp_path):
    config = load_preset("tiny")
    config.save_pretrained(str(tmp_path))
    assert JukeboxVQVAEConfig.from_pretrained(str(tmp_path)) == config.vqvae_config
    assert JukeboxPriorConfig.from_pretrained(str(tmp_path), level=2) == config.prior_configs[2]
    with pytest.raises(ValueError, match="level=3"):
        JukeboxPriorConfig.from_pretrained(str(tmp_path), level=3)


def test_fsspec_memory_url_round_trip():
    config = load_preset("tiny")
    config.save_pretrained("memory://configs/tiny")
    assert JukeboxConfig.from_pretrained("memory://configs/tiny") == config


@pytest.mark.parametrize(
    "cls, kwargs, field",
    [
        (JukeboxPriorConfig, {"n_ctx": 100, "blocks": 16}, "blocks"),
        (JukeboxPriorConfig, {"attention_pattern": "diagonal"}, "attention_pattern"),
        (JukeboxPriorConfig, {"hidden_size": 64, "n_heads": 3}, "n_heads"),
        (JukeboxPriorConfig, {"act_fn": "relu6"}, "act_fn"),
        (JukeboxPriorConfig, {"metadata_dims": [10]}, "metadata_dims"),
        (JukeboxPriorConfig, {"res_downs_t": [3, 2], "res_strides_t": [2, 2, 2]}, "res_strides_t"),
        (JukeboxPriorConfig, {"is_encoder_decoder": False, "nb_relevant_lyric_tokens": 16}, "encoder_config"),
        (JukeboxPriorConfig, {"attn_dropout": 1.5}, "attn_dropout"),
        (JukeboxVQVAEConfig, {"res_downs_t": [3, 2]}, "res_downs_t"),
        (JukeboxVQVAEConfig, {"hop_fraction": [0.5, 0.5, 2.0]}, "hop_fraction"),
        (JukeboxVQVAEConfig, {"nb_discrete_codes": 0}, "nb_discrete_codes"),
        (JukeboxVQVAEConfig, {"lmu": 1.0}, "lmu"),
    ],
)
def test_impossible_configs_name_the_field(cls, kwargs, field):
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.{field}"):
        cls(**kwargs)


def test_whole_model_consistency_is_checked():
    tiny = load_preset("tiny").to_dict()
    tiny["prior_config_list"][1]["music_vocab_size"] = 512
    with pytest.raises(ValueError, match=r"prior_configs\[1\]\.music_vocab_size"):
        JukeboxConfig.from_dict(tiny)
    tiny = load_preset("tiny").to_dict()
    tiny["prior_config_list"][2]["res_downs_t"] = [3, 2, 3]
    with pytest.raises(ValueError, match=r"prior_configs\[2\]\.res_downs_t"):
        JukeboxConfig.from_dict(tiny)
    tiny = load_preset("tiny").to_dict()
    tiny["nb_priors"] = 2
    with pytest.raises(ValueError, match="prior_configs"):
        JukeboxConfig.from_dict(tiny)


def test_shared_params_are_copied_into_priors():
    config = JukeboxConfig(max_nb_genres=3, timing_dims=32, sampling_rate=22050)
    shared = [config.shared_prior_config(i) for i in range(config.nb_priors)]
    assert all(p.max_nb_genres == 3 and p.timing_dims == 32 and p.sampling_rate == 22050 for p in shared)
    assert config.prior_configs[0].max_nb_genres == 1  # stored configs stay as written


def test_attention_kinds_match_reference_patterns():
    from transformers.models.jukebox.configuration_jukebox import ATTENTION_PATTERNS

    for pattern in AttentionPattern:
        for layer in range(160):
            kind = attention_kind(pattern, layer)
            assert isinstance(kind, AttentionKind)
            if pattern is AttentionPattern.FULL_DENSE:
                # the reference returns "dense_attention", a name its layers do not know: ours is dense
                assert ATTENTION_PATTERNS[pattern.value](layer) == "dense_attention"
                assert kind is AttentionKind.DENSE
            else:
                assert kind.value == ATTENTION_PATTERNS[pattern.value](layer)
