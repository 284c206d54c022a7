"""The VQ-VAE objective: the same codebook update as the model's own forward, losses that fall."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from models.config import JukeboxVQVAEConfig
from models.training import (
    AudioScale,
    CropSampler,
    OptimizerSettings,
    STFTResolution,
    VQVAELossWeights,
    VQVAEObjective,
    audio_crops,
    measure_audio_scale,
    step_seed,
    train_step,
)
from models.vqvae import JukeboxVQVAE
from tests.models.vqvae import TINY_CONFIGS, make_audio

SMALL_STFTS = (STFTResolution(256, 32, 128), STFTResolution(128, 16, 64))


def _vqvae(seed: int = 0) -> JukeboxVQVAE:
    torch.manual_seed(seed)
    return JukeboxVQVAE(JukeboxVQVAEConfig(sample_length=4096, **TINY_CONFIGS["three_levels_mono"])).train()


def test_one_step_updates_codebooks_as_the_models_forward_does():
    reference = _vqvae()
    objective = VQVAEObjective(copy.deepcopy(reference), VQVAELossWeights(resolutions=SMALL_STFTS), AudioScale(0.5, 2.0))
    audio = make_audio(3, 64 * reference.hop_lengths[-1], 1, seed=3)
    for step in range(3):  # the first step draws the codebooks from the data, the others update them
        torch.manual_seed(step_seed(0, step))
        expected = reference(audio)
        torch.manual_seed(step_seed(0, step))
        loss, metrics = objective(audio)
        for level in range(reference.levels):
            ours = objective.vqvae.bottleneck.level_blocks[level]
            theirs = reference.bottleneck.level_blocks[level]
            torch.testing.assert_close(ours.codebook, theirs.codebook, rtol=0, atol=0)
            torch.testing.assert_close(ours.ema_count, theirs.ema_count, rtol=0, atol=0)
            torch.testing.assert_close(metrics[f"commit_l{level}"], expected.commit_losses[level].detach())
            recon = F.mse_loss(expected.dequantised_states[level], audio) / 0.5
            torch.testing.assert_close(metrics[f"recon_l{level}"], recon.detach())
            assert 1 <= int(metrics[f"usage_l{level}"]) <= ours.nb_discrete_codes
        terms = sum(metrics[f"recon_l{l}"] + metrics[f"spectral_l{l}"] + reference.commit * metrics[f"commit_l{l}"]
                    for l in range(reference.levels))
        torch.testing.assert_close(loss.detach(), terms)


def test_eval_mode_leaves_codebooks_alone():
    objective = VQVAEObjective(_vqvae(), VQVAELossWeights(resolutions=SMALL_STFTS))
    audio = make_audio(2, 32 * objective.vqvae.hop_lengths[-1], 1, seed=4)
    objective(audio)  # initialise from data
    before = [b.codebook.clone() for b in objective.vqvae.bottleneck.level_blocks]
    objective.eval()
    _, metrics = objective(audio)
    assert all(torch.equal(b.codebook, c) for b, c in zip(objective.vqvae.bottleneck.level_blocks, before))
    assert "usage_l0" not in metrics


def tones(seed: int, samples: int = 20000, rate: int = 8000) -> np.ndarray:
    """float32 [samples, 1]: a melody of harmonic tones, a new random pitch every quarter second."""
    rng = np.random.default_rng(seed)
    time = np.arange(samples) / rate
    out = np.zeros(samples)
    for start in range(0, samples, rate // 4):
        pitch, part = rng.uniform(100, 800), slice(start, start + rate // 4)
        out[part] = 0.5 * np.sin(2 * np.pi * pitch * time[part]) + 0.25 * np.sin(4 * np.pi * pitch * time[part])
    return out.astype(np.float32)[:, None]


def test_loss_falls_on_a_small_seeded_dataset():
    songs = [tones(seed) for seed in range(3)]
    vqvae = _vqvae(seed=1)
    crop = 32 * vqvae.hop_lengths[-1]
    sampler = CropSampler(tuple(len(s) for s in songs), crop)
    scale = measure_audio_scale(audio_crops(songs, sampler.draw(0, 0, 16, stream=1), crop), SMALL_STFTS)
    objective = VQVAEObjective(vqvae, VQVAELossWeights(resolutions=SMALL_STFTS), scale)
    settings = OptimizerSettings(lr=3e-3)
    optimizer = settings.build(objective.parameters())
    losses = []
    for step in range(60):
        torch.manual_seed(step_seed(0, step))
        batch = audio_crops(songs, sampler.draw(0, step, 4), crop)
        losses.append(float(train_step(objective, optimizer, [batch], lr=settings.learning_rate(step), grad_clip=1.0).loss))
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    assert last < 0.75 * first, losses


def test_bad_audio_is_refused():
    objective = VQVAEObjective(_vqvae(), VQVAELossWeights(resolutions=SMALL_STFTS))
    with pytest.raises(ValueError, match="multiple of 16"):
        objective(torch.zeros(1, 1000, 1))
    with pytest.raises(ValueError, match="AudioScale.l2 must be > 0"):
        AudioScale(l2=0.0)
