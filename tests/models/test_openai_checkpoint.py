"""Original OpenAI Jukebox checkpoint files: name mapping, reading, converting.

The reference is transformers 4.40.2: its converter (``convert_jukebox.py``) converted the real
released files, so its renames are the ground truth for the original names, and its
``JukeboxModel`` gives the state dicts the files are built from.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import pickle

import pytest
import torch
from transformers import JukeboxConfig as HFJukeboxConfig
from transformers import JukeboxModel as HFJukeboxModel
from transformers.models.jukebox.convert_jukebox import fix_jukebox_keys

from models import openai_checkpoint
from models.checkpoint import CheckpointError, read_state_dict, tied_aliases
from models.config import JukeboxConfig
from models.openai_checkpoint import (
    load_openai_checkpoint,
    openai_files,
    openai_to_ours,
    ours_to_openai,
    read_original_state_dict,
    save_openai_checkpoint,
    to_openai_state_dicts,
)
from models.presets import load_preset
from models import convert as convert_checkpoint

logging.getLogger("transformers").setLevel(logging.ERROR)


def _preset_dict(name: str) -> dict:
    return load_preset(name).to_dict()


def _variant(name: str) -> dict:
    """A tiny model (tiny preset's VQ-VAE and upsamplers) with one kind of top prior."""
    data = _preset_dict("tiny")
    top = data["prior_config_list"][0]
    if name == "separate_encoder":  # 5b_lyrics: lyrics encoder attended by cross-attention layers
        top.update(attention_pattern="large_separated_enc_dec_w_lyrics", is_encoder_decoder=False, num_layers=20, merged_decoder=True,
                   encoder_config=dict(level=0, n_ctx=32, hidden_size=32, num_layers=3, n_heads=2, blocks=8,
                                       attention_pattern="raw_column_previous_row_attention", is_encoder_decoder=False,
                                       nb_relevant_lyric_tokens=0, lyric_vocab_size=80, music_vocab_size=256))
    elif name == "no_lyrics":  # 5b: no lyrics at all
        top.update(attention_pattern="raw_column_previous_row_attention", is_encoder_decoder=False, merged_decoder=True,
                   nb_relevant_lyric_tokens=0, num_layers=3, metadata_dims=[120, 4111])
    else:
        assert name == "merged_lyrics", name  # 1b_lyrics: lyrics and music in one transformer
    return data


VARIANTS = ("merged_lyrics", "separate_encoder", "no_lyrics")


def _hf_config(data: dict) -> HFJukeboxConfig:
    return HFJukeboxConfig.from_dict(copy.deepcopy(data))


def _hf_shapes(config: JukeboxConfig) -> dict[str, tuple[int, ...]]:
    with contextlib.redirect_stdout(io.StringIO()), torch.device("meta"):
        model = HFJukeboxModel(HFJukeboxConfig.from_dict(config.to_dict()))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def models_by_variant():
    """variant -> (our config, transformers model with distinct random values in every tensor)."""
    out = {}
    generator = torch.Generator().manual_seed(0)
    for name in VARIANTS:
        hf_config = _hf_config(_variant(name))
        with contextlib.redirect_stdout(io.StringIO()):
            model = HFJukeboxModel(hf_config).eval()
        with torch.no_grad():
            for tensor in model.state_dict().values():
                tensor.copy_(torch.randn(tensor.shape, generator=generator))
        out[name] = (JukeboxConfig.from_dict(hf_config.to_dict()), model)
    return out


def _local_keys(state_dict, nb_priors=3):
    """(original file, full key, key local to the file) for every key of a full state dict."""
    files = openai_files(nb_priors)
    for key in state_dict:
        file = next(f for f in files if key.startswith(f.prefix))
        yield file, key, key[len(file.prefix):]


def _assert_same_tensors(got, want):
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key


# --------------------------------------------------------------------------- names
KNOWN_NAMES = [  # (original name, ours, upsampler file) as the released files and transformers have them
    ("encoders.0.level_blocks.0.model.1.0.weight", "encoders.0.level_blocks.0.downsample_block.2.weight", False),
    ("encoders.2.level_blocks.1.model.0.1.model.3.model.3.bias",
     "encoders.2.level_blocks.1.downsample_block.1.resnet_block.3.conv1d_2.bias", False),
    ("decoders.1.level_blocks.0.model.0.weight", "decoders.1.level_blocks.0.proj_in.weight", False),
    ("decoders.1.level_blocks.0.model.2.1.weight", "decoders.1.level_blocks.0.upsample_block.3.weight", False),
    ("decoders.0.level_blocks.0.model.1.0.model.2.model.1.weight",
     "decoders.0.level_blocks.0.upsample_block.0.resnet_block.2.conv1d_1.weight", False),
    ("bottleneck.level_blocks.2.k", "bottleneck.level_blocks.2.codebook", False),
    ("y_emb.artist_emb.emb.weight", "metadata_embedding.artist_emb.weight", False),
    ("y_emb.total_length_emb.emb.weight", "metadata_embedding.total_length_emb.emb.weight", False),
    ("prior.x_emb.weight", "prior.embed_tokens.weight", False),
    ("prior.transformer._attn_mods.71.attn.c_attn.w", "prior.transformer._attn_mods.71.attn.c_attn.weight", False),
    ("prior.transformer._attn_mods.18.attn.c_enc_kv.b", "prior.transformer._attn_mods.18.attn.c_enc_kv.bias", False),
    ("prior.transformer._attn_mods.3.ln_1.bias", "prior.transformer._attn_mods.3.layer_norm_1.bias", False),
    ("prior.x_out.weight", "prior.fc_proj_out.weight", False),
    ("prime_prior.start_token", "encoder.start_token", False),
    ("prime_prior.transformer._attn_mods.2.mlp.c_fc.w", "encoder.transformer._attn_mods.2.mlp.c_fc.weight", False),
    ("prime_state_proj.b", "encoder.proj_in.bias", False),
    ("prime_state_ln.weight", "encoder.final_layer_norm.weight", False),
    ("prime_x_out.weight", "encoder.lm_head.weight", False),
    ("conditioner_blocks.0.x_emb.weight", "conditioner_blocks.embed_tokens.weight", True),
    ("conditioner_blocks.0.ln.bias", "conditioner_blocks.layer_norm.bias", True),
    ("conditioner_blocks.0.cond.model.0.weight", "conditioner_blocks.upsampler.proj_in.weight", True),
    ("conditioner_blocks.0.cond.model.2.0.blocks.15.model.3.weight",
     "conditioner_blocks.upsampler.upsample_block.2.resnet_block.15.conv1d_2.weight", True),
    ("conditioner_blocks.0.cond.model.2.0.model.15.model.3.weight",
     "conditioner_blocks.upsampler.upsample_block.2.resnet_block.15.conv1d_2.weight", False),
    ("conditioner_blocks.0.cond.model.1.1.bias", "conditioner_blocks.upsampler.upsample_block.1.bias", True),
]


@pytest.mark.parametrize("original, ours, upsampler_file", KNOWN_NAMES)
def test_known_names_both_ways(original, ours, upsampler_file):
    assert openai_to_ours(original) == ours
    assert ours_to_openai(ours, upsampler_file=upsampler_file, res_downs_t=[3, 2, 2]) == original


def test_encoder_projection_index_is_the_number_of_downsampling_steps():
    assert openai_to_ours("encoders.2.level_blocks.1.model.2.bias") == "encoders.2.level_blocks.1.proj_out.bias"
    for level, downs in enumerate([3, 2, 2]):
        name = ours_to_openai(f"encoders.2.level_blocks.{level}.proj_out.weight", upsampler_file=False, res_downs_t=[3, 2, 2])
        assert name == f"encoders.2.level_blocks.{level}.model.{downs}.weight"
    with pytest.raises(ValueError, match="needs res_downs_t"):
        ours_to_openai("encoders.0.level_blocks.0.proj_out.weight", upsampler_file=False)


@pytest.mark.parametrize("name", [
    "prior.x_emb.bias", "encoders.0.level_blocks.0.model.01.0.weight", "decoders.0.level_blocks.0.model.0.0.weight",
    "conditioner_blocks.1.x_emb.weight", "prior.transformer._attn_mods.0.attn.c_attn.weight", "step",
])
def test_names_no_original_module_has_are_refused(name):
    with pytest.raises(ValueError, match="not a parameter name"):
        openai_to_ours(name)


def test_our_names_without_an_original_are_refused():
    for name in ("prior.fc_proj_out.bias", "decoders.0.level_blocks.0.upsample_block.0.weight", "vqvae.encoders.0"):
        with pytest.raises(ValueError, match="not a parameter name"):
            ours_to_openai(name, upsampler_file=True, res_downs_t=[3, 2, 2])


@pytest.mark.parametrize("variant", VARIANTS)
def test_round_trip_is_identity_on_every_key(variant, models_by_variant):
    config, model = models_by_variant[variant]
    downs = config.vqvae_config.res_downs_t
    originals: dict[str, set[str]] = {}
    for file, _, local in _local_keys(model.state_dict()):
        for upsampler_file in (True, False):
            original = ours_to_openai(local, upsampler_file=upsampler_file, res_downs_t=downs)
            assert openai_to_ours(original) == local
        original = ours_to_openai(local, upsampler_file=file.upsampler, res_downs_t=downs)
        assert original not in originals.setdefault(file.name, set()), original  # one original name per key
        originals[file.name].add(original)
    assert set(originals) == {f.name for f in openai_files(3)}


def _reference_name(name: str, upsampler_file: bool) -> str:
    """The renames convert_openai_checkpoint does before handing a name to fix_jukebox_keys."""
    if name.endswith(".b"):
        return name.replace("b", "bias")
    if name.endswith(".w"):
        return name.replace("w", "weight")
    if upsampler_file and "cond.model." in name:
        return name.replace(".blocks.", ".model.")
    return name


@pytest.mark.parametrize("variant", VARIANTS)
def test_reference_converter_maps_our_original_names_back(variant, models_by_variant):
    """transformers' converter, fed the names we write, produces our keys: the same original names."""
    config, model = models_by_variant[variant]
    state = model.state_dict()
    for file, key, local in _local_keys(state):
        name = _reference_name(ours_to_openai(local, upsampler_file=file.upsampler, res_downs_t=config.vqvae_config.res_downs_t),
                               file.upsampler)
        with contextlib.redirect_stdout(io.StringIO()) as log:
            converted = fix_jukebox_keys({name: state[key]}, state, file.prefix.rstrip("."), {})
        assert list(converted) == [local], (key, name, log.getvalue())


@pytest.mark.parametrize("preset", ["1b_lyrics", "5b", "5b_lyrics"])
def test_released_models_names_match_the_reference_converter(preset):
    """Every parameter of the released configs (built on the meta device) has one original name,
    which the reference converter turns back into our key."""
    config = load_preset(preset)
    with contextlib.redirect_stdout(io.StringIO()), torch.device("meta"):
        state = HFJukeboxModel(HFJukeboxConfig.from_dict(config.to_dict())).state_dict()
    originals = set()
    for file, key, local in _local_keys(state):
        name = ours_to_openai(local, upsampler_file=file.upsampler, res_downs_t=config.vqvae_config.res_downs_t)
        assert openai_to_ours(name) == local
        originals.add((file.name, name))
        with contextlib.redirect_stdout(io.StringIO()) as log:
            converted = fix_jukebox_keys({_reference_name(name, file.upsampler): state[key]}, state, file.prefix.rstrip("."), {})
        assert list(converted) == [local], (key, name, log.getvalue())
    assert len(originals) == len(state)


@pytest.mark.parametrize("variant", VARIANTS)
def test_our_model_expects_the_reference_keys_and_shapes(variant, models_by_variant):
    config, _ = models_by_variant[variant]
    assert openai_checkpoint.expected_shapes(config) == _hf_shapes(config)


# --------------------------------------------------------------------------- files
@pytest.mark.parametrize("variant", VARIANTS)
def test_original_files_load_into_every_tensor(variant, models_by_variant, tmp_path):
    config, model = models_by_variant[variant]
    paths = save_openai_checkpoint(model.state_dict(), str(tmp_path), config)
    assert sorted(paths) == sorted(f.name for f in openai_files(3))
    top = torch.load(paths["prior_level_2.pth.tar"], weights_only=True)["model"]
    merged_vocabulary = top["prior.x_emb.weight"].shape[0] > config.vqvae_config.nb_discrete_codes
    assert merged_vocabulary == (variant == "merged_lyrics")
    assert ("prime_state_proj.w" in top) == any(".c_enc_kv." in k for k in top) == (variant == "separate_encoder")
    stored = torch.load(paths["prior_level_0.pth.tar"], weights_only=True)["model"]
    assert any(".cond.model.1.0.blocks.0.model.1." in k for k in stored)  # upsampler layout of the released files
    _assert_same_tensors(load_openai_checkpoint(list(paths.values()), config), model.state_dict())
    by_role = {name.removesuffix(".pth.tar"): path for name, path in paths.items()}
    assert load_openai_checkpoint(by_role, config).keys() == model.state_dict().keys()


def _raise_if_unpickled():
    raise AssertionError("the checkpoint reader ran code named by the file")


class _Hparams:
    """Stands for the original's hyperparameter objects: no weights-only allowlist knows it."""

    def __init__(self):
        self.sr = 44100

    def __reduce__(self):
        return (_raise_if_unpickled, ())


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy-format", "zip-format"])
def test_entries_beside_the_weights_are_read_inertly(legacy, models_by_variant, tmp_path):
    config, model = models_by_variant["merged_lyrics"]
    paths = {}
    for name, tensors in to_openai_state_dicts(model.state_dict()).items():
        paths[name] = str(tmp_path / name)
        payload = {"hps": _Hparams(), "model": tensors, "opt": None, "step": 12, "loss": 1.5}
        torch.save(payload, paths[name], _use_new_zipfile_serialization=not legacy)
    _assert_same_tensors(load_openai_checkpoint(paths, config), model.state_dict())


def test_fsspec_urls(models_by_variant):
    config, model = models_by_variant["no_lyrics"]
    paths = save_openai_checkpoint(model.state_dict(), "memory://openai-checkpoint-test", config)
    assert all(path.startswith("memory://") for path in paths.values())
    _assert_same_tensors(load_openai_checkpoint(paths, config), model.state_dict())


# --------------------------------------------------------------------------- errors
@pytest.fixture
def written(models_by_variant, tmp_path):
    config, model = models_by_variant["merged_lyrics"]
    return config, save_openai_checkpoint(model.state_dict(), str(tmp_path), config)


def _rewrite(path, edit):
    payload = torch.load(path, weights_only=True)
    edit(payload["model"])
    torch.save(payload, path)


def test_missing_file_is_named(written):
    config, paths = written
    os.remove(paths["prior_level_1.pth.tar"])
    with pytest.raises(FileNotFoundError, match="prior_level_1.pth.tar"):
        load_openai_checkpoint(paths, config)


def test_file_without_model_entry_is_named(written):
    config, paths = written
    torch.save({"state_dict": {}, "step": 3}, paths["vqvae.pth.tar"])
    with pytest.raises(CheckpointError, match=r"vqvae.pth.tar.*'model'.*\['state_dict', 'step'\]"):
        load_openai_checkpoint(paths, config)


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy-format", "zip-format"])
def test_truncated_file_is_named(legacy, written):
    config, paths = written
    path = paths["prior_level_2.pth.tar"]
    torch.save(torch.load(path, weights_only=True), path, _use_new_zipfile_serialization=not legacy)
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="prior_level_2.pth.tar.*as a PyTorch checkpoint"):
        load_openai_checkpoint(paths, config)


