"""Bad input, as a user types it: exit status 2, one ``error:`` line naming the field and the value,
nothing written under ``output.url``, no placement group or actor created.

The table runs through the command-line entry in this process (``cli(argv)``, the function
``python -m pipeline`` calls), with the session's Ray running (4 CPUs, 4 fake GPUs), so requests
the cluster cannot hold are checked against a live cluster; a few cases run as real
``python -m pipeline`` processes to prove the exit status and the stderr of a real run.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import load_file, save_file

from models.loading import load_model
from pipeline.actors import pools
from pipeline.__main__ import cli

REPO = Path(__file__).resolve().parents[2]
QUIET_HYDRA = ["hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none"]


@dataclass(frozen=True)
class Case:
    """One bad input: overrides (``{d}`` is the folder of the files below, ``{out}`` the case's
    output) and the texts the one error line must contain (the field and the value)."""

    name: str
    overrides: tuple[str, ...]
    names: tuple[str, ...]


def case(name: str, overrides: str | tuple[str, ...], *names: str) -> Case:
    return Case(name, (overrides,) if isinstance(overrides, str) else overrides, names)


CASES = [
    # songs: durations, seeds, prompts, lyrics, names, ids
    case("duration_inf", "songs.0.duration_s=inf", "songs[0].duration_s", "inf"),
    case("duration_nan", "songs.0.duration_s=nan", "songs[0].duration_s", "nan"),
    case("duration_zero", "songs.0.duration_s=0", "songs[0].duration_s", "=0"),
    case("duration_negative", "songs.0.duration_s=-1", "songs[0].duration_s", "-1"),
    case("duration_above_max", "songs.1.duration_s=1e9", "songs[1]", "duration_s=1000000000", "max_duration"),
    case("duration_beyond_any_length", "songs.1.duration_s=1e307", "songs[1]", "duration_s=1e+307", "max_duration"),
    case("grid_duration_inf", "songs_grid={{base: {{duration_s: inf, genres: [country]}}, product: {{artist: [Alan Jackson]}}}}",
         "duration_s", "inf"),
    case("grid_seed_huge", "songs_grid={{base: {{duration_s: 1, seed: 99999999999999999999, genres: [country]}}, "
         "product: {{artist: [Alan Jackson]}}}}", "seed=99999999999999999999"),
    case("seed_huge", "songs.0.seed=99999999999999999999999", "songs[0].seed", "99999999999999999999999"),
    case("seed_below_int64", "songs.0.seed=-9223372036854775809", "songs[0].seed", "-9223372036854775809"),
    case("seed_float", "songs.0.seed=1.5", "songs[0].seed", "1.5"),
    case("run_seed_huge", "seed=18446744073709551616", "seed", "18446744073709551616"),
    case("init_seed_huge", "model.init_seed=9223372036854775808", "model.init_seed", "9223372036854775808"),
    case("prompt_s_inf", "songs.0.prompt_s=inf", "songs[0].prompt_s", "inf"),
    case("prompt_s_without_prompt", "songs.0.prompt_s=0.5", "songs[0].prompt_s", "0.5"),
    case("prompt_file_missing", "songs.0.prompt={d}/missing.wav", "prompt", "missing.wav"),
    case("prompt_dataset_missing", 'songs.0.prompt="{d}/no_dataset#some_song"', "prompt", "no_dataset#some_song"),
    case("prompt_memory", "songs.0.prompt=memory://prompts/a.wav", "prompt", "memory://prompts/a.wav"),
    case("prompt_unknown_protocol", "songs.0.prompt=foo://prompts/a.wav", "prompt", "foo://prompts/a.wav"),
    case("lyrics_file_missing", ("songs.0.lyrics=''", "+songs.0.lyrics_file={d}/missing.txt"), "songs[0].lyrics_file", "missing.txt"),
    case("lyrics_file_unknown_protocol", ("songs.0.lyrics=''", "+songs.0.lyrics_file=foo://l.txt"), "songs[0].lyrics_file", "foo://l.txt"),
    case("unknown_artist", "songs.0.artist=Alan Jacksn", "artist", "Alan Jacksn"),
    case("too_many_genres", "songs.0.genres=[country,jazz]", "genres", "country", "jazz"),
    case("duplicate_song_id", "songs.1.id=country_morning", "songs[1].id", "country_morning"),
    case("song_id_invalid", "songs.0.id=a/b", "songs[0].id", "a/b"),
    case("empty_song_list", "songs=[]", "songs", "empty"),
    case("grid_malformed_csv", "songs_grid={d}/grid.csv", "grid.csv", "duration_s", "two"),
    case("grid_yaml_syntax", "songs_grid={d}/grid_bad.yaml", "grid_bad.yaml", "yaml"),
    case("grid_unknown_protocol", "songs_grid=foo://grid.yaml", "songs_grid", "foo://grid.yaml"),
    # model
    case("unknown_preset", "model.preset=7b_lyrics", "model.preset", "7b_lyrics"),
    case("preset_yaml_syntax", "model.preset={d}/bad_preset.yaml", "model.preset", "bad_preset.yaml", "YAML"),
    case("checkpoint_missing", "model.checkpoint={d}/no_such_checkpoint", "model.checkpoint", "no_such_checkpoint"),
    case("checkpoint_without_config", "model.checkpoint={d}/ckpt_no_config", "model.checkpoint", "ckpt_no_config", "config.json"),
    case("checkpoint_bad_config_json", "model.checkpoint={d}/ckpt_bad_json", "model.checkpoint", "ckpt_bad_json", "JSON"),
    case("checkpoint_without_weights", "model.checkpoint={d}/ckpt_no_weights", "model.checkpoint", "ckpt_no_weights", "no weights"),
    case("checkpoint_truncated", "model.checkpoint={d}/ckpt_truncated", "model.checkpoint", "model.safetensors", "truncated"),
    case("checkpoint_truncated_bin", "model.checkpoint={d}/ckpt_truncated_bin", "model.checkpoint", "pytorch_model.bin"),
    case("checkpoint_wrong_shapes", "model.checkpoint={d}/ckpt_misshapen", "model.checkpoint", "ckpt_misshapen", "shape mismatch"),
    case("checkpoint_memory", "model.checkpoint=memory://ckpt", "model.checkpoint", "memory://ckpt"),
    case("checkpoint_unknown_protocol", "model.checkpoint=foo://ckpt", "model.checkpoint", "foo://ckpt"),
    # output and encode input
    case("output_memory", "output.url=memory://jb/out", "output.url", "memory://jb/out"),
    case("output_unknown_protocol", "output.url=foo://x", "output.url", "foo://x"),
    case("output_chained", "output.url=simplecache::file://{d}/chained", "output.url", "simplecache::"),
    case("output_unwritable", "output.url={d}/a_file/out", "output.url", "a_file/out"),
    case("output_interpolation", "output.url=${{nope}}", "output.url", "nope"),
    case("encode_without_input", "mode=encode", "encode.input_url", "null"),
    case("encode_input_missing", ("mode=encode", "encode.input_url={d}/no_audio_here"), "encode.input_url", "no_audio_here"),
    case("encode_input_memory", ("mode=encode", "encode.input_url=memory://audio"), "encode.input_url", "memory://audio"),
    case("encode_input_unknown_protocol", ("mode=encode", "encode.input_url=foo://audio"), "encode.input_url", "foo://audio"),
    case("encode_input_other_file", ("mode=encode", "encode.input_url={d}/audio_and_notes"), "encode.input_url", "notes.txt"),
    case("encode_input_not_audio", ("mode=encode", "encode.input_url={d}/fake_audio"), "encode.input_url", "fake.wav"),
    # sampling, stages, scheduler, audio, ray
    case("levels_gap", "sampling.levels=[top,bottom]", "sampling.levels", "bottom"),
    case("levels_unknown", "sampling.levels=[highest]", "sampling.levels", "highest"),
    case("temperature_zero", "sampling.top.temperature=0", "sampling.top.temperature", "0"),
    case("temperature_negative", "sampling.middle.temperature=-1", "sampling.middle.temperature", "-1"),
    case("temperature_inf", "sampling.bottom.temperature=inf", "sampling.bottom.temperature", "inf"),
    case("top_p_above_one", "sampling.top.top_p=2", "sampling.top.top_p", "2"),
    case("top_k_negative", "sampling.top.top_k=-3", "sampling.top.top_k", "-3"),
    case("max_batch_zero", "stages.top.max_batch=0", "stages.top.max_batch", "0"),
    case("num_actors_negative", "stages.middle.num_actors=-2", "stages.middle.num_actors", "-2"),
    case("num_actors_huge", "stages.middle.num_actors=100000000", "stages.middle.num_actors", "100000000"),
    case("num_gpus_inf", "stages.top.num_gpus=inf", "stages.top.num_gpus", "inf"),
    case("more_gpus_than_cluster", ("stages.top.num_gpus=1", "stages.top.num_actors=5"), "stages.top.num_gpus=1", "num_actors=5", "GPU"),
    case("gpus_per_actor_above_any_node", "stages.bottom.num_gpus=8", "stages.bottom.num_gpus=8", "GPU"),
    case("custom_resource_missing", "++stages.top.resources={{foo: 1}}", "stages.top.resources", "foo"),
    case("label_missing", "++stages.top.label_selector={{stage: top}}", "stages.top.label_selector", "stage"),
    case("mapping_without_plus_plus", "stages.top.label_selector={{stage: top}}", "stages.top.label_selector", "++"),
    case("more_cpus_than_cluster", "stages.decode.num_cpus=5", "stages.decode.num_cpus=5", "CPU"),
    case("wav_subtype", "audio.wav_subtype=PCM_8", "audio.wav_subtype", "PCM_8"),
    case("songs_in_flight_zero", "scheduler.max_songs_in_flight=0", "scheduler.max_songs_in_flight", "0"),
    case("placement_timeout_zero", "ray.placement_timeout_s=0", "ray.placement_timeout_s", "0"),
    case("schedule_mode", "scheduler.mode=fastest", "scheduler.mode", "fastest"),
    # the command line itself
    case("unknown_key", "foo=1", "foo", "foo=1"),
    case("unknown_key_added", "+foo=1", "foo", "1"),
    case("unknown_song_field", "+songs.0.tempo=120", "tempo", "120"),
    case("unknown_stage", "+stages.mixer={{num_actors: 1}}", "stages", "mixer"),
    case("override_syntax", "songs.0.duration_s=[", "songs.0.duration_s=[", "malformed"),
    case("unknown_group_option", "stages=tpu", "stages=tpu", "cpu"),
    case("unknown_flag", "--fast", "--fast"),
    case("sweep_without_multirun", "sampling.top.temperature=0.5,0.9", "sampling.top.temperature=0.5,0.9"),
    case("sweep_with_one_bad_value", ("-m", "songs.0.duration_s=0.5,inf"), "songs[0].duration_s", "inf"),
    case("sweep_with_one_bad_group_option", ("-m", "stages=cpu,tpu"), "stages=tpu", "cpu"),
    # unbounded inputs: files that never end, hang or expand, grids too large to plan
    case("lyrics_file_device", ("songs.0.lyrics=null", "++songs.0.lyrics_file=/dev/zero"), "songs[0].lyrics_file", "/dev/zero",
         "a device or socket, expected a regular file"),
    case("lyrics_file_fifo", ("songs.0.lyrics=null", "++songs.0.lyrics_file={d}/fifo"), "songs[0].lyrics_file", "fifo",
         "a FIFO, expected a regular file"),
    case("lyrics_file_too_large", ("songs.0.lyrics=null", "++songs.0.lyrics_file={d}/huge_lyrics.txt"), "songs[0].lyrics_file",
         "huge_lyrics.txt", "1024 KiB"),
    case("grid_alias_bomb", "songs_grid={d}/bomb.yaml", "bomb.yaml", "once its YAML aliases are expanded"),
    case("grid_too_many_songs", "songs_grid={d}/many.yaml", "songs_grid expands to 1000000000000 songs", "1000000"),
    # outputs that are not the project's own
    case("output_holds_other_files", "output.url={d}/audio_and_notes", "output.url", "audio_and_notes",
         "holds files this tool did not write (notes.txt, song.wav)"),
    case("output_is_the_root", "output.url=/", "output.url '/'", "the file-system root"),
    case("output_manifest_is_a_folder", "output.url={d}/marked_out", "marked_out", "manifest.parquet is a folder"),
    # late failures the checks catch first
    case("model_larger_than_memory", "model.preset={d}/huge_preset.yaml", "huge_preset.yaml", "the top stage's weights",
         "GiB of memory"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """The bad files of the table, made as other tools make them (truncate, hand-written YAML,
    text files among audio), next to good ones damaged after writing."""
    d = tmp_path_factory.mktemp("bad_input")
    (d / "a_file").write_text("not a directory")
    (d / "grid.csv").write_text("artist,genres,duration_s\nAlan Jackson,country,two\n")
    (d / "grid_bad.yaml").write_text("base: {duration_s: 1\nproduct: [\n")
    (d / "bad_preset.yaml").write_text("vqvae_config: {levels: 3\n  nb_priors: [1, 2\n")
    model = load_model("tiny")
    good = d / "ckpt_good"
    model.save_pretrained(str(good))
    for name, keep in (("ckpt_no_config", "model.safetensors"), ("ckpt_no_weights", "config.json"),
                       ("ckpt_bad_json", "model.safetensors"), ("ckpt_truncated", None), ("ckpt_misshapen", "config.json")):
        (d / name).mkdir()
        for file in good.iterdir():
            if keep is None or file.name == keep:
                (d / name / file.name).write_bytes(file.read_bytes())
    (d / "ckpt_bad_json" / "config.json").write_text('{"model_type": "jukebox", ')
    weights = (d / "ckpt_truncated" / "model.safetensors")
    os.truncate(weights, weights.stat().st_size // 2)
    state = load_file(str(good / "model.safetensors"))
    key = next(k for k in state if k.endswith("weight") and state[k].ndim == 2)
    state[key] = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])
    save_file(state, str(d / "ckpt_misshapen" / "model.safetensors"), metadata={"format": "pt"})
    model.save_pretrained(str(d / "ckpt_truncated_bin"), safe_serialization=False)
    binary = d / "ckpt_truncated_bin" / "pytorch_model.bin"
    os.truncate(binary, binary.stat().st_size - 100)
    audio = d / "audio_and_notes"
    audio.mkdir()
    soundfile.write(str(audio / "song.wav"), np.zeros((4096, 1), dtype=np.float32), 44100)
    (audio / "notes.txt").write_text("liner notes")
    (d / "fake_audio").mkdir()
    (d / "fake_audio" / "fake.wav").write_text("RIFF but not really")
    (d / "marked_out" / "manifest.parquet").mkdir(parents=True)  # an output of this tool, damaged by hand
    (d / "marked_out" / ".jukebox-output").write_text("{}")
    tiny = (REPO / "conf" / "model" / "tiny.yaml").read_text()
    (d / "huge_preset.yaml").write_text(tiny.replace("hidden_size: 64", "hidden_size: 1000000", 1))  # the top prior's
    os.mkfifo(d / "fifo")  # opening it for reading would wait for a writer forever
    (d / "huge_lyrics.txt").write_text("la " * 400_000)  # 1.2 MB
    levels = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi"):
        levels.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    (d / "bomb.yaml").write_text("\n".join(levels) + "\n")  # 443 bytes, 9 ** 9 values once expanded
    (d / "many.yaml").write_text("base: {duration_s: 1, genres: [country]}\nproduct: {artist: [Alan Jackson]}\n"
                                 "n_samples: 1000000000000\n")
    return d


def _names_of_actors(ray) -> set[str]:
    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}


@pytest.fixture
def no_work(ray_session, monkeypatch):
    """Fails the test if a stage pool starts; yields a check that Ray has no new placement group
    or named actor."""
    ray = ray_session

    def refuse(self):
        raise AssertionError("bad input reached Pools.start: validation let it through")

    monkeypatch.setattr(pools.Pools, "start", refuse)
    groups, actors = len(ray.util.placement_group_table()), _names_of_actors(ray)

    def check() -> None:
        assert len(ray.util.placement_group_table()) == groups
        assert _names_of_actors(ray) == actors

    return check


def _nothing_under(url: str) -> bool:
    """The output does not exist, or is an empty directory (true of a protocol fsspec lacks)."""
    try:
        fs, root = fsspec.core.url_to_fs(url)
    except ValueError:
        return True
    return not fs.exists(root) or (fs.isdir(root) and not fs.ls(root))


def _listing(url: str) -> list[str] | None:
    """The entries of an existing local folder (not walked: it may be ``/``), else None."""
    return sorted(os.listdir(url)) if "://" not in url and "${" not in url and os.path.isdir(url) else None


def test_the_table_has_at_least_40_distinct_cases():
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("bad", CASES, ids=[c.name for c in CASES])
def test_bad_input_exits_2_with_one_line_naming_field_and_value(bad, files, tmp_path, capsys, no_work, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    out = tmp_path / "out"
    overrides = [o.format(d=files, out=out) for o in bad.overrides]
    if not any(o.startswith("output.url=") for o in overrides):
        overrides.append(f"output.url={out}")
    output_url = next(o.split("=", 1)[1] for o in overrides if o.startswith("output.url="))
    argv = [*overrides, f"hydra.run.dir={tmp_path / 'hydra'}", *QUIET_HYDRA]
    existing = _listing(output_url)  # a folder that is not the project's own: left as it was
    code = cli(argv, prog="python -m pipeline")
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert code == 2, captured.err[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert len(lines[0]) < 1100, lines[0][:2000]  # values are never echoed whole
    for name in bad.names:
        assert name.format(d=files) in lines[0], f"{name!r} not named in: {lines[0]}"
    assert "Traceback" not in captured.out + captured.err
    no_work()
    if existing is not None:
        assert _listing(output_url) == existing
    elif "${" not in output_url and "::" not in output_url:
        assert _nothing_under(output_url), sorted(fsspec.core.url_to_fs(output_url)[0].find(output_url))


# ------------------------------------------------------------------------- real processes


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "RAY_ADDRESS")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


@pytest.mark.parametrize(
    "overrides, names",
    [
        (["songs.0.duration_s=inf"], ["songs[0].duration_s", "inf"]),
        (["songs.0.duration_s=["], ["songs.0.duration_s=[", "malformed"]),
        (["output.url=memory://jb/out"], ["output.url", "memory://jb/out"]),
        (["stages.top.num_gpus=1", "ray.num_gpus=0"], ["stages.top.num_gpus=1", "no GPU"]),
    ],
    ids=["duration_inf", "override_syntax", "output_memory", "no_gpu_local_ray"],
)
def test_bad_input_in_a_real_process(tmp_path, overrides, names):
    ray_tmp = Path(tempfile.mkdtemp(prefix="rb"))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pipeline", f"output.url={out}", *overrides, f"hydra.run.dir={tmp_path / 'hydra'}"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=_env(RAY_TMPDIR=str(ray_tmp)))
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert all(name in lines[0] for name in names), lines[0]
    assert _nothing_under(str(out))
    assert list(ray_tmp.iterdir()) == [], "Ray was started"


def test_hydra_full_error_shows_the_traceback(tmp_path):
    command = [sys.executable, "-m", "pipeline", "songs.0.duration_s=inf", "dry_run=true", f"hydra.run.dir={tmp_path}"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=_env(HYDRA_FULL_ERROR="1"))
    assert done.returncode == 1 and "Traceback" in done.stderr
    assert done.stderr.rstrip().endswith("ValueError: songs[0].duration_s=inf: expected a finite number")


def test_vocabulary_tool_names_itself_and_reports_one_line(capsys, monkeypatch):
    shown = subprocess.run([sys.executable, "-m", "pipeline.run.vocabulary", "--help"], capture_output=True, text=True, env=_env())
    assert shown.returncode == 0 and shown.stdout.startswith("usage: python -m pipeline.run.vocabulary ")
    from pipeline.run.vocabulary import main

    assert main(["--model", "7b"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: model '7b' is neither a preset nor a readable checkpoint")

    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/jukebox-vocab", "--help"])  # as the console script starts it
    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out.startswith("usage: jukebox-vocab ")
