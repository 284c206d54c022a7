"""The driver side: songs in, window calls out, chained by ObjectRefs.

Each admitted song becomes a DAG of actor calls submitted at once: a window call takes as
arguments the ObjectRefs of the chunks holding its context and its upper-level tokens, so Ray
starts it the moment those exist; nothing waits for a whole level (pipelined mode; level-by-level
mode submits a level only once the level above is complete, for comparison). Decode calls take
the chunks covering their segment plus a margin. The driver holds references only for the songs
in flight (at most ``max_songs_in_flight``) and drops them when a song is closed, so driver and
object-store memory are bounded by the songs in flight, not by the number of songs.

Resume: chunks and audio segments already in storage are not recomputed; a call needing a stored
chunk gets its path and reads it. A song with its completion marker is skipped.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import ray

from pipeline.actors import DecodeTask, WindowTask
from pipeline.config import RunConfig, ScheduleMode, Stage, level_stage
from pipeline.finalize import FinalizeJob
from pipeline.plan import ChunkPlan, DecodePlan, SongPlan
from pipeline.pools import Pools
from pipeline.progress import Progress
from pipeline.storage import RunStorage
from stages.tokenize import Conditioning

logger = logging.getLogger(__name__)


class PipelineError(RuntimeError):
    """A call of the pipeline failed for good (after Ray's retries)."""


class ResumeMismatchError(ValueError):
    """The output URL holds a song of the same id made with other settings."""


@dataclass
class _SongState:
    """A song in flight: its plan, its chunk refs, the calls still running, what is left to submit."""

    plan: SongPlan
    stored: dict[tuple[str, int, int, int], str]
    refs: dict[tuple[int, int], Any] = field(default_factory=dict)
    labels: Any = None
    pending: int = 0
    phases: list[Callable[[], None]] = field(default_factory=list)
    stages: set[Stage] = field(default_factory=set)


class Scheduler:
    """Admits songs (at most ``max_songs_in_flight``), submits their DAGs, collects manifest rows."""

    def __init__(
        self,
        cfg: RunConfig,
        pools: Pools,
        storage: RunStorage,
        progress: Progress,
        sampling_rate: int,
    ) -> None:
        self.cfg = cfg
        self.pools = pools
        self.storage = storage
        self.progress = progress
        self.sampling_rate = sampling_rate
        self.init_seed = cfg.model.init_seed if cfg.model.checkpoint is None else None
        self._songs: dict[str, _SongState] = {}
        self._pending: dict[Any, tuple[str, str]] = {}
        self.skipped: list[str] = []

    # ------------------------------------------------------------------ admission
    def _check_fingerprint(self, song_id: str, stored: dict[str, Any], expected: dict[str, Any], where: str) -> None:
        if stored == expected:
            return
        keys = sorted(k for k in set(stored) | set(expected) if stored.get(k) != expected.get(k))
        raise ResumeMismatchError(
            f"song {song_id!r} already exists in {self.storage.url!r} ({where}) with different settings ({keys}): "
            f"use another output.url, another song id, or delete the song's files to remake it"
        )

    def _admit(self, plan: SongPlan) -> dict[str, Any] | None:
        """Submit one song; returns its manifest row instead when it is already complete."""
        song_id = plan.song.id
        fingerprint = plan.fingerprint(self.cfg.model.source, self.init_seed)
        marker_path = self.storage.marker_path(song_id)
        if self.storage.fs.exists(marker_path):
            marker = self.storage.read_json(marker_path)
            self._check_fingerprint(song_id, marker["fingerprint"], fingerprint, "finished")
            self.skipped.append(song_id)
            return marker["row"]
        spec_path = self.storage.spec_path(song_id)
        if self.storage.fs.exists(spec_path):
            self._check_fingerprint(song_id, self.storage.read_json(spec_path), fingerprint, "partly made")
        else:
            self.storage.write_json(spec_path, fingerprint)
        stored = {(p.kind, p.level, p.start, p.end): p.path for p in self.storage.list_parts(song_id)}
        state = _SongState(plan, stored)
        self._songs[song_id] = state
        self._plan_phases(state)
        if stored:
            logger.info("song %s: resuming, %d part(s) found in storage", song_id, len(stored))
        self._advance(state)
        return None

    def _advance(self, state: _SongState) -> None:
        """After a call finished: submit the next phase or close the song when nothing is left."""
        if state.pending == 0:
            if state.phases:
                self._next_phases(state)
            else:
                self._finalize(state)

    def _track(self, ref: Any, kind: str, state: _SongState, stage: Stage) -> None:
        self._pending[ref] = (kind, state.plan.song.id)
        state.pending += 1
        state.stages.add(stage)

    def _chunk_ref(self, state: _SongState, level: int, index: int) -> Any:
        """A chunk input: the ObjectRef of a call of this run, or the path of a stored part (the
        actor needing it reads it)."""
        if (level, index) in state.refs:
            return state.refs[(level, index)]
        chunk = state.plan.chunks[level][index]
        return state.stored[("level", level, chunk.start, chunk.end)]

    def _plan_phases(self, state: _SongState) -> None:
        """What to submit for a song, as phases: one per sampled level (top first), then decoding.

        Pipelined, every phase is submitted at once and Ray orders the calls by their inputs.
        Level by level, a phase is submitted when the previous one has finished.
        """
        plan, stored = state.plan, state.stored
        missing = {level: [c for c in chunks if ("level", level, c.start, c.end) not in stored] for level, chunks in plan.chunks.items()}
        if any(missing.values()):
            conditioning = Conditioning(plan.song.artist, plan.song.genres, plan.song.lyrics)
            actor = self.pools[Stage.TOKENIZE].actor_for(plan.song.id)
            state.labels, stats = actor.tokenize.options(num_returns=2).remote(plan.song.id, conditioning)
            self._track(stats, "stats", state, Stage.TOKENIZE)
            self.progress.plan(Stage.TOKENIZE, 1, 0)
        for level in plan.levels:
            if missing[level]:
                state.phases.append(functools.partial(self._submit_level, state, level, missing[level]))
        for level, segments in plan.decodes.items():
            todo = [d for d in segments if ("audio", level, d.start, d.end) not in stored]
            if todo:
                state.phases.append(functools.partial(self._submit_decodes, state, level, todo))
        if self.cfg.scheduler.mode is ScheduleMode.PIPELINED:
            self._next_phases(state, all_phases=True)

    def _next_phases(self, state: _SongState, all_phases: bool = False) -> None:
        while state.phases:
            state.phases.pop(0)()
            if not all_phases:
                return

    def _submit_level(self, state: _SongState, level: int, chunks: list[ChunkPlan]) -> None:
        plan, song_id = state.plan, state.plan.song.id
        stage = level_stage(level)
        for chunk in chunks:
            window = chunk.window
            task = WindowTask(
                song_id, level, chunk.index, window.start, window.n_context, window.n_new,
                plan.total_length, chunk.seed, plan.options[level], chunk.upper_span,
            )
            inputs = [self._chunk_ref(state, level, i) for i in chunk.context_chunks]
            inputs += [self._chunk_ref(state, level + 1, i) for i in chunk.upper_chunks]
            actor = self.pools[stage].actor_for(song_id)
            state.refs[(level, chunk.index)], stats = actor.sample.options(num_returns=2).remote(task, state.labels, *inputs)
            self._track(stats, "stats", state, stage)
        self.progress.plan(stage, len(chunks), sum(c.window.n_new for c in chunks))

    def _submit_decodes(self, state: _SongState, level: int, segments: list[DecodePlan]) -> None:
        song_id = state.plan.song.id
        for segment in segments:
            task = DecodeTask(song_id, level, segment.index, segment.start, segment.end, segment.lo, segment.hi)
            actor = self.pools[Stage.DECODE].actor_for(song_id)
            stats = actor.decode.remote(task, *[self._chunk_ref(state, level, i) for i in segment.chunks])
            self._track(stats, "stats", state, Stage.DECODE)
        self.progress.plan(Stage.DECODE, len(segments), sum(d.end - d.start for d in segments))

    def _finalize(self, state: _SongState) -> None:
        plan = state.plan
        job = FinalizeJob(
            song=plan.song,
            seed=plan.seed,
            total_length=plan.total_length,
            sampling_rate=self.sampling_rate,
            n_tokens=dict(plan.n_tokens),
            options=dict(plan.options),
            audio_level=plan.audio_level,
            decoded_levels=tuple(sorted(plan.decodes)),
            model=self.cfg.model.source,
            init_seed=self.init_seed,
            fingerprint=plan.fingerprint(self.cfg.model.source, self.init_seed),
            wav_subtype=self.cfg.audio.wav_subtype,
            keep_parts=self.cfg.output.keep_parts,
        )
        state.refs.clear()
        ref = self.pools[Stage.DECODE].actor_for(plan.song.id).finalize.remote(job)
        self._pending[ref] = ("finalize", plan.song.id)

    # ------------------------------------------------------------------ the loop
    def _collect(self, ref: Any, kind: str, song_id: str, rows: dict[str, dict[str, Any]]) -> None:
        state = self._songs[song_id]
        try:
            value = ray.get(ref)
        except Exception as err:  # a call failed after its retries: the run cannot finish this song
            raise PipelineError(f"song {song_id!r}: a {kind} call failed: {err}") from err
        if kind == "stats":
            self.progress.record(value)
            state.pending -= 1
            self._advance(state)
            return
        rows[song_id] = value
        del self._songs[song_id]
        for stage in state.stages:
            self.pools[stage].release(song_id)
        logger.info("song %s done: %s", song_id, value.get("audio_path"))

    def run(self, plans: Iterable[SongPlan]) -> list[dict[str, Any]]:
        """Run every song; returns the manifest rows in the order of ``plans``."""
        order: list[str] = []
        rows: dict[str, dict[str, Any]] = {}
        queue: Iterator[SongPlan] = iter(plans)
        exhausted = False
        self.progress.start()
        limit = self.cfg.scheduler.max_songs_in_flight
        while True:
            while not exhausted and len(self._songs) < limit:
                plan = next(queue, None)
                if plan is None:
                    exhausted = True
                    break
                order.append(plan.song.id)
                row = self._admit(plan)
                if row is not None:
                    rows[plan.song.id] = row
            if not self._pending:
                if exhausted:
                    break
                continue
            pending = list(self._pending)
            ready, _ = ray.wait(pending, num_returns=1, timeout=self.progress.interval_s, fetch_local=False)
            if ready:
                ready, _ = ray.wait(pending, num_returns=len(pending), timeout=0, fetch_local=False)
            for ref in ready:
                kind, song_id = self._pending.pop(ref)
                self._collect(ref, kind, song_id, rows)
            self.progress.maybe_log()
        self.progress.maybe_log(force=True)
        return [rows[song_id] for song_id in order]
