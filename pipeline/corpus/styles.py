"""The styles of the synthetic corpus, each labelled with a genre and an artist that every label
version of the released vocabulary knows (v3 for the top prior, v2 for the upsamplers).

The styles differ in ways one can hear and measure:

| style | genre / artist | scale | melody range | tempo | timbre | drums |
|---|---|---|---|---|---|---|
| country | country / Alan Jackson | major pentatonic | C3-E4 (131-330 Hz) | 100 bpm, eighths | plucked, bright | kick 1 & 3, snare 2 & 4 |
| jazz | jazz / Ella Fitzgerald | dorian | C5-E6 (523-1319 Hz) | 140 bpm, swung eighths | flute-like, vibrato | soft hi-hat on the swing |
| electronic | electronic / Kraftwerk | natural minor | A3-A4 (220-440 Hz) | 128 bpm, sixteenths | sawtooth, held | kick on every beat, off-beat hats |
| classical | classical / Ludwig van Beethoven | major | G4-G5 (392-784 Hz) | 72 bpm, quarters | organ (odd harmonics), held | none |

Country and jazz, the two songs of the default run, lie two octaves apart: their median pitch is
what tells them apart (``models.evaluation.median_pitch_hz``).
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.corpus.synth import Timbre

STEPS_PER_BAR = 16  # drum patterns are written in sixteenth notes


@dataclass(frozen=True)
class DrumPattern:
    """One bar of drums: per voice (``kick``, ``snare``, ``hat``) a string of 16 sixteenth-note
    steps, ``x`` a hit and ``.`` a rest; ``gain`` the kit's level against the melody."""

    kick: str = "." * STEPS_PER_BAR
    snare: str = "." * STEPS_PER_BAR
    hat: str = "." * STEPS_PER_BAR
    gain: float = 0.5

    def __post_init__(self) -> None:
        for voice in ("kick", "snare", "hat"):
            steps = getattr(self, voice)
            if len(steps) != STEPS_PER_BAR or set(steps) - {"x", "."}:
                raise ValueError(f"DrumPattern.{voice}={steps!r}: expected {STEPS_PER_BAR} steps of 'x' or '.'")

    def hits(self) -> dict[str, list[int]]:
        """The steps (0-15) each voice strikes."""
        return {voice: [i for i, c in enumerate(getattr(self, voice)) if c == "x"] for voice in ("kick", "snare", "hat")}


@dataclass(frozen=True)
class Style:
    """A style: how its songs are composed and played.

    Attributes:
        name: the style's id (folder and song names).
        genre, artist: its labels (names of the released vocabulary).
        scale: semitones above the tonic of the scale's degrees.
        tonic: MIDI note of the tonic (the scale repeats by octaves from it).
        low, high: MIDI range of the melody.
        bpm: tempo.
        notes_per_beat: melody notes per beat (2: eighths, 4: sixteenths).
        swing: how late every other melody note comes, as a fraction of a note (0: straight).
        lead: the melody's instrument.
        bass: the bass's instrument (None: no bass); it plays the bar's chord root, an octave
            below the tonic's octave, on every beat.
        drums: one bar of drums (None: no drums).
        progression: scale degrees (0-based) of the chord roots, one per bar, cycled.
        lyrics: lines; each song sings a few of them.
    """

    name: str
    genre: str
    artist: str
    scale: tuple[int, ...]
    tonic: int
    low: int
    high: int
    bpm: float
    notes_per_beat: int
    swing: float
    lead: Timbre
    bass: Timbre | None
    drums: DrumPattern | None
    progression: tuple[int, ...]
    lyrics: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.scale or self.scale[0] != 0 or sorted(self.scale) != list(self.scale) or self.scale[-1] >= 12:
            raise ValueError(f"Style {self.name!r}: scale must rise from 0 within an octave, got {self.scale}")
        if not self.low < self.high:
            raise ValueError(f"Style {self.name!r}: low={self.low} must be below high={self.high}")
        if self.bpm <= 0 or self.notes_per_beat < 1 or not 0 <= self.swing < 1:
            raise ValueError(f"Style {self.name!r}: bpm > 0, notes_per_beat >= 1 and swing in [0, 1) expected, "
                             f"got {self.bpm}, {self.notes_per_beat}, {self.swing}")
        if not self.progression or not self.lyrics:
            raise ValueError(f"Style {self.name!r}: a chord progression and lyrics are needed")

    def melody_notes(self) -> list[int]:
        """Every MIDI note of the scale within [low, high], rising."""
        return [n for n in range(self.low, self.high + 1) if (n - self.tonic) % 12 in self.scale]

    def chord_root(self, bar: int) -> int:
        """MIDI note of bar ``bar``'s chord root, in the tonic's octave."""
        degree = self.progression[bar % len(self.progression)]
        octave, step = divmod(degree, len(self.scale))
        return self.tonic + 12 * octave + self.scale[step]


