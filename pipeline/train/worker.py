"""The loop every Ray Train worker runs: build the component, resume, train, checkpoint.

Each step, every worker draws the same global batch (a function of the run seed and the step),
trains on its contiguous share under DDP (gradients averaged over workers), and seeds torch's RNG
from the step, so the codebooks' random draws agree on every worker. The metrics are averaged
over workers: the loss of a step is the mean over the global batch, whatever the worker count.

Every ``checkpoint_every`` steps rank 0 writes a checkpoint: the whole model as a
``save_pretrained`` directory (trained component plus the others as loaded) with its tokenizer,
``training_state.pt`` (step, optimizer, codebook EMA statistics) and the metrics so far. A
restarted worker group resumes from the latest; the steps after it are repeated exactly.
"""
from __future__ import annotations

import logging
import os
import posixpath
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
from torch import nn

from models.checkpoint import read_state_dict
from models.config import JukeboxConfig
from models.loading import load_model, load_prior, load_vqvae
from models.presets import is_preset
from models.shipped import Weights
from models.training import (
    AudioScale,
    CropSampler,
    OptimizerSettings,
    PriorObjective,
    VQVAELossWeights,
    VQVAEObjective,
    all_reduce_mean,
    audio_crops,
    prior_inputs,
    save_model_with_component,
    shard,
    step_seed,
    train_step,
)
from pipeline.actors.builders import build_tokenizer
from pipeline.train.config import Component, FaultSpec
from pipeline.train.metrics import METRICS_FILE, MetricsHistory, log_line

logger = logging.getLogger(__name__)

TRAINING_STATE = "training_state.pt"


@dataclass(frozen=True)
class WorkerPlan:
    """Everything a worker needs, sent with ``train_loop_config`` (picklable).

    ``corpus`` is an ObjectRef of the audio songs (VQ-VAE) or token songs (priors);
    ``tokens_per_step`` what one step trains on (:attr:`pipeline.train.validate.TrainPlan.tokens_per_step`).
    """

    component: Component
    source: str
    init_seed: int
    weights: Weights
    model: JukeboxConfig
    steps: int
    batch_size: int
    seed: int
    window: int
    align: int
    optimizer: OptimizerSettings
    checkpoint_every: int
    log_every: int
    torch_threads: int
    progress_bar: bool
    run_url: str
    corpus: Any
    tokens_per_step: int
    vqvae_weights: VQVAELossWeights | None = None
    audio_scale: AudioScale | None = None
    reinit_codebooks: bool = False
    fault: FaultSpec = FaultSpec()


# --------------------------------------------------------------------------- building
def _load_component(plan: WorkerPlan, source: str, device: torch.device) -> nn.Module:
    if plan.component.is_prior:
        module = load_prior(source, plan.component.prior_index(), init_seed=plan.init_seed, weights=plan.weights, device=device)
    else:
        module = load_vqvae(source, init_seed=plan.init_seed, weights=plan.weights, device=device)
    return module.train()


def _objective(plan: WorkerPlan, module: nn.Module) -> nn.Module:
    if plan.component.is_prior:
        return PriorObjective(module)
    return VQVAEObjective(module, plan.vqvae_weights, plan.audio_scale)


def _base_state(plan: WorkerPlan) -> dict[str, torch.Tensor]:
    """The whole model's weights as loaded (the untrained components of every checkpoint)."""
    if is_preset(plan.source):
        return load_model(plan.source, init_seed=plan.init_seed, weights=plan.weights).state_dict()
    return read_state_dict(plan.source)


def _codebook_state(module: nn.Module) -> list[dict[str, Any]]:
    return [{"ema_sum": b.ema_sum.detach().cpu(), "ema_count": b.ema_count.detach().cpu(), "initialised": b.initialised}
            for b in module.bottleneck.level_blocks]


def _restore_codebooks(module: nn.Module, saved: list[dict[str, Any]]) -> None:
    with torch.no_grad():
        for block, state in zip(module.bottleneck.level_blocks, saved):
            block.ema_sum.copy_(state["ema_sum"])
            block.ema_count.copy_(state["ema_count"])
            block.initialised = bool(state["initialised"])


# --------------------------------------------------------------------------- checkpoints
def _write_checkpoint(plan: WorkerPlan, directory: str, module: nn.Module, base_state: dict[str, torch.Tensor],
                      optimizer: torch.optim.Optimizer, next_step: int, history: MetricsHistory) -> None:
    component = "vqvae" if not plan.component.is_prior else plan.component.prior_index()
    save_model_with_component(plan.model, base_state, component, module, directory)
    build_tokenizer(plan.source).save_pretrained(directory)
    state = {"component": plan.component.value, "step": next_step, "seed": plan.seed, "optimizer": optimizer.state_dict()}
    if not plan.component.is_prior:
        state["codebooks"] = _codebook_state(module)
    torch.save(state, os.path.join(directory, TRAINING_STATE))
    with open(os.path.join(directory, METRICS_FILE), "wb") as handle:
        handle.write(history.parquet_bytes())


