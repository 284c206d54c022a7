"""A song's remaining work, as typed phases: each sampled level's missing windows (top first), then
each decoded level's missing audio segments.

Pipelined, a song's phases are submitted at once (Ray orders the calls by their inputs); level by
level, one phase at a time, each when the previous has finished.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.execute.plan import ChunkPlan, DecodePlan, SongPlan
from pipeline.execute.resume import StoredParts


@dataclass(frozen=True)
class SampleLevel:
    """Windows of one level to sample (their chunks), in window order."""

    level: int
    chunks: tuple[ChunkPlan, ...]


@dataclass(frozen=True)
class DecodeLevel:
    """Audio segments of one level to decode, in order."""

    level: int
    segments: tuple[DecodePlan, ...]


Phase = SampleLevel | DecodeLevel


@dataclass(frozen=True)
class RemainingWork:
    """What a song still needs, given the parts storage holds.

    Attributes:
        phases: the sampling phases (top level first), then the decoding phases.
        prompt_levels: levels whose prompt chunk must be made (encoded, or read from a dataset).
        needs_labels: some window is left to sample (it needs the song's labels).
        lowest_sampled: nothing is left to sample at the song's lowest level.
    """

    phases: tuple[Phase, ...]
    prompt_levels: tuple[int, ...]
    needs_labels: bool
    lowest_sampled: bool


def remaining_work(plan: SongPlan, stored: StoredParts) -> RemainingWork:
    """The phases of ``plan`` whose parts ``stored`` lacks."""
    missing = {
        level: tuple(c for c in chunks if not c.prompt and ("level", level, c.start, c.end) not in stored)
        for level, chunks in plan.chunks.items()
    }
    prompted = tuple(level for level in plan.levels if plan.prompt_tokens(level))
    make_prompt = any(("level", level, 0, plan.prompt_tokens(level)) not in stored for level in prompted)
    phases: list[Phase] = [SampleLevel(level, missing[level]) for level in plan.levels if missing[level]]
    for level, segments in plan.decodes.items():
        todo = tuple(d for d in segments if ("audio", level, d.start, d.end) not in stored)
        if todo:
            phases.append(DecodeLevel(level, todo))
    return RemainingWork(
        phases=tuple(phases),
        prompt_levels=prompted if make_prompt else (),
        needs_labels=any(missing.values()),
        lowest_sampled=not missing[plan.audio_level],
    )
