"""One optimisation step, the learning-rate schedule and per-step seeds, for any objective.

An objective is an ``nn.Module`` whose ``forward(*inputs)`` returns ``(loss, metrics)``
(:class:`~models.training.vqvae_objective.VQVAEObjective`,
:class:`~models.training.prior_objective.PriorObjective`), possibly wrapped in DDP.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from models.checks import is_int
from models.seeding import derive_seed



@dataclass(frozen=True)
class OptimizerSettings:
    """Adam with linear warm-up, then a constant rate (the original's defaults are lr 3e-4 for
    the VQ-VAE, 1.5e-4 and beta2 0.95 for the priors, gradient norm clipped at 1).

    Attributes:
        lr: learning rate after warm-up.
        beta1, beta2, eps, weight_decay: Adam's (AdamW's decoupled weight decay).
        warmup_steps: steps over which the rate rises linearly from ``lr / warmup_steps`` to ``lr``.
        grad_clip: clip the global gradient norm to this (0: no clipping).
    """

    lr: float = 3e-4
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        for name in ("eps", "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not is_int(self.warmup_steps) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")

    def learning_rate(self, step: int) -> float:
        """The rate of step ``step`` (0-based): a pure function of the step, so a resumed run
        continues the schedule where it stopped."""
        if self.warmup_steps and step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        return self.lr

    def build(self, parameters: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        """The optimizer over ``parameters`` (tied parameters appear once)."""
        unique = list({id(p): p for p in parameters if p.requires_grad}.values())
        return torch.optim.AdamW(unique, lr=self.lr, betas=(self.beta1, self.beta2), eps=self.eps,
                                 weight_decay=self.weight_decay)


def step_seed(seed: int, step: int) -> int:
    """Seed of training step ``step`` of a run seeded ``seed``: the same on every rank and for
    any number of ranks, so random codebook draws agree and a resumed step repeats exactly."""
    return derive_seed("train-step", int(seed), int(step))


@dataclass(frozen=True)
class StepResult:
    """What one step gives: the rank-local loss and metrics (0-d tensors, detached) and the
    global gradient norm before clipping (all ranks agree: DDP has averaged the gradients)."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]
    grad_norm: torch.Tensor


def train_step(
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: Sequence[object],
    *,
    lr: float,
    grad_clip: float,
) -> StepResult:
    """Forward, backward, clip, update. ``objective(*inputs)`` must return ``(loss, metrics)``.

    A non-finite loss or gradient norm raises before the weights change, naming the values.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss, metrics = objective(*inputs)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"the training loss is {float(loss.detach())} (metrics: { {k: float(v) for k, v in metrics.items()} })")
    loss.backward()
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    max_norm = grad_clip if grad_clip > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    if not torch.isfinite(grad_norm):
        raise FloatingPointError(f"the gradient norm is {float(grad_norm)} at loss {float(loss)}")
    optimizer.step()
    return StepResult(loss.detach(), {k: v.detach() for k, v in metrics.items()}, grad_norm.detach())
