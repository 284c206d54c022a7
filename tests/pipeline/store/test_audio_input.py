"""Audio input: resampler accuracy, channel mixing, scanning and reading real WAV/FLAC files."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile

from pipeline.actors.messages import EncodeFileTask
from pipeline.store import audio_input
from pipeline.store.audio_input import load_audio, mix_channels, resample, scan_audio


def sine(freq, rate, seconds, amplitude=0.5, channels=1):
    t = np.arange(int(rate * seconds)) / rate
    return np.repeat((amplitude * np.sin(2 * np.pi * freq * t))[:, None], channels, axis=1).astype(np.float32)


def fit_sine(signal, freq, rate):
    """Amplitude of the best fit a*sin + b*cos at ``freq``, and the residual RMS (large if the frequency moved)."""
    t = np.arange(len(signal)) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, signal, rcond=None)
    return float(np.hypot(*coef)), float(np.sqrt(np.mean((signal - basis @ coef) ** 2)))


def interior(signal, fraction=0.1):
    cut = int(len(signal) * fraction)
    return signal[cut : len(signal) - cut]


def test_equal_rates_are_the_identity():
    audio = np.random.default_rng(0).standard_normal((4410, 2)).astype(np.float32)
    out = resample(audio, 44100, 44100)
    assert out.dtype == np.float32 and np.array_equal(out, audio) and out is not audio


@pytest.mark.parametrize(
    "rate, freq", [(48000, 1000.0), (22050, 5000.0), (32000, 440.0), (96000, 15000.0), (8000, 3000.0), (44101, 2000.0)]
)
def test_a_sine_keeps_its_frequency_and_amplitude(rate, freq):
    out = resample(sine(freq, rate, 0.25), rate, 44100)
    assert out.shape == (-(-int(rate * 0.25) * 44100 // rate), 1)
    time = np.arange(len(out)) / 44100
    amplitude, residual = fit_sine(interior(out[:, 0]), freq, 44100)
    assert amplitude == pytest.approx(0.5, abs=2e-3)
    assert residual < 1e-3, f"residual {residual}: the tone did not stay at {freq} Hz"
    # the same at the original phase: time is preserved, not only frequency
    reference = 0.5 * np.sin(2 * np.pi * freq * time)
    assert np.abs(interior(out[:, 0]) - interior(reference)).max() < 5e-3


def test_downsampling_removes_tones_above_the_new_nyquist():
    out = resample(sine(30000.0, 96000, 0.25), 96000, 44100)
    assert np.sqrt(np.mean(interior(out) ** 2)) < 1e-3
    kept = resample(sine(19000.0, 96000, 0.25), 96000, 44100)
    assert fit_sine(interior(kept[:, 0]), 19000.0, 44100)[0] == pytest.approx(0.5, abs=5e-3)


def test_tabulated_and_per_block_phases_agree(monkeypatch):
    audio = np.random.default_rng(1).standard_normal((20000, 2)).astype(np.float32)
    tabulated = resample(audio, 48000, 44100)
    monkeypatch.setattr(audio_input, "_MAX_BANK", 0)
    monkeypatch.setattr(audio_input, "_BLOCK", 1000)  # several blocks
    per_block = resample(audio, 48000, 44100)
    assert np.abs(tabulated - per_block).max() < 1e-5
    constant = resample(np.full((5000, 1), 0.25, np.float32), 32000, 44100)
    assert np.abs(interior(constant) - 0.25).max() < 1e-5  # unit gain at DC


def test_channel_mixing():
    stereo = np.stack([np.full(10, 0.2), np.full(10, 0.6)], axis=1).astype(np.float32)
    mono, how = mix_channels(stereo, 1)
    assert mono.shape == (10, 1) and np.allclose(mono, 0.4) and how == "down-mixed: mean of 2 channels"
    up, how = mix_channels(mono, 2)
    assert np.array_equal(up, np.repeat(mono, 2, axis=1)) and how == "up-mixed 1 to 2 channels by repeating"
    quad = np.arange(8, dtype=np.float32).reshape(2, 4)
    two, _ = mix_channels(quad, 2)
    assert np.array_equal(two, np.array([[1, 2], [5, 6]], np.float32))  # channels (0, 2) and (1, 3) averaged
    same, how = mix_channels(stereo, 2)
    assert how == "none" and np.array_equal(same, stereo)
    with pytest.raises(ValueError, match="channels must be an integer >= 1"):
        mix_channels(stereo, 0)


@pytest.fixture()
def audio_folder(tmp_path):
    (tmp_path / "set" / "sub").mkdir(parents=True)
    soundfile.write(tmp_path / "set" / "tone.wav", sine(1000.0, 48000, 0.2, channels=2), 48000, subtype="PCM_16")
    soundfile.write(tmp_path / "set" / "sub" / "low tone.flac", sine(500.0, 22050, 0.3), 22050)
    (tmp_path / "set" / ".hidden").write_text("ignored")
    return tmp_path / "set"


def test_scan_and_load_a_folder(audio_folder):
    sources = scan_audio("file://" + str(audio_folder))
    assert [(s.song_id, s.sampling_rate, s.channels, s.frames, s.format) for s in sources] == [
        ("sub.low_tone", 22050, 1, 6615, "FLAC"),
        ("tone", 48000, 2, 9600, "WAV"),
    ]
    audio, note = load_audio(sources[1], 44100, 1)
    assert audio.shape == (8820, 1) and audio.dtype == np.float32
    assert (note.original_sampling_rate, note.original_channels, note.original_frames) == (48000, 2, 9600)
    assert note.resampled and note.channel_mix == "down-mixed: mean of 2 channels"
    assert note.text == "48000 Hz, 2 ch -> 44100 Hz, 1 ch: resampled; down-mixed: mean of 2 channels"
    amplitude, residual = fit_sine(interior(audio[:, 0]), 1000.0, 44100)
    assert amplitude == pytest.approx(0.5, abs=2e-3) and residual < 2e-3  # PCM_16 quantisation included
    same, note = load_audio(str(audio_folder / "tone.wav"), 48000, 2)
    assert note.text.endswith("unchanged") and note.to_dict()["channel_mix"] == "none"
    assert np.abs(same - sine(1000.0, 48000, 0.2, channels=2)).max() < 1e-4
    assert scan_audio(str(audio_folder / "tone.wav"))[0].song_id == "tone"


def test_bad_files_are_all_reported_before_any_work(audio_folder):
    soundfile.write(audio_folder / "empty.wav", np.zeros((0, 1), np.float32), 44100)
    (audio_folder / "noise.wav").write_bytes(np.random.default_rng(0).bytes(2000))
    (audio_folder / "zero.flac").write_bytes(b"")
    (audio_folder / "notes.txt").write_text("not audio")
    with pytest.raises(ValueError) as info:
        scan_audio(str(audio_folder))
    message = str(info.value)
    assert message.startswith("4 bad audio input file(s)")
    for name, problem in [("empty.wav", "empty (0 samples)"), ("noise.wav", "unreadable as audio"),
                          ("zero.flac", "unreadable as audio"), ("notes.txt", "not a WAV/FLAC file")]:
        assert f"{audio_folder / name}: {problem}" in message
    with pytest.raises(ValueError, match="^3 bad audio input file"):
        scan_audio(str(audio_folder), skip_other_files=True)
    with pytest.raises(ValueError, match="noise.wav: unreadable as audio"):
        load_audio(str(audio_folder / "noise.wav"), 44100, 1)


def test_missing_empty_and_clashing_inputs(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        scan_audio(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no WAV/FLAC files found"):
        scan_audio(str(tmp_path / "empty"))
    soundfile.write(tmp_path / "a.wav", sine(100.0, 8000, 0.1), 8000)
    soundfile.write(tmp_path / "a.flac", sine(100.0, 8000, 0.1), 8000)
    with pytest.raises(ValueError, match=r"a.wav: gives song id 'a', as .*a.flac does"):
        scan_audio(str(tmp_path))


def test_an_encode_resume_tells_files_by_their_bytes_not_their_path_or_length(tmp_path):
    """Same path and length, new audio: a new fingerprint; the same bytes in a moved folder: the same."""
    def fingerprint(folder):
        (source,) = scan_audio(str(folder))
        return EncodeFileTask(source, 0, "tiny", 0).fingerprint()

    first = tmp_path / "in"
    first.mkdir()
    rng = np.random.default_rng(0)
    soundfile.write(str(first / "song.wav"), rng.uniform(-0.5, 0.5, (4096, 1)).astype(np.float32), 44100, subtype="FLOAT")
    before = fingerprint(first)
    moved = tmp_path / "moved"
    (first).rename(moved)
    assert fingerprint(moved) == before
    soundfile.write(str(moved / "song.wav"), rng.uniform(-0.5, 0.5, (4096, 1)).astype(np.float32), 44100, subtype="FLOAT")
    after = fingerprint(moved)
    assert after != before and {k for k in after if after[k] != before[k]} == {"content"}
