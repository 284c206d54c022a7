"""Tiny prior variants built with transformers 4.40.2 (the reference) and loaded into ours.

Every variant of the released models is represented at toy size: the merged lyrics/music top
prior (1b_lyrics), the top prior with a separate lyrics encoder (5b_lyrics), the top prior without
lyrics (5b), both upsamplers, and a full-dense prior.
"""
from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from models.config import JukeboxPriorConfig
from models.prior import JukeboxPrior

SAMPLING_RATE = 4000
MAX_DURATION = 20.0  # seconds: 80000 samples
COMMON: dict[str, Any] = dict(
    hidden_size=32,
    n_heads=2,
    attention_multiplier=0.5,
    mlp_multiplier=1.0,
    mask=True,
    music_vocab_size=48,
    lyric_vocab_size=20,
    metadata_dims=[7, 11],
    max_nb_genres=2,
    timing_dims=16,
    sampling_rate=SAMPLING_RATE,
    min_duration=0.0,
    max_duration=MAX_DURATION,
    n_ctx=64,
    blocks=4,
    res_conv_width=16,
    res_conv_depth=2,
    res_dilation_growth_rate=2,
    alignment_head=1,
)

VARIANTS: dict[str, dict[str, Any]] = {
    # 1b_lyrics: lyrics + music in one sequence; layer 15 is prime attention.
    "merged_lyrics": dict(level=0, is_encoder_decoder=True, merged_decoder=True, attention_pattern="enc_dec_with_lyrics",
                          num_layers=16, nb_relevant_lyric_tokens=16, alignment_layer=15),
    # 5b_lyrics: separate (unmasked) lyrics encoder, layer 18 is cross attention.
    "separate_lyrics": dict(level=0, is_encoder_decoder=False, merged_decoder=False,
                            attention_pattern="large_separated_enc_dec_w_lyrics", num_layers=19,
                            nb_relevant_lyric_tokens=16, alignment_layer=18,
                            encoder_config=dict(hidden_size=24, n_heads=2, attention_multiplier=0.5, num_layers=3, blocks=4,
                                                n_ctx=16, attention_pattern="raw_column_previous_row_attention", mask=False,
                                                nb_relevant_lyric_tokens=16, lyric_vocab_size=20, music_vocab_size=48,
                                                metadata_dims=[7, 11], merged_decoder=False, is_encoder_decoder=True)),
    # 5b: no lyrics.
    "no_lyrics": dict(level=0, is_encoder_decoder=False, merged_decoder=False,
                      attention_pattern="raw_column_previous_row_attention", num_layers=3, nb_relevant_lyric_tokens=0),
    "upsampler_1": dict(level=1, is_encoder_decoder=False, merged_decoder=False,
                        attention_pattern="raw_column_previous_row_attention", num_layers=3, nb_relevant_lyric_tokens=0),
    "upsampler_2": dict(level=2, is_encoder_decoder=False, merged_decoder=False,
                        attention_pattern="raw_column_previous_row_attention", num_layers=3, nb_relevant_lyric_tokens=0),
    "full_dense": dict(level=0, is_encoder_decoder=False, merged_decoder=False, attention_pattern="full_dense_attention",
                       num_layers=2, nb_relevant_lyric_tokens=0),
}


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Run a test module on one intra-op thread: the models are tiny, and on a busy 2-core
    machine multi-threaded tiny kernels spend far longer synchronising than computing.
    Test modules import this fixture by name."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def hf_config(variant: str, **overrides: Any):
    """The transformers ``JukeboxPriorConfig`` of ``variant``."""
    from transformers import JukeboxPriorConfig as HFPriorConfig

    kwargs = {**copy.deepcopy(COMMON), **copy.deepcopy(VARIANTS[variant]), **overrides}
    return HFPriorConfig(**kwargs)


def randomize_(module: torch.nn.Module, seed: int = 0, std: float = 0.15) -> torch.nn.Module:
    """Deterministic, well-scaled random weights (the reference leaves some uninitialised)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(module.named_parameters()):
            noise = torch.randn(param.shape, generator=gen)
            if "layer_norm" in name and name.endswith("weight"):
                param.copy_(1.0 + 0.1 * noise)
            elif name.endswith("bias"):
                param.copy_(0.05 * noise)
            else:
                param.copy_(std * noise)
    return module


def build_pair(variant: str, seed: int = 0, reference_pattern: str | None = None, **overrides: Any):
    """(reference prior, our prior) with identical weights, both in eval mode.

    ``reference_pattern``: attention pattern to give the reference instead (for patterns the
    reference cannot build).
    """
    from transformers import JukeboxPrior as HFPrior

    config = hf_config(variant, **overrides)
    ours_config = JukeboxPriorConfig.from_dict(config.to_dict())
    if reference_pattern is not None:
        config.attention_pattern = reference_pattern
    reference = randomize_(HFPrior(config, level=config.level), seed).eval()
    ours = JukeboxPrior(ours_config, level=ours_config.level).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


def build_ours(variant: str, seed: int = 0, **overrides: Any) -> JukeboxPrior:
    """Our prior of ``variant`` with random weights (no reference involved)."""
    config = {**copy.deepcopy(COMMON), **copy.deepcopy(VARIANTS[variant]), **overrides}
    prior = JukeboxPrior(JukeboxPriorConfig.from_dict(config), level=config["level"])
    return randomize_(prior, seed).eval()


def make_labels(prior: JukeboxPrior, batch: int, n_lyrics: int = 40, seed: int = 0, same_lyrics: bool = False) -> torch.Tensor:
    """Label rows as the tokenizer gives them: [0, 0, 0, artist, genres (-1 padded), lyrics...].

    ``same_lyrics``: every row gets the lyrics of row 0 (the reference windows row 0's lyrics for
    every row, so parity checks on batches need it).
    """
    gen = torch.Generator().manual_seed(seed)
    config = prior.config
    n_genres, n_artists = config.metadata_dims
    rows = []
    for row in range(batch):
        artist = torch.randint(0, n_artists, (1,), generator=gen)
        genres = torch.randint(0, n_genres, (config.max_nb_genres,), generator=gen)
        genres[-1] = -1
        lyrics = (torch.randint(1, config.lyric_vocab_size, (n_lyrics,), generator=gen) if prior.lyric_conditioning
                  else torch.zeros(0, dtype=torch.long))
        if same_lyrics and row:
            lyrics = rows[0][4 + config.max_nb_genres :]
        rows.append(torch.cat([torch.zeros(3, dtype=torch.long), artist, genres, lyrics]))
    return torch.stack(rows)


def random_tokens(batch: int, length: int, vocab: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def every_kind_prior(seed: int = 0) -> JukeboxPrior:
    """A prior with a lyrics encoder whose layers cycle through every attention kind (dense,
    block, transpose-block, previous-block, summary, summary-spread, prime over the first
    positions, cross attention to the encoder), for checks of the one-token step."""
    from models.config import AttentionKind
    from models.prior.transformer import LayerStack

    prior = build_ours("separate_lyrics", seed=seed, num_layers=2)
    config = prior.config
    stack = LayerStack(
        list(AttentionKind), config.hidden_size, config.n_heads, int(config.attention_multiplier * config.hidden_size),
        int(config.mlp_multiplier * config.hidden_size), config.n_ctx, config.blocks, spread=2,
        encoder_len=config.nb_relevant_lyric_tokens,
    )
    prior.prior.transformer = randomize_(stack, seed + 1).eval()
    return prior
