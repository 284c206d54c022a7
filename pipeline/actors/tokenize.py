"""The tokenization actor: labels of a song for every level."""
from __future__ import annotations

import time

import numpy as np

from pipeline.actors.base import ActorSettings, StageActor, StageFactory
from pipeline.actors.messages import CallStats
from pipeline.store.writer import RunStorage
from stages.tokenize import Conditioning


class TokenizeActor(StageActor):
    """Labels of a song for every level (``factory`` builds a :class:`~stages.tokenize.TokenizeStage`)."""

    def __init__(self, factory: StageFactory, storage: RunStorage, settings: ActorSettings = ActorSettings()) -> None:
        super().__init__("tokenize", factory, storage, settings)

    async def tokenize(self, song_id: str, conditioning: Conditioning) -> tuple[dict[int, np.ndarray], CallStats]:
        started = time.time()
        labels = self.stage_impl.labels(conditioning)
        return labels, self._stats(song_id, -1, 0, 0, started, started, time.time(), 1)
