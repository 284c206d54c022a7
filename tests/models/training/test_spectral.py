"""The multi-resolution spectral loss against numpy's FFT, and its invariants."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.training.spectral import JUKEBOX_RESOLUTIONS, MultiResolutionSpectralLoss, STFTResolution, stft_magnitude


def _numpy_magnitude(signal: np.ndarray, r: STFTResolution) -> np.ndarray:
    """|STFT| computed frame by frame with numpy: reflect-padded, Hann window (periodic) centred in n_fft."""
    padded = np.pad(signal, r.n_fft // 2, mode="reflect")
    n = np.arange(r.window_length)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / r.window_length)
    left = (r.n_fft - r.window_length) // 2
    full = np.zeros(r.n_fft)
    full[left : left + r.window_length] = window
    frames = 1 + (len(padded) - r.n_fft) // r.hop_length
    return np.stack([np.abs(np.fft.rfft(padded[i * r.hop_length : i * r.hop_length + r.n_fft] * full)) for i in range(frames)], axis=1)


@pytest.mark.parametrize("resolution", JUKEBOX_RESOLUTIONS, ids=lambda r: f"fft{r.n_fft}")
def test_magnitude_matches_numpy_fft(resolution):
    rng = np.random.default_rng(0)
    signal = rng.standard_normal(5000)
    ours = stft_magnitude(torch.from_numpy(signal).float().view(1, -1, 1), resolution)[0].numpy()
    np.testing.assert_allclose(ours, _numpy_magnitude(signal, resolution), rtol=1e-4, atol=1e-3)


def test_loss_is_the_mean_over_resolutions_of_batch_mean_norms():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((2, 3, 4096, 2))
    loss = MultiResolutionSpectralLoss()(torch.from_numpy(x).float(), torch.from_numpy(y).float())
    expected = np.mean([
        np.mean([np.sqrt(sum(((_numpy_magnitude(x[b, :, c], r) - _numpy_magnitude(y[b, :, c], r)) ** 2).sum() for c in range(2)))
                 for b in range(3)])
        for r in JUKEBOX_RESOLUTIONS
    ])
    assert float(loss) == pytest.approx(expected, rel=1e-4)


def test_zero_for_equal_signals_with_finite_gradients_and_norm_against_silence():
    spectral = MultiResolutionSpectralLoss()
    target = torch.randn(2, 4096, 1)
    prediction = target.clone().requires_grad_(True)
    loss = spectral(target, prediction)
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert torch.isfinite(prediction.grad).all()
    assert float(spectral(target, torch.zeros_like(target))) == pytest.approx(float(spectral.norm(target)), rel=1e-6)


def test_magnitudes_ignore_a_small_delay_that_the_sample_loss_punishes():
    time = torch.arange(8192, dtype=torch.float32)
    tone = torch.sin(2 * torch.pi * 440 * time / 44100).view(1, -1, 1)
    delayed = torch.sin(2 * torch.pi * 440 * (time - 20) / 44100).view(1, -1, 1)
    other = torch.sin(2 * torch.pi * 880 * time / 44100).view(1, -1, 1)
    spectral = MultiResolutionSpectralLoss()
    spectral_ratio = float(spectral(tone, delayed)) / float(spectral(tone, other))
    sample_ratio = float((tone - delayed).pow(2).mean()) / float((tone - other).pow(2).mean())
    # only the first and last frames (reflect padding) see the delay; every sample does
    assert spectral_ratio < 0.25 * sample_ratio


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="window_length=300 exceeds n_fft=256"):
        STFTResolution(256, 64, 300)
    with pytest.raises(ValueError, match="too few"):
        MultiResolutionSpectralLoss()(torch.zeros(1, 512, 1), torch.zeros(1, 512, 1))
    with pytest.raises(ValueError, match="differ in shape"):
        MultiResolutionSpectralLoss()(torch.zeros(1, 4096, 1), torch.zeros(1, 4096, 2))
