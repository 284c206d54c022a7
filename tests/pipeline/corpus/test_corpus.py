"""The synthetic corpus: deterministic, labelled with names every prior knows, styles that differ
in measurable ways, written as the training data readers take it."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile

from models.evaluation import median_peak_hz, rms, spectral_flatness
from models.presets import preset_tokenizer_settings
from models.tokenizer import JukeboxTokenizer, LabelVersion
from pipeline.store.audio_input import scan_audio
from pipeline.corpus import STYLES, corpus_songs, render_song
from pipeline.corpus.__main__ import main, write_corpus
from pipeline.corpus.heldout import SEPARATED_STYLES, feature_threshold, separation_accuracy, style_feature
from pipeline.run.labels import match_labels, read_labels

RATE = 44100


def test_a_song_is_a_function_of_its_style_seed_and_length():
    a, lyrics_a = render_song("country", 7, 2.0)
    b, lyrics_b = render_song("country", 7, 2.0)
    assert a.dtype == np.float32 and a.shape == (2 * RATE,)
    assert np.array_equal(a, b) and lyrics_a == lyrics_b
    assert not np.array_equal(a, render_song("country", 8, 2.0)[0])
    assert abs(rms(a) - 0.1) < 1e-3 and np.abs(a).max() <= 0.9 + 1e-6


def test_splits_never_share_seeds_and_adding_songs_keeps_the_others():
    train, heldout = corpus_songs(0, "train", 6), corpus_songs(0, "heldout", 3)
    assert not {s.seed for s in train} & {s.seed for s in heldout}
    assert corpus_songs(0, "train", 9)[:6] != train  # style order: the 7th country song comes before jazz
    assert [s for s in corpus_songs(0, "train", 9) if s.index < 6] == train
    assert corpus_songs(1, "train", 6) != train
    with pytest.raises(ValueError, match="split='test'"):
        corpus_songs(0, "test", 1)
    with pytest.raises(ValueError, match="rock"):
        corpus_songs(0, "train", 1, ("rock",))


def test_every_style_is_labelled_with_names_the_vocabulary_knows():
    """The top prior reads v3 labels, the upsamplers v2: both must know every artist and genre."""
    tokenizer = JukeboxTokenizer(**preset_tokenizer_settings("tiny"))
    assert set(tokenizer.version) == {LabelVersion.V3, LabelVersion.V2}
    for style in STYLES.values():
        assert tokenizer.unknown_names(style.artist, [style.genre]) == [], style.name
        rows = tokenizer.encode(style.artist, [style.genre], style.lyrics[0])
        assert all(int(row[3]) > 0 and int(row[4]) > 0 for row in rows), style.name  # no "unknown" (0) id


def test_styles_differ_in_register_tempo_timbre_and_drums():
    songs = {name: [render_song(name, seed, 4.0)[0] for seed in range(3)] for name in STYLES}
    pitch = {name: np.median([median_peak_hz(a, RATE) for a in audio]) for name, audio in songs.items()}
    assert pitch["country"] < 400 < 480 < pitch["jazz"]  # two octaves apart
    assert len({s.bpm for s in STYLES.values()}) == len(STYLES)
    assert len({s.lead for s in STYLES.values()}) == len(STYLES)
    assert len({s.drums for s in STYLES.values()}) == len(STYLES)
    for audio in songs.values():
        assert all(spectral_flatness(a) < 0.05 for a in audio)  # tonal: what the trained model must make


def test_the_separated_styles_fall_on_their_side_of_the_threshold():
    low, high = SEPARATED_STYLES
    values = {style: [style_feature(render_song(style, seed, 3.0)[0]) for seed in range(100, 106)] for style in SEPARATED_STYLES}
    threshold = feature_threshold(values[low], values[high])
    assert separation_accuracy(threshold, values[low], values[high]) == 1.0
    with pytest.raises(ValueError, match="must lie below"):
        feature_threshold(values[high], values[low])


def test_the_written_corpus_is_what_training_reads(tmp_path):
    assert main([f"--out={tmp_path}", "--train-songs=2", "--heldout-songs=1", "--seconds=1.0"]) == 0
    for split, per_style in (("train", 2), ("heldout", 1)):
        sources = scan_audio(str(tmp_path / split))
        labels = match_labels(sources, read_labels(str(tmp_path / f"{split}_labels.csv")), "labels")
        assert len(sources) == len(labels) == per_style * len(STYLES)
        for source in sources:
            style = STYLES[source.song_id.split(".")[0]]
            assert (labels[source.song_id].artist, labels[source.song_id].genres) == (style.artist, (style.genre,))
            assert labels[source.song_id].lyrics and source.sampling_rate == RATE and source.channels == 1
    first = (tmp_path / "train" / "country" / "country-000.wav").read_bytes()
    audio, rate = soundfile.read(tmp_path / "train" / "country" / "country-000.wav", dtype="float32")
    song = corpus_songs(0, "train", 1)[0]
    assert rate == RATE and np.abs(audio - render_song(song.style, song.seed, 1.0)[0]).max() < 1e-4  # PCM_16
    write_corpus(str(tmp_path), 0, {"train": 1}, 1.0)
    assert (tmp_path / "train" / "country" / "country-000.wav").read_bytes() == first


def test_bad_arguments_stop_the_command(tmp_path, capsys):
    for bad in (["--styles=rock"], ["--train-songs=0"], ["--seconds=0.1"]):
        with pytest.raises(SystemExit) as stop:
            main([f"--out={tmp_path}", *bad])
        assert stop.value.code == 2
    assert "rock" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
