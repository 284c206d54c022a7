"""Labels manifests as users write them: CSV with file paths, Parquet with song ids and lists."""
from __future__ import annotations

import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.store.audio_input import AudioSource, scan_audio
from pipeline.run.labels import SongLabels, match_labels, read_labels
from tests.pipeline.train import SONG_IDS, write_corpus


def _source(song_id: str) -> AudioSource:
    return AudioSource(f"/audio/{song_id}.wav", song_id, 44100, 1, 44100, "WAV", "PCM_16")


def test_csv_with_file_paths_and_joined_genres(tmp_path):
    (tmp_path / "labels.csv").write_text(
        'file,artist,genres,lyrics,tempo\n'
        'rock/a b.wav,Queen,rock|pop,"we will, we will",120\n'
        'b.flac,Nina Simone,jazz,,80\n'
    )
    labels = read_labels(str(tmp_path / "labels.csv"))
    assert labels == {"rock.a_b": SongLabels("Queen", ("rock", "pop"), "we will, we will"), "b": SongLabels("Nina Simone", ("jazz",), "")}


def test_parquet_with_song_ids_and_lists_and_missing_fields(tmp_path):
    table = pa.table({"song_id": ["x", "y"], "artist": ["Queen", None], "genres": [["rock", "pop"], None]})
    pq.write_table(table, tmp_path / "labels.parquet")
    labels = read_labels(str(tmp_path / "labels.parquet"))
    assert labels == {"x": SongLabels("Queen", ("rock", "pop"), None), "y": SongLabels(None, None, None)}
    assert labels["x"].to_row() == {"artist": "Queen", "genres": ["rock", "pop"], "lyrics": None}
    assert SongLabels.from_row(labels["x"].to_row()) == labels["x"]


def test_file_paths_name_the_songs_the_scanner_finds(tmp_path):
    root = write_corpus(tmp_path / "audio", seconds=0.2)
    sources = scan_audio(str(root), ignore=[str(root / "labels.csv")])
    matched = match_labels(sources, read_labels(str(root / "labels.csv")), "labels.csv")
    assert sorted(matched) == SONG_IDS == sorted(s.song_id for s in sources)
    assert matched["jazz.d"].lyrics == "" and matched["country.b"].artist == "Alan Jackson"


@pytest.mark.parametrize("rows,message", [
    ([{"artist": "Queen"}], "exactly one of \\['song_id', 'file'\\], got neither"),
    ([{"song_id": "a", "file": "a.wav"}], "exactly one of .* got \\['song_id', 'file'\\]"),
    ([{"song_id": "a"}, {"file": "a.wav"}], "row 2: song 'a' is labelled twice"),
    ([{"song_id": "a", "genres": [1, 2]}], "row 1.genres: expected a genre name"),
    ([{"song_id": "a", "lyrics": 3}], "row 1.lyrics: expected text"),
])
def test_bad_rows_are_named(tmp_path, rows, message):
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(ValueError, match=message):
        read_labels(str(path))


def test_files_without_labels_are_refused_and_rows_without_files_logged(caplog):
    labels = {"a": SongLabels("Queen", ("rock",), ""), "zzz": SongLabels("Queen", ("rock",), "")}
    with pytest.raises(ValueError, match="no row for 1 audio file\\(s\\): /audio/b.wav"):
        match_labels([_source("a"), _source("b")], labels, "labels.csv")
    with caplog.at_level(logging.WARNING):
        assert list(match_labels([_source("a")], labels, "labels.csv")) == ["a"]
    assert "zzz" in caplog.text
