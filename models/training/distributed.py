"""The two collectives data-parallel training needs besides DDP's gradient averaging.

Plain ``torch.distributed`` (gloo on CPU, NCCL on GPU); with no process group, or a group of one,
both are the identity, so the same code trains in one process. Every rank must hold tensors of
the same shape (equal per-rank batches).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.distributed as dist


def world_size() -> int:
    """Processes in the default group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """rows [n, ...] of every rank -> [world * n, ...], rank 0's rows first.

    The codebook update needs the latents of the whole global batch: with each rank holding a
    contiguous slice of it, the gathered rows are exactly those one process would hold.
    """
    world = world_size()
    if world == 1:
        return rows
    rows = rows.contiguous()
    parts = [torch.empty_like(rows) for _ in range(world)]
    dist.all_gather(parts, rows)
    return torch.cat(parts, dim=0)


def all_reduce_mean(values: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """0-d tensors (one float each per rank) -> their means over ranks, as Python floats.

    One collective for all of them. Per-rank means over equal shards average to the mean over
    the global batch, which is what a single process training on that batch reports.
    """
    names = sorted(values)
    if not names:
        return {}
    stacked = torch.stack([values[name].detach().reshape(()).float() for name in names])
    world = world_size()
    if world > 1:
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        stacked = stacked / world
    return dict(zip(names, stacked.tolist()))
