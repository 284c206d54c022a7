"""Resume: a run stopped at any point, run again, gives the uninterrupted result and redoes only
what is missing. (Killed drivers and actors, damaged files: tests/pipeline/test_faults.py.)

The priors are counting stand-ins (a fixed delay per window) so that runs are quick;
tokenization, decoding, storage and the scheduler are the real ones.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.execute.resume import ResumeMismatchError
from pipeline.execute.runner import run
from pipeline.store.ownership import MARKER_NAME
from tests.pipeline.fakes import counting_factories
from tests.pipeline.runs import DELAY_S, SONGS, THIRD_SONG, assert_same, outputs, three_songs


def _cfg(make_cfg, *overrides: str):
    """The default config with three short songs."""
    return three_songs(make_cfg(*SONGS, *overrides))


_outputs, _assert_same = outputs, assert_same


def _calls(result, stage: str) -> int:
    return result.summary.stages[stage]["calls"]


@pytest.fixture(scope="module")
def reference(ray_session, tmp_path_factory):
    """An uninterrupted run that keeps its parts (to build interrupted states from)."""
    from tests.pipeline.conftest import compose_config

    out = tmp_path_factory.mktemp("reference")
    cfg = compose_config([f"output.url={out}", "output.keep_parts=true", *SONGS])
    cfg.songs.append(THIRD_SONG)
    result = run(cfg, factories=counting_factories(DELAY_S))
    return out, result, _outputs(str(out))


def _copy_parts(reference_dir: Path, target: Path, keep) -> int:
    """Copy the reference's output marker, specs and the parts ``keep(song, kind, level, index)``
    accepts (what an interrupted run leaves); returns parts dropped."""
    dropped = 0
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(reference_dir / MARKER_NAME, target / MARKER_NAME)
    for song_dir in (reference_dir / "parts").iterdir():
        (target / "parts" / song_dir.name).mkdir(parents=True)
        shutil.copy(song_dir / "spec.json", target / "parts" / song_dir.name / "spec.json")
        for group in sorted(p for p in song_dir.iterdir() if p.is_dir()):
            kind, level = group.name.split("=")
            for index, part in enumerate(sorted(group.iterdir())):
                if keep(song_dir.name, kind, int(level), index):
                    (target / "parts" / song_dir.name / group.name).mkdir(exist_ok=True)
                    shutil.copy(part, target / "parts" / song_dir.name / group.name / part.name)
                else:
                    dropped += 1
    return dropped


@pytest.mark.slow
def test_resume_from_several_interruption_points(reference, make_cfg):
    """Three songs stopped at three points: all parts stored but not compacted, part way through
    every level, and mid bottom level with its audio lost. Only the missing work is redone."""
    reference_dir, _, expected = reference
    out = Path(make_cfg().output.url)
    points = {
        "country_morning": lambda kind, level, index: True,
        "jazz_night": lambda kind, level, index: index < (3 if kind == "level" else 5),
        "third": lambda kind, level, index: kind == "level" and not (level == 0 and index >= 6),
    }
    dropped = _copy_parts(reference_dir, out, lambda song, kind, level, index: points[song](kind, level, index))
    result = run(_cfg(make_cfg), factories=counting_factories(DELAY_S))
    _assert_same(_outputs(str(out)), expected)
    redone = sum(_calls(result, s) for s in ("top", "middle", "bottom", "decode"))
    assert redone == dropped > 0  # exactly the missing windows and segments, nothing stored
    assert _calls(result, "tokenize") == 2  # the song with every window stored needs no labels
    assert result.skipped == []


@pytest.mark.slow
def test_finished_songs_are_skipped_and_settings_are_checked(reference, make_cfg):
    reference_dir, _, expected = reference
    cfg = _cfg(make_cfg, "output.keep_parts=true")
    cfg.output.url = str(reference_dir)
    result = run(cfg, factories=counting_factories(DELAY_S))
    assert sorted(result.skipped) == ["country_morning", "jazz_night", "third"]
    assert sum(_calls(result, s) for s in result.summary.stages) == 0 and result.actors == {}
    _assert_same(_outputs(str(reference_dir)), expected)
    random_weights = _cfg(make_cfg, "output.keep_parts=true", "model.weights=random")
    random_weights.output.url = str(reference_dir)
    with pytest.raises(ResumeMismatchError, match=r"already exists .* different settings \(\['weights'\]\)"):
        run(random_weights, factories=counting_factories(DELAY_S))  # the shipped weights made them: not mixed
    for audio in ("audio.wav_subtype=FLOAT", "audio.margin_tokens=2", "audio.decode_tokens=64"):
        changed = _cfg(make_cfg, "output.keep_parts=true", audio)
        changed.output.url = str(reference_dir)
        with pytest.raises(ResumeMismatchError, match=r"already exists .* different settings \(\['audio'\]\)"):
            run(changed, factories=counting_factories(DELAY_S))  # its WAVs and segments were made otherwise
    cfg.songs[1].seed = 12345
    with pytest.raises(ResumeMismatchError, match="'jazz_night' already exists .* different settings .*'seed'"):
        run(cfg, factories=counting_factories(DELAY_S))
