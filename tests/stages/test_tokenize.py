"""TokenizeStage: the tokenizer's per-prior labels keyed by VQ-VAE level."""
from __future__ import annotations

import numpy as np
import pytest

from models.presets import preset_tokenizer_settings
from models.tokenizer import JukeboxTokenizer
from stages.tokenize import Conditioning, TokenizeStage


def test_labels_by_level():
    tokenizer = JukeboxTokenizer(**preset_tokenizer_settings("tiny"))
    stage = TokenizeStage(tokenizer, 3)
    song = Conditioning("Alan Jackson", ("country",), "old town road")
    labels = stage.labels(song)
    per_prior = tokenizer("Alan Jackson", ["country"], "old town road", return_tensors="np")["input_ids"]
    assert sorted(labels) == [0, 1, 2]
    for index, ids in enumerate(per_prior):
        np.testing.assert_array_equal(labels[2 - index], ids[0])
        assert labels[2 - index].dtype == np.int64
    # Only the top level carries lyrics.
    assert len(labels[2]) > len(labels[1]) == len(labels[0])


def test_level_count_must_match():
    with pytest.raises(ValueError, match="3 priors, the model has 2"):
        TokenizeStage(JukeboxTokenizer(), 2)