_PLUCK = Timbre(harmonics=(1.0, 0.6, 0.45, 0.3, 0.2, 0.12, 0.08), attack_s=0.003, decay_s=0.35, brightness=0.8, release_s=0.04)
_FLUTE = Timbre(harmonics=(1.0, 0.12, 0.04), attack_s=0.04, release_s=0.06, vibrato_hz=5.5, vibrato_depth=0.006)
_SAW = Timbre(harmonics=tuple(1.0 / k for k in range(1, 13)), attack_s=0.006, release_s=0.02)
_ORGAN = Timbre(harmonics=(1.0, 0.0, 0.5, 0.0, 0.3, 0.0, 0.15), attack_s=0.03, release_s=0.12)
_BASS = Timbre(harmonics=(1.0, 0.4, 0.15), attack_s=0.004, decay_s=0.5, brightness=0.5, release_s=0.05)

STYLES: dict[str, Style] = {
    s.name: s
    for s in (
        Style(
            name="country", genre="country", artist="Alan Jackson",
            scale=(0, 2, 4, 7, 9), tonic=48, low=48, high=64, bpm=100, notes_per_beat=2, swing=0.0,
            lead=_PLUCK, bass=_BASS, drums=DrumPattern(kick="x.......x.......", snare="....x.......x...", gain=0.45),
            progression=(0, 3, 4, 0),
            lyrics=("Old town road, the morning sun is rising slow,",
                    "I pack my bags and down the dusty road I go.",
                    "Pickup truck and a radio playing low,",
                    "fields of gold wherever the river flows.",
                    "Mama's porch light shining through the rain,",
                    "I'll be home before the evening train."),
        ),
        Style(
            name="jazz", genre="jazz", artist="Ella Fitzgerald",
            scale=(0, 2, 3, 5, 7, 9, 10), tonic=72, low=72, high=88, bpm=140, notes_per_beat=2, swing=0.33,
            lead=_FLUTE, bass=None, drums=DrumPattern(hat="x..x..x.x..x..x.", gain=0.35),
            progression=(1, 4, 0, 0),
            lyrics=("Midnight in the city, the lights are burning low,",
                    "sing me something sweet before you go.",
                    "Blue moon over Harlem, a trumpet in the rain,",
                    "dance with me till morning, darling, once again.",
                    "Whisper me a melody, soft as evening air,",
                    "every little note says you are there."),
        ),
        Style(
            name="electronic", genre="electronic", artist="Kraftwerk",
            scale=(0, 2, 3, 5, 7, 8, 10), tonic=57, low=57, high=69, bpm=128, notes_per_beat=4, swing=0.0,
            lead=_SAW, bass=_BASS, drums=DrumPattern(kick="x...x...x...x...", hat="..x...x...x...x.", gain=0.5),
            progression=(0, 5, 2, 6),
            lyrics=("We are the robots, we are running on the grid,",
                    "numbers in the wires, all the signals that we hid.",
                    "Autobahn at midnight, neon on the line,",
                    "pocket calculator keeping perfect time."),
        ),
        Style(
            name="classical", genre="classical", artist="Ludwig van Beethoven",
            scale=(0, 2, 4, 5, 7, 9, 11), tonic=67, low=67, high=79, bpm=72, notes_per_beat=1, swing=0.0,
            lead=_ORGAN, bass=None, drums=None,
            progression=(0, 3, 4, 0),
            lyrics=("Joy, bright spark of divinity,",
                    "daughter of Elysium,",
                    "we enter, drunk with fire,",
                    "heavenly one, your sanctuary."),
        ),
    )
}
