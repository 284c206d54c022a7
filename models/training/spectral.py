"""Multi-resolution spectral loss of the Jukebox VQ-VAE (Dhariwal et al. 2020, section 3.2).

A sample-level loss alone lets the VQ-VAE drop the high frequencies it finds hardest; the paper
adds the distance between the STFT magnitudes of the input and the reconstruction, at several
time/frequency resolutions so that no single window length decides which detail counts:

    L_spec = mean over resolutions r of  mean over the batch of  || |STFT_r(x)| - |STFT_r(x_hat)| ||_2

Magnitudes only: phase differences of a few samples are inaudible and would dominate otherwise.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from models.checks import is_int


@dataclass(frozen=True)
class STFTResolution:
    """One STFT: ``n_fft`` frequency bins, frames every ``hop_length`` samples, Hann window of
    ``window_length`` samples (``<= n_fft``, zero-padded to it)."""

    n_fft: int
    hop_length: int
    window_length: int

    def __post_init__(self) -> None:
        for name in ("n_fft", "hop_length", "window_length"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"STFTResolution.{name} must be an integer >= 1, got {value!r}")
        if self.window_length > self.n_fft:
            raise ValueError(f"STFTResolution.window_length={self.window_length} exceeds n_fft={self.n_fft}")


# The original release's three resolutions (n_fft, hop, window) at 44.1 kHz.
JUKEBOX_RESOLUTIONS: tuple[STFTResolution, ...] = (
    STFTResolution(2048, 240, 1200),
    STFTResolution(1024, 120, 600),
    STFTResolution(512, 50, 240),
)


def stft_magnitude(audio: torch.Tensor, resolution: STFTResolution) -> torch.Tensor:
    """audio float [batch, samples, channels] -> float32 [batch * channels, n_fft // 2 + 1, frames].

    Each channel is transformed on its own; frames are centred (reflect padding), so the input
    needs more than ``n_fft // 2`` samples.
    """
    batch, samples, channels = audio.shape
    if samples <= resolution.n_fft // 2:
        raise ValueError(f"{samples} samples are too few for an STFT with n_fft={resolution.n_fft} (need > {resolution.n_fft // 2})")
    signal = audio.float().permute(0, 2, 1).reshape(batch * channels, samples)
    window = torch.hann_window(resolution.window_length, device=audio.device, dtype=torch.float32)
    spectrum = torch.stft(
        signal, resolution.n_fft, hop_length=resolution.hop_length, win_length=resolution.window_length,
        window=window, center=True, return_complex=True,
    )
    # |z| has gradient z / |z|, defined as 0 at z = 0 by torch: no epsilon needed.
    return spectrum.abs()


class MultiResolutionSpectralLoss(nn.Module):
    """``L_spec`` above; also gives the same norm of a signal alone (its scale, for normalising).

    Args:
        resolutions: the STFTs averaged over (default: the original release's three).
    """

    def __init__(self, resolutions: Sequence[STFTResolution] = JUKEBOX_RESOLUTIONS):
        super().__init__()
        if not resolutions:
            raise ValueError("MultiResolutionSpectralLoss needs at least one STFT resolution")
        self.resolutions = tuple(resolutions)

    @property
    def min_samples(self) -> int:
        """Fewest samples an input may have (every STFT needs more than ``n_fft // 2``)."""
        return max(r.n_fft for r in self.resolutions) // 2 + 1

    @staticmethod
    def _per_item(difference: torch.Tensor, batch: int) -> torch.Tensor:
        """L2 norm per batch item (channels and bins together) of [batch * channels, bins, frames]."""
        return torch.linalg.vector_norm(difference.reshape(batch, -1), dim=1)

    def forward(self, target: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        """target, prediction float [batch, samples, channels] -> 0-d float32 loss."""
        if target.shape != prediction.shape:
            raise ValueError(f"target {tuple(target.shape)} and prediction {tuple(prediction.shape)} differ in shape")
        batch = target.shape[0]
        losses = [
            self._per_item(stft_magnitude(target, r) - stft_magnitude(prediction, r), batch).mean()
            for r in self.resolutions
        ]
        return torch.stack(losses).mean()

    @torch.no_grad()
    def norm(self, audio: torch.Tensor) -> torch.Tensor:
        """The loss of ``audio`` against silence: 0-d, the scale spectral losses are divided by."""
        batch = audio.shape[0]
        return torch.stack([self._per_item(stft_magnitude(audio, r), batch).mean() for r in self.resolutions]).mean()
