"""``run(cfg)``: one pipeline run from a composed Hydra config (or a :class:`RunConfig`)."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import ray
from omegaconf import DictConfig, OmegaConf

from pipeline.actors import StageFactory
from pipeline.config import RunConfig, Stage, stage_level
from pipeline.finalize import manifest_table
from pipeline.plan import SongPlan, plan_song
from pipeline.pools import Pools
from pipeline.progress import Progress, RunSummary, log_summary
from pipeline.scheduler import Scheduler
from pipeline.storage import RunStorage
from pipeline.validate import ValidatedRun, validate_run

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """Where a run's outputs went and how it went.

    Attributes:
        output_url: root of the outputs.
        manifest_path: the run manifest (Parquet, one row per song).
        summary_path: ``summary.json`` (stage timings, overlap, actor placement).
        rows: the manifest rows.
        summary: stage busy times, wall time, time to first audio, overlap.
        actors: per stage, where its actors ran (node, GPU ids, pid).
        skipped: songs already complete in storage, not recomputed.
    """

    output_url: str
    manifest_path: str
    summary_path: str
    rows: list[dict[str, Any]]
    summary: RunSummary
    actors: dict[str, list[dict[str, Any]]]
    skipped: list[str]


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


def _connect(cfg: RunConfig) -> bool:
    """Join or start Ray; True when this call started it (and the run must stop it)."""
    if ray.is_initialized():
        return False
    spec = cfg.ray
    common: dict[str, Any] = dict(namespace=spec.namespace, runtime_env=spec.runtime_env or None)
    if spec.address is None:
        ray.init(num_cpus=spec.num_cpus, num_gpus=spec.num_gpus, include_dashboard=spec.include_dashboard, **common)
    else:
        ray.init(address=spec.address, **common)
    return True


def _margins(cfg: RunConfig, pools: Pools, levels: list[int]) -> dict[int, int]:
    if cfg.audio.margin_tokens is not None:
        return {level: cfg.audio.margin_tokens for level in levels}
    decoder = pools[Stage.DECODE].actors[0]
    return dict(zip(levels, ray.get([decoder.receptive_field.remote(level) for level in levels])))


def _plans(cfg: RunConfig, validated: ValidatedRun, margins: dict[int, int]) -> Iterator[SongPlan]:
    """Song plans, made as the scheduler admits songs (not all at once)."""
    levels = [stage_level(s) for s in cfg.sampling.levels]
    options = {stage_level(s): cfg.sampling.for_stage(s) for s in cfg.sampling.levels}
    geometries = [validated.geometries[level] for level in sorted(validated.geometries, reverse=True)]
    for song in cfg.songs:
        yield plan_song(song, cfg.seed, validated.total_lengths[song.id], geometries, levels, options, margins, cfg.audio.previews)


def run(cfg: DictConfig | Mapping[str, Any] | RunConfig, *, factories: Mapping[Stage, StageFactory] | None = None) -> RunResult:
    """Generate every song of ``cfg``: validate, start the stage pools, stream, compact, report.

    Everything is checked before Ray starts or any model loads. A Ray session already running in
    this process is used as is (and left running); otherwise one is started (or joined, with
    ``ray.address``) and stopped at the end. ``factories`` replace stages' objects (stand-ins).
    """
    cfg = to_run_config(cfg)
    cfg = dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, url=_absolute_url(cfg.output.url)))
    validated = validate_run(cfg)
    storage = RunStorage(cfg.output.url)
    levels = [stage_level(s) for s in cfg.sampling.levels]
    decoded = sorted(levels) if cfg.audio.previews else [min(levels)]
    logger.info(
        "run: %d song(s), model %s, levels %s, mode %s, output %s",
        len(cfg.songs), cfg.model.source, [s.value for s in cfg.sampling.levels], cfg.scheduler.mode.value, storage.url,
    )
    # A rerun of a finished output needs neither Ray nor a model: songs are read back from markers.
    all_done = {song.id for song in cfg.songs} <= storage.done_songs()
    started_ray = False if all_done else _connect(cfg)
    pools = Pools(cfg, storage.url, factories)
    try:
        if all_done:
            margins = {level: 0 for level in decoded}
        else:
            pools.start()
            margins = _margins(cfg, pools, decoded)
        plans = _plans(cfg, validated, margins)
        progress = Progress([Stage.TOKENIZE, *cfg.sampling.levels, Stage.DECODE], cfg.scheduler.progress_interval_s)
        scheduler = Scheduler(cfg, pools, storage, progress, validated.model.sampling_rate)
        rows = scheduler.run(plans)
        actors = pools.infos()
    finally:
        pools.shutdown()
        if started_ray:
            ray.shutdown()
    summary = progress.summary()
    storage.write_parquet(storage.path("manifest.parquet"), manifest_table(rows))
    summary_data = {
        **summary.to_dict(),
        "mode": cfg.scheduler.mode.value,
        "songs": len(rows),
        "skipped": scheduler.skipped,
        "actors": actors,
    }
    storage.write_bytes(storage.path("summary.json"), json.dumps(summary_data, indent=1, default=str).encode())
    log_summary(summary)
    if scheduler.skipped:
        logger.info("%d song(s) were already complete and not recomputed: %s", len(scheduler.skipped), scheduler.skipped)
    logger.info("outputs in %s: audio/ (WAV), tokens/level=*/ (Parquet), manifest.parquet, summary.json", storage.url)
    for row in rows:
        logger.info("  %s -> %s", row["song_id"], row.get("audio_path"))
    return RunResult(
        output_url=storage.url,
        manifest_path=storage.uri(storage.path("manifest.parquet")),
        summary_path=storage.uri(storage.path("summary.json")),
        rows=rows,
        summary=summary,
        actors=actors,
        skipped=list(scheduler.skipped),
    )

