"""The whole pipeline on the tiny model with real Ray: consistent outputs, single-process tokens, streaming."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile
import torch

from models.evaluation import rms, spectral_flatness, spectral_peak_hz, waveform_correlation
from models.loading import load_model
from models.presets import preset_tokenizer_settings
from models.seeding import song_seed
from models.tokenizer import JukeboxTokenizer
from pipeline.execute.runner import run
from tests.pipeline.fakes import counting_factories

RAW_TO_TOKENS = {"top": 128, "middle": 32, "bottom": 8}  # tiny preset: samples per token


@pytest.fixture(scope="module")
def tiny_run(ray_session, tmp_path_factory):
    from tests.pipeline.conftest import compose_config

    out = tmp_path_factory.mktemp("tiny_run")
    cfg = compose_config([f"output.url={out}", "scheduler.progress_interval_s=0.5", "stages.bottom.max_batch=2"])
    return cfg, run(cfg)


@pytest.mark.slow
def test_outputs_are_consistent(tiny_run):
    cfg, result = tiny_run
    songs = {s["id"]: s for s in cfg.songs}
    # the manifest holds rows in the order songs finished; song_index gives the song-list order
    manifest = sorted(pq.read_table(result.manifest_path).to_pylist(), key=lambda r: r["song_index"])
    assert [r["song_id"] for r in manifest] == list(songs) == [r["song_id"] for r in result.rows]
    for row in manifest:
        song = songs[row["song_id"]]
        assert (row["artist"], row["genres"], row["lyrics"]) == (song["artist"], list(song["genres"]), song["lyrics"])
        assert row["seed"] == song_seed(cfg.seed, row["song_id"])
        total = row["total_length"]
        assert total == int(song["duration_s"] * 44100) // 128 * 128 and row["sampling_rate"] == 44100
        for name, raw in RAW_TO_TOKENS.items():
            tokens = pq.read_table(f"{result.output_url}/{row[f'{name}_tokens_path']}").column("tokens")[0].as_py()
            assert len(tokens) == row[f"{name}_n_tokens"] == total // raw
            assert 0 <= min(tokens) and max(tokens) < 256
            assert row[f"{name}_windows"] >= 2 and row[f"{name}_compute_s"] > 0
        audio, rate = soundfile.read(f"{result.output_url}/{row['audio_path']}", always_2d=True)
        assert rate == 44100 and audio.shape == (total, 1) == (row["audio_samples"], row["channels"])
    out = result.output_url
    assert sorted(p.name for p in (Path(out) / "done").iterdir()) == sorted(f"{s}.json" for s in songs)
    assert not any((Path(out) / "parts").glob("*/level=*/*.parquet"))  # compacted
    summary = json.loads((Path(out) / "summary.json").read_text())["runs"][-1]
    assert summary["songs"] == 2 and summary["overlap"] > 0


@pytest.mark.slow
def test_the_default_job_makes_tonal_songs(tiny_run):
    """The default run's songs, made by the shipped trained weights, are music-like: a spectral
    peak well below Nyquist (random weights put it at 22,050 Hz), audible, not noise-flat, and the
    two songs differ (random weights made them correlate at 0.9999)."""
    _, result = tiny_run
    songs = []
    for row in sorted(result.rows, key=lambda r: r["song_index"]):
        audio, rate = soundfile.read(f"{result.output_url}/{row['audio_path']}", dtype="float32")
        assert spectral_peak_hz(audio, rate) < 5000, row["song_id"]
        assert rms(audio) > 0.01 and spectral_flatness(audio) < 0.5, row["song_id"]
        songs.append(audio)
    assert abs(waveform_correlation(*songs)) < 0.5
    spec = json.loads((Path(result.output_url) / "done" / f"{result.rows[0]['song_id']}.json").read_text())
    assert spec["fingerprint"]["weights"].startswith("shipped:tiny:")  # a rerun with other weights is refused


@pytest.mark.slow
def test_readable_by_pandas_and_ray_data(tiny_run):
    pd = pytest.importorskip("pandas")  # ray.data needs pandas too
    _, result = tiny_run
    tokens = pd.read_parquet(f"{result.output_url}/tokens")
    assert sorted(tokens["level"].astype(int).unique()) == [0, 1, 2] and len(tokens) == 6
    import ray.data

    ds = ray.data.read_parquet(f"{result.output_url}/tokens/level=0")
    assert sorted(r["song_id"] for r in ds.take_all()) == sorted(r["song_id"] for r in result.rows)
    manifest = pd.read_parquet(result.manifest_path).sort_values("song_index")
    assert manifest["song_id"].tolist() == [r["song_id"] for r in result.rows]


@pytest.mark.slow
def test_tokens_equal_single_process_sampling(tiny_run):
    """Same seeds, same tokens as JukeboxModel sampling the song alone in this process."""
    cfg, result = tiny_run
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = load_model("tiny", init_seed=cfg.model.init_seed)
        tokenizer = JukeboxTokenizer(**preset_tokenizer_settings("tiny"))
        for row in result.rows:
            labels = tokenizer(row["artist"], row["genres"], row["lyrics"])["input_ids"]
            expected = model._sample(
                [torch.zeros(1, 0, dtype=torch.long)] * 3, labels, [0, 1, 2],
                sample_length=row["total_length"], seeds=[row["seed"]], chunk_size=None,
                sampling_temperature=[cfg.sampling.top.temperature, cfg.sampling.middle.temperature, cfg.sampling.bottom.temperature],
            )
            for index, name in enumerate(["top", "middle", "bottom"]):
                ours = np.asarray(pq.read_table(f"{result.output_url}/{row[f'{name}_tokens_path']}").column("tokens")[0].as_py())
                np.testing.assert_array_equal(ours, expected[index][0].numpy(), err_msg=f"{row['song_id']} {name}")
            # The audio, decoded chunk by chunk while sampling went on, is the whole song decoded at once.
            with torch.inference_mode():
                whole = model.decode([expected[2]], start_level=0, end_level=1)[0].numpy()
            audio, _ = soundfile.read(f"{result.output_url}/{row['audio_path']}", dtype="float32", always_2d=True)
            assert np.abs(whole).max() > 1e-3  # not silence
            np.testing.assert_allclose(audio, np.clip(whole, -1, 1), atol=1e-4)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_levels_stream_into_each_other(ray_session, make_cfg):
    """A long song: each level (and decoding) starts long before the level above has finished it.

    Stand-in priors that take a fixed time per window keep the timing independent of CPU load.
    """
    result = run(make_cfg("experiment=long_song"), factories=counting_factories(delay_s=0.01))
    stages = result.summary.stages
    assert stages["top"]["calls"] >= 8
    assert stages["middle"]["first_start_s"] < stages["top"]["last_end_s"] - 0.3
    assert stages["bottom"]["first_start_s"] < stages["middle"]["last_end_s"] - 0.3
    assert stages["decode"]["first_start_s"] < stages["bottom"]["last_end_s"] - 0.3
    assert result.summary.first_audio_s < stages["bottom"]["last_end_s"] - 0.3
