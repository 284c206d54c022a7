"""Audio features that tell music from noise, and one style from another.

Every function takes float mono audio [samples] (numpy or torch, any float dtype) at
``sampling_rate`` and returns a Python float. Spectra are Hann-windowed power spectra of frames
of ``n_fft`` samples, half overlapping.
"""
from __future__ import annotations

import numpy as np

_N_FFT = 4096
_FLOOR = 1e-12  # keeps log(0) out of the geometric mean of a spectrum with exact zeros


def _mono(audio) -> np.ndarray:
    array = np.asarray(audio.detach().cpu() if hasattr(audio, "detach") else audio, dtype=np.float64)
    if array.ndim == 2:  # [samples, channels]
        array = array.mean(axis=1)
    if array.ndim != 1:
        raise ValueError(f"audio must be [samples] or [samples, channels], got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("audio holds NaN or infinite samples")
    return array


def frame_spectra(audio, n_fft: int = _N_FFT) -> np.ndarray:
    """Power spectra of half-overlapping Hann frames: float64 [frames, n_fft // 2 + 1] (one
    zero-padded frame when the audio is shorter than ``n_fft``)."""
    x = _mono(audio)
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    hop = n_fft // 2
    starts = np.arange(0, len(x) - n_fft + 1, hop)
    frames = np.stack([x[s : s + n_fft] for s in starts]) * np.hanning(n_fft)
    return np.abs(np.fft.rfft(frames, axis=1)) ** 2


def average_spectrum(audio, n_fft: int = _N_FFT) -> np.ndarray:
    """The mean of :func:`frame_spectra` over frames: float64 [n_fft // 2 + 1]."""
    return frame_spectra(audio, n_fft).mean(axis=0)


def spectral_peak_hz(audio, sampling_rate: int, n_fft: int = _N_FFT) -> float:
    """Frequency of the loudest bin of the song's average power spectrum (Nyquist for the
    high-frequency noise of an untrained decoder, the tonic's region for music)."""
    return float(np.argmax(average_spectrum(audio, n_fft)) * sampling_rate / n_fft)


def spectral_flatness(audio, n_fft: int = _N_FFT) -> float:
    """Geometric over arithmetic mean of the song's average power spectrum (DC left out):
    1 for white noise, near 0 for a few tones."""
    power = average_spectrum(audio, n_fft)[1:] + _FLOOR
    return float(np.exp(np.mean(np.log(power))) / np.mean(power))


def rms(audio) -> float:
    """Root mean square of the samples."""
    x = _mono(audio)
    return float(np.sqrt(np.mean(x**2))) if len(x) else 0.0


def waveform_correlation(a, b) -> float:
    """Pearson correlation of two waveforms over their common length (0 when either is constant)."""
    x, y = _mono(a), _mono(b)
    n = min(len(x), len(y))
    x, y = x[:n] - x[:n].mean(), y[:n] - y[:n].mean()
    denominator = np.sqrt(np.sum(x**2) * np.sum(y**2))
    return float(np.sum(x * y) / denominator) if denominator > 0 else 0.0


def median_peak_hz(audio, sampling_rate: int, n_fft: int = 2048, band: tuple[float, float] = (50.0, 5000.0)) -> float:
    """The median over frames of each frame's loudest frequency within ``band``; frames quieter
    than a tenth of the median frame are left out (rests). Tracks the register a song plays in:
    the feature that tells the corpus's country songs (C3-E4) from its jazz songs (C5-E6)."""
    spectra = frame_spectra(audio, n_fft)
    freqs = np.arange(spectra.shape[1]) * sampling_rate / n_fft
    inside = (freqs >= band[0]) & (freqs <= band[1])
    energy = spectra.sum(axis=1)
    loud = energy >= 0.1 * np.median(energy)
    if not loud.any():
        return float("nan")
    peaks = freqs[inside][np.argmax(spectra[loud][:, inside], axis=1)]
    return float(np.median(peaks))
