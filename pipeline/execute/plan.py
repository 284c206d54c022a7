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

from models.prior.sampling import SamplingOptions
from models.seeding import song_seed, window_seed
from models.windows import LevelGeometry, Window
from pipeline.run.spec import SongSpec, level_stage


@dataclass(frozen=True)
class ChunkPlan:
    """One window call and the chunk it makes (or the prompt, which no window makes).

    Attributes:
        level: VQ-VAE level (0 = finest).
        index: position of this chunk among its level's chunks.
        window: the window (start, n_context, n_new) from :mod:`models.windows`; a prompt chunk
            is ``Window(0, 0, n)``.
        seed: ``window_seed(song seed, level, window.start)`` (0 for a prompt chunk).
        context_chunks: indices of this level's chunks holding ``[start, new_start)``.
        upper_span: upper-level token range conditioning the window; None for the top level.
        upper_chunks: indices of the upper level's chunks holding ``upper_span``.
        prompt: the chunk holds the song's prompt tokens ``[0, n)``: encoded or read, not sampled.
    """

    level: int
    index: int
    window: Window
    seed: int
    context_chunks: tuple[int, ...]
    upper_span: tuple[int, int] | None
    upper_chunks: tuple[int, ...]
    prompt: bool = False

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
        prompt_samples: audio samples of the song's prompt (0 without one); each sampled level
            holds ``prompt_samples // raw_to_tokens`` prompt tokens in its chunk 0.
    """

    song: SongSpec
    seed: int
    total_length: int
    n_tokens: dict[int, int]
    chunks: dict[int, tuple[ChunkPlan, ...]]
    decodes: dict[int, tuple[DecodePlan, ...]]
    audio_level: int
    options: dict[int, SamplingOptions]
    prompt_samples: int = 0

    @property
    def levels(self) -> list[int]:
        """Sampled levels, top first."""
        return sorted(self.chunks, reverse=True)

    def n_windows(self, level: int) -> int:
        """Windows sampled at ``level`` (a prompt chunk is not one)."""
        return sum(not c.prompt for c in self.chunks.get(level, ()))

    def prompt_tokens(self, level: int) -> int:
        """Prompt tokens at ``level`` (0 without a prompt)."""
        chunks = self.chunks.get(level, ())
        return chunks[0].end if chunks and chunks[0].prompt else 0

    def fingerprint(self, model_source: str, init_seed: int | None, weights: str | None = None,
                    audio: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """What decides this song's files, tokens and audio: stored with its parts and compared on
        resume, so a resume never mixes settings. ``weights``: which weights
        (:attr:`pipeline.run.config.ModelSpec.weights_tag`); ``audio``: the settings that change
        its audio's bytes (``audio.wav_subtype``, ``margin_tokens``, ``decode_tokens``)."""
        prompt = {"prompt": self.song.prompt, "prompt_samples": self.prompt_samples} if self.prompt_samples else {}
        return {
            **prompt,
            "model": model_source,
            "init_seed": init_seed,
            "weights": weights,
            "artist": self.song.artist,
            "genres": list(self.song.genres),
            "lyrics": self.song.lyrics,
            "seed": self.seed,
            "total_length": self.total_length,
            "levels": {
                str(level): {
                    "windows": [[c.window.start, c.window.n_context, c.window.n_new] for c in self.chunks[level] if not c.prompt],
                    "options": vars(self.options[level]),
                }
                for level in self.levels
            },
            "audio": {"level": self.audio_level, "previews": sorted(self.decodes), **(audio or {})},
        }


def _covering(starts: Sequence[int], ends: Sequence[int], lo: int, hi: int) -> tuple[int, ...]:
    """Indices of the contiguous chunks (``starts``/``ends`` sorted) overlapping ``[lo, hi)``."""
    if hi <= lo:
        return ()
    first = bisect.bisect_right(ends, lo)
    last = bisect.bisect_left(starts, hi)
    return tuple(range(first, last))


def _segments(chunks: Sequence[ChunkPlan], min_tokens: int) -> list[tuple[int, int]]:
    """Token spans of decode segments: consecutive chunks joined until a span holds at least
    ``min_tokens`` (the last span takes what is left)."""
    spans: list[tuple[int, int]] = []
    start = None
    for chunk in chunks:
        start = chunk.start if start is None else start
        if chunk.end - start >= min_tokens:
            spans.append((start, chunk.end))
            start = None
    if start is not None:
        spans.append((start, chunks[-1].end))
    return spans


