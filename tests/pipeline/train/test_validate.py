"""Bad training input fails before any worker starts, with a message naming the setting."""
from __future__ import annotations

import shutil

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import pipeline.train.run as train_run
from pipeline.execute.runner import run, to_run_config
from pipeline.store.lease import OutputBusyError, RunLease
from pipeline.store.ownership import mark_output
from pipeline.store.writer import RunStorage
from pipeline.train.validate import validate_train
from tests.pipeline.conftest import compose_config


@pytest.fixture
def no_workers(monkeypatch):
    """Fail the test if a training run gets as far as building its trainer."""
    def trainer(*args, **kwargs):
        raise AssertionError("a training run reached Ray Train")
    monkeypatch.setattr(train_run, "TorchTrainer", trainer)


@pytest.fixture
def train_cfg(tmp_path):
    def make(*overrides: str):
        return compose_config(["mode=train", f"output.url={tmp_path / 'out'}", *overrides])
    return make


def _fails(cfg, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run(cfg)


def test_an_unknown_component_is_refused(train_cfg, no_workers):
    _fails(train_cfg("train.component=decoder"), r"train.component: 'decoder' is not one of \['vqvae', 'top', 'middle', 'bottom'\]")
    _fails(train_cfg(), "train.component=null: a training run")


def test_no_audio(train_cfg, no_workers, tmp_path):
    (tmp_path / "empty").mkdir()
    _fails(train_cfg("train.component=vqvae", f"train.audio_url={tmp_path / 'empty'}"), "train.audio_url: no WAV/FLAC files")
    _fails(train_cfg("train.component=vqvae"), "train.audio_url: training the VQ-VAE needs audio")
    _fails(train_cfg("train.component=vqvae", f"train.audio_url={tmp_path / 'missing'}"), "does not exist")


def test_other_files_beside_the_audio_and_short_files(train_cfg, no_workers, corpus_dir):
    _fails(train_cfg("train.component=vqvae", f"train.audio_url={corpus_dir}"), "labels.csv: not a WAV/FLAC file")
    _fails(train_cfg("train.component=vqvae", f"train.audio_url={corpus_dir}", "train.skip_other_files=true",
                     "train.vqvae.crop_samples=441000"), "no file .* is as long as one crop of 440960 samples")
    _fails(train_cfg("train.component=vqvae", f"train.audio_url={corpus_dir}", "train.skip_other_files=true",
                     "train.vqvae.crop_samples=512"), "crops need at least 1025 samples")


def test_batches_must_split_over_workers(train_cfg, no_workers, corpus_dir):
    _fails(train_cfg("train.component=vqvae", f"train.audio_url={corpus_dir}", "train.batch_size=3", "train.num_workers=2"),
           "train.batch_size=3 must divide evenly over train.num_workers=2")


def test_a_valid_run_plans_without_training(train_cfg, no_workers, corpus_dir):
    result = run(train_cfg("train.component=vqvae", f"train.audio_url={corpus_dir}", "train.skip_other_files=true",
                           "train.vqvae.crop_samples=8192", "dry_run=true"))
    assert result.dry_run and result.plan["files"] == 4 and result.plan["crop_samples"] == 8192
    assert result.plan["tokens_per_step"] == 8 * (1024 + 256 + 64)


def test_a_run_folder_in_use_stops_a_second_training_run(train_cfg, no_workers, corpus_dir, tmp_path, monkeypatch):
    def no_corpus(*args, **kwargs):
        raise AssertionError("the second run read its corpus")

    monkeypatch.setattr(train_run, "load_audio_corpus", no_corpus)
    cfg = train_cfg("train.component=vqvae", f"train.audio_url={corpus_dir}", "train.skip_other_files=true", "train.name=shared")
    mark_output(RunStorage(str(tmp_path / "out")))  # as the first run did
    holder = RunLease(RunStorage(str(tmp_path / "out" / "shared")), "first-run")
    holder.acquire()
    try:
        with pytest.raises(OutputBusyError, match=r"shared' is in use by run first-run"):
            run(cfg)
    finally:
        holder.release()
    assert not (tmp_path / "out" / "shared" / "model").exists()


def _dataset_copy(token_dataset, tmp_path, edit=None):
    """A copy of the encoded dataset whose manifest ``edit(table)`` rewrote."""
    copy = tmp_path / "dataset"
    shutil.copytree(token_dataset, copy)
    if edit is not None:
        table = pq.read_table(copy / "manifest.parquet")
        pq.write_table(edit(table), copy / "manifest.parquet")
    return copy


@pytest.mark.slow
def test_token_datasets_without_their_labels_are_refused(train_cfg, no_workers, token_dataset, converted_checkpoint, tmp_path):
    base = ["train.component=top", f"model.checkpoint={converted_checkpoint}"]
    _fails(train_cfg(*base, f"train.tokens_url={tmp_path}"), "no manifest.parquet")
    no_lyrics = _dataset_copy(token_dataset, tmp_path / "a", lambda t: t.drop_columns(["lyrics"]))
    _fails(train_cfg(*base, f"train.tokens_url={no_lyrics}"), r"has no \['lyrics'\] column")
    # the upsamplers do not read lyrics
    validate_train(to_run_config(train_cfg("train.component=middle", f"model.checkpoint={converted_checkpoint}",
                                           f"train.tokens_url={no_lyrics}")))

    def null_artist(table):
        artists = table.column("artist").to_pylist()
        artists[table.column("song_id").to_pylist().index("jazz.c")] = None
        return table.set_column(table.schema.get_field_index("artist"), "artist", [artists])

    unlabelled = _dataset_copy(token_dataset, tmp_path / "b", null_artist)
    _fails(train_cfg(*base, f"train.tokens_url={unlabelled}"), r"labels missing from the manifest for 1 song\(s\).*jazz.c")


@pytest.mark.slow
def test_names_and_genres_the_model_cannot_take(train_cfg, no_workers, token_dataset, converted_checkpoint, tmp_path):
    base = ["train.component=bottom", f"model.checkpoint={converted_checkpoint}"]

    def unknown_artist(table):
        return table.set_column(table.schema.get_field_index("artist"), "artist",
                                [pc.replace_substring(table.column("artist"), "Ella Fitzgerald", "Nobody Atall")])

    unknown = _dataset_copy(token_dataset, tmp_path / "a", unknown_artist)
    _fails(train_cfg(*base, f"train.tokens_url={unknown}"), "vocabulary lacks .* artist 'Nobody Atall'")
    plan = validate_train(to_run_config(train_cfg(*base, f"train.tokens_url={unknown}", "allow_unknown_names=true")))
    assert len(plan.songs) == 4

    def two_genres(table):
        genres = [["country", "rock"]] * table.num_rows
        return table.set_column(table.schema.get_field_index("genres"), "genres", [genres])

    crowded = _dataset_copy(token_dataset, tmp_path / "b", two_genres)
    # the top prior has one genre slot (as 1b_lyrics)
    _fails(train_cfg("train.component=top", f"model.checkpoint={converted_checkpoint}", f"train.tokens_url={crowded}"),
           r"cannot take for 4 song\(s\).*more than")


@pytest.mark.slow
def test_songs_shorter_than_a_window_are_left_out(train_cfg, no_workers, token_dataset, converted_checkpoint, tmp_path):
    def shorten(table):
        return table.set_column(table.schema.get_field_index("top_n_tokens"), "top_n_tokens",
                                [[100] * (table.num_rows - 1) + [table.column("top_n_tokens")[-1].as_py()]])

    short = _dataset_copy(token_dataset, tmp_path / "a", shorten)
    base = ["train.component=top", f"model.checkpoint={converted_checkpoint}", f"train.tokens_url={short}"]
    plan = validate_train(to_run_config(train_cfg(*base)))
    assert len(plan.songs) == 1 and len(plan.skipped) == 3 and "fewer than one window of 128" in plan.skipped[0]
    none = _dataset_copy(token_dataset, tmp_path / "b", lambda t: t.set_column(
        t.schema.get_field_index("top_n_tokens"), "top_n_tokens", [[100] * t.num_rows]))
    _fails(train_cfg("train.component=top", f"model.checkpoint={converted_checkpoint}", f"train.tokens_url={none}"),
           "no song of .* can be trained on")


@pytest.mark.slow
def test_the_songs_trained_on_do_not_depend_on_the_manifest_order(train_cfg, no_workers, token_dataset, converted_checkpoint,
                                                                   tmp_path):
    """An encode run lists songs as they finished; the same dataset in another order trains the same."""
    reversed_rows = _dataset_copy(token_dataset, tmp_path / "r", lambda t: t.take(list(range(t.num_rows))[::-1]))
    base = ["train.component=bottom", f"model.checkpoint={converted_checkpoint}"]
    plans = [validate_train(to_run_config(train_cfg(*base, f"train.tokens_url={url}"))) for url in (token_dataset, reversed_rows)]
    assert [s.song_id for s in plans[0].songs] == [s.song_id for s in plans[1].songs] == sorted(s.song_id for s in plans[0].songs)
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(plans[0].songs, plans[1].songs))
