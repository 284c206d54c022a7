"""Tokens that ``sample_window`` gave before the static decode step: they must never change.

A run resumes from the windows it already wrote, so the same window with the same seed must give
the same tokens in float32 on CPU whatever the sampler's internals. ``resume_tokens.json`` holds
the tokens the sampler of commit 23822ac (Python-int cache reads, ``decode_block``) drew for the
windows below: every prior kind (merged lyrics with prime attention, both ways of
``merged_decoder``; a separate lyrics encoder read by cross attention; no lyrics; an upsampler
with per-position conditioning), windows from the song's start, mid-song, with per-row positions,
and windows whose context and new tokens run past the block and previous-block ring buffers'
wrap-around (``n_ctx`` 64, ``block_ctx`` 16: rings of 16 and 32 slots).

``python -m tests.models.prior.test_resume_tokens --write`` regenerates the file; never run it to
make this test pass: a change of tokens is a broken resume.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from models.prior import JukeboxPrior, SamplingOptions
from models.seeding import window_seed
from tests.models.prior import build_ours, make_labels, random_tokens, single_thread  # noqa: F401

DATA = Path(__file__).with_name("resume_tokens.json")
TOTAL_LENGTH = 3 * 64 * 128 + 1000
PRIORS = {
    "merged_lyrics": dict(),
    "merged_lyrics_unmerged_decoder": dict(merged_decoder=False),
    "separate_lyrics": dict(),
    "no_lyrics": dict(),
    "upsampler_1": dict(),
}
# (name, batch, starts, n_context, n_new, options): starts one per row (window start in tokens).
WINDOWS = [
    ("song_start", 2, [0, 0], 0, 24, SamplingOptions()),
    ("mid_song_wraps_rings", 3, [128, 128, 128], 40, 24, SamplingOptions(temperature=0.9, top_k=20, top_p=0.95, chunk_size=16)),
    ("long_decode_past_wraps", 1, [64], 12, 52, SamplingOptions(temperature=0.8)),
    ("rows_at_other_positions", 2, [32, 192], 30, 34, SamplingOptions(top_p=0.9, chunk_size=7)),
]


def _prior(variant: str, index: int) -> JukeboxPrior:
    base = variant.split("_unmerged")[0]
    return build_ours(base, seed=100 + index, **PRIORS[variant])


def sample_windows(prior: JukeboxPrior, variant_seed: int) -> dict[str, list[list[int]]]:
    """Tokens of every window of :data:`WINDOWS` for ``prior``: {window name: [row][token]}."""
    out = {}
    for number, (name, batch, starts, n_context, n_new, options) in enumerate(WINDOWS):
        seed = 1000 * variant_seed + number
        labels = make_labels(prior, batch, n_lyrics=25 + 9 * number, seed=seed)
        context = random_tokens(batch, n_context, prior.config.music_vocab_size, seed + 1)
        upper = None
        if prior.level:
            ratio = prior.cond_downsample
            needed = max((s + n_context + n_new) // ratio - s // ratio for s in starts)
            upper = random_tokens(batch, needed, prior.config.music_vocab_size, seed + 2)
        seeds = [window_seed(7 + row, prior.vqvae_level, s) for row, s in enumerate(starts)]
        new = prior.sample_window(labels, context, upper, starts, n_new, TOTAL_LENGTH, seeds, options)
        out[name] = new.tolist()
    return out


def all_tokens() -> dict[str, dict[str, list[list[int]]]]:
    return {variant: sample_windows(_prior(variant, i), i) for i, variant in enumerate(PRIORS)}


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads(DATA.read_text())


@pytest.mark.parametrize("variant", list(PRIORS))
def test_windows_give_the_recorded_tokens(variant, recorded):
    index = list(PRIORS).index(variant)
    tokens = sample_windows(_prior(variant, index), index)
    assert set(tokens) == set(recorded[variant])
    for name, rows in recorded[variant].items():
        assert tokens[name] == rows, f"{variant} / {name}: tokens differ from the recorded ones"


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python -m tests.models.prior.test_resume_tokens --write  (see the module docstring)")
    torch.set_num_threads(1)
    DATA.write_text(json.dumps(all_tokens(), indent=None, separators=(",", ":")) + "\n")
    print(f"wrote {DATA}")
