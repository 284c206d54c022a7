"""Progress per stage while a run goes, and the summary at its end.

The driver feeds every finished call's stats (stage, tokens, times, actor, batch size) to
:class:`Progress`. A stage's *busy time* is the time its actors spent working on calls (gathering
inputs, forward passes, writing parts): per actor the union of its calls' [entered, returned)
spans, summed over the stage's actors; its *compute time* counts forward passes only. *Overlap*
is the sum of the stages' busy times over the wall time: 1.0 means one stage at a time (level by
level), more means stages ran at once.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.actors.messages import CallStats
from pipeline.run.spec import Stage

logger = logging.getLogger(__name__)


class IntervalUnion:
    """Total length of the union of intervals, in bounded memory.

    Intervals may arrive a little out of order. At most ``max_open`` are kept: beyond that they
    are merged and all but the latest ``max_open // 2`` are folded into a running total; a later
    interval reaching back into the folded past counts only from its end on (a call finishing
    hundreds of calls out of order is not expected, and would be undercounted by its overlap
    with gaps already folded).
    """

    def __init__(self, max_open: int = 256) -> None:
        self.max_open = max_open
        self.closed = 0.0
        self.folded_until = float("-inf")
        self.open: list[tuple[float, float]] = []

    def add(self, lo: float, hi: float) -> None:
        lo = max(lo, self.folded_until)
        if hi <= lo:
            return
        self.open.append((lo, hi))
        if len(self.open) > self.max_open:
            merged = self._merged()
            keep = self.max_open // 2
            folded, self.open = merged[:-keep], merged[-keep:]
            self.closed += sum(b - a for a, b in folded)
            self.folded_until = max(self.folded_until, folded[-1][1]) if folded else self.folded_until

    def _merged(self) -> list[tuple[float, float]]:
        merged: list[tuple[float, float]] = []
        for lo, hi in sorted(self.open):
            if merged and lo <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        return merged

    @property
    def total(self) -> float:
        return self.closed + sum(hi - lo for lo, hi in self._merged())


@dataclass
class StageProgress:
    """Counters of one stage in this run (work found done in storage is not counted)."""

    planned_calls: int = 0
    planned_tokens: int = 0
    done_calls: int = 0
    done_tokens: int = 0
    passes: float = 0.0  # forward passes: a call batched with n others counts 1 / n
    first_start: float | None = None
    last_end: float | None = None
    spans: dict[str, IntervalUnion] = field(default_factory=dict)
    batches: dict[str, IntervalUnion] = field(default_factory=dict)

    @property
    def busy_s(self) -> float:
        """Seconds the stage's actors spent on calls: per actor, the union of its call spans."""
        return sum(union.total for union in self.spans.values())

    @property
    def compute_s(self) -> float:
        """Seconds of forward passes (a batch shared by several calls counted once)."""
        return sum(union.total for union in self.batches.values())

    @property
    def finished(self) -> bool:
        """Every planned call is done."""
        return self.done_calls >= self.planned_calls

    def rate(self, now: float) -> float:
        """Tokens per second from the stage's first call to ``now``, or to its last call once the
        stage has finished (its rate then stays what it was, however long the run goes on)."""
        if self.first_start is None or self.done_tokens == 0:
            return 0.0
        end = self.last_end if self.finished and self.last_end is not None else now
        return self.done_tokens / max(end - self.first_start, 1e-9)

    def eta_s(self, now: float) -> float | None:
        rate = self.rate(now)
        if rate == 0.0:
            return None
        return (self.planned_tokens - self.done_tokens) / rate


