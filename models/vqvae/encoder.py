"""VQ-VAE encoder: strided convolutions interleaved with dilated residual stacks.

One :class:`EncoderConvBlock` divides the time axis by ``stride_t ** down_t``; an :class:`Encoder`
for level ``L`` chains ``L + 1`` such blocks, so its latent has one vector per ``hop_length[L]``
audio samples. State-dict layout matches transformers' ``JukeboxEncoder``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.vqvae.resnet import Resnet1D


class EncoderConvBlock(nn.Module):
    """Downsample by ``stride_t ** down_t`` then project to ``embed_dim`` channels.

    Each of the ``down_t`` steps is a convolution of kernel ``2 * stride_t``, stride ``stride_t`` and
    padding ``stride_t // 2`` (exactly ``time / stride_t`` outputs for even strides) followed by a
    :class:`Resnet1D` of ``depth`` blocks.

    Args:
        in_channels: channels of the input (audio channels for the first block, ``embed_dim`` after).
        hidden_dim: channels inside the block.
        embed_dim: channels of the output latent.
        depth: residual blocks after each downsampling step.
        down_t: number of downsampling steps (>= 1).
        stride_t: stride of each step.
        res_convolution_multiplier, dilation_growth_rate, dilation_cycle, conv_res_scale, zero_out:
            passed to each :class:`Resnet1D`.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_dim: int,
        embed_dim: int,
        depth: int,
        down_t: int,
        stride_t: int,
        *,
        res_convolution_multiplier: int = 1,
        dilation_growth_rate: int = 3,
        dilation_cycle: int | None = None,
        conv_res_scale: bool = False,
        zero_out: bool = False,
    ):
        super().__init__()
        if down_t < 1 or stride_t < 1:
            raise ValueError(f"EncoderConvBlock needs down_t >= 1 and stride_t >= 1, got down_t={down_t}, stride_t={stride_t}")
        # Layers alternate [conv, resnet, conv, resnet, ...] in one list: the checkpoint layout.
        layers: list[nn.Module] = []
        for step in range(down_t):
            layers.append(
                nn.Conv1d(
                    in_channels if step == 0 else hidden_dim,
                    hidden_dim,
                    kernel_size=2 * stride_t,
                    stride=stride_t,
                    padding=stride_t // 2,
                )
            )
            layers.append(
                Resnet1D(
                    hidden_dim,
                    depth,
                    res_convolution_multiplier=res_convolution_multiplier,
                    dilation_growth_rate=dilation_growth_rate,
                    dilation_cycle=dilation_cycle,
                    conv_res_scale=conv_res_scale,
                    zero_out=zero_out,
                )
            )
        self.downsample_block = nn.ModuleList(layers)
        self.proj_out = nn.Conv1d(hidden_dim, embed_dim, kernel_size=3, padding=1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """hidden_states: float [batch, in_channels, time] -> [batch, embed_dim, time // stride_t**down_t]."""
        for layer in self.downsample_block:
            hidden_states = layer(hidden_states)
        return self.proj_out(hidden_states)


class Encoder(nn.Module):
    """Audio -> latent of one VQ-VAE level: ``len(downs_t)`` :class:`EncoderConvBlock` in a row.

    Args:
        in_channels: audio channels.
        embed_dim: latent (codebook) width.
        hidden_dim: channels inside every block.
        depth: residual blocks after each downsampling step.
        downs_t: downsampling steps of each block, finest first.
        strides_t: stride of each block, finest first (same length as ``downs_t``).
        res_convolution_multiplier, dilation_growth_rate, dilation_cycle, conv_res_scale, zero_out:
            passed to each :class:`Resnet1D`.
    """

    def __init__(
        self,
        in_channels: int,
        embed_dim: int,
        hidden_dim: int,
        depth: int,
        downs_t: Sequence[int],
        strides_t: Sequence[int],
        *,
        res_convolution_multiplier: int = 1,
        dilation_growth_rate: int = 3,
        dilation_cycle: int | None = None,
        conv_res_scale: bool = False,
        zero_out: bool = False,
    ):
        super().__init__()
        if len(downs_t) != len(strides_t) or not downs_t:
            raise ValueError(f"Encoder needs equally long, non-empty downs_t and strides_t, got {downs_t} and {strides_t}")
        self.level_blocks = nn.ModuleList(
            EncoderConvBlock(
                in_channels if index == 0 else embed_dim,
                hidden_dim,
                embed_dim,
                depth,
                down_t,
                stride_t,
                res_convolution_multiplier=res_convolution_multiplier,
                dilation_growth_rate=dilation_growth_rate,
                dilation_cycle=dilation_cycle,
                conv_res_scale=conv_res_scale,
                zero_out=zero_out,
            )
            for index, (down_t, stride_t) in enumerate(zip(downs_t, strides_t))
        )

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """audio: float [batch, in_channels, samples] -> latent float [batch, embed_dim, tokens]."""
        hidden_states = audio
        for block in self.level_blocks:
            hidden_states = block(hidden_states)
        return hidden_states