def _resume(plan: WorkerPlan, device: torch.device) -> tuple[nn.Module, dict[str, Any] | None, MetricsHistory]:
    """The component (from the latest checkpoint when there is one), its training state and history."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        module = _load_component(plan, plan.source, device)
        if plan.reinit_codebooks and not plan.component.is_prior:
            for block in module.bottleneck.level_blocks:
                block.initialised = False  # the first training batch draws the codes
        return module, None, MetricsHistory()
    with checkpoint.as_directory() as directory:
        module = _load_component(plan, directory, device)
        state = torch.load(os.path.join(directory, TRAINING_STATE), map_location=device, weights_only=True)
        history = MetricsHistory.from_parquet(os.path.join(directory, METRICS_FILE))
    if state["component"] != plan.component.value:
        raise ValueError(f"the run's checkpoint trained {state['component']!r}, this run trains {plan.component.value!r}: "
                         "use another train.name")
    if not plan.component.is_prior:
        _restore_codebooks(module, state["codebooks"])
    logger.info("resuming %s at step %d from %s", plan.component.value, state["step"], checkpoint.path)
    return module, state, history


def _inject_fault(plan: WorkerPlan, step: int, rank: int) -> None:
    """Die abruptly at the configured step, once per run (a marker file remembers)."""
    if plan.fault.at_step != step or plan.fault.rank != rank:
        return
    marker = posixpath.join(plan.run_url, f".fault-injected-step-{step}")
    fs, path = fsspec.core.url_to_fs(marker)
    if fs.exists(path):
        return
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    fs.pipe_file(path, b"injected")
    logger.warning("fault injection: worker %d exits at step %d", rank, step)
    os._exit(1)


# --------------------------------------------------------------------------- the loop
class _Batches:
    """This worker's share of each step's global batch, as the objective's inputs."""

    def __init__(self, plan: WorkerPlan, corpus: list, bare: nn.Module, rank: int, world: int, device: torch.device):
        self.plan, self.corpus, self.bare, self.rank, self.world, self.device = plan, corpus, bare, rank, world, device
        lengths = tuple(len(s.tokens) if plan.component.is_prior else len(s) for s in corpus)
        self.sampler = CropSampler(lengths, plan.window, plan.align)

    def __call__(self, step: int) -> list[torch.Tensor | None]:
        picks = shard(self.sampler.draw(self.plan.seed, step, self.plan.batch_size), self.rank, self.world)
        if self.plan.component.is_prior:
            inputs = prior_inputs(self.bare, self.corpus, picks)
        else:
            inputs = (audio_crops(self.corpus, picks, self.plan.window),)
        return [None if t is None else t.to(self.device, non_blocking=True) for t in inputs]


def _progress(plan: WorkerPlan, start: int):
    if not plan.progress_bar:
        return None
    from ray.experimental.tqdm_ray import tqdm

    bar = tqdm(total=plan.steps, desc=f"train {plan.component.value}")
    bar.update(start)
    return bar


def train_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train's ``train_loop_per_worker``: ``config["plan"]`` is a :class:`WorkerPlan`.
    Returns the last step's metrics (rank 0's is the run's ``return_value``)."""
    plan: WorkerPlan = config["plan"]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # A conv weight [out, 1, k] is contiguous with strides (k, k, 1), its gradient comes back as
    # (k, 1, 1): the same memory layout (the middle dimension has size 1), which DDP still reports.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    torch.set_num_threads(plan.torch_threads)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    module, state, history = _resume(plan, device)
    start = int(state["step"]) if state else 0
    objective = ray.train.torch.prepare_model(_objective(plan, module))
    optimizer = plan.optimizer.build(module.parameters())
    if state:
        optimizer.load_state_dict(state["optimizer"])
    base_state = _base_state(plan) if rank == 0 else {}
    batches = _Batches(plan, ray.get(plan.corpus), module, rank, world, device)
    bar = _progress(plan, start) if rank == 0 else None
    row: dict[str, Any] = history.rows[-1] if history.rows else {}
    for step in range(start, plan.steps):
        _inject_fault(plan, step, rank)
        began = time.perf_counter()
        torch.manual_seed(step_seed(plan.seed, step))
        inputs = batches(step)
        result = train_step(objective, optimizer, inputs, lr=plan.optimizer.learning_rate(step), grad_clip=plan.optimizer.grad_clip)
        metrics = all_reduce_mean({"loss": result.loss, **result.metrics})
        elapsed = time.perf_counter() - began
        row = {"step": step, **metrics, "grad_norm": float(result.grad_norm), "lr": plan.optimizer.learning_rate(step),
               "step_s": elapsed, "tokens_per_s": plan.tokens_per_step / elapsed}
        if not plan.component.is_prior:
            row["samples_per_s"] = plan.batch_size * plan.window / elapsed
        history.add(row)
        if bar is not None:
            bar.update(1)
        if rank == 0 and ((step + 1) % plan.log_every == 0 or step + 1 == plan.steps):
            logger.info(log_line(plan.component.value, row, plan.steps))
        if (step + 1) % plan.checkpoint_every == 0 or step + 1 == plan.steps:
            _report(plan, rank, module, base_state, optimizer, step + 1, history, row)
    if bar is not None:
        bar.close()
    return row


def _report(plan: WorkerPlan, rank: int, module: nn.Module, base_state: dict[str, torch.Tensor],
            optimizer: torch.optim.Optimizer, next_step: int, history: MetricsHistory, row: dict[str, Any]) -> None:
    """Every worker reports the step's metrics; rank 0 attaches the checkpoint."""
    metrics = {k: v for k, v in row.items() if isinstance(v, (int, float)) and np.isfinite(v)}
    with tempfile.TemporaryDirectory(prefix="jukebox-ckpt-") as directory:
        checkpoint = None
        if rank == 0:
            _write_checkpoint(plan, directory, module, base_state, optimizer, next_step, history)
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=checkpoint)
