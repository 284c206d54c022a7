"""Dilated residual 1-D convolution stacks, shared by the VQ-VAE encoder/decoder and the priors' upsampler.

A stack of ``depth`` residual blocks. Block ``i`` widens its receptive field with a dilation of
``dilation_growth_rate ** (i % dilation_cycle)`` (``** i`` without a cycle), so a stack covers an
exponentially long stretch of audio at a cost linear in ``depth``. The decoder runs the dilations in
reverse (largest first), mirroring the encoder.

State-dict layout (``resnet_block.{i}.conv1d_1`` / ``conv1d_2``) matches transformers'
``JukeboxResnet1D`` so the released checkpoints load unchanged.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class ResConv1DBlock(nn.Module):
    """``x + res_scale * conv_1x1(relu(conv_3_dilated(relu(x))))``, length preserving.

    Args:
        width: channels in and out.
        hidden_dim: channels between the two convolutions.
        dilation: dilation of the kernel-3 convolution (its padding equals it, keeping the length).
        res_scale: weight of the residual branch.
        zero_out: start the residual branch at zero (the block is then the identity at init).
    """

    def __init__(self, width: int, hidden_dim: int, dilation: int, res_scale: float = 1.0, zero_out: bool = False):
        super().__init__()
        self.res_scale = res_scale
        self.conv1d_1 = nn.Conv1d(width, hidden_dim, kernel_size=3, padding=dilation, dilation=dilation)
        self.conv1d_2 = nn.Conv1d(hidden_dim, width, kernel_size=1)
        if zero_out:
            nn.init.zeros_(self.conv1d_2.weight)
            nn.init.zeros_(self.conv1d_2.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """hidden_states: float [batch, width, time] -> same shape."""
        branch = self.conv1d_2(F.relu(self.conv1d_1(F.relu(hidden_states))))
        return hidden_states + self.res_scale * branch


def _check_positive(name: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


class Resnet1D(nn.Module):
    """A stack of :class:`ResConv1DBlock` with growing dilations (activation: ReLU, as the reference).

    Args:
        width: channels of the stack.
        depth: number of residual blocks.
        res_convolution_multiplier: hidden channels of each block are ``multiplier * width``.
        dilation_growth_rate: block ``i`` is dilated by ``growth_rate ** i`` (or ``** (i % cycle)``).
        dilation_cycle: restart the dilations every ``dilation_cycle`` blocks; None never restarts.
        conv_res_scale: scale each residual branch by ``1 / sqrt(depth)`` instead of 1.
        reverse_dilation: order the blocks from the largest dilation to the smallest.
        zero_out: zero-initialise the last convolution of each block.
    """

    def __init__(
        self,
        width: int,
        depth: int,
        *,
        res_convolution_multiplier: int = 1,
        dilation_growth_rate: int = 3,
        dilation_cycle: int | None = None,
        conv_res_scale: bool = False,
        reverse_dilation: bool = False,
        zero_out: bool = False,
    ):
        super().__init__()
        _check_positive("width", width)
        _check_positive("depth", depth)
        _check_positive("res_convolution_multiplier", res_convolution_multiplier)
        _check_positive("dilation_growth_rate", dilation_growth_rate)
        if dilation_cycle is not None:
            _check_positive("dilation_cycle", dilation_cycle)
        res_scale = 1.0 / math.sqrt(depth) if conv_res_scale else 1.0
        exponents = [i if dilation_cycle is None else i % dilation_cycle for i in range(depth)]
        if reverse_dilation:
            exponents.reverse()
        self.resnet_block = nn.ModuleList(
            ResConv1DBlock(
                width,
                res_convolution_multiplier * width,
                dilation=dilation_growth_rate**exponent,
                res_scale=res_scale,
                zero_out=zero_out,
            )
            for exponent in exponents
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """hidden_states: float [batch, width, time] -> same shape."""
        for block in self.resnet_block:
            hidden_states = block(hidden_states)
        return hidden_states
