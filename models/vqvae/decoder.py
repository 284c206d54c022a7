"""VQ-VAE decoder: dilated residual stacks interleaved with transposed (upsampling) convolutions.

:class:`DecoderConvBlock` multiplies the time axis by ``stride_t ** down_t``; it is also the
priors' music-token upsampler (transformers' ``JukeboxMusicTokenConditioner.upsampler``, built
there with ``reverse_dilation=False``). State-dict layout matches transformers'
``JukeboxDecoderConvBock`` / ``JukeboxDecoder``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.vqvae.resnet import Resnet1D


class DecoderConvBlock(nn.Module):
    """Project ``embed_dim -> hidden_dim``, then ``down_t`` times [Resnet1D, upsample by ``stride_t``].

    Each upsampling step is a transposed convolution of kernel ``2 * stride_t``, stride ``stride_t``
    and padding ``stride_t // 2`` (exactly ``time * stride_t`` outputs for even strides); the last
    one maps back to ``embed_dim`` channels.

    Args:
        embed_dim: channels in and out.
        hidden_dim: channels inside the block.
        depth: residual blocks before each upsampling step.
        down_t: number of upsampling steps (>= 1).
        stride_t: stride of each step.
        res_convolution_multiplier: hidden channels of each residual block are ``multiplier * hidden_dim``.
        dilation_growth_rate: dilation of residual block ``i`` is ``growth_rate ** i`` (see Resnet1D).
        dilation_cycle: restart the dilations every ``dilation_cycle`` blocks; None never restarts.
        conv_res_scale: scale residual branches by ``1 / sqrt(depth)``.
        reverse_dilation: largest dilation first (True in the VQ-VAE, False in the priors' upsampler).
        zero_out: zero-initialise the last convolution of each residual block.
    """

    def __init__(
        self,
        embed_dim: int,
        hidden_dim: int,
        depth: int,
        down_t: int,
        stride_t: int,
        *,
        res_convolution_multiplier: int = 1,
        dilation_growth_rate: int = 3,
        dilation_cycle: int | None = None,
        conv_res_scale: bool = False,
        reverse_dilation: bool = True,
        zero_out: bool = False,
    ):
        super().__init__()
        if down_t < 1 or stride_t < 1:
            raise ValueError(f"DecoderConvBlock needs down_t >= 1 and stride_t >= 1, got down_t={down_t}, stride_t={stride_t}")
        self.embed_dim = embed_dim
        self.hidden_dim = hidden_dim
        self.proj_in = nn.Conv1d(embed_dim, hidden_dim, kernel_size=3, padding=1)
        # Layers alternate [resnet, upsample, resnet, upsample, ...] in one list: the checkpoint layout.
        layers: list[nn.Module] = []
        for step in range(down_t):
            layers.append(
                Resnet1D(
                    hidden_dim,
                    depth,
                    res_convolution_multiplier=res_convolution_multiplier,
                    dilation_growth_rate=dilation_growth_rate,
                    dilation_cycle=dilation_cycle,
                    conv_res_scale=conv_res_scale,
                    reverse_dilation=reverse_dilation,
                    zero_out=zero_out,
                )
            )
            layers.append(
                nn.ConvTranspose1d(
                    hidden_dim,
                    hidden_dim if step < down_t - 1 else embed_dim,
                    kernel_size=2 * stride_t,
                    stride=stride_t,
                    padding=stride_t // 2,
                )
            )
        self.upsample_block = nn.ModuleList(layers)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """hidden_states: float [batch, embed_dim, time] -> [batch, embed_dim, time * stride_t**down_t]."""
        hidden_states = self.proj_in(hidden_states)
        for layer in self.upsample_block:
            hidden_states = layer(hidden_states)
        return hidden_states


class Decoder(nn.Module):
    """Latent of one VQ-VAE level -> audio: ``len(downs_t)`` :class:`DecoderConvBlock`, coarsest first.

    Args:
        out_channels: audio channels.
        embed_dim: latent (codebook) width.
        hidden_dim: channels inside every block.
        depth: residual blocks before each upsampling step.
        downs_t: upsampling steps of each block, finest first (the blocks run in reverse order).
        strides_t: stride of each block, finest first (same length as ``downs_t``).
        res_convolution_multiplier, dilation_growth_rate, dilation_cycle, conv_res_scale, zero_out:
            passed to each :class:`Resnet1D` (with reversed dilations).
    """

    def __init__(
        self,
        out_channels: int,
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
            raise ValueError(f"Decoder needs equally long, non-empty downs_t and strides_t, got {downs_t} and {strides_t}")
        self.level_blocks = nn.ModuleList(
            DecoderConvBlock(
                embed_dim,
                hidden_dim,
                depth,
                down_t,
                stride_t,
                res_convolution_multiplier=res_convolution_multiplier,
                dilation_growth_rate=dilation_growth_rate,
                dilation_cycle=dilation_cycle,
                conv_res_scale=conv_res_scale,
                reverse_dilation=True,
                zero_out=zero_out,
            )
            for down_t, stride_t in zip(downs_t, strides_t)
        )
        self.out = nn.Conv1d(embed_dim, out_channels, kernel_size=3, padding=1)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """latent: float [batch, embed_dim, tokens] -> audio float [batch, out_channels, samples]."""
        hidden_states = latent
        for block in reversed(self.level_blocks):
            hidden_states = block(hidden_states)
        return self.out(hidden_states)
