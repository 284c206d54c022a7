"""The driver side: jobs in, actor calls out, chained by ObjectRefs; manifest rows back.

A job is a song to generate (:class:`SongJob`) or an input file to encode (:class:`FileJob`).
Each admitted song becomes a DAG of actor calls submitted at once: a window call takes as
arguments the ObjectRefs of the chunks holding its context and its upper-level tokens, so Ray
starts it the moment those exist; nothing waits for a whole level (pipelined mode; level-by-level
mode submits a level only once the level above is complete, for comparison). Decode calls take
the chunks covering their segment plus a margin. A song with a prompt first gets its prompt
chunks from the encode pool; its windows continue from them like from any chunk. A file is one
call of the encode pool, which stores its tokens and marker.

The driver holds references only for the jobs in flight (at most ``RunConfig.songs_in_flight()``)
and hands each finished job's manifest row to a sink (which streams it to storage), so driver and
object-store memory are bounded by the jobs in flight, not by the number of jobs. Every submitted
call is awaited with its completion handler (:class:`_Awaited`).

Resume (:mod:`pipeline.execute.resume`): finished jobs are skipped once their files check out;
parts already in storage are not recomputed (a call needing a stored chunk gets its path).
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import ray

from pipeline import faults
from pipeline.actors.messages import CallStats, DecodeTask, EncodeFileTask, PromptTask, WindowTask
from pipeline.actors.pools import Pools
from pipeline.execute.phases import DecodeLevel, Phase, SampleLevel, remaining_work
from pipeline.execute.plan import ChunkPlan, SongPlan
from pipeline.execute.progress import Progress
from pipeline.execute.resume import Resume, StoredParts
from pipeline.run.config import RunConfig, ScheduleMode
from pipeline.run.spec import Stage, level_stage
from pipeline.store.finalize import FinalizeJob
from pipeline.store.parts import Chunk
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


@dataclass(frozen=True)
class SongJob:
    """A song to generate: its position in the run's song list, its plan and the manifest
    columns the plan does not know (grid cell and sample, sampling overrides, unknown names, prompt)."""

    index: int
    plan: SongPlan
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def job_id(self) -> str:
        return self.plan.song.id


@dataclass(frozen=True)
class FileJob:
    """An input file to encode (an encode-only run); ``fields`` are its manifest columns known
    before encoding (its position, its labels)."""

    task: EncodeFileTask
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def job_id(self) -> str:
        return self.task.source.song_id


Job = SongJob | FileJob


class Call(str, Enum):
    """What an awaited actor call is."""

    LABELS = "labels"
    PROMPT = "prompt"
    WINDOW = "window"
    SEGMENT = "segment"
    CLOSE = "close"
    ENCODE = "encode"


@dataclass(frozen=True)
class _Awaited:
    """A submitted call: whose job, what it is, and the handler of its value."""

    job_id: str
    call: Call
    on_done: Callable[[Any], None]


@dataclass
class _SongState:
    """A song in flight: its plan, its chunk refs, the calls still running, what is left to submit."""

    job: SongJob
    stored: StoredParts
    cohort: int = 0
    refs: dict[tuple[int, int], Any] = field(default_factory=dict)
    labels: Any = None
    pending: int = 0
    phases: list[Phase] = field(default_factory=list)
    stages: set[Stage] = field(default_factory=set)
    writes: list[Future[None]] = field(default_factory=list)
    gated: bool = False  # waits for the labels of its whole cohort before submitting windows

    @property
    def plan(self) -> SongPlan:
        return self.job.plan


class Scheduler:
    """Admits jobs (at most ``cfg.songs_in_flight()`` in flight), submits their calls, and hands
    every finished job's manifest row to ``sink`` (in the order jobs finish).

    Args:
        cfg, pools, storage, progress: the run's config, actor pools, output and progress.
        sampling_rate: the model's audio rate (songs' durations in the manifest).
        sink: takes each manifest row.
        resume: what the output holds already.
    """

    def __init__(self, cfg: RunConfig, pools: Pools, storage: RunStorage, progress: Progress, sampling_rate: int,
                 sink: Callable[[dict[str, Any]], None], resume: Resume) -> None:
        self.cfg, self.pools, self.storage, self.progress = cfg, pools, storage, progress
        self.sampling_rate, self.sink, self.resume = sampling_rate, sink, resume
        self._in_flight: dict[str, _SongState | FileJob] = {}
        self._awaited: dict[Any, _Awaited] = {}
        self.skipped: list[str] = []
        self.rejected: list[str] = []
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

    # ------------------------------------------------------------------ admission
    def _admit(self, job: Job) -> dict[str, Any] | None:
        """Submit one job; returns its manifest row instead when it is already complete."""
        if isinstance(job, FileJob):
            fingerprint = job.task.fingerprint()
            marker = self.resume.finished(job.job_id, fingerprint)
        else:
            fingerprint = self._fingerprint(job.plan)
            marker = self.resume.finished(job.job_id, fingerprint, job.plan)
        if marker is not None:
            self.skipped.append(job.job_id)
            # The job's place in this run's list or grid (a grid extended since may move it).
            return {**marker["row"], **job.fields}
        if isinstance(job, FileJob):
            self._submit_file(job)
        else:
            self._admit_song(job, fingerprint)
        return None

    def _fingerprint(self, plan: SongPlan) -> dict[str, Any]:
        """What decides a song's files (compared on resume)."""
        model, audio = self.cfg.model, self.cfg.audio
        settings = {"wav_subtype": audio.wav_subtype, "margin_tokens": audio.margin_tokens, "decode_tokens": audio.decode_tokens}
        return plan.fingerprint(model.source, model.used_init_seed, model.weights_tag, settings)

    def _admit_song(self, job: SongJob, fingerprint: dict[str, Any]) -> None:
        self.resume.check_spec(job.job_id, fingerprint)
        stored = self.resume.stored_parts(job.plan)
        state = _SongState(job, stored, self._cohort)
        self._in_flight[job.job_id] = state
        if stored:
            logger.info("song %s: resuming, %d part(s) found in storage", job.job_id, len(stored))
        work = remaining_work(job.plan, stored)
        if work.lowest_sampled:
            self._reached_lowest(state)
        if work.prompt_levels:
            self._submit_prompt(state, work.prompt_levels)
        if work.needs_labels:
            self._submit_labels(state)
        state.phases.extend(work.phases)
        if self.cfg.scheduler.mode is ScheduleMode.PIPELINED and not state.gated:
            self._submit_all([state])
        self._advance(state)

    def _advance(self, state: _SongState) -> None:
        """After a call finished: submit the next phase or close the song when nothing is left."""
        if state.pending == 0 and not state.gated:
            if state.phases:
                self._submit_phase(state, state.phases.pop(0))
            else:
                self._close(state)

    def _await(self, ref: Any, call: Call, job_id: str, on_done: Callable[[Any], None]) -> None:
        self._awaited[ref] = _Awaited(job_id, call, on_done)

    def _track(self, ref: Any, call: Call, state: _SongState, stage: Stage, on_done: Callable[[Any], None]) -> None:
        self._await(ref, call, state.plan.song.id, on_done)
        state.pending += 1
        state.stages.add(stage)

    def _chunk_ref(self, state: _SongState, level: int, index: int) -> Any:
        """A chunk input: the ObjectRef of a call of this run, or the path of a stored part (the
        actor needing it reads it)."""
        if (level, index) in state.refs:
            return state.refs[(level, index)]
        chunk = state.plan.chunks[level][index]
        return state.stored[("level", level, chunk.start, chunk.end)]

    # ------------------------------------------------------------------ submission
    def _submit_phase(self, state: _SongState, phase: Phase) -> None:
        if isinstance(phase, SampleLevel):
            self._submit_windows(state, phase.level, phase.chunks)
        else:
            self._submit_decodes(state, phase)

    def _submit_all(self, states: list[_SongState]) -> None:
        """Pipelined: submit every phase of these songs, window by window across the songs
        (level by level, top first), so that their first windows reach the actors together
        instead of one song's whole DAG after another's."""
        for stage in (*self.cfg.sampling.levels, Stage.DECODE):  # route them all first: see peers
            for state in states:
                self.pools[stage].actor_for(state.plan.song.id)
        by_level: dict[int, list[tuple[_SongState, SampleLevel]]] = {}
        decodes: list[tuple[_SongState, DecodeLevel]] = []
        for state in states:
            for phase in state.phases:
                if isinstance(phase, SampleLevel):
                    by_level.setdefault(phase.level, []).append((state, phase))
                else:
                    decodes.append((state, phase))
            state.phases.clear()
        for level in sorted(by_level, reverse=True):
            songs = by_level[level]
            for index in range(max(len(phase.chunks) for _, phase in songs)):
                for state, phase in songs:
                    if index < len(phase.chunks):
                        self._submit_windows(state, level, phase.chunks[index : index + 1])
        for state, phase in decodes:
            self._submit_decodes(state, phase)

    def _submit_labels(self, state: _SongState) -> None:
        plan = state.plan
        conditioning = Conditioning(plan.song.artist, plan.song.genres, plan.song.lyrics)
        actor = self.pools[Stage.TOKENIZE].actor_for(plan.song.id)
        state.labels, stats = actor.tokenize.options(num_returns=2).remote(plan.song.id, conditioning)
        self._track(stats, Call.LABELS, state, Stage.TOKENIZE, lambda value: self._on_labels(state, value))
        self.progress.plan(Stage.TOKENIZE, 1, 0)
        waiting, members = self._gates.setdefault(state.cohort, (set(), []))
        waiting.add(plan.song.id)
        members.append(state)
        state.gated = True

    def _submit_prompt(self, state: _SongState, levels: tuple[int, ...]) -> None:
        """Encode (or read) the song's prompt: chunk 0 of every level in ``levels``."""
        plan, song_id = state.plan, state.plan.song.id
        n_tokens = tuple(plan.prompt_tokens(level) for level in levels)
        task = PromptTask(song_id=song_id, prompt=str(plan.song.prompt), prompt_samples=plan.prompt_samples,
                          levels=levels, n_tokens=n_tokens)
        actor = self.pools[Stage.ENCODE].actor_for(song_id)
        *chunks, stats = actor.prompt.options(num_returns=len(levels) + 1).remote(task)
        for level, ref in zip(levels, chunks):
            state.refs[(level, 0)] = ref
        self._track(stats, Call.PROMPT, state, Stage.ENCODE, lambda value: self._on_stats(state, value))
        self.progress.plan(Stage.ENCODE, 1, sum(n_tokens))

    def _submit_windows(self, state: _SongState, level: int, chunks: tuple[ChunkPlan, ...]) -> None:
        """Window calls of ``chunks`` (consecutive windows of ``level``)."""
        plan, song_id = state.plan, state.plan.song.id
        stage = level_stage(level)
        pool = self.pools[stage]
        for position, chunk in enumerate(chunks):
            window = chunk.window
            task = WindowTask(
                song_id=song_id, level=level, index=chunk.index, start=window.start, n_context=window.n_context,
                n_new=window.n_new, total_length=plan.total_length, seed=chunk.seed, options=plan.options[level],
                upper_span=chunk.upper_span, priority=state.job.index, peers=pool.peers(song_id),
                follow_up=position < len(chunks) - 1,
            )
            inputs = [self._chunk_ref(state, level, i) for i in chunk.context_chunks]
            inputs += [self._chunk_ref(state, level + 1, i) for i in chunk.upper_chunks]
            ref = pool.actor_for(song_id).sample.remote(task, state.labels, *inputs)
            state.refs[(level, chunk.index)] = ref
            self._track(ref, Call.WINDOW, state, stage, lambda value: self._on_chunk(state, value))
        self.progress.plan(stage, len(chunks), sum(c.window.n_new for c in chunks))

    def _submit_decodes(self, state: _SongState, phase: DecodeLevel) -> None:
        song_id = state.plan.song.id
        pool = self.pools[Stage.DECODE]
        for position, segment in enumerate(phase.segments):
            task = DecodeTask(
                song_id=song_id, level=phase.level, index=segment.index, start=segment.start, end=segment.end,
                lo=segment.lo, hi=segment.hi, priority=state.job.index, peers=pool.peers(song_id),
                follow_up=position < len(phase.segments) - 1,
            )
            inputs = [self._chunk_ref(state, phase.level, i) for i in segment.chunks]
            stats = pool.actor_for(song_id).decode.remote(task, *inputs)
            self._track(stats, Call.SEGMENT, state, Stage.DECODE, lambda value: self._on_stats(state, value))
        self.progress.plan(Stage.DECODE, len(phase.segments), sum(d.end - d.start for d in phase.segments))

    def _close(self, state: _SongState) -> None:
        """Every part of the song exists: the decode actor compacts it into its final files."""
        plan = state.plan
        for write in state.writes:  # every part is stored before the song is compacted
            try:
                write.result()
            except Exception as err:  # a storage failure the run cannot recover from
                raise PipelineError(f"song {plan.song.id!r}: storing a chunk failed: {err}") from err
        state.writes.clear()
        init_seed = self.cfg.model.used_init_seed
        job = FinalizeJob(
            song=plan.song, seed=plan.seed, total_length=plan.total_length, sampling_rate=self.sampling_rate,
            n_tokens=dict(plan.n_tokens), options=dict(plan.options), audio_level=plan.audio_level,
            decoded_levels=tuple(sorted(plan.decodes)), model=self.cfg.model.source, init_seed=init_seed,
            fingerprint=self._fingerprint(plan),
            wav_subtype=self.cfg.audio.wav_subtype,
            keep_parts=self.cfg.output.keep_parts, prompt_tokens={level: plan.prompt_tokens(level) for level in plan.levels},
            extra=dict(state.job.fields),
        )
        chunks = [self._chunk_ref(state, level, index) for level in plan.levels for index in range(len(plan.chunks[level]))]
        state.refs.clear()
        ref = self.pools[Stage.DECODE].actor_for(plan.song.id).finalize.remote(job, *chunks)
        self._await(ref, Call.CLOSE, plan.song.id, lambda row: self._on_closed(state, row))

    def _submit_file(self, job: FileJob) -> None:
        self._in_flight[job.job_id] = job
        ref = self.pools[Stage.ENCODE].actor_for(job.job_id).encode_file.remote(job.task)
        self._await(ref, Call.ENCODE, job.job_id, lambda value: self._on_encoded(job, *value))
        self.progress.plan(Stage.ENCODE, 1, job.task.source.frames * self.sampling_rate // job.task.source.sampling_rate)
        self._cohort_reached_lowest = True  # a file has no levels: nothing holds the next cohort back

    # ------------------------------------------------------------------ completion handlers
    def _on_stats(self, state: _SongState, stats: CallStats) -> None:
        self.progress.record(stats)
        state.pending -= 1
        self._advance(state)

    def _on_labels(self, state: _SongState, stats: CallStats) -> None:
        """A song's labels exist; once its whole cohort's do, the cohort's songs go on."""
        self.progress.record(stats)
        state.pending -= 1
        waiting, members = self._gates[state.cohort]
        waiting.discard(state.plan.song.id)
        if not waiting:
            del self._gates[state.cohort]
            members = [m for m in members if m.plan.song.id in self._in_flight]
            for member in members:
                member.gated = False
            if self.cfg.scheduler.mode is ScheduleMode.PIPELINED:
                self._submit_all(members)
            for member in members:
                self._advance(member)
        self._advance(state)

    def _on_chunk(self, state: _SongState, chunk: Chunk) -> None:
        state.writes.append(self._writer.submit(self._write_chunk, chunk))
        if chunk.level == state.plan.audio_level:
            self._reached_lowest(state)
        self._on_stats(state, chunk.stats)

    def _write_chunk(self, chunk: Chunk) -> None:
        self.storage.write_chunk(chunk.to_batch())
        faults.point("driver.chunk_stored")

    def _on_closed(self, state: _SongState, row: dict[str, Any]) -> None:
        song_id = state.plan.song.id
        self._reached_lowest(state)
        del self._in_flight[song_id]
        for stage in state.stages:
            self.pools[stage].release(song_id)
        self._emit(row)

    def _on_encoded(self, job: FileJob, row: dict[str, Any], stats: CallStats) -> None:
        self.progress.record(stats)
        self._file_done(job)
        self._emit(row)

    def _file_done(self, job: FileJob) -> None:
        del self._in_flight[job.job_id]
        self.pools[Stage.ENCODE].release(job.job_id)

    def _emit(self, row: dict[str, Any]) -> None:
        self.finished += 1
        self.sink(row)

    # ------------------------------------------------------------------ the loop
    def _reached_lowest(self, state: _SongState) -> None:
        """A song samples its lowest level (or has nothing left there): its cohort no longer
        holds back the next one."""
        if state.cohort == self._cohort:
            self._cohort_reached_lowest = True

    def _collect(self, ref: Any, awaited: _Awaited) -> None:
        try:
            value = ray.get(ref)
        except ray.exceptions.RayTaskError as err:
            job = self._in_flight.get(awaited.job_id)
            if isinstance(job, FileJob) and isinstance(err.cause, ValueError):  # unusable input: the others go on
                logger.error("input file rejected: %s", err.cause)
                self.rejected.append(str(err.cause))
                self._file_done(job)
                return
            raise PipelineError(f"song {awaited.job_id!r}: a {awaited.call.value} call failed: {err}") from err
        except Exception as err:  # a call failed after its retries: the run cannot finish this job
            raise PipelineError(f"song {awaited.job_id!r}: a {awaited.call.value} call failed: {err}") from err
        awaited.on_done(value)

    def _admit_cohort(self, queue: Iterator[Job], size: int) -> bool:
        """Admit the next ``size`` jobs to run (finished ones are reported, not counted); True
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

    def run(self, jobs: Iterable[Job]) -> int:
        """Run every job, streaming manifest rows to the sink; returns how many rows there were.

        ``jobs`` is consumed lazily, a cohort of songs at a time: when a whole cohort fits under
        the in-flight limit and the previous cohort has reached the lowest level (its songs
        sample in step, so their windows share shapes and batches; the next cohort starts its
        upper levels while the lowest level is busy with the earlier ones).
        """
        queue: Iterator[Job] = iter(jobs)
        exhausted = False
        self.progress.start()
        limit, cohort = self.cfg.songs_in_flight(), self.cfg.cohort_size()
        while True:
            while not exhausted and (
                not self._in_flight or (self._cohort_reached_lowest and len(self._in_flight) + cohort <= limit)
            ):
                exhausted = self._admit_cohort(queue, cohort)
            if not self._awaited:
                if exhausted:
                    break
                continue
            self._wait_and_collect()
            faults.point("driver.collected")  # the driver's own thread, between waits
            self.progress.maybe_log()
        self.progress.maybe_log(force=True)
        self._writer.shutdown(wait=True)
        return self.finished

    def _wait_and_collect(self) -> None:
        """Wait for a call to finish (at most one progress interval), then handle every finished one."""
        pending = list(self._awaited)
        ready, _ = ray.wait(pending, num_returns=1, timeout=self.progress.interval_s, fetch_local=False)
        if ready:
            ready, _ = ray.wait(pending, num_returns=len(pending), timeout=0, fetch_local=False)
        del pending
        for ref in ready:
            self._collect(ref, self._awaited.pop(ref))
