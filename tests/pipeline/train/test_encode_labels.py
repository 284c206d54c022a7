"""Encode mode carries a labels manifest into the token dataset that prior training reads."""
from __future__ import annotations

import shutil

import pyarrow.parquet as pq
import pytest

from pipeline.execute.runner import run
from tests.pipeline.conftest import compose_config
from tests.pipeline.train import SONG_IDS, SONGS

pytestmark = pytest.mark.slow


def _manifest(root) -> dict[str, dict]:
    return {row["song_id"]: row for row in pq.read_table(root / "manifest.parquet").to_pylist()}


def test_the_labels_of_every_file_reach_the_manifest(token_dataset):
    rows = _manifest(token_dataset)
    assert sorted(rows) == SONG_IDS
    for song_id, (_, rate, channels, artist, genre, _, lyrics) in zip(SONG_IDS, SONGS):
        row = rows[song_id]
        assert (row["artist"], row["genres"], row["lyrics"]) == (artist, [genre], lyrics)
        assert (row["original_sampling_rate"], row["original_channels"]) == (rate, channels)


def test_encoding_again_with_new_labels_relabels_without_encoding(token_dataset, corpus_dir, converted_checkpoint, tmp_path):
    out = tmp_path / "tokens"
    shutil.copytree(token_dataset, out)
    labels = tmp_path / "labels.csv"
    labels.write_text("song_id,artist,genres,lyrics\n" + "".join(f"{s},Nina Simone,soul|jazz,hey\n" for s in SONG_IDS))
    result = run(compose_config([f"output.url={out}", "mode=encode", f"encode.input_url={corpus_dir}",
                                 "encode.skip_other_files=true", f"encode.labels_url={labels}",
                                 f"model.checkpoint={converted_checkpoint}"]))
    assert sorted(result.skipped) == SONG_IDS and result.actors == {}
    assert {(r["artist"], tuple(r["genres"]), r["lyrics"]) for r in _manifest(out).values()} == {("Nina Simone", ("soul", "jazz"), "hey")}


def test_files_without_labels_stop_the_run_before_encoding(corpus_dir, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("file,artist,genres\ncountry/a.wav,Alan Jackson,country\n")
    with pytest.raises(ValueError, match=r"encode.labels_url: .* no row for 3 audio file\(s\)"):
        run(compose_config([f"output.url={tmp_path / 'out'}", "mode=encode", f"encode.input_url={corpus_dir}",
                            "encode.skip_other_files=true", f"encode.labels_url={labels}"]))
