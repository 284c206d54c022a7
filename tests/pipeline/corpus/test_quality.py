"""The shipped default model learned the corpus: measured on held-out corpus songs (never trained
on) and on songs it samples, against the same model with random weights. Margins, not values: a
retrained model passes too (the recipe's figures vary a little between machines)."""
from __future__ import annotations

import math

import pytest
import torch

from models.loading import load_model
from models.tokenizer import JukeboxTokenizer
from pipeline.corpus.heldout import heldout_songs
from pipeline.corpus.quality import SamplingRequest, conditioning_figures, heldout_figures, temperature_figures

pytestmark = pytest.mark.slow  # a model's worth of encoding and sampling per check


@pytest.fixture(scope="module")
def tokenizer():
    return JukeboxTokenizer.from_pretrained("tiny")


@pytest.fixture(scope="module")
def trained():
    return load_model("tiny")


@pytest.fixture(scope="module")
def heldout():
    return heldout_songs(per_style=1, seconds=4.0)  # one per style: the margins are wide


@pytest.fixture(scope="module")
def figures(trained, tokenizer, heldout):
    random = load_model("tiny", weights="random")
    return heldout_figures(trained, tokenizer, heldout), heldout_figures(random, tokenizer, heldout)


def test_the_vqvae_reconstructs_held_out_songs(figures):
    """Every level reconstructs held-out songs (random weights: at most ~0 dB), the finest best."""
    ours, random = figures
    assert all(snr > 3.0 for snr in ours["snr_db"]), ours["snr_db"]
    assert all(snr < 1.0 for snr in random["snr_db"]), random["snr_db"]
    assert ours["snr_db"][0] > ours["snr_db"][-1], "the finest level keeps the most"


def test_every_prior_predicts_held_out_tokens_far_better_than_chance(figures):
    """Cross-entropy well under log(codebook size), the uniform guess that random weights score."""
    ours, random = figures
    log_v = math.log(256)
    assert ours["log_codebook"] == pytest.approx(log_v, abs=1e-3)
    assert all(ce < 0.8 * log_v for ce in ours["cross_entropy"]), ours["cross_entropy"]
    assert all(ce > 0.9 * log_v for ce in random["cross_entropy"]), random["cross_entropy"]


def test_the_genre_decides_what_is_sampled(trained, tokenizer, heldout):
    """Songs sampled as country and as jazz fall on their style's side of a pitch threshold that
    was fixed on held-out songs before sampling (the bench measures 16 + 16 songs)."""
    torch.set_num_threads(1)
    result = conditioning_figures(trained, tokenizer, heldout, n_per_style=6, request=SamplingRequest(seconds=1.5, batch=6))
    assert result["accuracy"] >= 0.75, result


def test_a_lower_temperature_samples_fewer_distinct_tokens(trained, tokenizer):
    result = temperature_figures(trained, tokenizer, n_songs=8, request=SamplingRequest(seconds=2.0, batch=8))
    low, high = result["entropy"]["0.5"], result["entropy"]["1.2"]
    assert low < high - 0.1, result
