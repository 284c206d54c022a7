"""The trained weights shipped for the tiny preset: what loads them, what asks for random ones,
and the file itself (float16, small, made for this preset's config)."""
from __future__ import annotations

import logging

import pytest
import torch

from models import JukeboxModel, JukeboxPrior, JukeboxVQVAE
from models.checkpoint import tied_aliases
from models.config import JukeboxConfig
from models.loading import load_model, load_prior, load_vqvae
from models.presets import load_preset
from models.shipped import (
    STORED_DTYPE,
    Weights,
    describe_weights,
    presets_with_weights,
    read_shipped_state,
    shipped_metadata,
    shipped_weights_file,
    uses_shipped_weights,
    weights_tag,
)

MAX_BYTES = 10 * 10**6


def test_the_tiny_preset_ships_small_float16_weights_for_its_own_config():
    path = shipped_weights_file("tiny")
    assert path is not None and presets_with_weights() == ["tiny"]
    assert path.stat().st_size <= MAX_BYTES
    stored = read_shipped_state("tiny", dtype=STORED_DTYPE)
    assert {t.dtype for t in stored.values()} == {torch.float16}
    metadata = shipped_metadata("tiny")
    assert metadata["preset"] == "tiny" and metadata["format"].startswith("jukebox-shipped-weights/")
    # trained for this very architecture: a changed preset needs the recipe run again
    assert JukeboxConfig.from_dict(metadata["config"]).to_dict() == load_preset("tiny").to_dict()
    with torch.device("meta"):
        model = JukeboxModel(load_preset("tiny"))
    aliases = tied_aliases(model)
    assert aliases and not set(aliases) & set(stored)  # each tied weight stored once
    assert set(stored) | set(aliases) == set(model.state_dict())
    for key in ("recipe", "metrics"):
        assert metadata[key], key


def test_every_way_of_loading_tiny_gives_the_shipped_weights():
    stored = read_shipped_state("tiny")
    whole = load_model("tiny").state_dict()
    assert all(torch.equal(whole[k], v) and whole[k].dtype == torch.float32 for k, v in stored.items())
    assert all(torch.equal(a, b) for a, b in zip(JukeboxModel.from_pretrained("tiny").state_dict().values(), whole.values()))
    vqvae = JukeboxVQVAE.from_pretrained("tiny").state_dict()
    assert all(torch.equal(whole[f"vqvae.{k}"], v) for k, v in vqvae.items())
    for level in range(3):
        prior = JukeboxPrior.from_pretrained("tiny", level=level).state_dict()
        assert all(torch.equal(whole[f"priors.{level}.{k}"], v) for k, v in prior.items())
        tied = load_prior("tiny", level)
        assert tied.prior.fc_proj_out.weight is tied.prior.embed_tokens.weight  # the tie survives loading
    assert load_vqvae("tiny", dtype=torch.float16).bottleneck.level_blocks[0].codebook.dtype == torch.float16


def test_random_weights_on_request_seeded_as_before():
    shipped = load_prior("tiny", 0).state_dict()
    random3 = load_prior("tiny", 0, init_seed=3, weights="random").state_dict()
    again = load_prior("tiny", 0, init_seed=3, weights=Weights.RANDOM).state_dict()
    other = load_prior("tiny", 0, init_seed=4, weights="random").state_dict()
    assert all(torch.equal(random3[k], again[k]) for k in random3)
    assert not all(torch.equal(random3[k], other[k]) for k in random3)
    assert not all(torch.equal(random3[k], shipped[k]) for k in random3)
    whole = load_model("tiny", init_seed=3, weights="random").state_dict()
    assert all(torch.equal(whole[f"priors.0.{k}"], v) for k, v in random3.items())
    with pytest.raises(ValueError, match=r"weights='trained': expected one of \['default', 'random'\]"):
        load_vqvae("tiny", weights="trained")


def test_which_weights_is_said_and_fingerprinted(caplog):
    assert uses_shipped_weights("tiny") and not uses_shipped_weights("tiny", "random")
    assert not uses_shipped_weights("1b_lyrics")  # the release presets ship none: random, and said so
    assert weights_tag("tiny", "default", 0).startswith("shipped:tiny:")
    assert weights_tag("tiny", "random", 5) == "random:init_seed=5" == weights_tag("1b_lyrics", "default", 5)
    assert weights_tag("/models/x", "random", 0) == "checkpoint:/models/x"
    assert "trained weights shipped" in describe_weights("tiny", "default", 0)
    assert "RANDOM weights" in describe_weights("tiny", "random", 0)
    assert "ships no trained weights" in describe_weights("1b_lyrics", "default", 0)
    with caplog.at_level(logging.INFO, logger="models.loading"):
        JukeboxVQVAE.from_pretrained("tiny")
    assert "trained weights shipped in the package" in caplog.text
