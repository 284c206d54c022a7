"""Stand-in stages for pipeline tests: deterministic, input-sensitive and cheap.

``CountingPrior`` has ``JukeboxPrior.sample_window``'s signature. Each row's tokens are drawn from
its own seed and then shifted by a digest of everything the row was given (labels, context,
upper tokens, window position), so a window fed the wrong context or upper tokens gives different
tokens. ``delay_s`` per call simulates compute (a batch costs one delay, as a batched forward
pass does).
"""
from __future__ import annotations

import functools
import time

import torch

from models.prior.sampling import per_row
from stages.prior_window import PriorWindowStage


class CountingPrior(torch.nn.Module):
    """A prior stand-in: seeded tokens, shifted by a digest of the row's inputs."""

    def __init__(self, codes: int = 256, delay_s: float = 0.0) -> None:
        super().__init__()
        self.codes = codes
        self.delay_s = delay_s
        self.calls: list[tuple[int, int, int]] = []

    def sample_window(self, labels, context, upper, start, n_new, total_length, seeds, options, offset=0):
        starts, totals, offsets = (per_row(v, len(seeds), name) for name, v in (("start", start), ("total_length", total_length), ("offset", offset)))
        rows = []
        for row, seed in enumerate(seeds):
            generator = torch.Generator().manual_seed(int(seed))
            base = torch.randint(0, self.codes, (n_new,), generator=generator)
            digest = int(labels[row].sum()) + 31 * int(context[row].sum()) + 7 * starts[row] + totals[row] + 3 * offsets[row]
            if upper is not None:
                digest += 17 * int(upper[row].sum()) + upper.shape[1]
            rows.append((base + digest) % self.codes)
        self.calls.append((starts[0], n_new, len(seeds)))
        if self.delay_s:
            time.sleep(self.delay_s)
        return torch.stack(rows)


def counting_stage(device: torch.device, max_batch: int = 1, *, delay_s: float = 0.0, codes: int = 256) -> PriorWindowStage:
    """A PriorWindowStage around a CountingPrior (a pipeline stage factory)."""
    return PriorWindowStage(CountingPrior(codes, delay_s), max_batch=max_batch, device=device)


def counting_factories(delay_s: float = 0.0) -> dict:
    """Factories replacing the three prior stages with counting stand-ins."""
    from pipeline.run.spec import SAMPLING_STAGES

    return {stage: functools.partial(counting_stage, delay_s=delay_s) for stage in SAMPLING_STAGES}
