"""Deterministic seeds: every seed of the project derives from a named recipe and its parts.

Every window's randomness derives from the song's seed, the level and the window start, so a
window gives the same tokens whether it is sampled alone, batched with other songs, retried after
a failure or resumed in a later run. Songs, grid samples, initial weights and training steps
derive theirs the same way (:func:`derive_seed`).
"""
from __future__ import annotations

import hashlib

import torch

_SEED_BITS = 63


def derive_seed(recipe: str, *parts: object) -> int:
    """A 63-bit seed from a recipe name and its parts: a stable hash of ``recipe:part:part...``
    (the same on every machine, Python version and process, unlike ``hash``)."""
    text = ":".join([f"jukebox-{recipe}", *(str(part) for part in parts)])
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << _SEED_BITS) - 1)


def window_seed(song_seed: int, level: int, start: int) -> int:
    """Seed of the window of ``level`` starting at token ``start`` of a song seeded ``song_seed``."""
    if start < 0 or level < 0:
        raise ValueError(f"window_seed needs level >= 0 and start >= 0, got level={level}, start={start}")
    return derive_seed("window", int(song_seed), level, start)


def song_seed(run_seed: int, song_id: str) -> int:
    """Seed of a song in a run when the song names none: a stable hash of (run seed, song id)."""
    return derive_seed("song", int(run_seed), song_id)


def generator_for(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen
