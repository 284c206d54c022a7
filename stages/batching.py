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
