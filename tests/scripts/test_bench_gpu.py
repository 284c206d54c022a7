"""``scripts/bench_gpu.py`` runs where the GPU is lent: without Ray, Hydra, OmegaConf, the tokenizer's
unidecode, soundfile or transformers. Its dry run (the tiny preset on CPU) proves it end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ["ray", "hydra", "omegaconf", "unidecode", "soundfile", "transformers", "pandas"]

RUNNER = textwrap.dedent(
    """
    import runpy, sys

    BLOCKED = set(sys.argv[1].split(","))

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is not installed on the GPU machine")
            return None

    sys.meta_path.insert(0, Blocker())
    sys.path.insert(0, "scripts")
    sys.argv = ["scripts/bench_gpu.py", "--dry-run", "--steps", "2", "--batches", "1", "2"]
    runpy.run_path("scripts/bench_gpu.py", run_name="__main__")
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    """
)


def test_bench_gpu_dry_run_needs_none_of_the_pipeline_packages():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, ",".join(BLOCKED)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(figures["levels"]) == {"top", "upsampler"}
    for level in figures["levels"].values():
        assert set(level["batches"]) == {"1", "2"}
        for row in level["batches"].values():
            assert row["eager_ms"] > 0 and row["prefill_s"] > 0 and row["tokens_per_s"] > 0
    assert set(figures["projection"]) == {"1", "2"}
