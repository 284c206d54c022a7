"""A song as a DAG of window calls: which chunks each window and each decode needs.

Every window of a level makes one *chunk*: its new tokens ``[new_start, end)``. The chunks of a
level tile it from 0 to its last token, in window order. A window needs the chunks of its own
level that hold its context ``[start, new_start)`` and the chunks of the level above that hold
its upper span; a decode segment needs the chunks covering its tokens plus a margin on each side.
The window arithmetic itself (starts, hops, spans) is :mod:`models.windows`, shared with
:class:`models.jukebox.JukeboxModel`, so both sample exactly the same windows with the same seeds.
"""
from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from models.seeding import song_seed, window_seed
from models.windows import LevelGeometry, Window
from models.prior.sampling import SamplingOptions
from pipeline.config import SongSpec, level_stage


@dataclass(frozen=True)
class ChunkPlan:
    """One window call and the chunk it makes.

    Attributes:
        level: VQ-VAE level (0 = finest).
        index: position of this chunk among its level's chunks.
        window: the window (start, n_context, n_new) from :mod:`models.windows`.
        seed: ``window_seed(song seed, level, window.start)``.
        context_chunks: indices of this level's chunks holding ``[start, new_start)``.
        upper_span: upper-level token range conditioning the window; None for the top level.
        upper_chunks: indices of the upper level's chunks holding ``upper_span``.
    """

    level: int
    index: int
    window: Window
    seed: int
    context_chunks: tuple[int, ...]
    upper_span: tuple[int, int] | None
    upper_chunks: tuple[int, ...]

    @property
    def start(self) -> int:
        """First token of the chunk (the window's first new token)."""
        return self.window.new_start

    @property
    def end(self) -> int:
        return self.window.end


@dataclass(frozen=True)
class DecodePlan:
    """Audio of tokens ``[start, end)`` of ``level``, decoded from ``[lo, hi)`` (a margin each side)."""

    level: int
    index: int
    start: int
    end: int
    lo: int
    hi: int
    chunks: tuple[int, ...]


@dataclass(frozen=True)
class SongPlan:
    """Everything the scheduler submits for one song.

    Attributes:
        song: the song's spec.
        seed: the song seed (its own, or derived from the run seed and id).
        total_length: length in audio samples.
        n_tokens: tokens per sampled level.
        chunks: per sampled level (top first), its chunk plans in order.
        decodes: per decoded level, its decode segments in order (the lowest sampled level, plus
            upper levels when previews are on).
        audio_level: the level the song's audio is decoded from.
        options: sampling options per sampled level.
    """

    song: SongSpec
    seed: int
    total_length: int
    n_tokens: dict[int, int]
    chunks: dict[int, tuple[ChunkPlan, ...]]
    decodes: dict[int, tuple[DecodePlan, ...]]
    audio_level: int
    options: dict[int, SamplingOptions]

    @property
    def levels(self) -> list[int]:
        """Sampled levels, top first."""
        return sorted(self.chunks, reverse=True)

    def n_windows(self, level: int) -> int:
        return len(self.chunks.get(level, ()))

    def fingerprint(self, model_source: str, init_seed: int | None) -> dict[str, Any]:
        """What decides this song's tokens: stored with its parts and compared on resume."""
        return {
            "model": model_source,
            "init_seed": init_seed,
            "artist": self.song.artist,
            "genres": list(self.song.genres),
            "lyrics": self.song.lyrics,
            "seed": self.seed,
            "total_length": self.total_length,
            "levels": {
                str(level): {
                    "windows": [[c.window.start, c.window.n_context, c.window.n_new] for c in self.chunks[level]],
                    "options": vars(self.options[level]),
                }
                for level in self.levels
            },
        }


def _covering(starts: Sequence[int], ends: Sequence[int], lo: int, hi: int) -> tuple[int, ...]:
    """Indices of the contiguous chunks (``starts``/``ends`` sorted) overlapping ``[lo, hi)``."""
    if hi <= lo:
        return ()
    first = bisect.bisect_right(ends, lo)
    last = bisect.bisect_left(starts, hi)
    return tuple(range(first, last))


def plan_song(
    song: SongSpec,
    run_seed: int,
    total_length: int,
    geometries: Sequence[LevelGeometry],
    levels: Sequence[int],
    options: Mapping[int, SamplingOptions],
    margins: Mapping[int, int],
    previews: bool = False,
) -> SongPlan:
    """Plan one song.

    Args:
        song: the song.
        run_seed: seeds songs that name none (``song_seed(run_seed, song.id)``).
        total_length: song length in audio samples (whole top-level tokens).
        geometries: :func:`models.windows.level_geometries` of the model (prior order).
        levels: VQ-VAE levels to sample, top first, without gaps.
        options: sampling options per sampled level.
        margins: decoder margin in tokens per level to decode.
        previews: also plan decoding of the upper sampled levels.
    """
    by_level = {g.level: g for g in geometries}
    seed = song.seed if song.seed is not None else song_seed(run_seed, song.id)
    chunks: dict[int, tuple[ChunkPlan, ...]] = {}
    n_tokens: dict[int, int] = {}
    for level in levels:
        geometry = by_level[level]
        windows = geometry.windows(total_length)
        n_tokens[level] = geometry.n_tokens(total_length)
        starts = [w.new_start for w in windows]
        ends = [w.end for w in windows]
        upper_starts = upper_ends = None
        if geometry.upper_ratio is not None:
            if level + 1 not in chunks:
                raise ValueError(f"level {level} ({level_stage(level).value}) needs level {level + 1} sampled first")
            upper = chunks[level + 1]
            upper_starts, upper_ends = [c.start for c in upper], [c.end for c in upper]
        planned = []
        for index, window in enumerate(windows):
            span = None
            upper_chunks: tuple[int, ...] = ()
            if upper_starts is not None:
                span = geometry.upper_span(window)
                upper_chunks = _covering(upper_starts, upper_ends, *span)
            planned.append(
                ChunkPlan(
                    level=level,
                    index=index,
                    window=window,
                    seed=window_seed(seed, level, window.start),
                    context_chunks=_covering(starts, ends, window.start, window.new_start),
                    upper_span=span,
                    upper_chunks=upper_chunks,
                )
            )
        chunks[level] = tuple(planned)
    audio_level = min(levels)
    decoded = sorted(levels) if previews else [audio_level]
    decodes = {}
    for level in decoded:
        level_chunks = chunks[level]
        starts, ends = [c.start for c in level_chunks], [c.end for c in level_chunks]
        margin = margins[level]
        segments = []
        for chunk in level_chunks:
            lo, hi = max(0, chunk.start - margin), min(n_tokens[level], chunk.end + margin)
            segments.append(DecodePlan(level, chunk.index, chunk.start, chunk.end, lo, hi, _covering(starts, ends, lo, hi)))
        decodes[level] = tuple(segments)
    return SongPlan(
        song=song,
        seed=seed,
        total_length=total_length,
        n_tokens=n_tokens,
        chunks=chunks,
        decodes=decodes,
        audio_level=audio_level,
        options={level: options[level] for level in levels},
    )

