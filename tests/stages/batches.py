"""Run a list of requests through a batched stage as the pipeline's batcher would group them:
requests of one batch key, in arrival order, at most ``max_batch`` per call."""
from __future__ import annotations

from collections.abc import Sequence


def run_grouped(stage, requests: Sequence) -> list:
    """One result per request, in the requests' order."""
    open_groups: dict = {}
    batches: list[list[int]] = []
    for index, request in enumerate(requests):
        key = request.batch_key()
        group = open_groups.get(key)
        if group is None or len(group) == stage.max_batch:
            group = open_groups[key] = []
            batches.append(group)
        group.append(index)
    results: list = [None] * len(requests)
    for batch in batches:
        for index, result in zip(batch, stage.run_batch([requests[i] for i in batch])):
            results[index] = result
    return results