@dataclass(frozen=True)
class RunSummary:
    """What a run did and how well stages overlapped.

    Attributes:
        wall_s: from the first submitted call to the last finished one.
        first_audio_s: from the first submitted call to the first decoded audio segment.
        overlap: sum of the stages' busy seconds / wall_s.
        stages: per stage: calls, tokens, busy_s, compute_s, tokens_per_s (per busy second; for
            the encode stage ``tokens`` counts audio samples, see :func:`work_unit`),
            mean_batch (calls per forward pass), first_start_s, last_end_s (relative to the start).
    """

    wall_s: float
    first_audio_s: float | None
    overlap: float
    stages: dict[str, dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return {"wall_s": self.wall_s, "first_audio_s": self.first_audio_s, "overlap": self.overlap, "stages": self.stages}


class Progress:
    """Per-stage counters fed by call stats; logs a progress line at most every ``interval_s``."""

    def __init__(self, stages: Iterable[Stage], interval_s: float = 2.0) -> None:
        self.stages = {stage: StageProgress() for stage in stages}
        self.interval_s = interval_s
        self.started_at = time.time()
        self.first_audio_at: float | None = None
        self._last_log = 0.0

    def start(self) -> None:
        """Mark the start of work (after the actors are ready)."""
        self.started_at = time.time()

    def plan(self, stage: Stage, calls: int, tokens: int) -> None:
        progress = self.stages[stage]
        progress.planned_calls += calls
        progress.planned_tokens += tokens

    def record(self, stats: CallStats) -> None:
        """Count one finished call."""
        stage = Stage(stats.stage)
        progress = self.stages[stage]
        progress.done_calls += 1
        progress.done_tokens += stats.end - stats.start
        progress.passes += 1.0 / max(stats.batch_size, 1)
        started, finished, entered, returned = stats.started_at, stats.finished_at, stats.entered_at, stats.returned_at
        progress.batches.setdefault(stats.actor, IntervalUnion()).add(started, finished)
        progress.spans.setdefault(stats.actor, IntervalUnion()).add(entered, returned)
        progress.first_start = entered if progress.first_start is None else min(progress.first_start, entered)
        progress.last_end = returned if progress.last_end is None else max(progress.last_end, returned)
        if stage is Stage.DECODE and (self.first_audio_at is None or finished < self.first_audio_at):
            self.first_audio_at = finished

    def line(self, now: float | None = None) -> str:
        """One line: per stage done/total calls, tokens/s and ETA."""
        now = time.time() if now is None else now
        parts = []
        for stage, progress in self.stages.items():
            if progress.planned_calls == 0:
                continue
            eta = progress.eta_s(now)
            eta_text = "--" if eta is None else f"{eta:.0f}s"
            calls = {Stage.TOKENIZE: "songs", Stage.ENCODE: "files"}.get(stage, "windows")
            parts.append(
                f"{stage.value} {progress.done_calls}/{progress.planned_calls} {calls} "
                f"{progress.rate(now):.0f} {_RATE_UNIT[work_unit(stage)]} ETA {eta_text}"
            )
        return " | ".join(parts)

    def maybe_log(self, force: bool = False) -> None:
        now = time.time()
        if force or now - self._last_log >= self.interval_s:
            self._last_log = now
            line = self.line(now)
            if line:
                logger.info("progress: %s", line)

    def summary(self) -> RunSummary:
        ends = [p.last_end for p in self.stages.values() if p.last_end is not None]
        wall = max(max(ends) - self.started_at, 1e-9) if ends else 0.0
        stages = {}
        for stage, progress in self.stages.items():
            busy = progress.busy_s
            stages[stage.value] = {
                "calls": progress.done_calls,
                "tokens": progress.done_tokens,
                "busy_s": busy,
                "compute_s": progress.compute_s,
                "tokens_per_s": progress.done_tokens / busy if busy > 0 else 0.0,
                "mean_batch": progress.done_calls / progress.passes if progress.passes else 0.0,
                "first_start_s": None if progress.first_start is None else progress.first_start - self.started_at,
                "last_end_s": None if progress.last_end is None else progress.last_end - self.started_at,
            }
        overlap = sum(p.busy_s for p in self.stages.values()) / wall if wall > 0 else 0.0
        first_audio = None if self.first_audio_at is None else self.first_audio_at - self.started_at
        return RunSummary(wall_s=wall, first_audio_s=first_audio, overlap=overlap, stages=stages)


_RATE_UNIT = {"tokens": "tok/s", "samples": "samples/s"}


def work_unit(stage: Stage) -> str:
    """What a stage's calls count in ``tokens`` / ``tokens_per_s``: audio samples for the encode
    stage (a call's span is in samples of the input file), tokens for every other stage."""
    return "samples" if stage is Stage.ENCODE else "tokens"


def log_summary(summary: RunSummary) -> None:
    """Log the end-of-run table: each stage's busy time, throughput and the overlap achieved."""
    logger.info("%-9s %8s %12s %9s %9s %12s %10s", "stage", "calls", "done", "busy s", "compute s", "per busy s", "span s")
    for name, row in summary.stages.items():
        if not row["calls"]:
            continue
        span = (row["last_end_s"] or 0.0) - (row["first_start_s"] or 0.0)
        unit = work_unit(Stage(name))
        logger.info(
            "%-9s %8d %12s %9.2f %9.2f %12s %10.2f",
            name, row["calls"], f"{row['tokens']} {unit}", row["busy_s"], row["compute_s"],
            f"{row['tokens_per_s']:.0f} {_RATE_UNIT[unit]}", span,
        )
    first = "n/a" if summary.first_audio_s is None else f"{summary.first_audio_s:.2f} s"
    logger.info("wall %.2f s, first audio after %s, overlap %.2f (sum of stage busy time / wall time)", summary.wall_s, first, summary.overlap)
