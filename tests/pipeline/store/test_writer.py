"""Run storage: atomic parts, resume listing, readable outputs."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.dataset as ds
import pytest

from pipeline.store.writer import RunStorage
from pipeline.store.parts import audio_batch, chunk_audio, chunk_batch, chunk_tokens


def test_chunk_parts_round_trip_and_listing(tmp_path):
    storage = RunStorage(str(tmp_path / "run"))
    storage.check_writable()
    tokens = np.arange(10, 20, dtype=np.int32)
    batch = chunk_batch("s1", 1, 40, tokens, started_at=1.0, finished_at=2.0, compute_s=0.5, batch_size=2)
    path = storage.write_chunk(batch)
    audio = np.linspace(-1, 1, 64, dtype=np.float32).reshape(32, 2)
    storage.write_audio_part(audio_batch("s1", 0, 0, 4, audio, started_at=1.0, finished_at=2.0, compute_s=1.0, batch_size=1))
    # a temporary file left by a crash mid-write is not a part
    (tmp_path / "run" / "parts" / "s1" / "level=1" / "000000000050-000000000060.parquet.jukebox-tmp-abcd").write_bytes(b"junk")
    parts = storage.list_parts("s1")
    assert [(p.kind, p.level, p.start, p.end) for p in parts] == [("audio", 0, 0, 4), ("level", 1, 40, 50)]
    back = storage.read_part(path)
    np.testing.assert_array_equal(chunk_tokens(back), tokens)
    assert back.column("end")[0].as_py() == 50 and back.column("batch_size")[0].as_py() == 2
    np.testing.assert_array_equal(chunk_audio(storage.read_part(parts[0].path)), audio)
    assert storage.list_parts("other") == []
    storage.remove_parts("s1")
    assert storage.list_parts("s1") == []


def test_finished_outputs_are_readable_without_project_code(tmp_path):
    storage = RunStorage(str(tmp_path))
    for song, n in (("a", 5), ("b", 7)):
        for level in (0, 2):
            storage.write_tokens(song, level, np.arange(n * (level + 1), dtype=np.int32))
    table = ds.dataset(str(tmp_path / "tokens"), format="parquet", partitioning="hive").to_table()
    rows = {(r["song_id"], r["level"]): r for r in table.to_pylist()}
    assert rows[("b", 2)]["n_tokens"] == 21 and rows[("b", 2)]["tokens"] == list(range(21))
    assert set(rows) == {("a", 0), ("a", 2), ("b", 0), ("b", 2)}
    audio = np.sin(np.linspace(0, 20, 1000, dtype=np.float32))[:, None] * 0.5
    stored = storage.write_wav(storage.audio_path("a"), audio, 44100, "PCM_16")
    assert stored.path == "audio/a.wav" and stored.size == (tmp_path / "audio" / "a.wav").stat().st_size
    back, rate = storage.read_wav(storage.resolve(stored.path))
    assert rate == 44100 and back.shape == (1000, 1)
    np.testing.assert_allclose(back, audio, atol=1e-4)


def test_markers_and_json(tmp_path):
    storage = RunStorage(str(tmp_path))
    assert storage.done_songs() == set()
    storage.write_json(storage.marker_path("x"), {"row": {"song_id": "x"}})
    assert storage.done_songs() == {"x"}
    assert json.loads((tmp_path / "done" / "x.json").read_text())["row"]["song_id"] == "x"


def test_unwritable_url_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match=r"output.url .* cannot be written"):
        RunStorage(str(blocker / "run")).check_writable()
