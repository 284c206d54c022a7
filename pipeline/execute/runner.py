"""``run(cfg)``: one pipeline run from a composed Hydra config (or a :class:`RunConfig`)."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
import ray
from omegaconf import DictConfig, OmegaConf

from pipeline import faults
from pipeline.actors import reaper, worker_setup
from pipeline.actors.base import StageFactory
from pipeline.actors.cluster import check_resources, cluster_nodes, local_ray_env
from pipeline.actors.messages import EncodeFileTask
from pipeline.actors.pools import Pools, needed_stages
from pipeline.execute.plan import plan_song
from pipeline.execute.progress import Progress, RunSummary, log_summary
from pipeline.execute.resume import Resume
from pipeline.execute.scheduler import FileJob, Scheduler, SongJob
from pipeline.run.config import RunConfig, RunMode
from pipeline.run.spec import Stage, stage_level
from pipeline.run.validate import ValidatedRun, validate_run
from pipeline.store.lease import RunLease
from pipeline.store.manifest import ENCODE_MANIFEST_SCHEMA, MANIFEST_SCHEMA, ManifestWriter
from pipeline.store.ownership import mark_output, unmark_if_unused
from pipeline.store.verify import finished_intact
from pipeline.store.writer import RunStorage

if TYPE_CHECKING:
    from pipeline.train.run import TrainResult

logger = logging.getLogger(__name__)

RowCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class RunResult:
    """Where a run's outputs went and how it went.

    Attributes:
        output_url: root of the outputs.
        manifest_path: the run manifest (Parquet, one row per song); None for a dry run.
        summary_path: ``summary.json`` (every run's stage timings, overlap, actor placement);
            None for a dry run.
        plan: what the run means (songs, windows and tokens per level; files for encode runs).
        summary: stage busy times, wall time, time to first audio, overlap (None for a dry run).
        actors: per stage, where its actors ran (node, GPU ids, pid).
        skipped: songs already complete in storage, not recomputed.
        n_songs: songs (or encoded files) in the manifest.
        dry_run: nothing was run: only ``plan`` is set.
        rejected: input files an encode-only run refused (unusable audio), each with why; the
            others are in the manifest.
    """

    output_url: str
    plan: dict[str, Any]
    manifest_path: str | None = None
    summary_path: str | None = None
    summary: RunSummary | None = None
    actors: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    skipped: list[str] = dataclasses.field(default_factory=list)
    n_songs: int = 0
    dry_run: bool = False
    rejected: list[str] = dataclasses.field(default_factory=list)

    @functools.cached_property
    def rows(self) -> list[dict[str, Any]]:
        """The manifest rows in song order (read from the manifest when first asked for)."""
        if self.dry_run:
            return []
        rows = pq.read_table(self.manifest_path).to_pylist()
        return sorted(rows, key=lambda row: row["song_index"])


def to_run_config(cfg: DictConfig | Mapping[str, Any] | RunConfig) -> RunConfig:
    """A validated :class:`RunConfig` from a Hydra config, a plain mapping or a RunConfig."""
    if isinstance(cfg, RunConfig):
        return cfg
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    return RunConfig.from_dict(cfg)


def _absolute_url(url: str) -> str:
    """Local paths made absolute, so Ray workers with another working directory find them."""
    return url if "://" in url else os.path.abspath(url)


_watchdogs: list[Any] = []  # of the local Rays this process started (pipeline.actors.reaper)


def runtime_env(cfg: RunConfig) -> dict[str, Any] | None:
    """The job's runtime environment: ``ray.runtime_env``; for a training run on a local Ray
    without the dashboard, also the hook that silences Ray Train's placement-group cleaner, which
    has no state API to ask there (:mod:`pipeline.actors.worker_setup`)."""
    env = dict(cfg.ray.runtime_env or {})
    if cfg.ray.address is None and cfg.mode is RunMode.TRAIN and not cfg.ray.include_dashboard:
        env.setdefault("worker_process_setup_hook", worker_setup.HOOK)
    return env or None


def _connect(cfg: RunConfig) -> bool:
    """Join or start Ray; True when this call started it (and the run must stop it)."""
    if ray.is_initialized():
        return False
    spec = cfg.ray
    common: dict[str, Any] = dict(namespace=spec.namespace, runtime_env=runtime_env(cfg))
    if spec.address is None:
        watchdog = reaper.watch()  # its processes end with this one, however it ends (even mid-start)
        try:
            with local_ray_env(), _keeping_sigterm_handler():  # loopback only, token authentication on
                ray.init(num_cpus=spec.num_cpus, num_gpus=spec.num_gpus, include_dashboard=spec.include_dashboard, **common)
            faults.point("driver.ray_started")  # still starting, as far as the run is concerned
        except BaseException:  # Ctrl-C while Ray starts: what it started goes now
            ray.shutdown()
            reaper.release(watchdog)
            raise
        _watchdogs.append(watchdog)
    else:
        with _keeping_sigterm_handler():
            ray.init(address=spec.address, **common)
    return True


@contextlib.contextmanager
def _keeping_sigterm_handler() -> Iterator[None]:
    """``ray.init`` installs its own SIGTERM handlers (an exit without cleanup, or an abort in its
    core worker); a Python handler the caller had set (the command line's: stop cleanly, one line)
    is put back."""
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if callable(previous) and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)


def _disconnect() -> None:
    """Stop the Ray this process started (and let its watchdog clear what lingers)."""
    ray.shutdown()
    while _watchdogs:
        reaper.release(_watchdogs.pop())


def _ray_session() -> dict[str, str]:
    """The Ray session this process is connected to (a sweep's jobs share one)."""
    context = ray.get_runtime_context()
    return {"node_id": context.get_node_id(), "job_id": context.get_job_id(), "gcs_address": context.gcs_address}


def _margins(cfg: RunConfig, pools: Pools, levels: list[int]) -> dict[int, int]:
    if cfg.audio.margin_tokens is not None:
        return {level: cfg.audio.margin_tokens for level in levels}
    decoder = pools[Stage.DECODE].actors[0]
    return dict(zip(levels, ray.get([decoder.receptive_field.remote(level) for level in levels])))


def _song_jobs(cfg: RunConfig, validated: ValidatedRun, margins: dict[int, int]) -> Iterator[SongJob]:
    """Song jobs, planned as the scheduler admits songs (a grid is never expanded whole)."""
    levels = [stage_level(s) for s in cfg.sampling.levels]
    geometries = [validated.geometries[level] for level in sorted(validated.geometries, reverse=True)]
    rate = validated.model.sampling_rate
    for index, item in enumerate(cfg.iter_songs()):
        song = item.song
        prompt_samples = validated.song_prompt_samples(song)
        plan = plan_song(
            song, cfg.seed, validated.total_length(song), geometries, levels, item.level_options(cfg.sampling),
            margins, cfg.audio.previews, prompt_samples, cfg.audio.decode_tokens,
        )
        fields: dict[str, Any] = {"song_index": index, "unknown_names": validated.vocabulary.unknown_for(song.id)}
        if cfg.songs_grid is not None:
            fields.update(item.manifest_fields())
        if prompt_samples:
            fields["prompt_s"] = prompt_samples / rate
        yield SongJob(index, plan, fields)


def _file_jobs(cfg: RunConfig, validated: ValidatedRun) -> Iterator[FileJob]:
    """The input files of an encode-only run; their labels (from ``encode.labels_url``) go into
    the manifest (a rerun with new labels relabels finished files: labels do not decide tokens)."""
    for index, source in enumerate(validated.sources):
        labels = validated.labels[source.song_id].to_row() if source.song_id in validated.labels else None
        task = EncodeFileTask(source=source, index=index, model=cfg.model.source, init_seed=cfg.model.used_init_seed,
                              labels=labels, weights=cfg.model.weights_tag)
        yield FileJob(task, {**(labels or {}), "song_index": index})


def _job_ids(cfg: RunConfig, validated: ValidatedRun) -> Iterator[str]:
    if cfg.mode is RunMode.ENCODE:
        return (source.song_id for source in validated.sources)
    return (item.song.id for item in cfg.iter_songs())


def _finished_intact(cfg: RunConfig, validated: ValidatedRun, storage: RunStorage) -> tuple[set[str], bool]:
    """(jobs found finished with their files intact, checked in order until the first that is
    not; whether that is every job): a rerun of a finished output needs neither Ray nor a model."""
    done, verified = storage.done_songs(), set()
    for job_id in _job_ids(cfg, validated):
        if job_id not in done or not finished_intact(storage, job_id, cfg.output.verify):
            return verified, False
        verified.add(job_id)
    return verified, True


def _log_plan(cfg: RunConfig, plan: dict[str, Any]) -> None:
    logger.info("model: %s", cfg.model.describe_weights())
    if cfg.mode is RunMode.ENCODE:
        logger.info("plan: encode %d file(s), %.1f s of audio, into tokens of every level", plan["files"], plan["audio_seconds"])
        return
    levels = ", ".join(f"{name} {v['windows']} windows / {v['tokens']} tokens" for name, v in plan["levels"].items())
    logger.info(
        "plan: %d song(s), %.1f s of audio, %d windows, %d tokens (%s); at most %d song(s) in flight",
        plan["songs"], plan["audio_seconds"], plan["windows"], plan["tokens"], levels, plan["songs_in_flight"],
    )


def run(
    cfg: DictConfig | Mapping[str, Any] | RunConfig,
    *,
    factories: Mapping[Stage, StageFactory] | None = None,
    on_song_done: RowCallback | None = None,
    keep_ray: bool = False,
) -> RunResult | TrainResult:
    """Generate every song of ``cfg`` (or encode every input file of an encode-only run):
    validate, start the stage pools, stream, compact, report.

    Everything is checked before Ray starts or any model loads; with ``dry_run`` nothing else
    happens (the result's ``plan`` tells what the run means). A Ray session already running in
    this process is used as is (and left running); otherwise one is started (or joined, with
    ``ray.address``) and stopped at the end. ``factories`` replace stages' objects (stand-ins);
    ``on_song_done`` is called with each finished song's manifest row, in the order songs finish.
    ``keep_ray``: leave a Ray session this run started running (the jobs of a sweep share it).
    A training run (``mode=train``) returns a :class:`~pipeline.train.run.TrainResult` instead.
    """
    cfg = to_run_config(cfg)
    cfg = dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, url=_absolute_url(cfg.output.url)))
    if cfg.mode is RunMode.TRAIN:
        from pipeline.train.run import run_train  # Ray Train loads only for training runs

        return run_train(cfg, lambda run_cfg: _connect(run_cfg) and not keep_ray)
    validated = validate_run(cfg)
    _log_plan(cfg, validated.summary)
    storage = RunStorage(cfg.output.url)
    if cfg.dry_run:
        return RunResult(output_url=storage.url, plan=validated.summary, dry_run=True)
    run_id = uuid.uuid4().hex[:12]
    lease = RunLease(storage, run_id, cfg.output.lease_heartbeat_s, cfg.output.lease_stale_s)
    lease.acquire()  # a second run on this output stops here, before anything is written
    marked = mark_output(storage)
    lease.start_heartbeat()
    faults.point("driver.lease_taken")
    try:
        return _run_leased(cfg, validated, storage.for_run(run_id), factories, on_song_done, keep_ray)
    finally:
        lease.release()
        if marked:
            unmark_if_unused(storage)


def _run_leased(
    cfg: RunConfig,
    validated: ValidatedRun,
    storage: RunStorage,
    factories: Mapping[Stage, StageFactory] | None,
    on_song_done: RowCallback | None,
    keep_ray: bool,
) -> RunResult:
    """The run, once its lease is held: every write goes through ``storage`` (fenced by it)."""
    writer = ManifestWriter(storage, ENCODE_MANIFEST_SCHEMA if cfg.mode is RunMode.ENCODE else MANIFEST_SCHEMA)

    def sink(row: dict[str, Any]) -> None:
        writer.add(row)
        logger.info("song %s -> %s", row["song_id"], row.get("audio_path") or row.get("bottom_tokens_path") or row.get("top_tokens_path"))
        if on_song_done is not None:
            on_song_done(row)

    session: dict[str, str] = {}

    def connect(run_cfg: RunConfig) -> bool:
        started = _connect(run_cfg)
        # bad input only the live cluster shows (no GPU, a missing resource or label), before any
        # placement group or actor exists
        try:
            check_resources(run_cfg, needed_stages(run_cfg, prompts=validated.needs_encoder), cluster_nodes(), "the Ray cluster")
        except ValueError:
            if started:
                _disconnect()
            raise
        session.update(_ray_session())
        return started and not keep_ray

    try:
        outcome = _execute(cfg, validated, storage, factories, sink, connect)
        faults.point("driver.before_manifest")
        writer.close()
        # an actor killed mid-write leaves its temporary file: every actor is stopped by now,
        # and the manifest (the driver's own temporary file until now) is in place
        removed = storage.remove_temporaries()
        if removed:
            logger.info("removed %d temporary file(s) left by actors that died mid-write", removed)
    except BaseException:
        writer.abort()
        raise
    return _report(cfg, validated, storage, writer.path, outcome, session)


@dataclass(frozen=True)
class RunOutcome:
    """How a run's work went: its progress summary, where its actors ran, the jobs found finished
    (not recomputed), the rows in its manifest, the input files rejected (each with why), and the
    wall seconds of its phases (starting or joining Ray, starting the actors and loading their
    models, the work, stopping)."""

    summary: RunSummary
    actors: dict[str, list[dict[str, Any]]]
    skipped: list[str]
    n_rows: int
    rejected: list[str]
    phases: dict[str, float]


def _execute(
    cfg: RunConfig,
    validated: ValidatedRun,
    storage: RunStorage,
    factories: Mapping[Stage, StageFactory] | None,
    sink: RowCallback,
    connect: Callable[[RunConfig], bool],
) -> RunOutcome:
    """Every job through the stage pools (songs sampled and decoded, or files encoded)."""
    levels = [stage_level(s) for s in cfg.sampling.levels]
    decoded = sorted(levels) if cfg.audio.previews else [min(levels)]
    verified, all_done = _finished_intact(cfg, validated, storage)
    clock = _PhaseClock()
    started_ray = False if all_done else connect(cfg)
    clock.lap("ray_start_s" if started_ray else "ray_connect_s")
    stages = needed_stages(cfg, prompts=validated.needs_encoder)
    pools = Pools(cfg, storage, factories, stages=stages)
    try:
        margins = {level: 0 for level in decoded}
        if not all_done:
            pools.start()
            if cfg.mode is RunMode.GENERATE:
                margins = _margins(cfg, pools, decoded)
        clock.lap("actors_ready_s")
        progress = Progress([s for s in stages if s in pools.stages], cfg.scheduler.progress_interval_s)
        resume = Resume(storage, deep=cfg.output.verify, keep_parts=cfg.output.keep_parts, verified=verified)
        scheduler = Scheduler(cfg, pools, storage, progress, validated.model.sampling_rate, sink, resume)
        jobs = _file_jobs(cfg, validated) if cfg.mode is RunMode.ENCODE else _song_jobs(cfg, validated, margins)
        n_rows = scheduler.run(jobs)
        clock.lap("work_s")
        actors = pools.infos()
    finally:
        pools.shutdown()
        if started_ray:
            _disconnect()
        clock.lap("shutdown_s")
    logger.info("time: %s", ", ".join(f"{name.removesuffix('_s').replace('_', ' ')} {value:.2f} s" for name, value in clock.phases.items()))
    return RunOutcome(progress.summary(), actors, scheduler.skipped, n_rows, scheduler.rejected, clock.phases)


class _PhaseClock:
    """Wall seconds of a run's phases, in order (a monotonic clock: a clock step changes none)."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._last = time.monotonic()

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.phases[name] = now - self._last
        self._last = now


def _report(cfg: RunConfig, validated: ValidatedRun, storage: RunStorage, manifest: str, outcome: RunOutcome,
            session: dict[str, str]) -> RunResult:
    """Add the run's figures to ``summary.json``, log them, and say where everything is."""
    figures = {
        **outcome.summary.to_dict(),
        "run_id": storage.run_id,
        "mode": cfg.mode.value if cfg.mode is RunMode.ENCODE else cfg.scheduler.mode.value,
        "songs": outcome.n_rows,
        "skipped": len(outcome.skipped),
        "rejected": outcome.rejected,
        "plan": validated.summary,
        "actors": outcome.actors,
        "phases": outcome.phases,
        "ray": session or None,  # None: every song was already done, Ray was not needed
    }
    summary_path = storage.append_summary(figures)
    log_summary(outcome.summary)
    if outcome.skipped:
        logger.info("%d song(s) were already complete and not recomputed", len(outcome.skipped))
    what = "tokens/level=*/ (Parquet)" if cfg.mode is RunMode.ENCODE else "tokens/level=*/ (Parquet), audio/ (WAV)"
    logger.info("outputs in %s: %d song(s) in manifest.parquet, %s, summary.json", storage.url, outcome.n_rows, what)
    return RunResult(
        output_url=storage.url,
        manifest_path=storage.uri(manifest),
        summary_path=storage.uri(summary_path),
        plan=validated.summary,
        summary=outcome.summary,
        actors=outcome.actors,
        skipped=list(outcome.skipped),
        n_songs=outcome.n_rows,
        rejected=list(outcome.rejected),
    )