def test_all_mismatches_in_one_error(written, models_by_variant):
    config, paths = written
    embeddings = tuple(models_by_variant["merged_lyrics"][1].state_dict()["priors.0.prior.embed_tokens.weight"].shape)

    def edit(state):
        state["prior.some_new_layer.weight"] = torch.zeros(3)
        state["prior.x_emb.weight"] = torch.zeros(7, 64)
        # (prior.x_out.weight is this tied prior's x_emb.weight under another name: not needed)
        del state["prior.transformer._attn_mods.1.mlp.c_fc.w"]

    _rewrite(paths["prior_level_2.pth.tar"], edit)
    _rewrite(paths["vqvae.pth.tar"], lambda s: s.__setitem__("encoders.0.level_blocks.0.model.4.bias", s.pop("encoders.0.level_blocks.0.model.3.bias")))
    with pytest.raises(CheckpointError) as caught:
        load_openai_checkpoint(paths, config)
    message = str(caught.value)
    prior_file, vqvae_file = paths["prior_level_2.pth.tar"], paths["vqvae.pth.tar"]
    assert f"2 missing keys:\n  priors.0.prior.transformer._attn_mods.1.mlp.c_fc.weight " \
           f"(expected as 'prior.transformer._attn_mods.1.mlp.c_fc.w' in {prior_file})" in message
    assert f"vqvae.encoders.0.level_blocks.0.proj_out.bias (expected as 'encoders.0.level_blocks.0.model.3.bias' in {vqvae_file})" in message
    assert f"'prior.some_new_layer.weight' in {prior_file}: 'prior.some_new_layer.weight' is not a parameter name" in message
    assert f"'encoders.0.level_blocks.0.model.4.bias' in {vqvae_file}: would be vqvae.encoders.0.level_blocks.0.proj_out.bias, " \
           "which this config stores as 'encoders.0.level_blocks.0.model.3.bias'" in message
    assert f"priors.0.prior.embed_tokens.weight from 'prior.x_emb.weight' in {prior_file}: file has (7, 64), " \
           f"the config describes {embeddings}" in message


