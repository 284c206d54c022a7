"""``run_train(cfg)``: validate, read the corpus, train on Ray Train, publish the model.

The run lives in ``output.url/<train.name>`` (any fsspec URL): Ray Train's checkpoints
(``checkpoint_*``, the newest ``train.keep_checkpoints`` kept) and, when training ends, the last
one published as ``model/`` (a whole-model ``save_pretrained`` directory with its tokenizer, what
``model.checkpoint=`` and ``JukeboxModel.from_pretrained`` take) with ``metrics.parquet`` and
``metrics.csv`` (one row per step). Running the same command again resumes from the newest
checkpoint (Ray Train restores a run by its name and storage); with more ``train.steps`` it trains on.
The run folder has a lease as any run's output: a second run of the same name on the same output
stops before it reads its corpus; the published files go through the run's fenced writer.
"""
from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow.fs
import ray
import ray.train
from ray.train.torch import TorchConfig, TorchTrainer

from models.presets import is_preset
from models.shipped import uses_shipped_weights
from models.training import CropSampler, audio_crops, measure_audio_scale
from models.training.batches import CALIBRATION_STREAM
from pipeline.run.config import RunConfig
from pipeline.store.lease import RunLease
from pipeline.store.ownership import check_output_folder, mark_output, unmark_if_unused
from pipeline.store.writer import RunStorage
from pipeline.train.data import load_audio_corpus, load_token_corpus
from pipeline.train.metrics import METRICS_CSV, METRICS_FILE, MetricsHistory
from pipeline.train.validate import TrainPlan, validate_train
from pipeline.train.worker import TRAINING_STATE, WorkerPlan, train_worker

logger = logging.getLogger(__name__)

MODEL_DIR = "model"


