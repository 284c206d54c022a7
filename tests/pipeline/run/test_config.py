"""The Hydra config composes into typed, validated options; bad input names its field."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from pipeline.run.config import RunConfig, RunMode, ScheduleMode
from pipeline.run.spec import Stage
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
        ("+stages.top.num_gpu=1", r"unknown config key\(s\) stages\.top\.num_gpu=1; stages\.top has only"),
        ("stages.top.num_gpus=-1", r"stages\.top\.num_gpus must be >= 0, got -1"),
        ("stages.decode.num_actors=0", r"stages\.decode\.num_actors must be between 1 and 10000, got 0"),
        ("stages.top.num_gpus=inf", r"stages\.top\.num_gpus=inf: expected a finite number"),
        ("stages.top.num_gpus=1.5", r"whole number"),
        ("stages.middle.max_batch=0", r"max_batch must be >= 1"),
        ("sampling.levels=[top,bottom]", r"a level needs the one above it"),
        ("sampling.levels=[top,treble]", r"unknown sampling level\(s\) \['treble'\]"),
        ("sampling.top.temperature=0", r"temperature"),
        ("sampling.bottom.top_p=1.5", r"top_p"),
        ("songs=[]", r"song list is empty"),
        ("songs.0.duration_s=-1", r"songs\[0\]\.duration_s=-1\.0: expected a finite number of seconds > 0"),
        ("songs.0.duration_s=inf", r"songs\[0\]\.duration_s=inf: expected a finite number"),
        ("songs.0.seed=9223372036854775808", r"songs\[0\]\.seed=9223372036854775808 is out of range"),
        ("seed=-9223372036854775809", r"^seed=-9223372036854775809 is out of range"),
        ("model.init_seed=99999999999999999999", r"model\.init_seed=99999999999999999999 is out of range"),
        ("songs.1.id=country_morning", r"duplicate song id 'country_morning'"),
        ("songs.0.id='bad id!'", r"songs\[0\]\.id='bad id!' is invalid"),
        ("songs.0.genres=[]", r"songs\[0\]\.genres=\[\]: expected one or more"),
        ("+songs.0.lyrics_file=/nonexistent/lyrics.txt", r"either lyrics or lyrics_file"),
        ("scheduler.max_songs_in_flight=0", r"max_songs_in_flight must be >= 1"),
        ("audio.decode_tokens=-1", r"audio\.decode_tokens must be >= 0"),
        ("sampling.top.temperature=0", r"sampling\.top\.temperature must be a finite number > 0, got 0"),
        ("songs_grid={product: {seed: [1, 2]}, zip: {seed: [3]}}", r"songs_grid: field 'seed' is set by both"),
        ("+songs_grid.nope=1", r"songs_grid: unknown key\(s\) \['nope'\]"),
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


def test_a_songs_grid_replaces_the_song_list(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("base: {duration_s: 2, genres: [jazz]}\nproduct: {artist: [Ella Fitzgerald, Nina Simone], seed: [1, 2, 3]}\n")
    cfg = _run_config(f"songs_grid={path}")
    assert cfg.songs == () and cfg.songs_grid is not None and cfg.n_songs() == 6
    songs = list(cfg.iter_songs())
    assert [s.song.seed for s in songs] == [1, 2, 3, 1, 2, 3] and {s.song.artist for s in songs} == {"Ella Fitzgerald", "Nina Simone"}
    inline = _run_config("songs_grid={base: {duration_s: 1, artist: Alan Jackson}, product: {genres: [country, blues]}}")
    assert [s.song.genres for s in inline.iter_songs()] == [("country",), ("blues",)]
    plain = _run_config()
    assert [(s.cell, s.sample, s.song.id) for s in plain.iter_songs()] == [(0, 0, "country_morning"), (1, 0, "jazz_night")]


def test_songs_in_flight_are_three_cohorts_of_the_stage_batching_most():
    cfg = _run_config("stages.bottom.max_batch=16", "stages.bottom.num_actors=2", "stages.top.max_batch=8")
    assert (cfg.cohort_size(), cfg.songs_in_flight()) == (32, 96)
    cfg = _run_config("stages.bottom.max_batch=16", "sampling.levels=[top]")  # only sampled stages count
    assert (cfg.cohort_size(), cfg.songs_in_flight()) == (4, 12)
    cfg = _run_config("stages.bottom.max_batch=16", "scheduler.max_songs_in_flight=10")
    assert (cfg.cohort_size(), cfg.songs_in_flight()) == (10, 10)


def test_encode_mode_needs_an_input_and_ignores_songs(tmp_path):
    with pytest.raises(ValueError, match=r"encode\.input_url=null: an encode-only run \(mode=encode\) needs"):
        _run_config("mode=encode")
    cfg = _run_config("mode=encode", f"encode.input_url={tmp_path}", "encode.chunk_samples=4096")
    assert cfg.mode is RunMode.ENCODE and cfg.songs == () and cfg.n_songs() == 0 and list(cfg.iter_songs()) == []
    assert cfg.encode.chunk_samples == 4096 and Stage.ENCODE in cfg.stages
    with pytest.raises(ValueError, match=r"mode: 'decode' is not one of"):
        _run_config("mode=decode")


def test_songs_and_a_grid_together_are_refused():
    base = RunConfig.from_dict(OmegaConf.to_container(compose_config([]), resolve=True))
    grid = RunConfig.from_dict({**OmegaConf.to_container(compose_config([]), resolve=True), "songs_grid": {"base": {"artist": "a", "genres": "g", "duration_s": 1}}})
    with pytest.raises(ValueError, match="songs and songs_grid are both given"):
        dataclasses.replace(base, songs_grid=grid.songs_grid)


def test_prompts_are_checked_as_songs_are_read():
    cfg = _run_config("songs.0.prompt=/data/intro.flac", "songs.0.prompt_s=0.5", "songs.1.prompt='s3://bucket/encoded#intro_2'")
    assert cfg.songs[0].prompt_ref.audio == "/data/intro.flac" and cfg.songs[0].prompt_s == 0.5
    assert (cfg.songs[1].prompt_ref.dataset, cfg.songs[1].prompt_ref.song_id) == ("s3://bucket/encoded", "intro_2")
    with pytest.raises(ValueError, match=r"prompt_s=0\.5 needs a prompt"):
        _run_config("songs.0.prompt_s=0.5")
    with pytest.raises(ValueError, match=r"songs\[0\]\.prompt_s=2\.0: expected seconds > 0 and below duration_s=1\.0"):
        _run_config("songs.0.prompt=/a.wav", "songs.0.prompt_s=2")


@pytest.mark.slow
def test_cli_dry_run_prints_the_plan_of_a_grid(tmp_path):
    path = tmp_path / "grid.csv"
    path.write_text("artist,genres,duration_s\nAlan Jackson,country,1\nElla Fitzgerald,jazz,2\n")
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", f"songs_grid={path}", "dry_run=true", f"output.url={tmp_path / 'never'}",
         f"hydra.run.dir={tmp_path / 'hydra'}"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout[out.stdout.index("{\n"):])  # after the log lines
    assert plan["songs"] == 2 and plan["audio_seconds"] == pytest.approx(3.0, abs=0.01)
    assert set(plan["levels"]) == {"top", "middle", "bottom"} and plan["windows"] > 0
    assert not (tmp_path / "never").exists()
    shown = subprocess.run([sys.executable, "-m", "pipeline", "--cfg", "job", f"songs_grid={path}"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and OmegaConf.create(shown.stdout).songs_grid == str(path)


def test_default_temperatures_are_the_originals():
    """0.98 for the top prior, 0.99 for the upsamplers, as the original's sampling script."""
    sampling = RunConfig.from_dict(OmegaConf.to_container(compose_config(), resolve=True)).sampling
    assert [sampling.for_stage(stage).temperature for stage in (Stage.TOP, Stage.MIDDLE, Stage.BOTTOM)] == [0.98, 0.99, 0.99]
