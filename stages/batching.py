"""Grouping requests into batches: the one rule every stage uses."""
from __future__ import annotations

from collections.abc import Hashable, Sequence


def group_batches(keys: Sequence[Hashable], max_batch: int) -> list[list[int]]:
    """Indices of requests grouped by key into batches of at most ``max_batch``.

    Requests with equal keys can share a forward pass. Batches are ordered by their first
    request, so the oldest request is served first.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    groups: dict[Hashable, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    batches = []
    for members in groups.values():
        batches.extend(members[i : i + max_batch] for i in range(0, len(members), max_batch))
    return sorted(batches, key=lambda batch: batch[0])


class BatchShare:
    """Mixin of a request's result that was computed in a batch: needs ``started_at``,
    ``finished_at`` (the batch's forward pass, seconds since the epoch) and ``batch_size``."""

    started_at: float
    finished_at: float
    batch_size: int

    @property
    def compute_s(self) -> float:
        """This request's share of its batch's compute time."""
        return (self.finished_at - self.started_at) / self.batch_size
