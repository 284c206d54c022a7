"""The driver side: songs in, window calls out, chained by ObjectRefs.

Each admitted song becomes a DAG of actor calls submitted at once: a window call takes as
arguments the ObjectRefs of the chunks holding its context and its upper-level tokens, so Ray
starts it the moment those exist; nothing waits for a whole level (pipelined mode; level-by-level
mode submits a level only once the level above is complete, for comparison). Decode calls take
the chunks covering their segment plus a margin. The driver holds references only for the songs
in flight (at most ``RunConfig.songs_in_flight()``) and drops them when a song is closed, and
hands each finished song's manifest row to a sink (which streams it to storage) instead of
keeping it, so driver and object-store memory are bounded by the songs in flight, not by the
number of songs. A song with a prompt first gets its prompt chunks from the encode pool; its
windows continue from them like from any chunk.

Resume: chunks and audio segments already in storage are not recomputed; a call needing a stored
chunk gets its path and reads it. A song with its completion marker is skipped once its files
check out (:mod:`pipeline.store.verify`); a damaged file, part, spec or marker is set aside and remade:
a finished song's intact token files become its parts again, so only what was lost is redone.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import ray

from pipeline import faults
from pipeline.actors.pools import Pools
from pipeline.actors.tasks import DecodeTask, WindowTask
from pipeline.actors.tasks import PromptTask
from pipeline.execute.plan import ChunkPlan, DecodePlan, SongPlan
from pipeline.execute.progress import Progress
from pipeline.run.config import RunConfig, ScheduleMode, Stage, level_stage
from pipeline.store.finalize import FinalizeJob
from pipeline.store.parts import Chunk, chunk_batch
from pipeline.store.verify import file_problem, marker_problems, part_problem
from pipeline.store.writer import RunStorage
from stages.tokenize import Conditioning

logger = logging.getLogger(__name__)


WRITER_NICE = 10


def _lower_priority() -> None:
    """Lower the calling thread's CPU priority (Linux schedules threads on their own nice value;
    elsewhere, or without permission, nothing changes)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICE)
    except (AttributeError, OSError):  # no setpriority on this platform, or not allowed
        pass


class PipelineError(RuntimeError):
    """A call of the pipeline failed for good (after Ray's retries)."""


class ResumeMismatchError(ValueError):
    """The output URL holds a song of the same id made with other settings."""


@dataclass(frozen=True)
class SongJob:
    """A song to run: its position in the run's song list, its plan and the manifest columns
    the plan does not know (grid cell and sample, sampling overrides, unknown names, prompt)."""

    index: int
    plan: SongPlan
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class _SongState:
    """A song in flight: its plan, its chunk refs, the calls still running, what is left to submit."""

    job: SongJob
    stored: dict[tuple[str, int, int, int], str]
    cohort: int = 0
    refs: dict[tuple[int, int], Any] = field(default_factory=dict)
    labels: Any = None
    pending: int = 0
    phases: list[Callable[[], None]] = field(default_factory=list)
    stages: set[Stage] = field(default_factory=set)
    writes: list[Future[str]] = field(default_factory=list)
    gated: bool = False  # waits for the labels of its whole cohort before submitting windows

    @property
    def plan(self) -> SongPlan:
        return self.job.plan


