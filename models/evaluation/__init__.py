"""Measures of what a model learned (held-out reconstruction, cross-entropy, sampled-token
entropy) and audio features that tell music from noise and one style from another."""
from models.evaluation.audio_features import (
    average_spectrum,
    frame_spectra,
    median_peak_hz,
    rms,
    spectral_flatness,
    spectral_peak_hz,
    waveform_correlation,
)
from models.evaluation.measures import prior_cross_entropy, reconstruction_snr, tiling_windows, token_entropy

__all__ = [
    "average_spectrum",
    "frame_spectra",
    "median_peak_hz",
    "prior_cross_entropy",
    "reconstruction_snr",
    "rms",
    "spectral_flatness",
    "spectral_peak_hz",
    "tiling_windows",
    "token_entropy",
    "waveform_correlation",
]
