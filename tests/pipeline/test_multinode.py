"""A simulated multi-node cluster: `python -m pipeline ray.address=...` with stages pinned by label."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_stages_pinned_to_labelled_nodes(tmp_path, monkeypatch):
    from ray.cluster_utils import Cluster

    ray_tmp = tempfile.mkdtemp(prefix="raycl")
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        priors = cluster.add_node(num_cpus=2, labels={"jukebox-role": "priors"})
        io = cluster.add_node(num_cpus=2, labels={"jukebox-role": "io"})
        cluster.wait_for_nodes()
        out = tmp_path / "out"
        pin = lambda stage, role: f"+stages.{stage}.label_selector={{jukebox-role: {role}}}"  # noqa: E731
        command = [
            sys.executable, "-m", "pipeline",
            f"ray.address={cluster.address}", f"output.url={out}",
            "songs.0.duration_s=0.3", "songs.1.duration_s=0.3", "ray.placement_timeout_s=60",
            pin("top", "priors"), pin("middle", "priors"), pin("bottom", "priors"), pin("tokenize", "io"), pin("decode", "io"),
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ]
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=240, env=os.environ.copy())
        assert done.returncode == 0, done.stderr[-4000:]
        assert "country_morning ->" in done.stderr + done.stdout  # the run says where the audio went
        summary = json.loads((out / "summary.json").read_text())["runs"][-1]
        nodes = {stage: {a["node_id"] for a in actors} for stage, actors in summary["actors"].items()}
        assert nodes["top"] == nodes["middle"] == nodes["bottom"] == {priors.node_id}
        assert nodes["tokenize"] == nodes["decode"] == {io.node_id}
        rows = sorted(pq.read_table(out / "manifest.parquet").to_pylist(), key=lambda r: r["song_index"])  # rows come as songs finish
        assert [r["song_id"] for r in rows] == ["country_morning", "jazz_night"]
        assert all((out / r["audio_path"]).exists() for r in rows)
    finally:
        cluster.shutdown()