class Scheduler:
    """Admits songs (at most ``cfg.songs_in_flight()``), submits their DAGs, and hands every
    finished song's manifest row to ``sink`` (in the order songs finish)."""

    def __init__(
        self,
        cfg: RunConfig,
        pools: Pools,
        storage: RunStorage,
        progress: Progress,
        sampling_rate: int,
        sink: Callable[[dict[str, Any]], None],
        verified: set[str] | None = None,
    ) -> None:
        """``verified``: songs whose finished files this run checked already."""
        self.cfg = cfg
        self.pools = pools
        self.storage = storage
        self.progress = progress
        self.sampling_rate = sampling_rate
        self.sink = sink
        self.init_seed = cfg.model.init_seed if cfg.model.checkpoint is None else None
        self._songs: dict[str, _SongState] = {}
        self._pending: dict[Any, tuple[str, str]] = {}
        self.skipped: list[str] = []
        self.finished = 0
        # Chunks are stored by the driver as it collects them (it receives them anyway), on side
        # threads at a lower CPU priority: the loop stays responsive and, where the driver shares
        # a machine with the stages, the writes yield to them (they are only needed for resume
        # and at the song's close). Local disks: one thread; remote stores wait on the network: 8.
        self._writer = ThreadPoolExecutor(1 if storage.is_local else 8, thread_name_prefix="parts", initializer=_lower_priority)
        # Songs of a cohort whose labels are still being made: their windows wait for all of
        # them, so that the cohort's first windows reach the top actor together and batch.
        self._gates: dict[int, tuple[set[str], list[_SongState]]] = {}
        self._cohort = 0  # the latest admitted cohort
        self._cohort_reached_lowest = True  # ... has a song sampling (or done with) the lowest level
        # one listing each at the start, instead of a look-up per song
        self._done = storage.done_songs()
        self._with_parts = storage.songs_with_parts()
        self._verified = verified or set()

    # ------------------------------------------------------------------ admission
    def _check_fingerprint(self, song_id: str, stored: dict[str, Any], expected: dict[str, Any], where: str) -> None:
        if stored == expected:
            return
        keys = sorted(k for k in set(stored) | set(expected) if stored.get(k) != expected.get(k))
        raise ResumeMismatchError(
            f"song {song_id!r} already exists in {self.storage.url!r} ({where}) with different settings ({keys}): "
            f"use another output.url, another song id, or delete the song's files to remake it"
        )

    def _finished(self, job: SongJob, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
        """The song's done marker when the song is complete and its files check out; None when
        it is not done, or was and is damaged (then set aside, and salvaged into parts)."""
        song_id = job.plan.song.id
        if song_id not in self._done:
            return None
        path = self.storage.marker_path(song_id)
        try:
            marker = self.storage.read_json(path)
        except (OSError, ValueError) as err:  # unreadable: the song is remade from what is intact
            self.storage.set_aside(path, str(err))
            self._salvage(job, {})
            return None
        self._check_fingerprint(song_id, marker.get("fingerprint") or {}, fingerprint, "finished")
        if song_id in self._verified:
            return marker
        problems = marker_problems(self.storage, marker, deep=self.cfg.output.verify)
        if not problems:
            return marker
        for relative, problem in problems.items():
            if problem != "missing" and relative != "(marker)":
                self.storage.set_aside(self.storage.resolve(relative), problem)
        self.storage.set_aside(path, "its song's files are damaged: " + "; ".join(f"{k}: {v}" for k, v in problems.items()))
        self._salvage(job, marker)
        return None

    def _salvage(self, job: SongJob, marker: dict[str, Any]) -> None:
        """Turn the intact token files of a damaged finished song back into its window parts, so
        that only what was damaged is remade."""
        plan, song_id = job.plan, job.plan.song.id
        files = marker.get("files") if isinstance(marker.get("files"), dict) else {}
        now = time.time()
        for level, chunks in plan.chunks.items():
            relative = self.storage.relative(self.storage.tokens_path(song_id, level))
            if file_problem(self.storage, relative, files.get(relative)) is not None:
                continue
            tokens = self.storage.read_tokens(song_id, level)
            if len(tokens) != plan.n_tokens[level]:
                continue
            for chunk in chunks:
                self.storage.write_chunk(chunk_batch(song_id, level, chunk.start, tokens[chunk.start : chunk.end],
                                                     started_at=now, finished_at=now, compute_s=0.0, batch_size=1))
            logger.info("song %s: level %d kept from its token file", song_id, level)
        self._with_parts.add(song_id)

    def _stored_parts(self, song_id: str) -> dict[tuple[str, int, int, int], str]:
        """The song's usable parts by (kind, level, start, end); damaged ones are set aside."""
        if song_id not in self._with_parts:
            return {}
        stored = {}
        for part in self.storage.list_parts(song_id):
            problem = part_problem(self.storage, part.path)
            if problem is not None:
                self.storage.set_aside(part.path, problem)
            else:
                stored[(part.kind, part.level, part.start, part.end)] = part.path
        return stored

    def _check_spec(self, song_id: str, fingerprint: dict[str, Any]) -> None:
        """The settings of a partly made song must be this run's; a new song's are written."""
        path = self.storage.spec_path(song_id)
        if song_id in self._with_parts and self.storage.fs.exists(path):
            try:
                spec = self.storage.read_json(path)
            except (OSError, ValueError) as err:
                self.storage.set_aside(path, str(err))
            else:
                self._check_fingerprint(song_id, spec, fingerprint, "partly made")
                return
        self.storage.write_json(path, fingerprint)

    def _admit(self, job: SongJob) -> dict[str, Any] | None:
        """Submit one song; returns its manifest row instead when it is already complete."""
        plan = job.plan
        song_id = plan.song.id
        fingerprint = plan.fingerprint(self.cfg.model.source, self.init_seed)
        marker = self._finished(job, fingerprint)
        if marker is not None:
            self.skipped.append(song_id)
            if song_id in self._with_parts and not self.cfg.output.keep_parts:
                self.storage.remove_parts(song_id)  # left by a run that died after closing it
            # The song's place in this run's list or grid (a grid extended since may move it).
            return {**marker["row"], **job.fields}
        self._check_spec(song_id, fingerprint)
        stored = self._stored_parts(song_id)
        planned = {("audio", d.level, d.start, d.end) for segments in plan.decodes.values() for d in segments}
        for key in [k for k in stored if k[0] == "audio" and k not in planned]:
            # decoded by an earlier run in other segments (audio.decode_tokens changed): redone
            self.storage.remove(stored.pop(key))
        state = _SongState(job, stored, self._cohort)
        self._songs[song_id] = state
        self._plan_phases(state)
        if stored:
            logger.info("song %s: resuming, %d part(s) found in storage", song_id, len(stored))
        self._advance(state)
        return None

    def _advance(self, state: _SongState) -> None:
        """After a call finished: submit the next phase or close the song when nothing is left."""
        if state.pending == 0 and not state.gated:
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
        missing = {
            level: [c for c in chunks if not c.prompt and ("level", level, c.start, c.end) not in stored]
            for level, chunks in plan.chunks.items()
        }
        if not missing[plan.audio_level]:
            self._reached_lowest(state)
        prompted = [level for level in plan.levels if plan.prompt_tokens(level)]
        if any(("level", level, 0, plan.prompt_tokens(level)) not in stored for level in prompted):
            self._submit_prompt(state, prompted)
        if any(missing.values()):
            conditioning = Conditioning(plan.song.artist, plan.song.genres, plan.song.lyrics)
            actor = self.pools[Stage.TOKENIZE].actor_for(plan.song.id)
            state.labels, stats = actor.tokenize.options(num_returns=2).remote(plan.song.id, conditioning)
            self._track(stats, "labels", state, Stage.TOKENIZE)
            self.progress.plan(Stage.TOKENIZE, 1, 0)
            waiting, members = self._gates.setdefault(state.cohort, (set(), []))
            waiting.add(plan.song.id)
            members.append(state)
            state.gated = True
        for level in plan.levels:
            if missing[level]:
                state.phases.append(functools.partial(self._submit_level, state, level, missing[level]))
        for level, segments in plan.decodes.items():
            todo = [d for d in segments if ("audio", level, d.start, d.end) not in stored]
            if todo:
                state.phases.append(functools.partial(self._submit_decodes, state, level, todo))
        if self.cfg.scheduler.mode is ScheduleMode.PIPELINED and not state.gated:
            self._submit_all([state])

    def _submit_all(self, states: list[_SongState]) -> None:
        """Pipelined: submit every phase of these songs, window by window across the songs
        (level by level, top first), so that their first windows reach the actors together
        instead of one song's whole DAG after another's."""
        levels: dict[int, list[tuple[_SongState, list[ChunkPlan]]]] = {}
        rest: list[Callable[[], None]] = []
        for stage in (*self.cfg.sampling.levels, Stage.DECODE):  # route them all first: see peers
            for state in states:
                self.pools[stage].actor_for(state.plan.song.id)
        for state in states:
            for phase in state.phases:
                if phase.func == self._submit_level:  # type: ignore[attr-defined]
                    _, level, chunks = phase.args  # type: ignore[attr-defined]
                    levels.setdefault(level, []).append((state, chunks))
                else:
                    rest.append(phase)
            state.phases.clear()
        for level in sorted(levels, reverse=True):
            songs = levels[level]
            for index in range(max(len(chunks) for _, chunks in songs)):
                for state, chunks in songs:
                    if index < len(chunks):
                        self._submit_level(state, level, [chunks[index]])
        for phase in rest:
            phase()

    def _labelled(self, state: _SongState) -> None:
        """A song's labels exist; once its whole cohort's do, the cohort's songs go on."""
        waiting, members = self._gates[state.cohort]
        waiting.discard(state.plan.song.id)
        if waiting:
            return
        del self._gates[state.cohort]
        members = [m for m in members if m.plan.song.id in self._songs]
        for member in members:
            member.gated = False
        if self.cfg.scheduler.mode is ScheduleMode.PIPELINED:
            self._submit_all(members)
        for member in members:
            self._advance(member)

    def _next_phases(self, state: _SongState) -> None:
        """Level by level: submit the next phase."""
        state.phases.pop(0)()

    def _submit_prompt(self, state: _SongState, levels: list[int]) -> None:
        """Encode (or read) the song's prompt: chunk 0 of every level in ``levels``."""
        plan, song_id = state.plan, state.plan.song.id
        n_tokens = tuple(plan.prompt_tokens(level) for level in levels)
        task = PromptTask(song_id, str(plan.song.prompt), plan.prompt_samples, tuple(levels), n_tokens)
        actor = self.pools[Stage.ENCODE].actor_for(song_id)
        *chunks, stats = actor.prompt.options(num_returns=len(levels) + 1).remote(task)
        for level, ref in zip(levels, chunks):
            state.refs[(level, 0)] = ref
        self._track(stats, "stats", state, Stage.ENCODE)
        self.progress.plan(Stage.ENCODE, 1, sum(n_tokens))

    def _submit_level(self, state: _SongState, level: int, chunks: list[ChunkPlan]) -> None:
        plan, song_id = state.plan, state.plan.song.id
        stage = level_stage(level)
        pool = self.pools[stage]
        for position, chunk in enumerate(chunks):
            window = chunk.window
            task = WindowTask(
                song_id, level, chunk.index, window.start, window.n_context, window.n_new,
                plan.total_length, chunk.seed, plan.options[level], chunk.upper_span, state.job.index, pool.peers(song_id),
                follow_up=position < len(chunks) - 1,
            )
            inputs = [self._chunk_ref(state, level, i) for i in chunk.context_chunks]
            inputs += [self._chunk_ref(state, level + 1, i) for i in chunk.upper_chunks]
            actor = pool.actor_for(song_id)
            ref = actor.sample.remote(task, state.labels, *inputs)
            state.refs[(level, chunk.index)] = ref
            self._track(ref, "chunk", state, stage)
        self.progress.plan(stage, len(chunks), sum(c.window.n_new for c in chunks))

    def _submit_decodes(self, state: _SongState, level: int, segments: list[DecodePlan]) -> None:
        song_id = state.plan.song.id
        pool = self.pools[Stage.DECODE]
        for position, segment in enumerate(segments):
            task = DecodeTask(song_id, level, segment.index, segment.start, segment.end, segment.lo, segment.hi,
                              state.job.index, pool.peers(song_id), follow_up=position < len(segments) - 1)
            actor = pool.actor_for(song_id)
            stats = actor.decode.remote(task, *[self._chunk_ref(state, level, i) for i in segment.chunks])
            self._track(stats, "stats", state, Stage.DECODE)
        self.progress.plan(Stage.DECODE, len(segments), sum(d.end - d.start for d in segments))

    def _store_chunk(self, state: _SongState, chunk: Chunk) -> None:
        state.writes.append(self._writer.submit(self._write_chunk, chunk))

    def _write_chunk(self, chunk: Chunk) -> None:
        self.storage.write_chunk(chunk.to_batch())
        faults.point("driver.chunk_stored")

    def _finalize(self, state: _SongState) -> None:
        plan = state.plan
        for write in state.writes:  # every part is stored before the song is compacted
            try:
                write.result()
            except Exception as err:  # a storage failure the run cannot recover from
                raise PipelineError(f"song {plan.song.id!r}: storing a chunk failed: {err}") from err
        state.writes.clear()
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
            prompt_tokens={level: plan.prompt_tokens(level) for level in plan.levels},
            extra=dict(state.job.fields),
        )
        chunks = [self._chunk_ref(state, level, index) for level in plan.levels for index in range(len(plan.chunks[level]))]
        state.refs.clear()
        ref = self.pools[Stage.DECODE].actor_for(plan.song.id).finalize.remote(job, *chunks)
        self._pending[ref] = ("finalize", plan.song.id)

    # ------------------------------------------------------------------ the loop
    def _reached_lowest(self, state: _SongState) -> None:
        """A song samples its lowest level (or has nothing left there): its cohort no longer
        holds back the next one."""
        if state.cohort == self._cohort:
            self._cohort_reached_lowest = True

    def _collect(self, ref: Any, kind: str, song_id: str) -> None:
        state = self._songs[song_id]
        try:
            value = ray.get(ref)
        except Exception as err:  # a call failed after its retries: the run cannot finish this song
            raise PipelineError(f"song {song_id!r}: a {kind} call failed: {err}") from err
        if kind in ("stats", "chunk", "labels"):
            self.progress.record(value if kind != "chunk" else value.stats)
            if kind == "labels":
                self._labelled(state)
            if kind == "chunk":
                self._store_chunk(state, value)
                if value.level == state.plan.audio_level:
                    self._reached_lowest(state)
            state.pending -= 1
            self._advance(state)
            return
        self._reached_lowest(state)
        del self._songs[song_id]
        for stage in state.stages:
            self.pools[stage].release(song_id)
        self._emit(value)
        logger.debug("song %s done: %s", song_id, value.get("audio_path"))

    def _emit(self, row: dict[str, Any]) -> None:
        self.finished += 1
        self.sink(row)

    def _admit_cohort(self, queue: Iterator[SongJob], size: int) -> bool:
        """Admit the next ``size`` songs to run (finished ones are reported, not counted); True
        when the queue is exhausted."""
        self._cohort += 1
        self._cohort_reached_lowest = False
        admitted = 0
        while admitted < size:
            job = next(queue, None)
            if job is None:
                self._cohort_reached_lowest = True
                return True
            row = self._admit(job)
            if row is None:
                admitted += 1
            else:
                self._emit(row)
        return False

    def run(self, jobs: Iterable[SongJob]) -> int:
        """Run every song, streaming manifest rows to the sink; returns how many songs there were.

        ``jobs`` is consumed lazily, a cohort of songs at a time: when a whole cohort fits under
        the in-flight limit and the previous cohort has reached the lowest level (its songs
        sample in step, so their windows share shapes and batches; the next cohort starts its
        upper levels while the lowest level is busy with the earlier ones).
        """
        queue: Iterator[SongJob] = iter(jobs)
        exhausted = False
        self.progress.start()
        limit, cohort = self.cfg.songs_in_flight(), self.cfg.cohort_size()
        while True:
            while not exhausted and (
                not self._songs or (self._cohort_reached_lowest and len(self._songs) + cohort <= limit)
            ):
                exhausted = self._admit_cohort(queue, cohort)
            if not self._pending:
                if exhausted:
                    break
                continue
            pending = list(self._pending)
            ready, _ = ray.wait(pending, num_returns=1, timeout=self.progress.interval_s, fetch_local=False)
            if ready:
                ready, _ = ray.wait(pending, num_returns=len(pending), timeout=0, fetch_local=False)
            del pending
            for ref in ready:
                kind, song_id = self._pending.pop(ref)
                self._collect(ref, kind, song_id)
            del ready
            self.progress.maybe_log()
        self.progress.maybe_log(force=True)
        self._writer.shutdown(wait=True)
        return self.finished
