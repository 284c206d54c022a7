"""The Hydra config composes into typed, validated options; bad input names its field."""
from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from pipeline.config import RunConfig, ScheduleMode, Stage
from tests.pipeline.conftest import compose_config


def _run_config(*overrides: str) -> RunConfig:
    return RunConfig.from_dict(OmegaConf.to_container(compose_config(list(overrides)), resolve=True))


def test_default_config():
    cfg = _run_config()
    assert cfg.model.source == "tiny" and cfg.model.checkpoint is None
    assert len(cfg.songs) == 2 and len({s.artist for s in cfg.songs}) == 2 and len({s.genres for s in cfg.songs}) == 2
    assert all(s.lyrics for s in cfg.songs)
    assert cfg.sampling.levels == (Stage.TOP, Stage.MIDDLE, Stage.BOTTOM)
    assert cfg.sampling.top.temperature == 0.98 and cfg.sampling.bottom.temperature == 0.99
    assert set(cfg.stages) == set(Stage)
    assert cfg.scheduler.mode is ScheduleMode.PIPELINED
    assert cfg.ray.address is None and cfg.output.url == "outputs/jukebox"


def test_overrides_reach_every_part(tmp_path):
    lyrics = tmp_path / "lyrics.txt"
    lyrics.write_text("la la la\n")
    cfg = _run_config(
        "model.checkpoint=/models/x",
        "songs.0.duration_s=3.5",
        "sampling.levels=[top,middle]",
        "sampling.middle.top_k=20",
        "stages.top.num_gpus=0.5",
        "stages.bottom.num_actors=3",
        "+stages.middle.label_selector={stage: gpu-b}",
        "ray.address=auto",
        "scheduler.mode=level_by_level",
        "experiment=long_song",
    )
    assert cfg.model.source == "/models/x"
    assert [s.id for s in cfg.songs] == ["long_song"]  # the experiment replaced the song list
    assert cfg.songs[0].duration_s == 3.5
    assert cfg.sampling.levels == (Stage.TOP, Stage.MIDDLE) and cfg.sampling.middle.top_k == 20
    assert cfg.stages[Stage.TOP].num_gpus == 0.5 and cfg.stages[Stage.BOTTOM].num_actors == 3
    assert cfg.stages[Stage.MIDDLE].label_selector == {"stage": "gpu-b"}
    assert cfg.ray.address == "auto" and cfg.scheduler.mode is ScheduleMode.LEVEL_BY_LEVEL
    cfg = _run_config(f"+songs.1.lyrics_file={lyrics}", "songs.1.lyrics=''", "songs.0.duration_s=3.5", "songs.1.seed=42")
    assert cfg.songs[1].lyrics == "la la la\n" and cfg.songs[1].seed == 42 and cfg.songs[0].duration_s == 3.5


@pytest.mark.parametrize(
    "override, message",
    [
        ("+stages.top.num_gpu=1", r"stages\.top: unknown key\(s\) \['num_gpu'\]"),
        ("stages.top.num_gpus=-1", r"stages\.top: num_gpus must be >= 0"),
        ("stages.decode.num_actors=0", r"stages\.decode: num_actors must be >= 1"),
        ("stages.top.num_gpus=1.5", r"whole number"),
        ("stages.middle.max_batch=0", r"max_batch must be >= 1"),
        ("sampling.levels=[top,bottom]", r"a level needs the one above it"),
        ("sampling.levels=[top,treble]", r"unknown sampling level\(s\) \['treble'\]"),
        ("sampling.top.temperature=0", r"temperature"),
        ("sampling.bottom.top_p=1.5", r"top_p"),
        ("songs=[]", r"song list is empty"),
        ("songs.0.duration_s=-1", r"songs\[0\].*duration_s must be > 0"),
        ("songs.1.id=country_morning", r"duplicate song id 'country_morning'"),
        ("songs.0.id='bad id!'", r"song id 'bad id!' is invalid"),
        ("songs.0.genres=[]", r"genres must be one or more"),
        ("+songs.0.lyrics_file=/nonexistent/lyrics.txt", r"either lyrics or lyrics_file"),
        ("scheduler.max_songs_in_flight=0", r"max_songs_in_flight must be >= 1"),
        ("scheduler.mode=fastest", r"scheduler\.mode: 'fastest' is not one of"),
        ("audio.wav_subtype=MP3", r"wav_subtype"),
        ("ray.placement_timeout_s=0", r"placement_timeout_s must be > 0"),
        ("model.preset=null", r"model\.preset.*or model\.checkpoint"),
    ],
)
def test_bad_input_names_the_field(override, message):
    with pytest.raises(ValueError, match=message):
        _run_config(override)


def test_missing_lyrics_file():
    with pytest.raises(ValueError, match=r"songs\[0\]\.lyrics_file: cannot read '/nonexistent/lyrics.txt'"):
        _run_config("songs.0.lyrics=''", "+songs.0.lyrics_file=/nonexistent/lyrics.txt")


def test_shared_gpu_group_needs_one_label_selector():
    with pytest.raises(ValueError, match="share gpu_group 'g'"):
        _run_config("stages.top.gpu_group=g", "stages.middle.gpu_group=g", "+stages.middle.label_selector={a: b}")


@pytest.mark.slow
def test_cli_prints_resolved_config():
    """``python -m pipeline --cfg job`` shows the resolved config without running anything."""
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "--cfg", "job", "stages.top.num_actors=2"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    shown = OmegaConf.create(out.stdout)
    assert shown.stages.top.num_actors == 2 and shown.model.preset == "tiny" and len(shown.songs) == 2
