"""The VQ-VAE's training objective (Dhariwal et al. 2020, section 3.2), per level, summed:

    L = sum over levels of  recon_weight * ||x - x_hat||^2 / scale_l2
                          + spectral_weight * L_spec(x, x_hat) / scale_spec
                          + commit * ||z - sg(e)||^2

with ``x_hat`` the level's reconstruction through its own codebook (straight-through gradients to
the encoder), and each codebook following an exponential moving average of the latents assigned
to it, dead codes re-drawn from the batch (:class:`~models.vqvae.bottleneck.VectorQuantiser`).

Data-parallel training: every rank encodes its slice of the global batch, and the codebook update
(and the codebook's first draw from data) uses the latents of *all* ranks, gathered in rank
order, so codebooks stay identical across ranks and equal to a single process's on the whole
batch. The random draws of that update come from the global torch RNG, which the training loop
seeds identically on every rank before each step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models.training.distributed import all_gather_rows
from models.training.spectral import JUKEBOX_RESOLUTIONS, MultiResolutionSpectralLoss, STFTResolution
from models.vqvae import JukeboxVQVAE


@dataclass(frozen=True)
class AudioScale:
    """How loud the training audio is, to make the losses scale-free (the original's
    "bandwidth"): ``l2`` the mean of ``x^2``, ``spectral`` the mean multi-resolution spectral
    norm of a crop. Silence against the data then scores 1 on either loss."""

    l2: float = 1.0
    spectral: float = 1.0

    def __post_init__(self) -> None:
        for name in ("l2", "spectral"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"AudioScale.{name} must be > 0 (silent training audio?), got {value!r}")


@dataclass(frozen=True)
class VQVAELossWeights:
    """Weights of the loss terms; ``commit`` None takes the model config's ``commit`` (0.02)."""

    recon: float = 1.0
    spectral: float = 1.0
    commit: float | None = None
    resolutions: tuple[STFTResolution, ...] = JUKEBOX_RESOLUTIONS

    def __post_init__(self) -> None:
        for name in ("recon", "spectral", "commit"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"VQVAELossWeights.{name} must be >= 0, got {value!r}")


@torch.no_grad()
def measure_audio_scale(crops: torch.Tensor, resolutions=JUKEBOX_RESOLUTIONS) -> AudioScale:
    """:class:`AudioScale` of training crops, float [n, samples, channels]."""
    spectral = MultiResolutionSpectralLoss(resolutions)
    return AudioScale(l2=float(crops.float().pow(2).mean()), spectral=float(spectral.norm(crops)))


class VQVAEObjective(nn.Module):
    """``forward(audio) -> (loss, metrics)`` of a :class:`JukeboxVQVAE` in training.

    Wrap this module (not the VQ-VAE) in DDP: its forward is what the gradients come from.

    Args:
        vqvae: the model; its codebooks are updated in place in training mode.
        weights: loss weights and STFT resolutions.
        scale: loudness of the training audio (:func:`measure_audio_scale`).
    """

    def __init__(self, vqvae: JukeboxVQVAE, weights: VQVAELossWeights = VQVAELossWeights(), scale: AudioScale = AudioScale()):
        super().__init__()
        self.vqvae = vqvae
        self.weights = weights
        self.scale = scale
        self.commit = vqvae.commit if weights.commit is None else weights.commit
        self.spectral = MultiResolutionSpectralLoss(weights.resolutions)

    def _quantise(self, level: int, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Quantise one level's latent [B, D, T]; in training also take one EMA step on the
        gathered latents of every rank. Returns (straight-through codes [B, D, T], commit loss,
        codebook metrics)."""
        block = self.vqvae.bottleneck.level_blocks[level]
        update = self.training
        if update:
            everyone = all_gather_rows(latent.detach().permute(0, 2, 1).reshape(-1, latent.shape[1]))
            if not block.initialised:
                block.init_from_data(everyone)
        out = block(latent, update_codebook=False)  # codes of the codebook before this step's update
        metrics: dict[str, torch.Tensor] = {}
        if update:
            stats = block.ema_update(everyone, all_gather_rows(out.tokens.reshape(-1)))
            metrics = {
                f"usage_l{level}": stats.usage,
                f"used_now_l{level}": stats.used_curr,
                f"entropy_l{level}": stats.entropy,
                f"codebook_change_l{level}": stats.dk,
            }
        quantised = out.quantised if update else out.quantised.detach()
        return quantised, out.commit_loss, metrics

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """audio float [batch, samples, channels], samples a multiple of the top level's hop.

        Returns the 0-d loss and 0-d metrics: per level ``recon_l{L}``, ``spectral_l{L}`` (both
        scale-normalised), ``commit_l{L}`` and, in training, codebook usage (live codes),
        codes used by this batch, its code entropy (nats) and the codebook's RMS change.
        """
        vqvae = self.vqvae
        hop = vqvae.hop_lengths[-1]
        if audio.dim() != 3 or audio.shape[1] % hop:
            raise ValueError(f"training audio must be [batch, samples, channels] with samples a multiple of {hop}, got {tuple(audio.shape)}")
        channels_first = audio.permute(0, 2, 1).to(vqvae.encoders[0].level_blocks[0].proj_out.weight.dtype)
        target = audio.float()
        loss = torch.zeros((), device=audio.device)
        metrics: dict[str, torch.Tensor] = {}
        for level in range(vqvae.levels):
            latent = vqvae.encoders[level](channels_first)
            quantised, commit, codebook = self._quantise(level, latent)
            reconstruction = vqvae.decoders[level](quantised).permute(0, 2, 1).float()
            recon = F.mse_loss(reconstruction, target) / self.scale.l2
            spectral = self.spectral(target, reconstruction) / self.scale.spectral
            loss = loss + self.weights.recon * recon + self.weights.spectral * spectral + self.commit * commit
            metrics.update({f"recon_l{level}": recon.detach(), f"spectral_l{level}": spectral.detach(),
                            f"commit_l{level}": commit.detach(), **codebook})
        return loss, metrics