@dataclass(frozen=True)
class TrainResult:
    """What a training run left behind.

    Attributes:
        run_url: the run's folder.
        model_url: the trained whole model (``save_pretrained`` directory with its tokenizer).
        metrics_path: ``metrics.parquet``, one row per step (``metrics.csv`` beside it).
        checkpoint_path: the newest Ray Train checkpoint.
        metrics: the last step's metrics.
        plan: what the run meant (component, data, steps...).
        wall_s: the run's wall time.
        dry_run: nothing was run: only ``plan`` is set.
    """

    run_url: str
    model_url: str = ""
    metrics_path: str = ""
    checkpoint_path: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    dry_run: bool = False

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The per-step metrics (read from ``metrics.parquet``)."""
        if self.dry_run:
            return []
        with fsspec.open(self.metrics_path, "rb") as handle:
            return MetricsHistory.from_parquet(handle).rows


def ray_storage(url: str) -> tuple[str, pyarrow.fs.FileSystem | None]:
    """Ray Train's ``storage_path`` and ``storage_filesystem`` for an fsspec URL: a local path as
    is; any other file system wrapped for pyarrow (``FSSpecHandler``) with its path."""
    fs, path = fsspec.core.url_to_fs(url)
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    if "file" in protocols or "local" in protocols:
        return os.path.abspath(path), None
    return path, pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))


def _worker_plan(plan: TrainPlan, corpus_ref: Any, corpus: list) -> WorkerPlan:
    spec = plan.spec
    extra: dict[str, Any] = {}
    if not plan.component.is_prior:
        weights = spec.vqvae.weights()
        sampler = CropSampler(tuple(len(song) for song in corpus), plan.window)
        crops = audio_crops(corpus, sampler.draw(spec.seed, 0, spec.vqvae.scale_crops, stream=CALIBRATION_STREAM), plan.window)
        scale = measure_audio_scale(crops, weights.resolutions)
        logger.info("training audio: mean square %.4g, spectral norm %.4g (the losses are divided by them)", scale.l2, scale.spectral)
        random_start = is_preset(plan.source) and not uses_shipped_weights(plan.source, plan.weights)
        reinit = spec.vqvae.reinit_codebooks if spec.vqvae.reinit_codebooks is not None else random_start
        extra = dict(vqvae_weights=weights, audio_scale=scale, reinit_codebooks=reinit)
    return WorkerPlan(
        component=plan.component, source=plan.source, init_seed=plan.init_seed, weights=plan.weights, model=plan.model, steps=spec.steps,
        batch_size=spec.batch_size, seed=spec.seed, window=plan.window, align=plan.align,
        optimizer=spec.optimizer.settings(plan.component), checkpoint_every=spec.checkpoint_every, log_every=spec.log_every,
        torch_threads=spec.torch_threads, progress_bar=spec.progress_bar, run_url=plan.run_url, corpus=corpus_ref,
        tokens_per_step=plan.tokens_per_step, fault=spec.fault, **extra,
    )


def _trainer(plan: TrainPlan, worker_plan: WorkerPlan) -> TorchTrainer:
    spec = plan.spec
    storage_path, filesystem = ray_storage(plan.storage_url)
    resources = {"CPU": spec.cpus_per_worker, **({"GPU": 1} if spec.use_gpu else {})}
    return TorchTrainer(
        train_worker,
        train_loop_config={"plan": worker_plan},
        torch_config=TorchConfig(backend="nccl" if spec.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=spec.num_workers, use_gpu=spec.use_gpu, resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=spec.run_name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            failure_config=ray.train.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=spec.keep_checkpoints),
        ),
    )


def _publish(checkpoint: ray.train.Checkpoint, storage: RunStorage) -> tuple[str, str, MetricsHistory]:
    """Copy the checkpoint's model (not its training state) to ``run/model`` and its metrics to
    ``run/metrics.{parquet,csv}`` through the run's writer; ``config.json`` goes last, so a
    half-copied model never looks whole."""
    model_dir = storage.path(MODEL_DIR)
    storage.remove(model_dir)
    with checkpoint.as_directory() as directory:
        names = sorted(n for n in os.listdir(directory) if n not in (TRAINING_STATE, METRICS_FILE))
        for name in sorted(names, key=lambda n: n == "config.json"):
            with open(os.path.join(directory, name), "rb") as handle:
                storage.write_bytes(storage.path(MODEL_DIR, name), handle.read())
        history = MetricsHistory.from_parquet(os.path.join(directory, METRICS_FILE))
    storage.write_bytes(storage.path(METRICS_FILE), history.parquet_bytes())
    storage.write_bytes(storage.path(METRICS_CSV), history.csv_bytes())
    return storage.uri(model_dir), storage.uri(storage.path(METRICS_FILE)), history


def _train_leased(cfg: RunConfig, plan: TrainPlan, connect: Callable[[RunConfig], bool],
                  storage: RunStorage) -> tuple[ray.train.Result, tuple[str, str, MetricsHistory]]:
    """Read the corpus, train, publish: the run, once its lease is held."""
    if plan.component.is_prior:
        corpus: list = load_token_corpus(plan)
    else:
        corpus = load_audio_corpus(plan.sources, plan.model.sampling_rate, plan.model.vqvae_config.conv_input_shape)
    stop_ray = connect(cfg)
    try:
        worker_plan = _worker_plan(plan, ray.put(corpus), corpus)
        del corpus
        result = _trainer(plan, worker_plan).fit()
        if result.checkpoint is None:
            raise RuntimeError(f"training {plan.component.value} left no checkpoint in {plan.run_url}")
        return result, _publish(result.checkpoint, storage)
    finally:
        if stop_ray:
            ray.shutdown()


def run_train(cfg: RunConfig, connect: Callable[[RunConfig], bool]) -> TrainResult:
    """Train ``cfg.train.component``; ``connect(cfg)`` joins or starts Ray and says whether the
    run must stop it. Every input is checked, and the corpus read, before any worker starts."""
    began = time.time()
    plan = validate_train(cfg)
    logger.info("model: %s", cfg.model.describe_weights())
    logger.info("plan: %s", plan.summary)
    output = RunStorage(plan.storage_url)
    check_output_folder(output)  # a folder this tool owns, or a new one
    if cfg.dry_run:
        return TrainResult(plan.run_url, plan=plan.summary, dry_run=True)
    run_id = uuid.uuid4().hex[:12]
    lease = RunLease(RunStorage(plan.run_url), run_id, cfg.output.lease_heartbeat_s, cfg.output.lease_stale_s)
    lease.acquire()  # a second training run of this name on this output stops here
    marked = mark_output(output)
    lease.start_heartbeat()
    try:
        result, (model_url, metrics_path, history) = _train_leased(cfg, plan, connect, RunStorage(plan.run_url, run_id))
    finally:
        lease.release()
        if marked:
            unmark_if_unused(output)
    last = history.rows[-1] if history.rows else {}
    logger.info("trained %s for %d steps: %s; model in %s, metrics in %s", plan.component.value, len(history.rows),
                {k: float(f"{v:.4g}") for k, v in last.items() if isinstance(v, float)}, model_url, metrics_path)
    return TrainResult(plan.run_url, model_url, metrics_path, str(result.checkpoint.path), last, plan.summary, time.time() - began)
