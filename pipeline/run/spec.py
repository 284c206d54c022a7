"""What a run is made of: its stages and levels, its songs and their sampling options.

Shared by the run config (:mod:`pipeline.run.config`), song grids (:mod:`pipeline.run.grid`) and plans
(:mod:`pipeline.execute.plan`); plain frozen dataclasses and enums, validated on construction.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum

from models.prior.sampling import SamplingOptions

AUDIO_SUFFIXES = (".wav", ".flac")
PROMPT_SEPARATOR = "#"


class Stage(str, Enum):
    """The pipeline's stages, in data-flow order; each is one pool of Ray actors.

    ENCODE turns audio into tokens: the only stage of encode-only runs, and the source of the
    prompts of generation runs whose songs are primed from audio files.
    """

    ENCODE = "encode"
    TOKENIZE = "tokenize"
    TOP = "top"
    MIDDLE = "middle"
    BOTTOM = "bottom"
    DECODE = "decode"


# VQ-VAE level (0 = finest) of each sampling stage.
_STAGE_LEVEL = {Stage.TOP: 2, Stage.MIDDLE: 1, Stage.BOTTOM: 0}
SAMPLING_STAGES = (Stage.TOP, Stage.MIDDLE, Stage.BOTTOM)
N_LEVELS = len(SAMPLING_STAGES)


def stage_level(stage: Stage) -> int:
    """VQ-VAE level sampled by a prior stage (top = 2, middle = 1, bottom = 0)."""
    if stage not in _STAGE_LEVEL:
        raise ValueError(f"stage {stage.value!r} samples no level; expected one of {[s.value for s in SAMPLING_STAGES]}")
    return _STAGE_LEVEL[stage]


def level_stage(level: int) -> Stage:
    """The prior stage sampling VQ-VAE ``level``."""
    for stage, value in _STAGE_LEVEL.items():
        if value == level:
            return stage
    raise ValueError(f"level must be one of {sorted(_STAGE_LEVEL.values())}, got {level!r}")


# Seeds are stored in the manifest as int64.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def check_seed(value: int | None, name: str) -> None:
    """ValueError naming ``name`` unless ``value`` (a seed, None = derived) fits in an int64."""
    if value is not None and not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"{name}={value} is out of range: seeds are 64-bit integers, {INT64_MIN} to {INT64_MAX}")


_SONG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class PromptRef:
    """Where a song's prompt comes from: an audio file, or a song of a token dataset.

    Attributes:
        audio: a WAV/FLAC file (local or fsspec URL), encoded by the VQ-VAE first.
        dataset: the output URL of an earlier run (encode-only or generation) holding
            ``tokens/level={L}/{song_id}.parquet``.
        song_id: the song of ``dataset`` whose tokens are the prompt.
    """

    audio: str | None = None
    dataset: str | None = None
    song_id: str | None = None

    @classmethod
    def parse(cls, text: str) -> PromptRef:
        """``path/or/url.wav`` (or ``.flac``) or ``DATASET_URL#SONG_ID``; ValueError otherwise."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"prompt must be a WAV/FLAC path or URL, or DATASET_URL{PROMPT_SEPARATOR}SONG_ID, got {text!r}")
        if text.split("?", 1)[0].lower().endswith(AUDIO_SUFFIXES):
            return cls(audio=text)
        dataset, sep, song_id = text.rpartition(PROMPT_SEPARATOR)
        if not sep or not dataset or not _SONG_ID.fullmatch(song_id):
            raise ValueError(
                f"prompt {text!r} is neither a WAV/FLAC file (name ending in {', '.join(AUDIO_SUFFIXES)}) nor "
                f"DATASET_URL{PROMPT_SEPARATOR}SONG_ID (a song of an encode-only or generation output)"
            )
        return cls(dataset=dataset, song_id=song_id)


