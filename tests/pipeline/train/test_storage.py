"""Ray Train's storage from our fsspec URLs, and model sources workers can find."""
from __future__ import annotations

import os

import fsspec
import pyarrow.fs

from pipeline.train.run import ray_storage
from pipeline.train.validate import _worker_visible


def test_local_paths_and_file_urls_are_plain_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ray_storage("runs") == (str(tmp_path / "runs"), None)
    assert ray_storage(f"file://{tmp_path}/runs") == (f"{tmp_path}/runs", None)


def test_other_file_systems_reach_ray_train_through_fsspec():
    path, filesystem = ray_storage("memory://bucket/runs")
    assert path == "/bucket/runs" and isinstance(filesystem, pyarrow.fs.PyFileSystem)
    from ray.train.v2._internal.execution.storage import StorageContext

    storage = StorageContext(storage_path=path, experiment_dir_name="train-top", storage_filesystem=filesystem)
    with storage.storage_filesystem.open_output_stream(f"{storage.experiment_fs_path}/probe.txt") as handle:
        handle.write(b"written by Ray Train")
    assert fsspec.filesystem("memory").cat_file("/bucket/runs/train-top/probe.txt") == b"written by Ray Train"


def test_relative_model_sources_become_absolute_for_workers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "tiny_copy.yaml").write_text("{}")
    assert _worker_visible("ckpt") == str(tmp_path / "ckpt")
    assert _worker_visible("tiny_copy.yaml") == str(tmp_path / "tiny_copy.yaml")
    assert _worker_visible("tiny") == "tiny"
    assert _worker_visible("s3://bucket/model") == "s3://bucket/model"
    assert os.path.isabs(_worker_visible("ckpt"))
