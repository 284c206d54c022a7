"""The one protocol of the batched stages: requests that share a batch key run in one call.

A request knows its song (``song_id``) and its :meth:`~BatchedRequest.batch_key`: requests with
equal keys line up (same shapes, same options) and may share one forward pass. A
:class:`BatchedStage` runs such a batch, at most ``max_batch`` requests, with
:meth:`BatchedStage.run_batch`; it checks the batch once, here, then calls the stage's
``_run``. Which requests are batched together is the caller's business (the pipeline's actors
gather concurrent calls with a ``MicroBatcher``).
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Generic, Protocol, TypeVar

from models.checks import is_int


class BatchedRequest(Protocol):
    song_id: str

    def batch_key(self) -> Hashable: ...


Request = TypeVar("Request", bound=BatchedRequest)
Result = TypeVar("Result")


class BatchedStage(Generic[Request, Result]):
    """A stage whose requests of one batch key share a forward pass.

    Args:
        max_batch: most requests per call (an integer >= 1).
    """

    def __init__(self, max_batch: int) -> None:
        if not is_int(max_batch) or max_batch < 1:
            raise ValueError(f"max_batch must be an integer >= 1, got {max_batch!r}")
        self.max_batch = max_batch

    def run_batch(self, requests: Sequence[Request]) -> list[Result]:
        """One result per request, in order, computed together: the requests must share one
        :meth:`batch_key` and be at most ``max_batch``."""
        if not requests:
            return []
        key = requests[0].batch_key()
        mismatched = [r.song_id for r in requests if r.batch_key() != key]
        if mismatched:
            raise ValueError(f"requests of songs {mismatched} do not line up with song {requests[0].song_id!r}'s "
                             f"(another batch key): batch requests by batch_key()")
        if len(requests) > self.max_batch:
            raise ValueError(f"got {len(requests)} requests, more than max_batch={self.max_batch}")
        return self._run(requests)

    def _run(self, requests: Sequence[Request]) -> list[Result]:
        """Compute a checked batch (the stage's own work)."""
        raise NotImplementedError


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
