"""Files as the original OpenAI code writes them, converted and run.

The fixtures here are written by this test, the way ``jukebox/make_models.py`` saves a model and
independently of our writer: ``torch.save({"hps": ..., "model": model.state_dict(), "opt": None,
"step": 0})`` in the legacy (pre-zip) serialization; ``model.state_dict()`` of a prior with
``merged_decoder=False`` gives ``prior.x_out.weight`` and ``prior.x_emb.weight`` as two views of
ONE storage; the 5b top priors (``fp16_params=True``) hold float16 tensors. Each file set is
converted with ``jukebox-convert`` (:mod:`models.convert`) at three dtypes, and the converted model is run
against the model the files came from, cast to the same dtype: teacher-forced logits and a greedy
window of every prior.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from models.checkpoint import assign_state_dict
from models.config import JukeboxConfig
from models.jukebox import JukeboxModel
from models.openai_checkpoint import (
    load_openai_checkpoint,
    openai_files,
    ours_to_openai,
    read_original_state_dict,
    save_openai_checkpoint,
)
from models.presets import load_preset
from models.prior import SamplingOptions
from models import convert as convert_checkpoint
from tests.models.prior import make_labels, random_tokens

logging.getLogger("transformers").setLevel(logging.ERROR)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
TOTAL_LENGTH = 3 * 128 * 128  # samples: a song of three top-level windows


def _kind_config(kind: str) -> JukeboxConfig:
    """The tiny preset (1b_lyrics' structure) with the top prior of one released kind."""
    data = load_preset("tiny").to_dict()
    top = data["prior_config_list"][0]
    if kind == "separate_lyrics":  # 5b_lyrics: lyrics encoder read by cross attention, merged_decoder=True
        top.update(attention_pattern="large_separated_enc_dec_w_lyrics", is_encoder_decoder=False, num_layers=20,
                   merged_decoder=True, max_nb_genres=5,
                   encoder_config=dict(level=0, n_ctx=32, hidden_size=32, num_layers=3, n_heads=2, blocks=8,
                                       attention_pattern="raw_column_previous_row_attention", is_encoder_decoder=False,
                                       nb_relevant_lyric_tokens=0, lyric_vocab_size=80, music_vocab_size=256))
        top.update(lyric_vocab_size=80)
    elif kind == "no_lyrics":  # 5b: no lyrics, merged_decoder=True
        top.update(attention_pattern="raw_column_previous_row_attention", is_encoder_decoder=False, merged_decoder=True,
                   nb_relevant_lyric_tokens=0, num_layers=3, metadata_dims=[120, 4111], max_nb_genres=5)
    else:
        assert kind == "merged_lyrics", kind  # 1b_lyrics: the tiny preset as it is
    return JukeboxConfig.from_dict(data)


KINDS = ("merged_lyrics", "separate_lyrics", "no_lyrics")
FP16_TOP = {"separate_lyrics", "no_lyrics"}  # the 5b top priors were saved with fp16_params=True


def _source_model(kind: str, seed: int) -> JukeboxModel:
    """Our model of that kind with seeded, well-scaled weights in every parameter and codebook."""
    model = JukeboxModel(_kind_config(kind)).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            noise = torch.randn(tensor.shape, generator=generator)
            tensor.copy_(1.0 + 0.1 * noise if "norm" in name and name.endswith("weight") else 0.2 * noise)
    return model


def _write_like_the_original(model: JukeboxModel, directory: Path, fp16_top: bool) -> None:
    """The four files as the original's ``save_checkpoint`` writes them (see the module docstring)."""
    config = model.config
    directory.mkdir(parents=True)
    for file in openai_files(config.nb_priors):
        module = model.vqvae if file.prefix == "vqvae." else model.priors[int(file.prefix.split(".")[1])]
        half = fp16_top and file.prefix == "priors.0."
        state = OrderedDict()
        # keep_vars: the Parameters themselves, so a tied pair is one object, as in the original
        # module; each entry is then detached like nn.Module.state_dict() does (views, one storage)
        storages: dict[int, torch.Tensor] = {}
        for key, tensor in module.state_dict(keep_vars=True).items():
            if id(tensor) not in storages:
                storages[id(tensor)] = tensor.detach().half() if half and tensor.is_floating_point() else tensor.detach()
            name = ours_to_openai(key, upsampler_file=file.upsampler, res_downs_t=config.vqvae_config.res_downs_t)
            state[name] = storages[id(tensor)].detach()
        hps = {"level": int(file.name[len("prior_level_")]) if file.name.startswith("prior") else None,
               "l_bins": config.vqvae_config.nb_discrete_codes, "fp16_params": half, "sr": 44100}
        torch.save({"hps": hps, "model": state, "opt": None, "step": 0}, directory / file.name,
                   _use_new_zipfile_serialization=False)


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """kind -> (source model as the files hold it, directory of the original files)."""
    out = {}
    for seed, kind in enumerate(KINDS):
        model = _source_model(kind, seed)
        directory = tmp_path_factory.mktemp("original") / kind
        _write_like_the_original(model, directory, kind in FP16_TOP)
        if kind in FP16_TOP:  # what the files hold: the top prior rounded to float16
            model.priors[0].half()
        out[kind] = (model, directory)
    return out


def test_fixture_files_are_what_the_original_writes(originals):
    _, directory = originals["merged_lyrics"]
    for name in ("vqvae.pth.tar", "prior_level_0.pth.tar", "prior_level_2.pth.tar"):
        raw = (directory / name).read_bytes()
        assert not raw.startswith(b"PK\x03\x04")  # legacy serialization, not a zip archive
        payload = torch.load(directory / name, map_location="cpu", weights_only=True)
        assert sorted(payload) == ["hps", "model", "opt", "step"]
    upsampler = torch.load(directory / "prior_level_0.pth.tar", weights_only=True)["model"]
    x_out, x_emb = upsampler["prior.x_out.weight"], upsampler["prior.x_emb.weight"]
    assert x_out.untyped_storage().data_ptr() == x_emb.untyped_storage().data_ptr()  # one storage in the pickle
    top_5b = torch.load(originals["no_lyrics"][1] / "prior_level_2.pth.tar", weights_only=True)["model"]
    assert {t.dtype for t in top_5b.values()} == {torch.float16}
    assert top_5b["prior.x_out.weight"].untyped_storage().data_ptr() != top_5b["prior.x_emb.weight"].untyped_storage().data_ptr()


def _convert(directory: Path, config: JukeboxConfig, out: Path, dtype: str, preset: str | None = None) -> Path:
    args = ["--dir", str(directory), "--out", str(out), "--dtype", dtype, "--max-shard-size", "2MB"]
    if preset:
        args += ["--preset", preset]
    else:
        config.save_pretrained(str(out.parent / f"{out.name}-config"))
        args += ["--config", str(out.parent / f"{out.name}-config" / "config.json")]
    with contextlib.redirect_stdout(io.StringIO()):
        assert convert_checkpoint.main(args) == 0
    return out


def _stored_keys(directory: Path) -> set[str]:
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    keys = set()
    for shard in set(index["weight_map"].values()):
        with safe_open(str(directory / shard), framework="pt") as handle:
            keys.update(handle.keys())
    assert keys == set(index["weight_map"])
    return keys


def _cast(model: JukeboxModel, dtype: torch.dtype) -> JukeboxModel:
    """The source model cast to ``dtype`` (a copy, ties kept)."""
    with torch.device("meta"):
        copy = JukeboxModel(model.config)
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    return assign_state_dict(copy, state, "source").eval()


def _window_inputs(prior, seed: int):
    labels = make_labels(prior, 2, n_lyrics=40, seed=seed)
    start = prior.n_ctx  # the second window of the song
    metadata = prior.get_metadata(labels, start, TOTAL_LENGTH, 0)
    upper = None
    if prior.level:
        upper = random_tokens(2, prior.n_ctx // prior.cond_downsample, prior.config.music_vocab_size, seed + 1)
    return labels, start, metadata, upper


def _logits_and_greedy(prior, seed: int):
    """(teacher-forced logits of a window, 24 greedy tokens after 8 of context) of one prior."""
    labels, start, metadata, upper = _window_inputs(prior, seed)
    tokens = random_tokens(2, prior.n_ctx, prior.config.music_vocab_size, seed + 2)
    with torch.no_grad():
        _, metrics = prior.forward_tokens(tokens, [] if upper is None else [upper], metadata, get_preds=True)
    greedy = prior.sample_window(labels, tokens[:, :8], upper, start, 24, TOTAL_LENGTH, [seed, seed + 1],
                                 SamplingOptions(top_k=1))
    return metrics["preds"].float(), greedy


@pytest.mark.slow
@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("kind", KINDS)
def test_converted_original_files_compute_like_their_source(kind, dtype, originals, tmp_path):
    source, directory = originals[kind]
    preset = "tiny" if kind == "merged_lyrics" else None
    out = _convert(directory, source.config, tmp_path / "converted", dtype, preset)
    converted = JukeboxModel.from_pretrained(str(out))
    reference = _cast(source, DTYPES[dtype])
    # every tied weight is stored once and comes back tied
    stored = _stored_keys(out)
    for index, prior in enumerate(converted.priors):
        tied = not source.config.shared_prior_config(index).merged_decoder
        assert (prior.prior.fc_proj_out.weight is prior.prior.embed_tokens.weight) is tied
        assert (f"priors.{index}.prior.fc_proj_out.weight" in stored) is not tied
        assert {t.dtype for t in prior.parameters()} == {DTYPES[dtype]}
    for index, (ours, theirs) in enumerate(zip(converted.priors, reference.priors)):
        logits, greedy = _logits_and_greedy(ours, seed=10 * index)
        want_logits, want_greedy = _logits_and_greedy(theirs, seed=10 * index)
        assert (logits - want_logits).abs().max().item() == 0.0, f"prior {index}"
        assert torch.equal(greedy, want_greedy), f"prior {index}"
    codes = torch.randint(0, 256, (1, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(converted.decode([codes], start_level=0), reference.decode([codes], start_level=0))


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_converted_original_files_load_and_compute_in_transformers(kind, originals, tmp_path):
    """The float32 conversion in the reference: tied projections tied there too, same logits."""
    from transformers import JukeboxModel as HFJukeboxModel
    from tests.models.prior.test_parity import reference_logits

    source, directory = originals[kind]
    out = _convert(directory, source.config, tmp_path / "converted", "float32")
    with contextlib.redirect_stdout(io.StringIO()):
        theirs = HFJukeboxModel.from_pretrained(str(out)).eval()
    ours = JukeboxModel.from_pretrained(str(out))
    for index, (prior, reference) in enumerate(zip(ours.priors, theirs.priors)):
        tied = not source.config.shared_prior_config(index).merged_decoder
        shares = reference.prior.fc_proj_out.weight.data_ptr() == reference.prior.embed_tokens.weight.data_ptr()
        assert shares is tied
        labels, _, metadata, upper = _window_inputs(prior, seed=index)
        tokens = random_tokens(2, prior.n_ctx, prior.config.music_vocab_size, index)
        with torch.no_grad():
            got = prior.forward_tokens(tokens, [] if upper is None else [upper], metadata, get_preds=True)[1]["preds"]
        want = reference_logits(reference, tokens, None if upper is None else [upper], metadata)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_save_openai_checkpoint_writes_the_original_format(originals, tmp_path):
    source, directory = originals["merged_lyrics"]
    paths = save_openai_checkpoint(source.state_dict(), str(tmp_path / "ours"), source.config)
    for name, path in paths.items():
        raw = Path(path).read_bytes()
        assert not raw.startswith(b"PK\x03\x04"), name
        payload = torch.load(path, map_location="cpu", weights_only=True)
        assert payload["opt"] is None and payload["step"] == 0 and isinstance(payload["hps"], dict)
        theirs = torch.load(directory / name, map_location="cpu", weights_only=True)["model"]
        assert list(payload["model"]) == list(theirs), name  # same names, in the original's order
        for key, tensor in theirs.items():
            assert torch.equal(payload["model"][key], tensor), (name, key)
    upsampler = torch.load(paths["prior_level_1.pth.tar"], weights_only=True)
    assert upsampler["hps"]["level"] == 1 and upsampler["hps"]["merged_decoder"] is False
    assert upsampler["model"]["prior.x_out.weight"].untyped_storage().data_ptr() == \
        upsampler["model"]["prior.x_emb.weight"].untyped_storage().data_ptr()
    state = load_openai_checkpoint(paths, source.config)
    assert all(torch.equal(state[k], v) for k, v in source.state_dict().items())


def test_a_tie_that_contradicts_merged_decoder_is_named(originals, tmp_path):
    """The presets' old mistake: a tied upsampler file read with merged_decoder=True."""
    source, directory = originals["merged_lyrics"]
    data = source.config.to_dict()
    data["prior_config_list"][2]["merged_decoder"] = True
    wrong = JukeboxConfig.from_dict(data)
    files = {f.name: str(directory / f.name) for f in openai_files(3)}
    with pytest.raises(ValueError, match=r"prior_level_0.pth.tar.*same tensor as.*merged_decoder=True.*set it to false"):
        load_openai_checkpoint(files, wrong)
    # and an untied file (5b top prior) read with merged_decoder=False
    source, directory = originals["no_lyrics"]
    data = source.config.to_dict()
    data["prior_config_list"][0]["merged_decoder"] = False
    files = {f.name: str(directory / f.name) for f in openai_files(3)}
    with pytest.raises(ValueError, match=r"prior.x_out.weight.*differs from.*merged_decoder=False"):
        load_openai_checkpoint(files, JukeboxConfig.from_dict(data))


def _hyperparams_module() -> types.ModuleType:
    """A stand-in of the original's ``jukebox.hparams`` module with its ``Hyperparams`` (a dict
    with attribute access), so that files can be pickled as the original pickles them."""
    module = types.ModuleType("jukebox.hparams")

    class Hyperparams(dict):
        def __getattr__(self, attr):
            return self[attr]

        def __setattr__(self, attr, value):
            self[attr] = value

    Hyperparams.__module__, Hyperparams.__qualname__ = module.__name__, "Hyperparams"
    module.Hyperparams = Hyperparams
    return module


def test_hparams_saved_as_the_originals_hyperparams_object_are_read(originals, tmp_path, monkeypatch):
    """Files whose ``hps`` is the original's dict subclass, not a plain dict, convert all the same."""
    source, directory = originals["merged_lyrics"]
    module = _hyperparams_module()
    monkeypatch.setitem(sys.modules, "jukebox", types.ModuleType("jukebox"))
    monkeypatch.setitem(sys.modules, "jukebox.hparams", module)
    for file in openai_files(3):
        payload = torch.load(directory / file.name, weights_only=True)
        payload["hps"] = module.Hyperparams(payload["hps"], l_bins=256, sr=44100)
        torch.save(payload, tmp_path / file.name, _use_new_zipfile_serialization=False)
    monkeypatch.delitem(sys.modules, "jukebox.hparams")  # the reader has no such module
    monkeypatch.delitem(sys.modules, "jukebox")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "vqvae.pth.tar", weights_only=True)  # weights-only refuses the class
    out = _convert(tmp_path, source.config, tmp_path / "converted", "float32", "tiny")
    converted = JukeboxModel.from_pretrained(str(out))
    for key, tensor in source.state_dict().items():
        assert torch.equal(converted.state_dict()[key], tensor), key


def test_original_hparams_beside_the_weights_are_ignored(originals):
    _, directory = originals["merged_lyrics"]
    state = read_original_state_dict(str(directory / "prior_level_2.pth.tar"))
    assert "prior.x_emb.weight" in state and not {"hps", "opt", "step"} & set(state)
