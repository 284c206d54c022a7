"""Grids over time: an extended grid reruns only its new songs; allowed unknown names are recorded.

The priors are counting stand-ins; tokenization, decoding, storage and the scheduler are real.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from pipeline.execute.runner import run, to_run_config
from pipeline.run.config import RunConfig
from pipeline.run.grid import iter_grid
from tests.pipeline.fakes import counting_factories

GRID = {
    "name": "ext",
    "base": {"duration_s": 0.3, "genres": ["country"], "lyrics": "la la"},
    "product": {"artist": ["Alan Jackson", "Ella Fitzgerald"], "seed": [1, 2]},
}


def _cfg(make_cfg, grid) -> RunConfig:
    cfg = make_cfg("stages.top.max_batch=4", "stages.middle.max_batch=4", "stages.bottom.max_batch=4")
    cfg.songs_grid = copy.deepcopy(grid)
    return to_run_config(cfg)


@pytest.mark.slow
def test_extending_a_grid_with_seeds_makes_only_the_new_songs(ray_session, make_cfg):
    first_cfg = _cfg(make_cfg, GRID)
    first = run(first_cfg, factories=counting_factories())
    assert first.n_songs == 4 and first.skipped == []
    old = {row["song_id"]: row for row in first.rows}
    stamps = {song: os.stat(f"{first.output_url}/{row['bottom_tokens_path']}").st_mtime_ns for song, row in old.items()}

    extended = copy.deepcopy(GRID)
    extended["product"]["seed"] = [1, 2, 3]
    cfg = _cfg(make_cfg, extended)
    expected = list(iter_grid(cfg.songs_grid))
    new = [s for s in expected if s.song.id not in old]
    assert len(expected) == 6 and len(new) == 2  # existing songs keep their ids
    second = run(cfg, factories=counting_factories())
    assert sorted(second.skipped) == sorted(old)
    rows = second.rows
    assert [r["song_id"] for r in rows] == [s.song.id for s in expected] and [r["song_index"] for r in rows] == list(range(6))
    for name in ("top", "middle", "bottom"):
        assert second.summary.stages[name]["calls"] == sum(r[f"{name}_windows"] for r in rows if r["song_id"] not in old)
    assert second.summary.stages["tokenize"]["calls"] == 2
    for song, stamp in stamps.items():
        assert os.stat(f"{second.output_url}/{old[song]['bottom_tokens_path']}").st_mtime_ns == stamp  # not rewritten
    assert {r["seed"] for r in rows if r["song_id"] not in old} == {3}


@pytest.mark.slow
def test_allowed_unknown_names_are_listed_in_the_manifest(ray_session, make_cfg):
    grid = {"base": {"duration_s": 0.2, "genres": ["country"], "lyrics": "la"}, "product": {"artist": ["Alan Jackson", "Nobody Known Xyz"]}}
    cfg = make_cfg("allow_unknown_names=true", "sampling.levels=[top]")
    cfg.songs_grid = grid
    result = run(cfg, factories=counting_factories())
    names = {r["artist"]: r["unknown_names"] for r in result.rows}
    assert names == {"Alan Jackson": [], "Nobody Known Xyz": ["artist:Nobody Known Xyz@v3", "artist:Nobody Known Xyz@v2"]}
    assert Path(result.manifest_path).exists()