def plan_song(
    song: SongSpec,
    run_seed: int,
    total_length: int,
    geometries: Sequence[LevelGeometry],
    levels: Sequence[int],
    options: Mapping[int, SamplingOptions],
    margins: Mapping[int, int],
    previews: bool = False,
    prompt_samples: int = 0,
    decode_tokens: int = 0,
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
        decode_tokens: consecutive chunks are decoded as one segment until it holds at least
            this many tokens (0: a segment per chunk).
        prompt_samples: audio samples of the song's prompt, a multiple of the top level's
            samples per token and below ``total_length``; each level's windows continue from
            its prompt tokens (chunk 0), as ``JukeboxModel.primed_sample``.
    """
    top_raw = max(geometries, key=lambda g: g.level).raw_to_tokens
    if prompt_samples < 0 or prompt_samples % top_raw or (prompt_samples and prompt_samples >= total_length):
        raise ValueError(
            f"song {song.id!r}: prompt of {prompt_samples} samples must be whole top-level tokens ({top_raw} samples) "
            f"shorter than the song ({total_length} samples)"
        )
    by_level = {g.level: g for g in geometries}
    seed = song.seed if song.seed is not None else song_seed(run_seed, song.id)
    chunks: dict[int, tuple[ChunkPlan, ...]] = {}
    for level in levels:
        if by_level[level].upper_ratio is not None and level + 1 not in chunks:
            raise ValueError(f"level {level} ({level_stage(level).value}) needs level {level + 1} sampled first")
        chunks[level] = _level_chunks(by_level[level], seed, total_length, prompt_samples, chunks.get(level + 1))
    n_tokens = {level: by_level[level].n_tokens(total_length) for level in levels}
    audio_level = min(levels)
    decodes = {
        level: _decode_segments(chunks[level], n_tokens[level], margins[level], decode_tokens)
        for level in (sorted(levels) if previews else [audio_level])
    }
    return SongPlan(
        song=song,
        seed=seed,
        total_length=total_length,
        n_tokens=n_tokens,
        chunks=chunks,
        decodes=decodes,
        audio_level=audio_level,
        options={level: options[level] for level in levels},
        prompt_samples=prompt_samples,
    )



def _level_chunks(geometry: LevelGeometry, seed: int, total_length: int, prompt_samples: int,
                  upper: Sequence[ChunkPlan] | None) -> tuple[ChunkPlan, ...]:
    """The chunks of one level: its windows (after the prompt's chunk 0), each with its seed, the
    chunks its context comes from and, below the top, the upper level's chunks it conditions on."""
    level = geometry.level
    n_prompt = prompt_samples // geometry.raw_to_tokens
    windows = geometry.windows(total_length, n_prompt)
    if n_prompt:  # the prompt is chunk 0: windows take their context from it like from any chunk
        windows = [Window(0, 0, n_prompt), *windows]
    starts, ends = [w.new_start for w in windows], [w.end for w in windows]
    planned = []
    for index, window in enumerate(windows):
        if n_prompt and index == 0:
            planned.append(ChunkPlan(level, 0, window, 0, (), None, (), prompt=True))
            continue
        span, upper_chunks = None, ()
        if upper is not None:
            span = geometry.upper_span(window)
            upper_chunks = _covering([c.start for c in upper], [c.end for c in upper], *span)
        planned.append(ChunkPlan(
            level=level,
            index=index,
            window=window,
            seed=window_seed(seed, level, window.start),
            context_chunks=_covering(starts, ends, window.start, window.new_start),
            upper_span=span,
            upper_chunks=upper_chunks,
        ))
    return tuple(planned)


def _decode_segments(chunks: Sequence[ChunkPlan], n_tokens: int, margin: int, decode_tokens: int) -> tuple[DecodePlan, ...]:
    """A level's decode segments: runs of chunks of at least ``decode_tokens`` tokens, each
    decoded with ``margin`` tokens either side (clipped to the song)."""
    starts, ends = [c.start for c in chunks], [c.end for c in chunks]
    segments = []
    for start, end in _segments(chunks, decode_tokens):
        lo, hi = max(0, start - margin), min(n_tokens, end + margin)
        segments.append(DecodePlan(chunks[0].level, len(segments), start, end, lo, hi, _covering(starts, ends, lo, hi)))
    return tuple(segments)


class PlanCounter:
    """Windows and tokens per level of many songs, counted one song at a time (for dry runs and
    the run's opening log line); songs of equal length and prompt share one count.

    Args:
        geometries: :func:`models.windows.level_geometries` of the model (any order).
        levels: VQ-VAE levels to sample.
        sampling_rate: the model's audio samples per second.
    """

    def __init__(self, geometries: Sequence[LevelGeometry], levels: Sequence[int], sampling_rate: int) -> None:
        self.by_level = {g.level: g for g in geometries}
        self.levels = list(levels)
        self.sampling_rate = sampling_rate
        self._cache: dict[tuple[int, int], dict[int, tuple[int, int, int]]] = {}
        self.totals = {level: [0, 0, 0] for level in self.levels}
        self.songs = 0
        self.samples = 0

    def add(self, total_length: int, prompt_samples: int = 0) -> None:
        """Count one song of ``total_length`` samples whose first ``prompt_samples`` are given.

        Raises:
            ValueError: from :meth:`LevelGeometry.windows` when the length cannot be windowed.
        """
        key = (total_length, prompt_samples)
        if key not in self._cache:
            counts = {}
            for level in self.levels:
                geometry = self.by_level[level]
                windows = geometry.windows(total_length, prompt_samples // geometry.raw_to_tokens)
                counts[level] = (len(windows), sum(w.n_new for w in windows), sum(w.n_context + w.n_new for w in windows))
            self._cache[key] = counts
        for level, counts in self._cache[key].items():
            self.totals[level] = [a + b for a, b in zip(self.totals[level], counts)]
        self.songs += 1
        self.samples += total_length

    def summary(self) -> dict[str, Any]:
        """``{"songs", "audio_seconds", "windows", "tokens", "levels": {stage: {"level", "windows",
        "tokens", "window_tokens"}}}``: ``tokens`` are the tokens a level samples (prompts
        excluded), ``window_tokens`` the positions its windows run through the prior."""
        return {
            "songs": self.songs,
            "audio_seconds": round(self.samples / self.sampling_rate, 3),
            "windows": sum(t[0] for t in self.totals.values()),
            "tokens": sum(t[1] for t in self.totals.values()),
            "levels": {
                level_stage(level).value: {"level": level, "windows": t[0], "tokens": t[1], "window_tokens": t[2]}
                for level, t in self.totals.items()
            },
        }
