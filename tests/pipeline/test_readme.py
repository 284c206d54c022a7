"""The README's Python blocks run as written (on a fresh directory, no download)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from models.jukebox import JukeboxModel
from models.meta import empty_on_meta
from models.presets import load_preset
from pipeline.execute.runner import run

README = Path(__file__).resolve().parents[2] / "README.md"
REPO = README.parent


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_its_python_blocks():
    blocks = python_blocks()
    assert any("JukeboxModel.from_pretrained" in block for block in blocks)
    assert any("read_parquet" in block for block in blocks)


@pytest.mark.slow
def test_model_api_block_runs_as_written(tmp_path, monkeypatch):
    (block,) = [b for b in python_blocks() if "JukeboxModel.from_pretrained" in b]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    tokens, audio = namespace["tokens"], namespace["audio"]
    assert [t.shape[1] for t in tokens] == [689, 2756, 11024]  # 2 s at 128, 32 and 8 samples per token
    assert audio.shape == (1, 11024 * 8, 1) and not audio.requires_grad
    assert (tmp_path / "song.wav").stat().st_size > 2 * 11024 * 8


@pytest.mark.slow
def test_dataset_block_reads_the_grid_run_above_it(ray_session, make_cfg, tmp_path, monkeypatch):
    """The block reads outputs/grid, which the README's grid command just above it writes."""
    (block,) = [b for b in python_blocks() if "read_parquet" in b]
    monkeypatch.chdir(tmp_path)
    cfg = make_cfg(f"songs_grid={REPO / 'conf/grids/example.yaml'}", "stages.bottom.max_batch=8", out="outputs/grid")
    run(cfg)
    # a fresh Python, as a user's: its own local Ray, started in the directory the paths are relative to
    check = block + "\nprint(len(songs), bottom.count(), audio.shape[0] == songs.audio_samples[0], rate)\n"
    env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="rayrd"), "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-4:] == ["8", "8", "True", "44100"]


def _count(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} B"
    return f"{n / 1e6:.2f} M" if n < 1e7 else f"{n / 1e6:.1f} M"


def test_the_parameter_table_counts_each_parameter_once():
    """The README's table against the models built on the meta device (a tied output projection
    is the token embedding: counted once, as the original code counts it)."""
    rows = re.findall(r"^\| (\w+) \| (.+) \|$", README.read_text(), flags=re.M)
    table = {name: [cell.strip() for cell in cells.split("|")] for name, cells in rows if name in ("1b_lyrics", "5b", "5b_lyrics", "tiny")}
    assert set(table) == {"1b_lyrics", "5b", "5b_lyrics", "tiny"}
    for name, cells in table.items():
        with empty_on_meta():
            model = JukeboxModel(load_preset(name))
        counts = [sum(p.numel() for p in part.parameters()) for part in (model.vqvae, *model.priors)]
        assert cells == [_count(n) for n in counts] + [_count(sum(p.numel() for p in model.parameters()))], name
