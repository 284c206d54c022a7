"""Instruments and drums of the synthetic corpus: additive synthesis in numpy, no state.

Every function returns float64 mono audio at :data:`SAMPLE_RATE` and draws its randomness (noise of
the drums) from the generator it is given, so a song is a pure function of its seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 44100
_NYQUIST_MARGIN = 0.45  # harmonics above this fraction of the rate are left out (no aliasing)


def midi_to_hz(note: float) -> float:
    """Frequency of MIDI note ``note`` (69 = A4 = 440 Hz)."""
    return 440.0 * 2.0 ** ((note - 69.0) / 12.0)


@dataclass(frozen=True)
class Timbre:
    """An instrument: a sum of harmonics under an attack/decay envelope.

    Attributes:
        harmonics: amplitude of harmonic ``k + 1`` (the fundamental first).
        attack_s: linear rise time of each note.
        decay_s: time constant of the fundamental's exponential decay (plucked); None holds the
            note at full level (organ-like). Either way the note fades out over ``release_s``
            after its end.
        brightness: harmonic ``k`` decays with time constant ``decay_s / k ** brightness``, so
            plucked notes lose their upper harmonics first.
        release_s: the fade after the note's end.
        vibrato_hz, vibrato_depth: sinusoidal frequency modulation (depth: fraction of the pitch).
    """

    harmonics: tuple[float, ...]
    attack_s: float = 0.005
    decay_s: float | None = None
    brightness: float = 0.0
    release_s: float = 0.05
    vibrato_hz: float = 0.0
    vibrato_depth: float = 0.0

    def __post_init__(self) -> None:
        if not self.harmonics or min(self.harmonics) < 0:
            raise ValueError(f"Timbre.harmonics must be non-negative amplitudes, got {self.harmonics}")
        if self.attack_s <= 0 or self.release_s <= 0 or (self.decay_s is not None and self.decay_s <= 0):
            raise ValueError(f"Timbre times must be > 0, got attack_s={self.attack_s}, decay_s={self.decay_s}, release_s={self.release_s}")


def render_note(timbre: Timbre, hz: float, duration_s: float, phase: float = 0.0) -> np.ndarray:
    """One note of ``duration_s`` seconds (plus its release), float64 [samples]."""
    length = int(round((duration_s + timbre.release_s) * SAMPLE_RATE))
    t = np.arange(length) / SAMPLE_RATE
    inst_hz = hz * (1.0 + timbre.vibrato_depth * np.sin(2 * np.pi * timbre.vibrato_hz * t))
    base_phase = phase + 2 * np.pi * np.cumsum(inst_hz) / SAMPLE_RATE
    # rise over attack_s, fade to 0 over the release_s after the note's end
    shape = np.minimum(t / timbre.attack_s, 1.0) * np.clip((duration_s + timbre.release_s - t) / timbre.release_s, 0.0, 1.0)
    out = np.zeros(length)
    for k, amplitude in enumerate(timbre.harmonics, start=1):
        if amplitude == 0 or k * hz > _NYQUIST_MARGIN * SAMPLE_RATE:
            continue
        envelope = shape
        if timbre.decay_s is not None:
            envelope = shape * np.exp(-t * k ** timbre.brightness / timbre.decay_s)
        out += amplitude * envelope * np.sin(k * base_phase)
    return out


def kick(rng: np.random.Generator) -> np.ndarray:
    """A bass drum: a sine sweeping from 130 Hz down to 45 Hz, decaying in about 0.15 s."""
    t = np.arange(int(0.35 * SAMPLE_RATE)) / SAMPLE_RATE
    hz = 45.0 + 85.0 * np.exp(-t / 0.03)
    return np.sin(2 * np.pi * np.cumsum(hz) / SAMPLE_RATE) * np.exp(-t / 0.12)


def snare(rng: np.random.Generator) -> np.ndarray:
    """A snare: a 190 Hz body and a burst of band-limited noise."""
    t = np.arange(int(0.25 * SAMPLE_RATE)) / SAMPLE_RATE
    noise = np.diff(rng.standard_normal(len(t) + 1))  # first difference: tilts the noise upwards
    noise = np.convolve(noise, np.ones(4) / 4, mode="same")  # and removes its top octave
    return 0.6 * np.sin(2 * np.pi * 190.0 * t) * np.exp(-t / 0.05) + 0.35 * noise * np.exp(-t / 0.06)


def hat(rng: np.random.Generator) -> np.ndarray:
    """A closed hi-hat: a short tick of high-passed noise."""
    t = np.arange(int(0.06 * SAMPLE_RATE)) / SAMPLE_RATE
    noise = np.diff(rng.standard_normal(len(t) + 2), n=2)
    return 0.12 * noise * np.exp(-t / 0.012)


DRUM_VOICES = {"kick": kick, "snare": snare, "hat": hat}


def add_at(track: np.ndarray, sound: np.ndarray, start_s: float, gain: float = 1.0) -> None:
    """Mix ``sound`` into ``track`` from ``start_s`` seconds (cut at the track's end), in place."""
    start = int(round(start_s * SAMPLE_RATE))
    if start >= len(track):
        return
    end = min(len(track), start + len(sound))
    track[start:end] += gain * sound[: end - start]
