"""The ``hps`` entry the original code saves beside each checkpoint's weights, from our config.

The original keeps every hyperparameter in one flat dict (``jukebox/hparams.py``) and saves it
with the weights; nothing reads it back when a model is restored, so it is documentation of the
file. :func:`original_hparams` writes what our config knows under the original's names, so a file
written by :func:`models.openai_checkpoint.save_openai_checkpoint` describes itself as the
released files do.
"""
from __future__ import annotations

from typing import Any

from models.config import AttentionPattern, JukeboxConfig

# The original's integer codes of the attention patterns (``attn_order``).
ATTN_ORDER = {
    AttentionPattern.FULL_DENSE: 0,
    AttentionPattern.RAW_COLUMN_PREVIOUS_ROW: 2,
    AttentionPattern.LARGE_SEPARATED_ENC_DEC_W_LYRICS: 10,
    AttentionPattern.ENC_DEC_WITH_LYRICS: 12,
}


def _vqvae_hparams(config: JukeboxConfig) -> dict[str, Any]:
    vqvae = config.vqvae_config
    return {
        "sr": config.sampling_rate,
        "levels": vqvae.levels,
        "downs_t": tuple(vqvae.res_downs_t),
        "strides_t": tuple(vqvae.res_strides_t),
        "emb_width": vqvae.embed_dim,
        "l_bins": vqvae.nb_discrete_codes,
        "l_mu": vqvae.lmu,
        "commit": vqvae.commit,
        "hvqvae_multipliers": tuple(vqvae.multipliers),
        "width": vqvae.res_conv_width,
        "depth": vqvae.res_conv_depth,
        "m_conv": float(vqvae.res_convolution_multiplier),
        "dilation_growth_rate": vqvae.res_dilation_growth_rate,
        "dilation_cycle": vqvae.res_dilation_cycle,
        "vqvae_reverse_decoder_dilation": True,
        "sample_length": vqvae.sample_length,
    }


def original_hparams(config: JukeboxConfig, prior_index: int | None) -> dict[str, Any]:
    """The ``hps`` dict of ``vqvae.pth.tar`` (``prior_index`` None) or of prior ``prior_index``'s
    file (0 is our top prior, saved as ``prior_level_{nb_priors - 1}``): plain Python values only,
    so ``torch.load(..., weights_only=True)`` reads it."""
    hps = _vqvae_hparams(config)
    if prior_index is None:
        return hps
    prior = config.shared_prior_config(prior_index)
    lyrics = prior.nb_relevant_lyric_tokens > 0
    hps.update({
        "level": config.nb_priors - 1 - prior_index,
        "n_ctx": prior.n_ctx,
        "prior_width": prior.hidden_size,
        "prior_depth": prior.num_layers,
        "heads": prior.n_heads,
        "attn_order": ATTN_ORDER[AttentionPattern(prior.attention_pattern)],
        "blocks": prior.blocks,
        "spread": prior.spread,
        "init_scale": prior.init_scale,
        "m_attn": prior.attention_multiplier,
        "m_mlp": prior.mlp_multiplier,
        "zero_out": prior.zero_out,
        "res_scale": prior.attn_res_scale,
        "attn_dropout": prior.attn_dropout,
        "resid_dropout": prior.resid_dropout,
        "emb_dropout": prior.emb_dropout,
        "merged_decoder": prior.merged_decoder,
        "single_enc_dec": lyrics and prior.is_encoder_decoder,
        "labels": prior.metadata_conditioning,
        "y_bins": tuple(prior.metadata_dims),
        "t_bins": prior.timing_dims,
        "max_bow_genre_size": prior.max_nb_genres,
        "min_duration": prior.min_duration,
        "max_duration": prior.max_duration,
        "use_tokens": lyrics,
        "n_tokens": prior.nb_relevant_lyric_tokens,
        "n_vocab": prior.lyric_vocab_size,
        "prime_loss_fraction": prior.encoder_loss_fraction if lyrics else 0.0,
        "alignment_layer": prior.alignment_layer if lyrics else None,
        "alignment_head": prior.alignment_head if lyrics else None,
    })
    if prior_index > 0:  # upsamplers: the music-token conditioner
        hps.update({
            "cond_width": prior.res_conv_width,
            "cond_depth": prior.res_conv_depth,
            "cond_m_conv": float(prior.res_convolution_multiplier),
            "cond_dilation_growth_rate": prior.res_dilation_growth_rate,
            "cond_dilation_cycle": prior.res_dilation_cycle,
            "cond_res_scale": bool(prior.conv_res_scale),
            "cond_zero_out": prior.zero_out,
        })
    if lyrics and not prior.is_encoder_decoder and prior.encoder_config is not None:
        encoder = prior.encoder_config
        hps.update({
            "prime_width": encoder.hidden_size,
            "prime_depth": encoder.num_layers,
            "prime_heads": encoder.n_heads,
            "prime_attn_order": ATTN_ORDER[AttentionPattern(encoder.attention_pattern)],
            "prime_blocks": encoder.blocks,
            "prime_spread": encoder.spread,
            "prime_init_scale": encoder.init_scale,
            "prime_m_attn": encoder.attention_multiplier,
            "prime_m_mlp": encoder.mlp_multiplier,
        })
    return hps