def test_key_of_another_model_is_unexpected(written):
    config, paths = written
    _rewrite(paths["prior_level_2.pth.tar"], lambda s: s.__setitem__("prime_state_ln.weight", torch.zeros(64)))
    with pytest.raises(CheckpointError, match=r"1 unexpected keys:\n  'prime_state_ln.weight' in .*prior_level_2.pth.tar: "
                                              r"maps to priors.0.encoder.final_layer_norm.weight, which this config does not have"):
        load_openai_checkpoint(paths, config)


def test_either_resnet_layout_is_read_but_not_both(written, models_by_variant):
    config, paths = written
    path = paths["prior_level_1.pth.tar"]
    renamed = {k: k.replace(".blocks.", ".model.") for k in read_original_state_dict(path)}
    _rewrite(path, lambda s: s.update({renamed[k]: s.pop(k) for k in list(s)}))
    _assert_same_tensors(load_openai_checkpoint(paths, config), models_by_variant["merged_lyrics"][1].state_dict())
    _rewrite(path, lambda s: s.update({k.replace(".model.0.model.", ".blocks.0.model."): v.clone()
                                       for k, v in list(s.items()) if "cond.model.1.0.model.0.model" in k}))
    with pytest.raises(CheckpointError, match="a second copy of priors.1.conditioner_blocks.upsampler"):
        load_openai_checkpoint(paths, config)


