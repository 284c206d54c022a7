"""Shared by the resume and fault tests: three short songs, run with counting stand-in priors,
and what a finished output holds (read with plain pyarrow / soundfile, paths from the manifest)."""
from __future__ import annotations

import sys

import numpy as np
import pyarrow.parquet as pq
import soundfile

DELAY_S = 0.01
SONGS = ("songs.0.duration_s=0.6", "songs.1.duration_s=0.6")
THIRD_SONG = {"id": "third", "artist": "Nina Simone", "genres": ["soul"], "lyrics": "feeling good", "duration_s": 0.4, "seed": 99}
SONG_IDS = ("country_morning", "jazz_night", "third")


def three_songs(cfg):
    """The default config's two songs shortened, plus a third."""
    cfg.songs.append(THIRD_SONG)
    return cfg


def outputs(url: str) -> dict:
    """Every song's tokens per level and audio, opened through the manifest's relative paths."""
    found = {}
    for row in pq.read_table(f"{url}/manifest.parquet").to_pylist():
        for name in ("top", "middle", "bottom"):
            found[(row["song_id"], name)] = np.asarray(pq.read_table(f"{url}/{row[f'{name}_tokens_path']}").column("tokens")[0].as_py())
        found[(row["song_id"], "audio")] = soundfile.read(f"{url}/{row['audio_path']}", dtype="int16")[0]
    return found


def assert_same(a: dict, b: dict) -> None:
    """Tokens identical; audio identical up to float rounding (batched decoding may group
    segments differently, which can move a 16-bit sample by one step)."""
    assert sorted(a) == sorted(b)
    for key in a:
        if key[1] == "audio":
            assert a[key].shape == b[key].shape
            np.testing.assert_allclose(a[key].astype(np.int32), b[key].astype(np.int32), atol=2, rtol=0, err_msg=str(key))
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=str(key))


def main(argv: list[str]) -> None:
    """A driver process for fault tests: ``python -m tests.pipeline.runs OUTPUT [overrides]`` runs
    the three songs with counting stand-in priors into OUTPUT (its own local Ray)."""
    from pipeline.execute.runner import run
    from tests.pipeline.conftest import compose_config
    from tests.pipeline.fakes import counting_factories

    output, *overrides = argv
    cfg = three_songs(compose_config([f"output.url={output}", "scheduler.progress_interval_s=0.5", *SONGS, *overrides]))
    run(cfg, factories=counting_factories(DELAY_S))


if __name__ == "__main__":
    main(sys.argv[1:])
