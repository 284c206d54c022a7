"""Vocabulary checks before a run, and the command listing the names a model knows."""
from __future__ import annotations

import io
import subprocess
import sys

import pytest

from pipeline.run.grid import GridSpec, iter_grid
from pipeline.run.spec import SongSpec
from pipeline.run.vocabulary import check_vocabulary, list_names, load_tokenizer, main


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny")  # versions v3 (top prior), v2, v2; one genre per song


def song(song_id, artist, *genres):
    return SongSpec(song_id, artist, tuple(genres), 1.0)


def test_known_names_pass(tokenizer):
    check = check_vocabulary([song("a", "Alan Jackson", "country"), song("b", "Ella Fitzgerald", "jazz")], tokenizer)
    assert check.ok and check.unknown_for("a") == []


def test_unknown_names_stop_the_run_with_close_matches(tokenizer):
    songs = [song("a", "Alan Jacksn", "country"), song("b", "Ella Fitzgerald", "jaz"), song("c", "Alan Jacksn", "country")]
    with pytest.raises(ValueError) as info:
        check_vocabulary(songs, tokenizer)
    message = str(info.value)
    assert message.startswith("4 artist/genre name(s) are not in the model's vocabulary")
    assert "artist 'Alan Jacksn' (v3 key 'alan jacksn'; songs 'a', 'c'): close matches: 'alan jackson'" in message
    assert "artist 'Alan Jacksn' (v2 key 'alan_jacksn'; songs 'a', 'c'): close matches: 'alan_jackson'" in message
    assert "genre 'jaz' (v3 key 'jaz'; songs 'b'): close matches: 'jazz'" in message
    assert "allow_unknown_names=true" in message


def test_allowed_unknown_names_are_flagged_per_song(tokenizer):
    songs = list(iter_grid(GridSpec.from_config({"base": {"genres": "country", "duration_s": 1},
                                                 "product": {"artist": ["Alan Jackson", "Nobody Known Xyz"]}})))
    check = check_vocabulary(songs, tokenizer, allow_unknown=True)
    assert not check.ok
    assert check.unknown_for(songs[0].song.id) == []
    assert check.unknown_for(songs[1].song.id) == ["artist:Nobody Known Xyz@v3", "artist:Nobody Known Xyz@v2"]
    assert all(report.suggestions == () or isinstance(report.suggestions[0], str) for report in check.unknown)


def test_too_many_genres_always_fail(tokenizer):
    with pytest.raises(ValueError, match=r"genres \['country', 'jazz'\] are 2 v3 genres, more than the model's n_genres=1"):
        check_vocabulary([song("a", "Alan Jackson", "country", "jazz")], tokenizer, allow_unknown=True)


def test_close_matches_and_search(tokenizer):
    assert tokenizer.close_matches("artist", "Bjork", "v3")[0] == "björk"
    assert tokenizer.close_matches("artist", "Alan Jacksen", "v2")[0] == "alan_jackson"
    assert "jazz" in list_names(tokenizer, "genre", "v2", "JAZZ")
    assert all("jackson" in name for name in list_names(tokenizer, "artist", "v2", "Jackson"))
    assert "björk" in list_names(tokenizer, "artist", "v3", "bjork")  # accents ignored


def test_cli_lists_searches_and_limits():
    out = io.StringIO()
    assert main(["--model", "tiny", "--kind", "genres", "--search", "jazz", "--limit", "2"], out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("# genres of model 'tiny', label version v3 (prior 0): 604 names, 17 containing 'jazz'")
    assert lines[1:3] == ["acid jazz", "contemporary jazz"] and lines[3] == "# ... 15 more (raise --limit)"
    assert lines[4] == "# genres of model 'tiny', label version v2 (priors 1, 2): 120 names, 1 containing 'jazz'"
    assert lines[5] == "jazz"

    out = io.StringIO()
    main(["--model", "5b", "--search", "alan jacksn"], out=out)
    assert out.getvalue().splitlines() == [
        "# artists of model '5b', label version v2 (priors 0, 1, 2): 4111 names, 0 containing 'alan jacksn'",
        "# close matches: alan_jackson, wanda_jackson, janet_jackson",
    ]
    assert main(["--model", "no_such_model"], out=io.StringIO()) == 2


def test_cli_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "pipeline.run.vocabulary", "--search", "fitzgerald", "--limit", "1"],
                            capture_output=True, text=True, check=True, timeout=120)
    assert "ella fitzgerald" in result.stdout.splitlines()
