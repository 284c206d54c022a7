"""Encode-only runs and primed songs, through the real local Ray pipeline on the tiny model.

A folder of WAV/FLAC files at several rates and channel counts is encoded into the pipeline's
token layout (tokens equal the VQ-VAE's of the converted audio; the manifest says what was
converted); songs then continue prompts taken from that dataset or from an audio file directly,
and their tokens equal ``JukeboxModel`` continuing the same prompt tokens alone in this process.
"""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile
import torch

from models.loading import load_model
from models.presets import preset_tokenizer_settings
from models.tokenizer import JukeboxTokenizer
from pipeline.execute.runner import run
from pipeline.store.audio_input import load_audio
from tests.pipeline.conftest import compose_config

RATE = 44100
NAMES = {0: "bottom", 1: "middle", 2: "top"}


def _tone(seconds: float, rate: int, channels: int, freq: float) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.4 * np.sin(2 * np.pi * freq * t) + 0.1 * np.sin(2 * np.pi * 3.7 * freq * t)
    return np.stack([wave * (1 - 0.3 * c) for c in range(channels)], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def audio_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    soundfile.write(root / "plain.wav", _tone(0.2, RATE, 1, 440.0), RATE, subtype="PCM_16")
    soundfile.write(root / "stereo48k.flac", _tone(0.25, 48000, 2, 330.0), 48000)
    (root / "more").mkdir()
    soundfile.write(root / "more" / "low.wav", _tone(0.15, 22050, 1, 220.0), 22050, subtype="FLOAT")
    return root


@pytest.fixture(scope="module")
def encoded(ray_session, audio_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("encoded")
    cfg = compose_config([f"output.url={out}", "mode=encode", f"encode.input_url={audio_folder}"])
    return out, run(cfg)


@pytest.mark.slow
def test_encoding_a_folder_gives_the_vqvae_tokens_and_notes(encoded, audio_folder):
    out, result = encoded
    rows = {r["song_id"]: r for r in result.rows}
    assert sorted(rows) == ["more.low", "plain", "stereo48k"]
    assert (rows["plain"]["resampled"], rows["plain"]["channel_mix"]) == (False, "none")
    assert rows["stereo48k"]["resampled"] and "mean of 2 channels" in rows["stereo48k"]["audio_note"]
    assert rows["more.low"]["original_sampling_rate"] == 22050 and "22050 Hz, 1 ch -> 44100 Hz, 1 ch" in rows["more.low"]["audio_note"]
    vqvae = load_model("tiny", init_seed=0).vqvae
    for song_id, row in rows.items():
        audio, _ = load_audio(row["source_url"], RATE, 1)
        n = audio.shape[0] // 128 * 128
        assert row["total_length"] == n and row["sampling_rate"] == RATE
        with torch.inference_mode():
            expected = vqvae.encode(torch.from_numpy(audio[None, :n]), start_level=0, end_level=3)
        for level, name in NAMES.items():
            tokens = pq.read_table(out / "tokens" / f"level={level}" / f"{song_id}.parquet").column("tokens")[0].as_py()
            assert row[f"{name}_n_tokens"] == len(tokens) == n // (8, 32, 128)[level]
            np.testing.assert_array_equal(tokens, expected[level][0].numpy(), err_msg=f"{song_id} level {level}")


def test_a_dry_run_names_the_files_it_will_convert(audio_folder, tmp_path):
    cfg = compose_config([f"output.url={tmp_path / 'out'}", "mode=encode", f"encode.input_url={audio_folder}", "dry_run=true"])
    plan = run(cfg).plan
    assert plan["files"] == 3 and plan["converted"]["files"] == 2
    assert sorted(note.split("/")[-1] for note in plan["converted"]["first"]) == [
        "low.wav: 22050 Hz, 1 ch -> 44100 Hz, 1 ch", "stereo48k.flac: 48000 Hz, 2 ch -> 44100 Hz, 1 ch"]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_encoding_again_skips_what_is_done(encoded, audio_folder):
    out, _ = encoded
    cfg = compose_config([f"output.url={out}", "mode=encode", f"encode.input_url={audio_folder}"])
    result = run(cfg)
    assert sorted(result.skipped) == ["more.low", "plain", "stereo48k"] and result.actors == {}
    assert result.n_songs == 3 and len(result.rows) == 3


@pytest.fixture(scope="module")
def primed(ray_session, encoded, audio_folder, tmp_path_factory):
    dataset, _ = encoded
    out = tmp_path_factory.mktemp("primed")
    cfg = compose_config([f"output.url={out}", "scheduler.progress_interval_s=0.5"])
    cfg.songs = [
        {"id": "from_dataset", "artist": "Alan Jackson", "genres": ["country"], "lyrics": "dusty road", "duration_s": 0.3,
         "seed": 11, "prompt": f"{dataset}#stereo48k", "prompt_s": 0.1},
        {"id": "from_audio", "artist": "Ella Fitzgerald", "genres": ["jazz"], "lyrics": "city lights", "duration_s": 0.35,
         "seed": 12, "prompt": str(audio_folder / "plain.wav")},
    ]
    return dataset, run(cfg)


def _tokens(path: str) -> np.ndarray:
    return np.asarray(pq.read_table(path).column("tokens")[0].as_py())


@pytest.mark.slow
def test_primed_songs_start_with_their_prompt_and_continue_it_as_the_model_does(primed, audio_folder):
    dataset, result = primed
    rows = {r["song_id"]: r for r in result.rows}
    model = load_model("tiny", init_seed=0)
    tokenizer = JukeboxTokenizer(**preset_tokenizer_settings("tiny"))
    audio, _ = soundfile.read(audio_folder / "plain.wav", dtype="float32", always_2d=True)
    with torch.inference_mode():
        from_audio = model.vqvae.encode(torch.from_numpy(audio[None, : audio.shape[0] // 128 * 128]), 0, 3)
    prompts = {
        "from_dataset": {level: _tokens(dataset / "tokens" / f"level={level}" / "stereo48k.parquet") for level in NAMES},
        "from_audio": {level: from_audio[level][0].numpy() for level in NAMES},
    }
    kept = {"from_dataset": 4352, "from_audio": audio.shape[0] // 128 * 128}
    for song_id, row in rows.items():
        assert row["prompt_s"] == pytest.approx(kept[song_id] / RATE)
        prompt = {level: tokens[: kept[song_id] // (8, 32, 128)[level]] for level, tokens in prompts[song_id].items()}
        labels = tokenizer(row["artist"], row["genres"], row["lyrics"])["input_ids"]
        expected = model._sample(
            [torch.from_numpy(prompt[level][None]).long() for level in (2, 1, 0)], labels, [0, 1, 2],
            sample_length=row["total_length"], seeds=[row["seed"]], chunk_size=None, sampling_temperature=[0.98, 0.99, 0.99],
        )
        for index, level in enumerate((2, 1, 0)):
            name = NAMES[level]
            ours = _tokens(f"{result.output_url}/{row[f'{name}_tokens_path']}")
            assert row[f"{name}_prompt_tokens"] == len(prompt[level]) > 0
            np.testing.assert_array_equal(ours[: len(prompt[level])], prompt[level], err_msg=f"{song_id} {name} prompt")
            np.testing.assert_array_equal(ours, expected[index][0].numpy(), err_msg=f"{song_id} {name}")
    assert rows["from_audio"]["prompt_note"] == "44100 Hz, 1 ch -> 44100 Hz, 1 ch: unchanged"
    assert result.summary.stages["encode"]["calls"] == 2
