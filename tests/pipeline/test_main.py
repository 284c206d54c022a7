"""The command line: a Hydra ``-m`` sweep gives each job its own output URL and one Ray session."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.__main__ import job_dirname, swept_keys


def test_job_dirname_is_the_jobs_overrides_made_safe():
    assert job_dirname(["sampling.top.temperature=0.9", "output.url=/x"], 3) == "sampling.top.temperature=0.9"
    # sorted, so the same job gets the same directory whatever the order on the command line
    assert job_dirname(["b=2", "a=1"], 0) == job_dirname(["a=1", "b=2"], 5) == "a=1,b=2"
    # a name made safe gets a hash of the exact overrides: values that differ only in unsafe
    # characters (as Hydra passes them: a space escaped) still get their own directories
    safe = job_dirname(["songs_grid=/data/my grid.yaml"], 0)
    assert safe.startswith("songs_grid=_data_my_grid.yaml-") and len(safe) == len("songs_grid=_data_my_grid.yaml-") + 8
    assert job_dirname(["songs.0.lyrics=a\\ b"], 0) != job_dirname(["songs.0.lyrics=a/b"], 1)
    assert job_dirname(["songs.0.lyrics=a/b"], 0) == job_dirname(["songs.0.lyrics=a/b"], 7)  # stable: a rerun resumes
    assert job_dirname([], 4) == job_dirname(["+output.url=s3://b/r"], 4) == "job4"
    long = [f"songs.{i}.seed={i}" for i in range(40)]
    name = job_dirname(long, 0)
    assert len(name) == 120 and name != job_dirname(long[:-1], 0) and name == job_dirname(list(reversed(long)), 1)
    # only the keys the sweep varies name the directory
    job = ["sampling.levels=[top]", "sampling.top.temperature=0.5", "seed=3"]
    assert job_dirname(job, 0, {"sampling.top.temperature", "seed"}) == "sampling.top.temperature=0.5,seed=3"


def test_swept_keys_are_those_with_several_values():
    arguments = ["-m", "sampling.levels=[top]", "sampling.top.temperature=0.5,1.5", "+x=range(1,3)", "seed=choice(1,2)", "a=b"]
    assert swept_keys(arguments) == {"sampling.top.temperature", "x", "seed"}
    assert swept_keys(["-m", "a=1"], ["sampling.bottom.top_k"]) == {"sampling.bottom.top_k"}


@pytest.mark.slow
def test_a_sweep_writes_one_output_per_job_on_one_ray_session(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="raysw"), "RAY_AUTH_MODE": "disabled"}
    command = [
        # the random tiny model's logits are nearly flat (std ~3e-4): only a far lower temperature
        # changes its draws reliably
        sys.executable, "-m", "pipeline", "-m", "sampling.top.temperature=0.02,1.5", "sampling.levels=[top]",
        "songs.0.duration_s=0.5", "songs.1.duration_s=0.5", f"output.url={out}", "ray.num_cpus=4",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    jobs = {t: out / f"sampling.top.temperature={t}" for t in ("0.02", "1.5")}
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in jobs.values())
    sessions, tokens = [], {}
    for temperature, job in jobs.items():
        summary = json.loads((job / "summary.json").read_text())["runs"][-1]
        sessions.append(summary["ray"])
        rows = pq.read_table(job / "manifest.parquet").to_pylist()
        assert [r["song_id"] for r in sorted(rows, key=lambda r: r["song_index"])] == ["country_morning", "jazz_night"]
        assert {r["top_temperature"] for r in rows} == {float(temperature)}
        tokens[temperature] = [np.asarray(pq.read_table(job / r["top_tokens_path"]).column("tokens")[0].as_py()) for r in rows]
    assert sessions[0] == sessions[1] and sessions[0]["node_id"]  # the second job reused the first job's Ray
    assert any(not np.array_equal(a, b) for a, b in zip(tokens["0.02"], tokens["1.5"]))
    # the same sweep again resumes each job in its own output: nothing is sampled
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr[-4000:]
    for job in jobs.values():
        runs = json.loads((job / "summary.json").read_text())["runs"]
        summary = runs[-1]
        assert len(runs) == 2 and runs[0]["skipped"] == 0  # the first run's figures are kept
        assert summary["skipped"] == 2 and summary["ray"] is None


@pytest.mark.slow
def test_sweep_values_that_differ_only_in_unsafe_characters_get_their_own_outputs(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="raysw"), "RAY_AUTH_MODE": "disabled"}
    command = [
        sys.executable, "-m", "pipeline", "-m", "songs=[{id: one, artist: Alan Jackson, genres: [country], lyrics: x, duration_s: 0.5}]",
        "songs.0.lyrics=a b,a/b", "sampling.levels=[top]",
        f"output.url={out}", "ray.num_cpus=4", f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    jobs = sorted(out.iterdir())
    assert len(jobs) == 2 and all(job.name.startswith("songs.0.lyrics=a_b-") for job in jobs)
    lyrics = {pq.read_table(job / "manifest.parquet").to_pylist()[0]["lyrics"] for job in jobs}
    assert lyrics == {"a b", "a/b"}


def test_bad_input_prints_its_message_alone_and_exits_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    command = [sys.executable, "-m", "pipeline", "songs_grid={base: {duration_s: 0.5, genres: [country]}, product: {artist: [Alan Jacksn]}}",
               f"output.url={tmp_path / 'never'}", f"hydra.run.dir={tmp_path / 'hydra'}"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2
    assert "error: 2 artist/genre name(s) are not in the model's vocabulary" in done.stderr
    assert "close matches: 'alan jackson'" in done.stderr and "Traceback" not in done.stderr and "File \"" not in done.stderr
    assert not (tmp_path / "never").exists()


def test_a_training_run_from_the_command_line_says_its_plan_and_weights(tmp_path):
    """``python -m pipeline mode=train``: the plan (dry run) names the weights it starts from."""
    from pipeline.corpus.__main__ import main as write_corpus

    assert write_corpus([f"--out={tmp_path / 'corpus'}", "--train-songs=1", "--heldout-songs=0", "--styles=country", "--seconds=1"]) == 0
    command = [sys.executable, "-m", "pipeline", "mode=train", "train.component=vqvae", "model.weights=random", "dry_run=true",
               f"train.audio_url={tmp_path / 'corpus' / 'train'}", "train.vqvae.crop_samples=8192",
               f"output.url={tmp_path / 'out'}", f"hydra.run.dir={tmp_path / 'hydra'}"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    plan = json.loads(done.stdout[done.stdout.index("\n{") + 1:])  # after the log lines
    assert plan["weights"] == "random:init_seed=0" and plan["files"] == 1
    assert "model: preset 'tiny' with RANDOM weights (init_seed=0; model.weights=random)" in done.stdout
