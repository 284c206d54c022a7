"""Composing one song of a style: a melody on the style's scale and range, a bass on the chord
roots, a bar of drums repeated, mixed to a fixed loudness. A pure function of (style, seed, length).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from pipeline.corpus.styles import STEPS_PER_BAR, STYLES, Style
from pipeline.corpus.synth import DRUM_VOICES, SAMPLE_RATE, add_at, midi_to_hz, render_note

TARGET_RMS = 0.1
PEAK = 0.9
_REST_PROBABILITY = 0.1
_STEPS = np.array([-2, -1, 0, 1, 2])
_STEP_WEIGHTS = np.array([0.15, 0.3, 0.1, 0.3, 0.15])
SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class CorpusSong:
    """One song of the corpus: which style, which seed, where it goes.

    Attributes:
        style: the style's name (a key of :data:`~pipeline.corpus.styles.STYLES`).
        split: ``train`` or ``heldout``.
        index: its number within the style and split.
        seed: what its notes and drums are drawn from.
    """

    style: str
    split: str
    index: int
    seed: int

    @property
    def file(self) -> str:
        """Its path under the split's audio folder (``country/country-003.wav``)."""
        return f"{self.style}/{self.style}-{self.index:03d}.wav"


def song_seed(corpus_seed: int, split: str, style: str, index: int) -> int:
    """The seed of song ``index`` of ``style`` in ``split``: held-out songs never share a
    training song's seed, and adding songs or styles leaves the others unchanged."""
    digest = hashlib.blake2b(f"jukebox-corpus:{corpus_seed}:{split}:{style}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def corpus_songs(corpus_seed: int, split: str, per_style: int, styles: tuple[str, ...] = tuple(STYLES)) -> list[CorpusSong]:
    """The songs of one split: ``per_style`` of each style, in style order."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {SPLITS}")
    unknown = [s for s in styles if s not in STYLES]
    if unknown:
        raise ValueError(f"styles {unknown} are not corpus styles: expected some of {list(STYLES)}")
    return [CorpusSong(style, split, i, song_seed(corpus_seed, split, style, i)) for style in styles for i in range(per_style)]


def _melody(style: Style, rng: np.random.Generator, n_notes: int, notes_per_bar: int, transpose: int) -> list[int | None]:
    """MIDI notes (None: a rest) of a random walk over the scale, drawn to the chord root on
    every bar's first note."""
    notes = style.melody_notes()
    position = int(rng.integers(len(notes)))
    melody: list[int | None] = []
    for i in range(n_notes):
        position += int(rng.choice(_STEPS, p=_STEP_WEIGHTS))
        if position < 0 or position >= len(notes):  # reflect at the range's ends
            position = -position if position < 0 else 2 * (len(notes) - 1) - position
            position = min(max(position, 0), len(notes) - 1)
        if i % notes_per_bar == 0:
            root_class = style.chord_root(i // notes_per_bar) % 12
            near = [j for j in range(max(0, position - 2), min(len(notes), position + 3)) if notes[j] % 12 == root_class]
            if near:
                position = min(near, key=lambda j: abs(j - position))
        rest = i % notes_per_bar != 0 and rng.random() < _REST_PROBABILITY
        melody.append(None if rest else notes[position] + transpose)
    return melody


def render_song(style: Style | str, seed: int, seconds: float) -> tuple[np.ndarray, str]:
    """A song of ``seconds`` seconds: float32 mono audio [samples] at 44.1 kHz (RMS
    :data:`TARGET_RMS`, peaks at most :data:`PEAK`) and its lyrics (two lines of the style's)."""
    style = STYLES[style] if isinstance(style, str) else style
    if not seconds > 0 or not math.isfinite(seconds):
        raise ValueError(f"seconds={seconds!r}: expected a positive length")
    rng = np.random.default_rng(seed)
    length = int(round(seconds * SAMPLE_RATE))
    bpm = style.bpm * rng.uniform(0.97, 1.03)
    transpose = int(rng.integers(-2, 3))
    beat_s = 60.0 / bpm
    note_s = beat_s / style.notes_per_beat
    notes_per_bar = 4 * style.notes_per_beat
    lead = np.zeros(length)
    for i, note in enumerate(_melody(style, rng, math.ceil(seconds / note_s), notes_per_bar, transpose)):
        late = style.swing * note_s if i % 2 else 0.0
        if note is not None:
            sound = render_note(style.lead, midi_to_hz(note), note_s * 0.9 - late / 2, phase=rng.uniform(0, 2 * np.pi))
            add_at(lead, sound, i * note_s + late, gain=rng.uniform(0.75, 1.0))
    bass = np.zeros(length)
    if style.bass is not None:
        for beat in range(math.ceil(seconds / beat_s)):
            root = style.chord_root(beat // 4) - 12 + transpose
            add_at(bass, render_note(style.bass, midi_to_hz(root), beat_s * 0.8), beat * beat_s, gain=rng.uniform(0.8, 1.0))
    drums = np.zeros(length)
    if style.drums is not None:
        step_s = 4 * beat_s / STEPS_PER_BAR
        hits = style.drums.hits()
        for bar in range(math.ceil(seconds / (4 * beat_s))):
            for voice, steps in hits.items():
                for step in steps:
                    add_at(drums, DRUM_VOICES[voice](rng), (bar * STEPS_PER_BAR + step) * step_s, gain=rng.uniform(0.8, 1.0))
    mix = 0.5 * lead + 0.35 * bass + (style.drums.gain if style.drums else 0.0) * drums
    rms = float(np.sqrt(np.mean(mix**2)))
    peak = float(np.max(np.abs(mix)))
    if rms == 0.0:
        raise ValueError(f"song of style {style.name!r} with seed {seed} is silent ({seconds} s): too short for one note?")
    mix *= min(TARGET_RMS / rms, PEAK / peak)
    start = int(rng.integers(len(style.lyrics)))
    lyrics = " ".join(style.lyrics[(start + k) % len(style.lyrics)] for k in range(2))
    return mix.astype(np.float32), lyrics