def test_paths_must_name_the_files(written):
    config, paths = written
    with pytest.raises(ValueError, match=r"no path given for \['prior_level_0.pth.tar'\]"):
        load_openai_checkpoint([p for n, p in paths.items() if n != "prior_level_0.pth.tar"], config)
    with pytest.raises(ValueError, match="unexpected checkpoint files.*'prior_level_7.pth.tar'"):
        load_openai_checkpoint({**paths, "prior_level_7": paths["vqvae.pth.tar"]}, config)


# --------------------------------------------------------------------------- conversion script
def test_convert_script_output_loads_in_transformers(tmp_path):
    hf_config = _hf_config(_preset_dict("tiny"))
    with contextlib.redirect_stdout(io.StringIO()):
        model = HFJukeboxModel(hf_config).eval()
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.normal_()
    save_openai_checkpoint(model.state_dict(), str(tmp_path / "original"), JukeboxConfig.from_dict(hf_config.to_dict()))
    out = tmp_path / "converted"
    args = ["--dir", str(tmp_path / "original"), "--preset", "tiny", "--out", str(out), "--max-shard-size", "3MB"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert convert_checkpoint.main(args) == 0
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tokenizer_config["version"] == ["v3", "v2", "v2"]
    assert all((out / name).is_file() for name in ("artists.json", "genres.json", "lyrics.json"))
    with contextlib.redirect_stdout(io.StringIO()):
        reloaded = HFJukeboxModel.from_pretrained(str(out))
    _assert_same_tensors(reloaded.state_dict(), model.state_dict())


def test_convert_script_with_config_file_and_dtype(models_by_variant, tmp_path):
    config, model = models_by_variant["separate_encoder"]
    paths = save_openai_checkpoint(model.state_dict(), str(tmp_path / "original"), config)
    config.save_pretrained(str(tmp_path / "config"))
    priors = [paths[f"prior_level_{k}.pth.tar"] for k in range(3)]
    args = ["--vqvae", paths["vqvae.pth.tar"], "--priors", *priors, "--config", str(tmp_path / "config" / "config.json"),
            "--out", str(tmp_path / "converted"), "--dtype", "bfloat16"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert convert_checkpoint.main(args) == 0
    # the upsamplers' output projections are their token embeddings (merged_decoder=False): stored once
    tied = tied_aliases(model)
    assert set(tied) == {f"priors.{i}.prior.fc_proj_out.weight" for i in (1, 2)}
    want = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items() if k not in tied}
    _assert_same_tensors(read_state_dict(str(tmp_path / "converted")), want)
    assert JukeboxConfig.from_pretrained(str(tmp_path / "converted")).to_dict() == config.to_dict()
    assert not (tmp_path / "converted" / "tokenizer_config.json").exists()
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        convert_checkpoint.main([*args[:2], "--priors", *reversed(priors), *args[6:]])


def test_file_that_is_not_a_torch_checkpoint_is_named(tmp_path):
    path = tmp_path / "vqvae.pth.tar"
    path.write_bytes(pickle.dumps("not a checkpoint", protocol=2) + b"garbage")
    with pytest.raises(CheckpointError, match="vqvae.pth.tar"):
        read_original_state_dict(str(path))
