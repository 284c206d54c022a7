"""The package works from a wheel: no source checkout, config and presets from package data.

The wheel is installed without dependencies into a fresh virtualenv that sees the packages of
the interpreter running the tests (whatever that is: a virtualenv, a conda env, the system
Python), so torch and ray need not be installed again: a ``.pth`` file in the new environment
appends that interpreter's site directories to ``sys.path``. ``--system-site-packages`` would not
do: it gives the *base* interpreter's packages, not those of the virtualenv the tests run in. The
wheel's own files come first on the path, and a path line in a ``.pth`` file runs no other
``.pth`` file, so an editable install of this checkout there cannot shadow the wheel. Everything
runs with ``python -I`` from an empty directory, so nothing can come from the checkout.
"""
from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A virtualenv with the project's wheel installed."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(root / "dist"),
                    str(REPO)], check=True, capture_output=True, cwd=root)
    (wheel,) = (root / "dist").glob("jukebox_pipeline-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
                             capture_output=True, text=True).stdout.strip()
    user = [site.getusersitepackages()] if site.ENABLE_USER_SITE else []
    outer = [path for path in [*site.getsitepackages(), *user] if os.path.isdir(path)]
    (Path(purelib) / "outer_environment.pth").write_text("".join(f"{path}\n" for path in outer))
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--ignore-installed", "-q", str(wheel)], check=True, capture_output=True)
    return root / "venv"


def _run(venv: Path, cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(RAY_TMPDIR=tempfile.mkdtemp(prefix="raywh"), RAY_AUTH_MODE="disabled")
    return subprocess.run([str(venv / "bin" / "python"), "-I", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_the_wheel_runs_without_the_checkout(venv, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    where = _run(venv, empty, "-c", "import conf, models, pipeline, stages; print(pipeline.__file__, conf.__file__)")
    assert where.returncode == 0, where.stderr
    assert all(path.startswith(str(venv)) for path in where.stdout.split()), where.stdout  # not the checkout

    job = _run(venv, empty, "-m", "pipeline", "--cfg", "job")
    assert job.returncode == 0 and "model:\n  preset: tiny" in job.stdout, job.stderr[-2000:]

    grid = _run(venv, empty, "-m", "pipeline", "songs_grid=example", "dry_run=true")
    assert grid.returncode == 0, grid.stderr[-2000:]
    assert json.loads(grid.stdout[grid.stdout.index("\n{") :])["songs"] == 8  # after the log lines

    api = _run(venv, empty, "-c", "from models import JukeboxModel, JukeboxTokenizer\n"
                                  "m = JukeboxModel.from_pretrained('tiny'); t = JukeboxTokenizer.from_pretrained('tiny')\n"
                                  "print(m.config.nb_priors, t.genre_slots)")
    assert api.returncode == 0 and api.stdout.split()[:1] == ["3"], api.stderr[-2000:]

    out = tmp_path / "out"
    default = _run(venv, empty, "-m", "pipeline", f"output.url={out}", "songs.0.duration_s=0.3", "songs.1.duration_s=0.3",
                   timeout=600)
    assert default.returncode == 0, default.stderr[-3000:]
    assert sorted(pq.read_table(out / "manifest.parquet").column("song_id").to_pylist()) == ["country_morning", "jazz_night"]

    for command in ("jukebox-convert", "jukebox-vocab", "jukebox-pipeline"):
        assert (venv / "bin" / command).exists(), command
    assert subprocess.run([str(venv / "bin" / "jukebox-convert"), "--help"], capture_output=True).returncode == 0
