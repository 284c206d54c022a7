"""Stage builders: a preset and the checkpoint saved from it give the same stages."""
from __future__ import annotations

import numpy as np
import torch

from models.loading import load_model
from models.presets import preset_tokenizer_settings
from models.tokenizer import JukeboxTokenizer
from pipeline.actors import builders
from pipeline.run.spec import SAMPLING_STAGES, Stage
from stages.tokenize import Conditioning


def test_checkpoint_and_preset_build_the_same_stages(tmp_path):
    model = load_model("tiny", init_seed=3, weights="random")  # seeded random weights, handed on by the builders
    model.save_pretrained(str(tmp_path / "ckpt"))
    JukeboxTokenizer(**preset_tokenizer_settings("tiny")).save_pretrained(str(tmp_path / "ckpt"))
    source = str(tmp_path / "ckpt")
    assert builders.model_config(source).to_dict() == builders.model_config("tiny").to_dict()
    device = torch.device("cpu")
    for level in (2, 0):
        ours = builders.build_prior_stage(source, level, device, 2, init_seed=0).prior.state_dict()
        preset = builders.build_prior_stage("tiny", level, device, 2, init_seed=3, weights="random").prior.state_dict()
        assert ours.keys() == preset.keys()
        assert all(torch.equal(ours[k], preset[k]) for k in ours)
    decoded = builders.build_decode_stage(source, device, 1, init_seed=0).vqvae.state_dict()
    saved = model.vqvae.state_dict()
    assert decoded.keys() == saved.keys() and all(torch.equal(decoded[k], saved[k]) for k in saved)
    song = Conditioning("Alan Jackson", ("country",), "old town road")
    labels = builders.build_tokenize_stage(source).labels(song)
    expected = builders.build_tokenize_stage("tiny").labels(song)
    assert labels.keys() == expected.keys() and all(np.array_equal(labels[k], expected[k]) for k in expected)


def test_factories_cover_every_stage():
    factories = builders.stage_factories("tiny", 0)
    assert set(factories) == set(Stage)
    stage = factories[SAMPLING_STAGES[0]](torch.device("cpu"), 3)
    assert stage.max_batch == 3
