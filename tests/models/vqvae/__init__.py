"""Shared helpers for the VQ-VAE tests: tiny configurations and reference/ours model pairs."""
from __future__ import annotations

import torch

# Tiny configurations covering the architecture's axes: levels, per-level downsampling and strides,
# multipliers, widths, code counts, channels, residual scaling, dilation cycles and growth rates.
TINY_CONFIGS: dict[str, dict] = {
    "three_levels_mono": dict(
        levels=3, res_downs_t=[2, 1, 1], res_strides_t=[2, 2, 2], multipliers=[2, 1, 1],
        res_conv_width=8, res_conv_depth=2, embed_dim=8, nb_discrete_codes=32, conv_input_shape=1,
    ),
    "two_levels_stereo_res_scale": dict(
        levels=2, hop_fraction=[0.5, 0.5], res_downs_t=[1, 2], res_strides_t=[4, 2], multipliers=[1, 2],
        res_conv_width=6, res_conv_depth=3, embed_dim=4, nb_discrete_codes=16, conv_input_shape=2,
        conv_res_scale=True, res_dilation_cycle=2, res_dilation_growth_rate=2, res_convolution_multiplier=2,
    ),
    "one_level_wide_codebook": dict(
        levels=1, hop_fraction=[0.5], res_downs_t=[3], res_strides_t=[2], multipliers=[3],
        res_conv_width=4, res_conv_depth=1, embed_dim=16, nb_discrete_codes=64, conv_input_shape=1, zero_out=True,
    ),
    "three_levels_stereo_cycle": dict(
        levels=3, res_downs_t=[1, 1, 2], res_strides_t=[2, 4, 2], multipliers=[1, 1, 2],
        res_conv_width=5, res_conv_depth=3, embed_dim=3, nb_discrete_codes=8, conv_input_shape=2,
        res_dilation_cycle=1, commit=0.5, lmu=0.9,
    ),
}


def make_audio(batch: int, samples: int, channels: int, seed: int = 0) -> torch.Tensor:
    """float32 [batch, samples, channels]: noise plus a sine, deterministic in ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    time = torch.arange(samples, dtype=torch.float32)
    sine = torch.sin(time * 0.05 * (1 + torch.arange(batch * channels, dtype=torch.float32).view(-1, 1)))
    noise = 0.3 * torch.randn(batch * channels, samples, generator=generator)
    return (sine + noise).view(batch, channels, samples).permute(0, 2, 1).contiguous()


def reference_with_data_codebooks(config_kwargs: dict, seed: int = 0):
    """A transformers ``JukeboxVQVAE`` (eval mode) whose codebooks are drawn from its own latents.

    A freshly built reference has all-zero codebooks (every token 0), which would make parity on
    tokens trivial; codes taken from real latents give varied tokens and near-ties.
    Returns (hf_config, reference_model, total samples of one top-level token).
    """
    import transformers

    torch.manual_seed(seed)
    hf_config = transformers.JukeboxVQVAEConfig(sample_length=4096, **config_kwargs)
    reference = transformers.JukeboxVQVAE(hf_config).eval()
    top_hop = int(reference.hop_lengths[-1])
    audio = make_audio(2, 8 * top_hop, hf_config.conv_input_shape, seed=seed + 100)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        channels_first = audio.permute(0, 2, 1)
        for level, block in enumerate(reference.bottleneck.level_blocks):
            latent = reference.encoders[level](channels_first)[-1]
            vectors = latent.permute(0, 2, 1).reshape(-1, hf_config.embed_dim)
            rows = torch.randint(0, vectors.shape[0], (hf_config.nb_discrete_codes,), generator=generator)
            noise = 0.05 * vectors.std() * torch.randn(hf_config.nb_discrete_codes, hf_config.embed_dim, generator=generator)
            block.codebook.copy_(vectors[rows] + noise)
    return hf_config, reference, top_hop


def ours_from(hf_config, state_dict):
    """Our ``JukeboxVQVAE`` (eval mode) from a transformers config and state dict (strict load)."""
    from models.config import JukeboxVQVAEConfig
    from models.vqvae import JukeboxVQVAE

    ours = JukeboxVQVAE(JukeboxVQVAEConfig.from_dict(hf_config.to_dict())).eval()
    ours.load_state_dict(state_dict, strict=True)
    return ours


def reversed_codebooks(state_dict: dict, levels: int) -> dict:
    """``state_dict`` with the bottleneck codebooks in reverse level order.

    transformers 4.40.2's ``JukeboxBottleneck.forward`` quantises level L's latent with
    ``level_blocks[-L - 1]``; loading reversed codebooks into the reference makes its forward use
    level L's codebook for level L, i.e. compute what the original Jukebox (and ours) computes.
    """
    swapped = dict(state_dict)
    for level in range(levels):
        swapped[f"bottleneck.level_blocks.{level}.codebook"] = state_dict[
            f"bottleneck.level_blocks.{levels - 1 - level}.codebook"
        ].clone()
    return swapped