@dataclass(frozen=True)
class SongSpec:
    """One song to generate.

    Attributes:
        id: unique name, used in file names (letters, digits, ``.``, ``_``, ``-``).
        artist, genres, lyrics: conditioning; ``genres`` as the tokenizer takes them.
        duration_s: length in seconds (rounded down to whole top-level tokens).
        seed: the song's seed; None derives it from the run seed and the id.
        lyrics_file: where the lyrics were read from, if not given inline.
        prompt: the song's beginning, continued by sampling: a WAV/FLAC file (encoded first) or
            ``DATASET_URL#SONG_ID`` (tokens of an encode-only or generation output). Every level
            starts from the prompt's tokens, as the original primed sampling does.
        prompt_s: seconds of the prompt to keep (None: all of it), cut to whole top-level tokens.
    """

    id: str
    artist: str
    genres: tuple[str, ...]
    duration_s: float
    lyrics: str = ""
    seed: int | None = None
    lyrics_file: str | None = None
    prompt: str | None = None
    prompt_s: float | None = None

    def __post_init__(self) -> None:
        # messages start with the field's name: callers prefix where the song came from
        if not _SONG_ID.fullmatch(self.id):
            raise ValueError(f"id={self.id!r} is invalid: expected 1-128 letters, digits, '.', '_' or '-' starting with a letter or digit")
        if not self.genres or any(not g.strip() for g in self.genres):
            raise ValueError(f"genres={list(self.genres)}: expected one or more non-empty names")
        if not self.artist.strip():
            raise ValueError(f"artist={self.artist!r}: expected a non-empty name")
        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise ValueError(f"duration_s={self.duration_s}: expected a finite number of seconds > 0")
        check_seed(self.seed, "seed")
        if self.prompt is not None:
            PromptRef.parse(self.prompt)  # its errors start with "prompt"
        if self.prompt_s is not None:
            if self.prompt is None:
                raise ValueError(f"prompt_s={self.prompt_s} needs a prompt")
            if not (math.isfinite(self.prompt_s) and 0 < self.prompt_s < self.duration_s):
                raise ValueError(f"prompt_s={self.prompt_s}: expected seconds > 0 and below duration_s={self.duration_s}")

    @property
    def prompt_ref(self) -> PromptRef | None:
        """The parsed prompt, None without one."""
        return None if self.prompt is None else PromptRef.parse(self.prompt)


@dataclass(frozen=True)
class SamplingSpec:
    """Which levels to sample and each level's options.

    ``levels`` must be the top level followed by the levels under it without gaps (``[top]``,
    ``[top, middle]`` or ``[top, middle, bottom]``): a level needs the one above it. Audio is
    decoded from the lowest sampled level.
    """

    levels: tuple[str, ...] | tuple[Stage, ...] = SAMPLING_STAGES
    top: SamplingOptions = SamplingOptions(temperature=0.98)
    middle: SamplingOptions = SamplingOptions(temperature=0.99)
    bottom: SamplingOptions = SamplingOptions(temperature=0.99)

    def __post_init__(self) -> None:
        names = [s.value if isinstance(s, Stage) else s for s in self.levels]
        bad = [n for n in names if n not in {s.value for s in SAMPLING_STAGES}]
        if bad:
            raise ValueError(f"levels has unknown sampling level(s) {bad}: expected names from {[s.value for s in SAMPLING_STAGES]}")
        object.__setattr__(self, "levels", tuple(Stage(n) for n in names))
        expected = SAMPLING_STAGES[: len(self.levels)]
        if not self.levels or tuple(self.levels) != expected:
            raise ValueError(
                f"levels={[s.value for s in self.levels]} is not sampleable: a level needs the one above it, "
                f"so use one of {[[s.value for s in SAMPLING_STAGES[:n]] for n in range(1, N_LEVELS + 1)]}"
            )

    def for_stage(self, stage: Stage) -> SamplingOptions:
        """Options of one prior stage."""
        return {Stage.TOP: self.top, Stage.MIDDLE: self.middle, Stage.BOTTOM: self.bottom}[stage]
