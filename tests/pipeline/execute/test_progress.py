"""The progress line's rates: a stage's tokens/s while it works, and what it was once it is done."""
from __future__ import annotations

import logging

import pytest

from pipeline.actors.messages import CallStats
from pipeline.execute.progress import Progress, log_summary
from pipeline.run.spec import Stage


def _call(stage: Stage, start: int, end: int, entered: float, returned: float) -> CallStats:
    return CallStats(stage.value, "song", 2, start, end, entered, entered, returned, returned, 1, "actor-0")


def test_a_finished_stage_keeps_its_rate_while_the_run_goes_on():
    progress = Progress([Stage.TOP, Stage.MIDDLE])
    progress.plan(Stage.TOP, calls=2, tokens=200)
    progress.plan(Stage.MIDDLE, calls=1, tokens=400)
    progress.record(_call(Stage.TOP, 0, 100, 10.0, 12.0))
    top = progress.stages[Stage.TOP]
    assert top.rate(14.0) == pytest.approx(100 / 4.0)  # still working: up to now
    progress.record(_call(Stage.TOP, 100, 200, 12.0, 14.0))
    for later in (14.0, 60.0, 3600.0):  # done at 14 s: 200 tokens in 4 s, whenever asked
        assert top.rate(later) == pytest.approx(200 / 4.0)
        assert top.eta_s(later) == 0.0
    assert "top 2/2 windows 50 tok/s ETA 0s" in progress.line(3600.0)
    assert "middle 0/1 windows 0 tok/s ETA --" in progress.line(3600.0)


def test_the_encode_stage_counts_audio_samples_not_tokens(caplog):
    progress = Progress([Stage.ENCODE])
    progress.plan(Stage.ENCODE, calls=1, tokens=44100)
    progress.record(CallStats(Stage.ENCODE.value, "file", -1, 0, 44100, 0.0, 0.0, 1.0, 1.0, 1, "actor-0"))
    assert "encode 1/1 files 44100 samples/s" in progress.line(1.0)
    with caplog.at_level(logging.INFO, logger="pipeline.execute.progress"):
        log_summary(progress.summary())
    (row,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("encode")]
    assert "44100 samples" in row and "tok" not in row
