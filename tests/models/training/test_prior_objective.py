"""Each prior variant's objective: losses fall, tied heads stay tied, windows carry their conditioning."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from models.config import JukeboxPriorConfig
from models.prior import JukeboxPrior
from models.training import CropSampler, OptimizerSettings, PriorObjective, TokenSong, prior_inputs, step_seed, train_step
from tests.models.prior import COMMON, VARIANTS

# (variant, merged_decoder): the 1b_lyrics merged top prior (tied as released, or not), the 5b_lyrics top prior with its own
# lyrics encoder, the 5b top prior, and upsamplers with the output head tied to the embedding
# (merged_decoder=False, as released) or not.
CASES = [("merged_lyrics", True), ("merged_lyrics", False), ("separate_lyrics", False), ("no_lyrics", True), ("upsampler_1", False), ("upsampler_2", True)]


def build_prior(variant: str, merged_decoder: bool, seed: int = 0) -> JukeboxPrior:
    config = {**copy.deepcopy(COMMON), **copy.deepcopy(VARIANTS[variant]), "merged_decoder": merged_decoder}
    torch.manual_seed(seed)
    return JukeboxPrior(JukeboxPriorConfig.from_dict(config), level=config["level"]).train()


def corpus(prior: JukeboxPrior, n_songs: int = 3, top_tokens: int = 100) -> list[TokenSong]:
    """Songs whose tokens follow a per-song arithmetic pattern (learnable from the previous
    token), with per-song artist, genre and lyrics."""
    vocab = prior.config.music_vocab_size
    ratio = prior.cond_downsample or 1
    n = top_tokens * int(np.prod(prior.downsamples)) // prior.raw_to_tokens  # this level's tokens
    songs = []
    for index in range(n_songs):
        tokens = (np.arange(n) * (index + 3) + 5 * index) % vocab
        upper = (np.arange(n // ratio) * (index + 1)) % vocab if prior.level else None
        lyrics = np.random.default_rng(index).integers(1, prior.config.lyric_vocab_size, 30) if prior.lyric_conditioning else []
        genres = [index % prior.config.metadata_dims[0]] + [-1] * (prior.config.max_nb_genres - 1)
        labels = np.array([0, 0, 0, index + 1, *genres, *lyrics], dtype=np.int64)
        songs.append(TokenSong(tokens.astype(np.int32), None if upper is None else upper.astype(np.int32), labels, n * prior.raw_to_tokens))
    return songs


@pytest.mark.parametrize("variant,merged_decoder", CASES, ids=[f"{v}-{'merged' if m else 'tied'}" for v, m in CASES])
def test_loss_falls_and_tied_heads_stay_tied(variant, merged_decoder):
    prior = build_prior(variant, merged_decoder)
    songs = corpus(prior)
    sampler = CropSampler(tuple(len(s.tokens) for s in songs), prior.n_ctx, prior.cond_downsample or 1)
    objective = PriorObjective(prior)
    settings = OptimizerSettings(lr=1e-2)
    optimizer = settings.build(objective.parameters())
    tied = not merged_decoder
    assert (prior.prior.fc_proj_out.weight is prior.prior.embed_tokens.weight) == tied
    n_unique = len({id(p) for p in prior.parameters()})
    assert sum(len(g["params"]) for g in optimizer.param_groups) == n_unique
    losses = []
    for step in range(60):
        torch.manual_seed(step_seed(0, step))
        inputs = prior_inputs(prior, songs, sampler.draw(0, step, 4))
        result = train_step(objective, optimizer, inputs, lr=settings.learning_rate(step), grad_clip=1.0)
        losses.append(float(result.loss))
        metrics = result.metrics
        n_lyrics, total = prior.nb_relevant_lyric_tokens, prior.total_loss_dims
        expected = (prior.encoder_loss_fraction * metrics["lyric_bits_per_token"] * n_lyrics + metrics["bits_per_token"] * prior.n_ctx) / total
        torch.testing.assert_close(result.loss, expected)
        assert (float(metrics["lyric_bits_per_token"]) > 0) == prior.lyric_conditioning
    assert (prior.prior.fc_proj_out.weight is prior.prior.embed_tokens.weight) == tied
    assert np.mean(losses[-5:]) < 0.75 * np.mean(losses[:5]), losses


def test_windows_carry_their_upper_tokens_and_timing():
    prior = build_prior("upsampler_1", False)
    songs = corpus(prior)
    ratio = prior.cond_downsample
    sampler = CropSampler(tuple(len(s.tokens) for s in songs), prior.n_ctx, ratio)
    picks = sampler.draw(3, 0, 6)
    tokens, upper, metadata = prior_inputs(prior, songs, picks)
    for row, pick in enumerate(picks):
        song = songs[pick.item]
        assert pick.start % ratio == 0
        assert torch.equal(tokens[row], torch.from_numpy(song.tokens[pick.start : pick.start + prior.n_ctx]).long())
        assert torch.equal(upper[row], torch.from_numpy(song.upper[pick.start // ratio : pick.start // ratio + prior.n_ctx // ratio]).long())
        assert metadata[row, :4].tolist() == [song.total_length, pick.start * prior.raw_to_tokens, prior.sample_length, pick.item + 1]


def test_conditioning_mismatches_are_refused():
    top = PriorObjective(build_prior("no_lyrics", True))
    upsampler = PriorObjective(build_prior("upsampler_1", False))
    tokens = torch.zeros(1, 64, dtype=torch.long)
    with pytest.raises(ValueError, match="upsampler"):
        upsampler(tokens, None, None)
    with pytest.raises(ValueError, match="top prior"):
        top(tokens, torch.zeros(1, 16, dtype=torch.long), None)
    with pytest.raises(ValueError, match="n_ctx=64"):
        top(torch.zeros(1, 10, dtype=torch.long), None, None)
