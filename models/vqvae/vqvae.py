"""Jukebox's hierarchical VQ-VAE: one encoder, codebook and decoder per level, level 0 finest.

Level ``L`` compresses audio by ``hop_lengths[L]`` samples per token (8, 32 and 128 for the released
model). Levels are independent autoencoders: level ``L``'s encoder and decoder chain ``L + 1``
conv blocks, each downsampling (upsampling) by ``res_strides_t[i] ** res_downs_t[i]``.

Parameter and buffer names match transformers 4.40.2's ``JukeboxVQVAE`` (``encoders.*``,
``decoders.*``, ``bottleneck.level_blocks.{level}.codebook``), so its checkpoints load with a plain
``load_state_dict``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from models.config import JukeboxVQVAEConfig
from models.pretrained import PreTrainedModule
from models.vqvae.bottleneck import Bottleneck
from models.vqvae.decoder import Decoder
from models.vqvae.encoder import Encoder
from models.windows import raw_to_tokens_per_level


class VQVAEOutput(NamedTuple):
    """Output of :meth:`JukeboxVQVAE.forward`."""

    dequantised_states: list[torch.Tensor]  # per level (finest first): reconstruction [batch, samples, channels]
    loss: torch.Tensor  # 0-d: ``commit * sum(commit_losses)``
    commit_losses: list[torch.Tensor]  # per level, 0-d: mean squared latent-to-code distance


def _validate_architecture(config: JukeboxVQVAEConfig) -> None:
    """Refuse configurations whose token/sample arithmetic would not be exact."""
    for level in range(config.levels):
        down_t, stride_t = config.res_downs_t[level], config.res_strides_t[level]
        if down_t < 1:
            raise ValueError(f"JukeboxVQVAE needs res_downs_t[{level}] >= 1 (every level downsamples), got {down_t}")
        if stride_t < 2 or stride_t % 2:
            raise ValueError(
                f"JukeboxVQVAE needs even res_strides_t >= 2 (kernel 2*stride, padding stride//2 is exact only "
                f"then), got res_strides_t[{level}] = {stride_t}"
            )


class JukeboxVQVAE(PreTrainedModule):
    """Hierarchical VQ-VAE. Audio is float ``[batch, samples, channels]``; tokens int64 ``[batch, length]``.

    Notes on the reference (transformers 4.40.2): ``config.act_fn`` and ``config.init_scale`` do not
    affect the VQ-VAE there either (its residual blocks always use ReLU). Its ``forward`` quantises
    level ``L``'s latent with the codebook of level ``levels - 1 - L``; here, as in the original
    Jukebox, each level uses its own codebook.
    """

    config_class = JukeboxVQVAEConfig

    def __init__(self, config: JukeboxVQVAEConfig):
        super().__init__()
        _validate_architecture(config)
        self.config = config
        self.levels: int = config.levels
        self.nb_discrete_codes: int = config.nb_discrete_codes
        self.commit: float = config.commit
        self.sample_length: int = config.sample_length
        # Samples per token gained by each level's own blocks, and in total up to each level.
        self.downsamples: tuple[int, ...] = tuple(
            stride**down for stride, down in zip(config.res_strides_t[: self.levels], config.res_downs_t[: self.levels])
        )
        self.hop_lengths: tuple[int, ...] = tuple(raw_to_tokens_per_level(config.res_downs_t, config.res_strides_t)[: self.levels])

        resnet_options = dict(
            res_convolution_multiplier=config.res_convolution_multiplier,
            dilation_growth_rate=config.res_dilation_growth_rate,
            dilation_cycle=config.res_dilation_cycle,
            conv_res_scale=config.conv_res_scale,
            zero_out=config.zero_out,
        )
        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in range(self.levels):
            width = config.res_conv_width * config.multipliers[level]
            depth = config.res_conv_depth * config.multipliers[level]
            downs_t, strides_t = config.res_downs_t[: level + 1], config.res_strides_t[: level + 1]
            self.encoders.append(
                Encoder(config.conv_input_shape, config.embed_dim, width, depth, downs_t, strides_t, **resnet_options)
            )
            self.decoders.append(
                Decoder(config.conv_input_shape, config.embed_dim, width, depth, downs_t, strides_t, **resnet_options)
            )
        self.bottleneck = Bottleneck(self.levels, config.nb_discrete_codes, config.embed_dim, config.lmu)

    # -- sizes --------------------------------------------------------------------------------

    def samples_to_tokens(self, n_samples: int, level: int) -> int:
        """Tokens that ``n_samples`` audio samples encode to at ``level`` (floor, like the strided convs)."""
        self._check_level(level)
        return n_samples // self.hop_lengths[level]

    def tokens_to_samples(self, n_tokens: int, level: int) -> int:
        """Audio samples that ``n_tokens`` tokens of ``level`` decode to."""
        self._check_level(level)
        return n_tokens * self.hop_lengths[level]

    def reset_non_persistent_buffers(self) -> None:
        """Rebuild the codebooks' EMA statistics (not in checkpoints) from the loaded codebooks."""
        for block in self.bottleneck.level_blocks:
            block.reset_non_persistent_buffers()

    # -- validation ---------------------------------------------------------------------------

    def _check_level(self, level: int) -> None:
        if not 0 <= level < self.levels:
            raise ValueError(f"level must be in [0, {self.levels}), got {level}")

    def _level_range(self, start_level: int, end_level: int | None) -> tuple[int, int]:
        end = self.levels if end_level is None else end_level
        if not 0 <= start_level < end <= self.levels:
            raise ValueError(
                f"need 0 <= start_level < end_level <= {self.levels}, got start_level={start_level}, end_level={end_level}"
            )
        return start_level, end

    def _check_audio(self, audio: torch.Tensor, deepest_level: int) -> None:
        if not isinstance(audio, torch.Tensor) or audio.dim() != 3:
            shape = tuple(audio.shape) if isinstance(audio, torch.Tensor) else type(audio).__name__
            raise ValueError(f"audio must be a tensor [batch, samples, channels], got {shape}")
        if not audio.is_floating_point():
            raise ValueError(f"audio must be floating point, got {audio.dtype}")
        channels = self.config.conv_input_shape
        if audio.shape[2] != channels:
            raise ValueError(
                f"audio has {audio.shape[2]} channels (shape {tuple(audio.shape)} read as [batch, samples, channels]) "
                f"but the VQ-VAE expects conv_input_shape={channels}"
            )
        if audio.shape[1] < self.hop_lengths[deepest_level]:
            raise ValueError(
                f"audio has {audio.shape[1]} samples, fewer than one token of level {deepest_level} "
                f"({self.hop_lengths[deepest_level]} samples)"
            )

    def _check_tokens(self, music_tokens: Sequence[torch.Tensor], start_level: int, end_level: int) -> None:
        expected = f"a list of 1 to {end_level - start_level} token tensors (levels {start_level}..{end_level - 1})"
        if not isinstance(music_tokens, (list, tuple)) or not 1 <= len(music_tokens) <= end_level - start_level:
            got = f"{len(music_tokens)} entries" if isinstance(music_tokens, (list, tuple)) else type(music_tokens).__name__
            raise ValueError(f"music_tokens must be {expected}, got {got}")
        if not all(isinstance(tokens, torch.Tensor) for tokens in music_tokens):
            raise ValueError(f"music_tokens must be {expected}, got {[type(t).__name__ for t in music_tokens]}")
        batch = music_tokens[0].shape[0] if music_tokens[0].dim() == 2 else None
        for offset, tokens in enumerate(music_tokens):
            level = start_level + offset
            if tokens.dim() != 2 or tokens.shape[0] != batch:
                raise ValueError(
                    f"music_tokens[{offset}] (level {level}) must be [batch={batch}, length], got {tuple(tokens.shape)}"
                )
            if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
                raise ValueError(f"music_tokens[{offset}] (level {level}) must be integer, got {tokens.dtype}")
            if tokens.numel() and not tokens.is_meta and (int(tokens.min()) < 0 or int(tokens.max()) >= self.nb_discrete_codes):
                raise ValueError(
                    f"music_tokens[{offset}] (level {level}) has values in [{int(tokens.min())}, {int(tokens.max())}], "
                    f"outside [0, {self.nb_discrete_codes})"
                )

    @staticmethod
    def _check_chunks(bs_chunks: int) -> None:
        if not isinstance(bs_chunks, int) or isinstance(bs_chunks, bool) or bs_chunks < 1:
            raise ValueError(f"bs_chunks must be an int >= 1, got {bs_chunks!r}")

    # -- encode / decode ----------------------------------------------------------------------

    def _to_channels_first(self, audio: torch.Tensor) -> torch.Tensor:
        """[batch, samples, channels] -> [batch, channels, samples] in the weights' dtype."""
        dtype = self.encoders[0].level_blocks[0].proj_out.weight.dtype
        return audio.permute(0, 2, 1).to(dtype)

    def encode(
        self, input_audio: torch.Tensor, start_level: int = 0, end_level: int | None = None, bs_chunks: int = 1
    ) -> list[torch.LongTensor]:
        """Audio -> tokens of levels ``start_level .. end_level - 1``.

        Args:
            input_audio: float [batch, samples, channels].
            start_level, end_level: levels to return (default: all).
            bs_chunks: split the batch into this many chunks (bounds memory; results are identical).

        Returns:
            One int64 [batch, samples // hop_lengths[level]] tensor per level, finest first.
        """
        start_level, end_level = self._level_range(start_level, end_level)
        self._check_chunks(bs_chunks)
        self._check_audio(input_audio, end_level - 1)
        per_chunk = []
        for chunk in torch.chunk(input_audio, bs_chunks, dim=0):
            audio = self._to_channels_first(chunk)
            per_chunk.append(
                [
                    self.bottleneck.level_blocks[level].encode(self.encoders[level](audio))
                    for level in range(start_level, end_level)
                ]
            )
        return [torch.cat(level_tokens, dim=0) for level_tokens in zip(*per_chunk)]

    def decode(
        self,
        music_tokens: Sequence[torch.LongTensor],
        start_level: int = 0,
        end_level: int | None = None,
        bs_chunks: int = 1,
    ) -> torch.Tensor:
        """Tokens -> audio, decoded from level ``start_level`` alone (as the reference).

        Args:
            music_tokens: int64 [batch, length_level] tensors for levels ``start_level, start_level + 1,
                ...`` (at most ``end_level - start_level``). Only ``music_tokens[0]`` shapes the audio:
                each level's decoder reconstructs audio on its own. All are validated.
            start_level, end_level: level of ``music_tokens[0]`` and the end of the given range.
            bs_chunks: split the batch into this many chunks (bounds memory; results are identical).

        Returns:
            float [batch, length_start_level * hop_lengths[start_level], channels].
        """
        start_level, end_level = self._level_range(start_level, end_level)
        self._check_chunks(bs_chunks)
        self._check_tokens(music_tokens, start_level, end_level)
        quantiser, decoder = self.bottleneck.level_blocks[start_level], self.decoders[start_level]
        audio = [
            decoder(quantiser.decode(chunk.long())).permute(0, 2, 1)
            for chunk in torch.chunk(music_tokens[0], bs_chunks, dim=0)
        ]
        return torch.cat(audio, dim=0)

    def forward(self, raw_audio: torch.Tensor) -> VQVAEOutput:
        """Encode, quantise and reconstruct at every level; in training mode also update the codebooks.

        Args:
            raw_audio: float [batch, samples, channels].

        Returns:
            :class:`VQVAEOutput`: per-level reconstructions [batch, samples_level, channels] (with
            ``samples_level = samples // hop_lengths[level] * hop_lengths[level]``), the weighted commit
            loss and the per-level commit losses. Gradients reach the encoders through the
            straight-through estimator in training mode only.
        """
        self._check_audio(raw_audio, self.levels - 1)
        audio = self._to_channels_first(raw_audio)
        latents = [encoder(audio) for encoder in self.encoders]
        quantised = self.bottleneck(latents, update_codebook=self.training)
        reconstructions, commit_losses = [], []
        for level, output in enumerate(quantised):
            states = output.quantised if self.training else output.quantised.detach()
            reconstructions.append(self.decoders[level](states).permute(0, 2, 1))
            commit_losses.append(output.commit_loss)
        loss = self.commit * sum(commit_losses)
        return VQVAEOutput(reconstructions, loss, commit_losses)
