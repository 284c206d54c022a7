"""A prior's training objective: next-token cross entropy over a window of its level's tokens,
given its conditioning, plus the lyric loss fraction where the prior reads lyrics.

:meth:`JukeboxPrior.forward_tokens` computes both terms in bits, weighted as the original does
(``encoder_loss_fraction`` of the lyric-token loss, each term by its share of the positions).
This module gives it the shape a training loop and DDP need.
"""
from __future__ import annotations

import torch
from torch import nn

from models.prior import JukeboxPrior


class PriorObjective(nn.Module):
    """``forward(tokens, upper, metadata) -> (loss, metrics)`` of a :class:`JukeboxPrior`.

    Works with either output head: tied to the token embedding (``merged_decoder=False``) or
    its own weight. Wrap this module in DDP.
    """

    def __init__(self, prior: JukeboxPrior):
        super().__init__()
        self.prior = prior

    def forward(
        self, tokens: torch.Tensor, upper: torch.Tensor | None, metadata: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Teacher-forced loss of one batch of windows.

        Args:
            tokens: long [B, n_ctx], a window of this prior's level.
            upper: long [B, n_ctx // r], the upper level's tokens over the same span (upsamplers),
                None for the top prior.
            metadata: long [B, 4 + max_nb_genres (+ nb_relevant_lyric_tokens)], the window's
                labels with timing set and lyrics windowed (:meth:`JukeboxPrior.get_metadata`).

        Returns:
            0-d loss (bits) and 0-d metrics: ``bits_per_token`` (music next-token loss),
            ``lyric_bits_per_token`` (0 without lyrics).
        """
        prior = self.prior
        if tokens.dim() != 2 or tokens.shape[1] != prior.n_ctx:
            raise ValueError(f"tokens must be [batch, n_ctx={prior.n_ctx}], got {tuple(tokens.shape)}")
        if prior.level == 0 and upper is not None:
            raise ValueError("the top prior (level 0) is conditioned on no upper level: upper must be None")
        if prior.level != 0 and upper is None:
            raise ValueError(f"prior level {prior.level} is an upsampler: it needs the upper level's tokens (upper)")
        conds = [upper] if upper is not None else ()
        loss, metrics = prior.forward_tokens(tokens, conds, metadata)
        return loss, {
            "bits_per_token": metrics["next_token_prediction_loss"],
            "lyric_bits_per_token": metrics["encoder_loss"],
        }
