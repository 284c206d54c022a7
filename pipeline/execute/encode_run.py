"""Encode-only runs: every input audio file through the encode pool into the token layout.

The driver admits files (at most ``songs_in_flight`` at once: by default ``max_batch *
num_actors`` of the encode stage, enough to fill its batches), sends each to an
:class:`~pipeline.actors.encode.EncodeActor` and streams the returned manifest rows to the sink. A file
whose completion marker exists is not encoded again (its settings are checked, as for songs).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import ray

from pipeline.actors.base import StageFactory
from pipeline.actors.pools import Pools
from pipeline.actors.tasks import EncodeFileTask
from pipeline.execute.progress import Progress, RunSummary
from pipeline.execute.scheduler import PipelineError, ResumeMismatchError
from pipeline.run.config import RunConfig, Stage
from pipeline.run.validate import ValidatedRun
from pipeline.store.verify import marker_problems
from pipeline.store.writer import RunStorage

logger = logging.getLogger(__name__)


def _in_flight(cfg: RunConfig) -> int:
    if cfg.scheduler.max_songs_in_flight is not None:
        return cfg.scheduler.max_songs_in_flight
    pool = cfg.stages[Stage.ENCODE]
    return pool.max_batch * pool.num_actors


def run_encode(
    cfg: RunConfig,
    validated: ValidatedRun,
    storage: RunStorage,
    factories: Mapping[Stage, StageFactory] | None,
    sink: Callable[[dict[str, Any]], None],
    connect: Callable[[RunConfig], bool],
    disconnect: Callable[[], None],
) -> tuple[RunSummary, dict[str, list[dict[str, Any]]], list[str], int, list[str]]:
    """Encode every file of ``validated.sources``; (summary, actors, skipped files, files in the
    manifest, the files rejected with why)."""
    init_seed = cfg.model.init_seed if cfg.model.checkpoint is None else None
    tasks = [
        EncodeFileTask(source, index, cfg.model.source, init_seed,
                       validated.labels[source.song_id].to_row() if source.song_id in validated.labels else None)
        for index, source in enumerate(validated.sources)
    ]
    done = storage.done_songs()
    skipped: list[str] = []
    todo = []
    for task in tasks:
        song_id = task.source.song_id
        if song_id not in done:
            todo.append(task)
            continue
        marker = _verified_marker(storage, song_id, cfg.output.verify)
        if marker is None:  # damaged: set aside, encoded again
            todo.append(task)
            continue
        if marker.get("fingerprint") != task.fingerprint():
            stored = marker.get("fingerprint") or {}
            keys = sorted(k for k in set(stored) | set(task.fingerprint()) if stored.get(k) != task.fingerprint().get(k))
            raise ResumeMismatchError(
                f"{song_id!r} already exists in {storage.url!r} encoded from other input or settings ({keys}): use another "
                "output.url, or delete its files to encode it again"
            )
        skipped.append(song_id)
        # labels do not decide the tokens: a rerun with a new labels manifest relabels finished files
        sink({**marker["row"], **(task.labels or {}), "song_index": task.index})
    progress = Progress([Stage.ENCODE], cfg.scheduler.progress_interval_s)
    actors: dict[str, list[dict[str, Any]]] = {}
    rejected: list[str] = []
    if todo:
        started_ray = connect(cfg)
        pools = Pools(cfg, storage, factories, stages=[Stage.ENCODE])
        try:
            pools.start()
            rejected = _encode_all(cfg, pools, todo, progress, sink, validated.model.sampling_rate)
            actors = pools.infos()
        finally:
            pools.shutdown()
            if started_ray:
                disconnect()
    return progress.summary(), actors, skipped, len(tasks) - len(rejected), rejected


def _verified_marker(storage: RunStorage, song_id: str, deep: bool) -> dict[str, Any] | None:
    """A finished file's marker when it and its token files check out; otherwise the damaged
    files and the marker are set aside and None is returned (the file is encoded again)."""
    path = storage.marker_path(song_id)
    try:
        marker = storage.read_json(path)
    except (OSError, ValueError) as err:
        storage.set_aside(path, str(err))
        return None
    problems = marker_problems(storage, marker, deep)
    if not problems:
        return marker
    for relative, problem in problems.items():
        if problem != "missing" and relative != "(marker)":
            storage.set_aside(storage.resolve(relative), problem)
    storage.set_aside(path, "its token files are damaged: " + "; ".join(f"{k}: {v}" for k, v in problems.items()))
    return None


def _encode_all(cfg: RunConfig, pools: Pools, tasks: list[EncodeFileTask], progress: Progress,
                sink: Callable[[dict[str, Any]], None], sampling_rate: int) -> list[str]:
    """Encode the files; the ones the encode step rejected (unusable audio, e.g. NaN samples),
    each with why: the others are encoded whatever those hold."""
    rejected: list[str] = []
    pool = pools[Stage.ENCODE]
    limit = _in_flight(cfg)
    pending: dict[Any, str] = {}
    queue = iter(tasks)
    exhausted = False
    progress.start()
    progress.plan(Stage.ENCODE, len(tasks), sum(t.source.frames * sampling_rate // t.source.sampling_rate for t in tasks))
    while True:
        while not exhausted and len(pending) < limit:
            task = next(queue, None)
            if task is None:
                exhausted = True
                break
            pending[pool.actor_for(task.source.song_id).encode_file.remote(task)] = task.source.song_id
        if not pending:
            break
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=progress.interval_s, fetch_local=False)
        for ref in ready:
            song_id = pending.pop(ref)
            pool.release(song_id)
            try:
                row, stats = ray.get(ref)
            except ray.exceptions.RayTaskError as err:
                if not isinstance(err.cause, ValueError):  # failed after Ray's retries: the run cannot finish
                    raise PipelineError(f"encoding {song_id!r} failed: {err}") from err
                logger.error("input file rejected: %s", err.cause)
                rejected.append(str(err.cause))
                continue
            progress.record(stats)
            sink(row)
        progress.maybe_log()
    progress.maybe_log(force=True)
    return rejected
