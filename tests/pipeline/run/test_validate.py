"""Bad input fails before Ray starts or any model loads, with a message naming the field."""
from __future__ import annotations

import pytest

from pipeline.execute import runner


@pytest.fixture
def no_ray(monkeypatch):
    def refuse(cfg):
        raise AssertionError("validation must fail before Ray starts")

    monkeypatch.setattr(runner, "_connect", refuse)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.preset=7b_lyrics"], r"model\.preset='7b_lyrics': unknown preset; expected one of \[.*'tiny'"),
        (["model.checkpoint=/nonexistent/jukebox"], r"model\.checkpoint='/nonexistent/jukebox': .* does not exist"),
        (["songs.0.duration_s=0.001"], r"songs\[0\] \('country_morning'\)\.duration_s=0\.001: shorter than one top-level token"),
        (["songs.1.duration_s=700"], r"songs\[1\] \('jazz_night'\)\.duration_s=700.*max_duration=600"),
        (["songs=[]"], r"song list is empty"),
        (["sampling.levels=[middle]"], r"a level needs the one above it"),
        (["stages.bottom.num_cpus=-1"], r"stages\.bottom\.num_cpus must be >= 0, got -1"),
    ],
)
def test_bad_input_fails_before_ray(no_ray, make_cfg, overrides, message):
    with pytest.raises(ValueError, match=message):
        runner.run(make_cfg(*overrides))


def test_unwritable_output(no_ray, make_cfg, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cfg = make_cfg()
    cfg.output.url = str(blocker / "run")
    with pytest.raises(ValueError, match=r"output\.url .*a_file/run' cannot be written"):
        runner.run(cfg)


def _grid_cfg(make_cfg, grid, *overrides):
    cfg = make_cfg(*overrides)
    cfg.songs_grid = grid
    return cfg


def test_unknown_artists_and_genres_of_a_grid_stop_the_run(no_ray, make_cfg):
    grid = {"base": {"duration_s": 0.5, "lyrics": "la"}, "product": {"artist": ["Alan Jacksn", "Ella Fitzgerald"], "genres": ["country", "jaz"]}}
    with pytest.raises(ValueError, match=r"(?s)not in the model's vocabulary.*'Alan Jacksn'.*close matches: 'alan jackson'.*'jaz'.*close matches: 'jazz'"):
        runner.run(_grid_cfg(make_cfg, grid))


def test_allowed_unknown_names_pass_validation(no_ray, make_cfg):
    grid = {"base": {"duration_s": 0.5, "genres": ["country"]}, "product": {"artist": ["Nobody Known Xyz"]}}
    result = runner.run(_grid_cfg(make_cfg, grid, "allow_unknown_names=true", "dry_run=true"))
    assert result.dry_run and result.plan["songs"] == 1


def test_malformed_grid_file_names_file_row_and_field(no_ray, make_cfg, tmp_path):
    path = tmp_path / "songs.csv"
    path.write_text("artist,genres,duration_s\nAlan Jackson,country,2\nElla Fitzgerald,jazz,two\n")
    with pytest.raises(ValueError, match=r"songs\.csv', row 2, field 'duration_s': expected a number, got 'two'"):
        runner.run(make_cfg(f"songs_grid={path}"))
    path.write_text("artist,genres,duration_s\nAlan Jackson,country,2,extra\n")
    with pytest.raises(ValueError, match=r"not valid csv: row 1 has more cells than the header"):
        runner.run(make_cfg(f"songs_grid={path}"))


def test_duplicate_song_ids_in_a_grid_name_both(no_ray, make_cfg, tmp_path):
    path = tmp_path / "songs.yaml"
    path.write_text("- {id: same, artist: Alan Jackson, genres: country, duration_s: 1}\n"
                    "- {id: same, artist: Ella Fitzgerald, genres: jazz, duration_s: 1}\n")
    with pytest.raises(ValueError, match=r"duplicate song id 'same': file .*songs\.yaml', row 1 .* and file .*row 2"):
        runner.run(make_cfg(f"songs_grid={path}"))
    # Ids derived from the conditioning collide when two cells condition alike.
    grid = {"base": {"genres": ["country"], "duration_s": 1}, "product": {"artist": ["Alan Jackson", "Ella Fitzgerald", "Alan Jackson"]}}
    with pytest.raises(ValueError, match=r"duplicate song id .*product\.artist\[0\].*product\.artist\[2\]"):
        runner.run(_grid_cfg(make_cfg, grid))


def test_unreadable_audio_stops_an_encode_run(no_ray, make_cfg, tmp_path):
    import numpy as np
    import soundfile

    folder = tmp_path / "in"
    folder.mkdir()
    soundfile.write(folder / "ok.wav", np.zeros((4410, 1), np.float32), 44100)
    (folder / "broken.wav").write_bytes(b"RIFF not really a wave file")
    (folder / "notes.txt").write_text("not audio")
    cfg = make_cfg("mode=encode", f"encode.input_url={folder}", out="encode_out")
    with pytest.raises(ValueError, match=r"(?s)encode\.input_url: 2 bad audio input file\(s\).*broken\.wav: unreadable as audio.*notes\.txt: not a WAV/FLAC"):
        runner.run(cfg)
    assert not (tmp_path / "encode_out").exists()
    runner.run(make_cfg("mode=encode", f"encode.input_url={folder / 'ok.wav'}", "dry_run=true"))  # one good file is fine


@pytest.mark.parametrize(
    "prompt, prompt_s, message",
    [
        ("{tmp}/missing.wav", None, r"prompt '.*missing\.wav': unreadable as audio"),
        ("{tmp}/dataset#nosuchsong", None, r"prompt .*#nosuchsong: no tokens of level 2 at .*tokens/level=2/nosuchsong\.parquet"),
        ("{tmp}/long.wav", None, r"the prompt \(0\.998 s of .*long\.wav'\) is not shorter than the song \(0\.499 s\): set prompt_s"),
        ("{tmp}/long.wav", 0.001, r"shorter than one top-level token"),
        ("not a prompt", None, r"prompt 'not a prompt' is neither a WAV/FLAC file"),
    ],
)
def test_bad_prompts_fail_before_ray(no_ray, make_cfg, tmp_path, prompt, prompt_s, message):
    import numpy as np
    import soundfile

    soundfile.write(tmp_path / "long.wav", np.zeros((44100, 1), np.float32), 44100)
    cfg = make_cfg("songs.0.duration_s=0.5")
    cfg.songs[0].prompt = prompt.format(tmp=tmp_path)
    cfg.songs[0].prompt_s = prompt_s
    with pytest.raises(ValueError, match=message):
        runner.run(cfg)


def test_the_example_grid_is_valid_and_means_8_songs(no_ray, make_cfg):
    from pathlib import Path

    example = Path(__file__).resolve().parents[3] / "conf" / "grids" / "example.yaml"
    result = runner.run(make_cfg(f"songs_grid={example}", "dry_run=true"))
    assert result.dry_run and result.plan["songs"] == 8 and result.plan["audio_seconds"] == pytest.approx(4.0, abs=0.01)
