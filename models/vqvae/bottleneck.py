"""VQ-VAE bottleneck: nearest-codebook quantisation, dequantisation and the EMA codebook update.

Each level owns a codebook of ``nb_discrete_codes`` vectors of width ``embed_dim``
(``level_blocks.{level}.codebook``, a persistent buffer as in transformers). A latent vector's token
is the index of its nearest code (squared Euclidean distance). In training, codes follow an
exponential moving average of the latents assigned to them (van den Oord et al. 2017, appendix A.1);
a code used less than ``threshold`` times on average is replaced by a random latent.

The running sums of that average are not part of checkpoints: they live in non-persistent buffers
that :meth:`VectorQuantiser.reset_non_persistent_buffers` rebuilds from the codebook, which is also
done automatically after ``load_state_dict`` (like the original ``restore_k``).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F


class CodebookStats(NamedTuple):
    """Diagnostics of one EMA codebook update (0-d tensors)."""

    entropy: torch.Tensor  # entropy of this batch's code histogram, in nats
    used_curr: torch.Tensor  # codes used at least ``threshold`` times in this batch
    usage: torch.Tensor  # codes whose running count is at least ``threshold``
    dk: torch.Tensor  # RMS change of the codebook entries


class QuantiserOutput(NamedTuple):
    """Output of :meth:`VectorQuantiser.forward`."""

    tokens: torch.LongTensor  # [batch, time]
    quantised: torch.Tensor  # [batch, embed_dim, time], straight-through: gradients flow to the latent
    commit_loss: torch.Tensor  # 0-d: mean squared distance between latent and its code
    stats: CodebookStats | None  # None unless the codebook was updated


class VectorQuantiser(nn.Module):
    """One level's codebook.

    Args:
        nb_discrete_codes: number of codes.
        embed_dim: width of each code.
        mu: EMA decay of the codebook update (config ``lmu``).
        threshold: running count below which a code is considered dead and re-drawn.
    """

    def __init__(self, nb_discrete_codes: int, embed_dim: int, mu: float = 0.99, threshold: float = 1.0):
        super().__init__()
        self.nb_discrete_codes = nb_discrete_codes
        self.embed_dim = embed_dim
        self.mu = mu
        self.threshold = threshold
        # False until the codebook holds real codes: the first training step then draws them from
        # the data. Loading a state dict sets it (see _after_load).
        self.initialised = False
        self.register_buffer("codebook", torch.zeros(nb_discrete_codes, embed_dim))
        self.register_buffer("ema_sum", torch.zeros(nb_discrete_codes, embed_dim), persistent=False)
        self.register_buffer("ema_count", torch.zeros(nb_discrete_codes), persistent=False)
        self.register_load_state_dict_post_hook(VectorQuantiser._after_load)

    @staticmethod
    def _after_load(module: "VectorQuantiser", incompatible_keys) -> None:
        module.initialised = True
        module.reset_non_persistent_buffers()

    def reset_non_persistent_buffers(self) -> None:
        """Restart the EMA statistics from the current codebook: each code counted once."""
        with torch.no_grad():
            self.ema_sum = self.codebook.detach().clone()
            self.ema_count = torch.ones(self.nb_discrete_codes, dtype=self.codebook.dtype, device=self.codebook.device)

    # -- quantisation -------------------------------------------------------------------------

    def quantise(self, vectors: torch.Tensor) -> torch.LongTensor:
        """vectors: float [n, embed_dim] -> index of the nearest code, int64 [n].

        Distances are computed in the codebook's dtype with autocast off: half-precision distances
        would pick a different code for near-ties.
        """
        codes_by_column = self.codebook.t()  # [embed_dim, nb_discrete_codes]
        device_type = vectors.device.type
        no_autocast = (
            torch.autocast(device_type, enabled=False)
            if torch.amp.is_autocast_available(device_type)
            else contextlib.nullcontext()
        )
        with no_autocast:
            vectors = vectors.to(codes_by_column.dtype)
            # ||v||^2 - 2 v.c + ||c||^2. The reductions run over the same memory layouts as the
            # reference's, so distances agree to the bit and near-ties pick the same code.
            distance = (
                vectors.pow(2).sum(dim=-1, keepdim=True)
                - 2 * (vectors @ codes_by_column)
                + codes_by_column.pow(2).sum(dim=0, keepdim=True)
            )
        return distance.argmin(dim=-1)

    def dequantise(self, tokens: torch.LongTensor) -> torch.Tensor:
        """tokens: int64 [...] -> codes float [..., embed_dim]."""
        return F.embedding(tokens, self.codebook)

    def encode(self, latent: torch.Tensor) -> torch.LongTensor:
        """latent: float [batch, embed_dim, time] -> tokens int64 [batch, time]."""
        batch, _, time = latent.shape
        return self.quantise(_flatten(latent)).view(batch, time)

    def decode(self, tokens: torch.LongTensor) -> torch.Tensor:
        """tokens: int64 [batch, time] -> latent float [batch, embed_dim, time]."""
        return self.dequantise(tokens).permute(0, 2, 1).contiguous()

    # -- training -----------------------------------------------------------------------------

    def _random_codes(self, vectors: torch.Tensor) -> torch.Tensor:
        """``nb_discrete_codes`` rows drawn without replacement from ``vectors`` [n, embed_dim].

        With fewer than ``nb_discrete_codes`` vectors they are repeated with a little noise first.
        Random calls (normal noise, then a CPU permutation) follow the reference's order, so a
        seeded run draws the same codes.
        """
        count, width = vectors.shape
        if count < self.nb_discrete_codes:
            repeats = -(-self.nb_discrete_codes // count)
            vectors = vectors.repeat(repeats, 1)
            vectors = vectors + torch.randn_like(vectors) * (0.01 / math.sqrt(width))
        order = torch.randperm(vectors.shape[0]).to(vectors.device)
        return vectors[order][: self.nb_discrete_codes]

    @torch.no_grad()
    def init_from_data(self, vectors: torch.Tensor) -> None:
        """Set the codebook to random latents, vectors: float [n, embed_dim]; EMA counts restart at 1."""
        self.codebook.copy_(self._random_codes(vectors))
        self.reset_non_persistent_buffers()
        self.initialised = True

    @torch.no_grad()
    def ema_update(self, vectors: torch.Tensor, tokens: torch.LongTensor) -> CodebookStats:
        """One EMA step. vectors: float [n, embed_dim] latents; tokens: int64 [n] their codes."""
        batch_sum = torch.zeros_like(self.ema_sum).index_add_(0, tokens, vectors.to(self.ema_sum.dtype))
        batch_count = torch.bincount(tokens, minlength=self.nb_discrete_codes).to(self.ema_count.dtype)
        replacements = self._random_codes(vectors)

        # Out-of-place ``mu * a + (1 - mu) * b`` as in the reference: a count sitting exactly on the
        # threshold must round the same way, or a live code would be re-drawn.
        self.ema_sum.copy_(self.mu * self.ema_sum + (1.0 - self.mu) * batch_sum)
        self.ema_count.copy_(self.mu * self.ema_count + (1.0 - self.mu) * batch_count)
        alive = (self.ema_count >= self.threshold).unsqueeze(1).to(self.codebook.dtype)
        centres = self.ema_sum / self.ema_count.unsqueeze(1)
        previous = self.codebook.clone()
        self.codebook.copy_(alive * centres + (1.0 - alive) * replacements)

        probabilities = batch_count / batch_count.sum()
        return CodebookStats(
            entropy=-(probabilities * torch.log(probabilities + 1e-8)).sum(),
            used_curr=(batch_count >= self.threshold).sum(),
            usage=alive.sum(),
            dk=torch.linalg.vector_norm(self.codebook - previous) / math.sqrt(previous.numel()),
        )

    def forward(self, latent: torch.Tensor, update_codebook: bool = False) -> QuantiserOutput:
        """Quantise ``latent`` float [batch, embed_dim, time]; optionally take one EMA step.

        The commit loss compares the latent with its code before the update; the output codes are
        also those chosen before the update, passed straight through to the latent's gradient.
        """
        batch, _, time = latent.shape
        vectors = _flatten(latent)
        if update_codebook and not self.initialised:
            self.init_from_data(vectors)
        tokens = self.quantise(vectors)
        codes = self.dequantise(tokens)
        stats = self.ema_update(vectors, tokens) if update_codebook else None
        commit_loss = (codes.detach() - vectors).pow(2).mean()
        quantised = vectors + (codes - vectors).detach()
        quantised = quantised.view(batch, time, self.embed_dim).permute(0, 2, 1).contiguous()
        return QuantiserOutput(tokens.view(batch, time), quantised, commit_loss, stats)


def _flatten(latent: torch.Tensor) -> torch.Tensor:
    """[batch, embed_dim, time] -> [batch * time, embed_dim] (time-major within each item)."""
    return latent.permute(0, 2, 1).reshape(-1, latent.shape[1])


class Bottleneck(nn.Module):
    """The codebooks of all levels (``level_blocks.{level}``, level 0 finest)."""

    def __init__(self, levels: int, nb_discrete_codes: int, embed_dim: int, mu: float = 0.99):
        super().__init__()
        self.level_blocks = nn.ModuleList(VectorQuantiser(nb_discrete_codes, embed_dim, mu) for _ in range(levels))

    def forward(self, latents: Sequence[torch.Tensor], update_codebook: bool = False) -> list[QuantiserOutput]:
        """latents[level]: float [batch, embed_dim, time_level] -> one :class:`QuantiserOutput` per level."""
        if len(latents) != len(self.level_blocks):
            raise ValueError(f"Bottleneck expects one latent per level ({len(self.level_blocks)}), got {len(latents)}")
        return [block(latent, update_codebook) for block, latent in zip(self.level_blocks, latents)]
