"""A small labelled audio corpus written as other tools write one: WAV/FLAC files at several rates
and channel counts, and a CSV labels manifest beside them."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile

# (file, rate, channels, artist, genre, base pitch Hz, lyrics): names the tiny model's vocabulary knows
SONGS = [
    ("country/a.wav", 44100, 1, "Alan Jackson", "country", 196.0, "old town road, the morning sun"),
    ("country/b.flac", 48000, 2, "Alan Jackson", "country", 220.0, "down the dusty road I go"),
    ("jazz/c.wav", 44100, 1, "Ella Fitzgerald", "jazz", 330.0, "midnight in the city"),
    ("jazz/d.wav", 22050, 1, "Ella Fitzgerald", "jazz", 294.0, ""),
]
SONG_IDS = ["country.a", "country.b", "jazz.c", "jazz.d"]


def melody(seconds: float, rate: int, channels: int, base: float, seed: int) -> np.ndarray:
    """float32 [samples, channels]: a seeded melody of harmonic notes, eight per second."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    pitches = base * 2 ** (rng.integers(0, 12, int(seconds * 8) + 1) / 12)
    frequency = np.repeat(pitches, rate // 8 + 1)[:n]
    phase = 2 * np.pi * np.cumsum(frequency) / rate
    wave = 0.35 * np.sin(phase) + 0.15 * np.sin(2 * phase) + 0.01 * rng.standard_normal(n)
    return np.stack([wave * (1 - 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)


def write_corpus(root: Path, seconds: float = 1.5, labels: bool = True) -> Path:
    """The corpus under ``root`` and, with ``labels``, ``root/labels.csv``; returns root."""
    for index, (name, rate, channels, _, _, base, _) in enumerate(SONGS):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, melody(seconds, rate, channels, base, index), rate)
    if labels:
        with open(root / "labels.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, ["file", "artist", "genres", "lyrics"])
            writer.writeheader()
            for name, _, _, artist, genre, _, lyrics in SONGS:
                writer.writerow({"file": name, "artist": artist, "genres": genre, "lyrics": lyrics})
    return root
