"""Bad input fails before Ray starts or any model loads, with a message naming the field."""
from __future__ import annotations

import pytest

from pipeline import runner


@pytest.fixture
def no_ray(monkeypatch):
    def refuse(cfg):
        raise AssertionError("validation must fail before Ray starts")

    monkeypatch.setattr(runner, "_connect", refuse)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.preset=7b_lyrics"], r"model\.preset: unknown preset '7b_lyrics'; expected one of \[.*'tiny'"),
        (["model.checkpoint=/nonexistent/jukebox"], r"model\.checkpoint: .*'/nonexistent/jukebox' does not exist"),
        (["songs.0.duration_s=0.001"], r"songs\[0\] \('country_morning'\)\.duration_s=0\.001: shorter than one top-level token"),
        (["songs.1.duration_s=700"], r"songs\[1\] \('jazz_night'\)\.duration_s=700.*max_duration=600"),
        (["songs=[]"], r"song list is empty"),
        (["sampling.levels=[middle]"], r"a level needs the one above it"),
        (["stages.bottom.num_cpus=-1"], r"stages\.bottom: num_cpus must be >= 0"),
    ],
)
def test_bad_input_fails_before_ray(no_ray, make_cfg, overrides, message):
    with pytest.raises(ValueError, match=message):
        runner.run(make_cfg(*overrides))


def test_unwritable_output(no_ray, make_cfg, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cfg = make_cfg()
    cfg.output.url = str(blocker / "run")
    with pytest.raises(ValueError, match=r"output\.url .*a_file/run' cannot be written"):
        runner.run(cfg)
