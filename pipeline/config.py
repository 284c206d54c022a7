"""Typed options of a pipeline run, read once from the Hydra config.

``RunConfig.from_dict`` turns the composed (and resolved) Hydra config into frozen dataclasses and
refuses anything malformed with a ``ValueError`` naming the field (``songs[1].duration_s``,
``stages.top.num_gpus``...), unknown keys included, so a typo fails before Ray starts or a model
loads. Checks that need the model's own config (durations, levels) live in :mod:`pipeline.validate`.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import fsspec

from models.prior.sampling import SamplingOptions
from pipeline.typed import build_dataclass


class Stage(str, Enum):
    """The pipeline's stages, in data-flow order; each is one pool of Ray actors."""

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


class ScheduleMode(str, Enum):
    """How windows of different levels are ordered.

    PIPELINED: a window starts as soon as its inputs exist (all levels at once).
    LEVEL_BY_LEVEL: a level starts only once the level above is complete (the reference's order);
    kept for benchmarks and debugging.
    """

    PIPELINED = "pipelined"
    LEVEL_BY_LEVEL = "level_by_level"


_SONG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class ModelSpec:
    """Which model to run: a preset name (random weights from ``init_seed``) or a checkpoint.

    Attributes:
        preset: name of a preset in ``conf/model/`` (``tiny``, ``1b_lyrics``, ``5b``, ``5b_lyrics``).
        checkpoint: a ``save_pretrained`` directory, local or fsspec URL; wins over ``preset``.
        init_seed: seed of the random weights of a preset (every actor builds identical weights).
    """

    preset: str | None = "tiny"
    checkpoint: str | None = None
    init_seed: int = 0

    def __post_init__(self) -> None:
        if self.preset is None and self.checkpoint is None:
            raise ValueError("model: set model.preset (e.g. tiny) or model.checkpoint (a directory or URL), got neither")

    @property
    def source(self) -> str:
        """What the model loaders take: the checkpoint when given, else the preset name."""
        return self.checkpoint if self.checkpoint is not None else str(self.preset)


@dataclass(frozen=True)
class SongSpec:
    """One song to generate.

    Attributes:
        id: unique name, used in file names (letters, digits, ``.``, ``_``, ``-``).
        artist, genres, lyrics: conditioning; ``genres`` as the tokenizer takes them.
        duration_s: length in seconds (rounded down to whole top-level tokens).
        seed: the song's seed; None derives it from the run seed and the id.
        lyrics_file: where the lyrics were read from, if not given inline.
    """

    id: str
    artist: str
    genres: tuple[str, ...]
    duration_s: float
    lyrics: str = ""
    seed: int | None = None
    lyrics_file: str | None = None

    def __post_init__(self) -> None:
        if not _SONG_ID.fullmatch(self.id):
            raise ValueError(f"song id {self.id!r} is invalid: expected 1-128 letters, digits, '.', '_' or '-' starting with a letter or digit")
        if not self.genres or any(not g.strip() for g in self.genres):
            raise ValueError(f"song {self.id!r}: genres must be one or more non-empty names, got {list(self.genres)}")
        if not self.artist.strip():
            raise ValueError(f"song {self.id!r}: artist must be a non-empty name")
        if not self.duration_s > 0:
            raise ValueError(f"song {self.id!r}: duration_s must be > 0 seconds, got {self.duration_s}")


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

    @property
    def lowest_level(self) -> int:
        """The finest level sampled: the one audio is decoded from."""
        return stage_level(self.levels[-1])


@dataclass(frozen=True)
class PoolSpec:
    """Resources and behaviour of one stage's actor pool.

    Attributes:
        num_actors: actors in the pool.
        num_cpus, num_gpus: per actor; ``num_gpus`` may be a fraction (several actors per GPU) or
            a whole number. A stage's GPUs are its own: fractional actors are packed onto whole
            GPUs reserved for the stage (or for its ``gpu_group``).
        max_batch: windows (of different songs) sampled in one forward pass.
        batch_wait_ms: how long an actor waits for more requests before running a batch; 0 runs
            what is pending whenever the model is free (requests that arrive during a forward
            pass form the next batch).
        label_selector: node labels the actors must run on (``{"stage": "top"}``).
        resources: custom Ray resources per actor (``{"top_node": 1}``).
        gpu_group: stages naming the same group share its GPUs; None keeps the stage's GPUs apart.
        torch_threads: ``torch.set_num_threads`` in each actor.
        nice: CPU scheduling niceness of the actors' processes (0-19, higher yields the CPU to
            others). On CPU-only runs the finest level is the critical path: giving the upper
            levels a higher niceness keeps it fed without slowing it.
        max_restarts, max_task_retries: Ray fault tolerance of the actors (-1 = unlimited).
    """

    num_actors: int = 1
    num_cpus: float = 0.25
    num_gpus: float = 0.0
    max_batch: int = 1
    batch_wait_ms: float = 0.0
    label_selector: dict[str, str] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=dict)
    gpu_group: str | None = None
    torch_threads: int = 1
    nice: int = 0
    max_restarts: int = 3
    max_task_retries: int = 3

    def __post_init__(self) -> None:
        if self.num_actors < 1:
            raise ValueError(f"num_actors must be >= 1, got {self.num_actors}")
        for name in ("num_cpus", "num_gpus", "batch_wait_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.num_gpus > 1 and self.num_gpus != int(self.num_gpus):
            raise ValueError(f"num_gpus must be a fraction <= 1 or a whole number, got {self.num_gpus}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1, got {self.torch_threads}")
        if not 0 <= self.nice <= 19:
            raise ValueError(f"nice must be in [0, 19] (raising a process's priority needs root), got {self.nice}")
        for name in ("max_restarts", "max_task_retries"):
            if getattr(self, name) < -1:
                raise ValueError(f"{name} must be >= -1 (-1 = unlimited), got {getattr(self, name)}")
        bad = {k: v for k, v in self.resources.items() if v < 0}
        if bad:
            raise ValueError(f"resources must be >= 0, got {bad}")


@dataclass(frozen=True)
class RaySpec:
    """How to reach Ray.

    Attributes:
        address: None starts a local Ray for the run; ``auto`` or ``ray://host:port`` joins a cluster.
        num_cpus, num_gpus: resources of a local Ray (None = what the machine has).
        namespace: Ray namespace of the run's named actors.
        placement_timeout_s: how long a stage may wait for its resources before the run fails.
        ready_timeout_s: how long actors may take to load their model once placed.
        runtime_env: Ray runtime environment (e.g. ``working_dir`` or ``pip`` for a cluster).
        include_dashboard: start the dashboard with a local Ray.
    """

    address: str | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None
    namespace: str = "jukebox"
    placement_timeout_s: float = 60.0
    ready_timeout_s: float = 600.0
    runtime_env: dict[str, Any] = field(default_factory=dict)
    include_dashboard: bool = False

    def __post_init__(self) -> None:
        for name in ("num_cpus", "num_gpus"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 or null, got {value}")
        for name in ("placement_timeout_s", "ready_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)}")


@dataclass(frozen=True)
class OutputSpec:
    """Where results go.

    Attributes:
        url: output root, a local path or fsspec URL (``s3://bucket/run``); the same URL resumes.
        keep_parts: keep the per-window Parquet parts after a song is compacted.
    """

    url: str = "outputs/jukebox"
    keep_parts: bool = False

    def __post_init__(self) -> None:
        if not self.url.strip():
            raise ValueError("output.url must be a path or URL, got an empty string")


@dataclass(frozen=True)
class AudioSpec:
    """Decoding and WAV options.

    Attributes:
        previews: also decode the upper sampled levels into preview WAVs.
        wav_subtype: soundfile subtype of the final WAVs (``PCM_16``, ``PCM_24``, ``FLOAT``).
        margin_tokens: tokens decoded on each side of a chunk so that chunked audio equals
            whole-song audio; None measures the decoder's receptive field once per actor.
    """

    previews: bool = False
    wav_subtype: str = "PCM_16"
    margin_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.wav_subtype not in ("PCM_16", "PCM_24", "PCM_32", "FLOAT"):
            raise ValueError(f"audio.wav_subtype must be one of PCM_16, PCM_24, PCM_32, FLOAT, got {self.wav_subtype!r}")
        if self.margin_tokens is not None and self.margin_tokens < 0:
            raise ValueError(f"audio.margin_tokens must be >= 0 or null, got {self.margin_tokens}")


@dataclass(frozen=True)
class SchedulerSpec:
    """Driver-side scheduling.

    Attributes:
        mode: pipelined (default) or level_by_level.
        max_songs_in_flight: songs whose windows are submitted at once (admission control).
        progress_interval_s: seconds between progress lines.
    """

    mode: ScheduleMode = ScheduleMode.PIPELINED
    max_songs_in_flight: int = 4
    progress_interval_s: float = 2.0

    def __post_init__(self) -> None:
        if self.max_songs_in_flight < 1:
            raise ValueError(f"max_songs_in_flight must be >= 1, got {self.max_songs_in_flight}")
        if not self.progress_interval_s > 0:
            raise ValueError(f"progress_interval_s must be > 0, got {self.progress_interval_s}")


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs, validated."""

    model: ModelSpec
    songs: tuple[SongSpec, ...]
    seed: int = 0
    sampling: SamplingSpec = SamplingSpec()
    stages: dict[Stage, PoolSpec] = field(default_factory=lambda: {s: PoolSpec() for s in Stage})
    ray: RaySpec = RaySpec()
    output: OutputSpec = OutputSpec()
    audio: AudioSpec = AudioSpec()
    scheduler: SchedulerSpec = SchedulerSpec()

    def __post_init__(self) -> None:
        if not self.songs:
            raise ValueError("songs: the song list is empty; give at least one song (artist, genres, lyrics, duration_s)")
        seen: set[str] = set()
        for index, song in enumerate(self.songs):
            if song.id in seen:
                raise ValueError(f"songs[{index}].id: duplicate song id {song.id!r}; every song needs its own id")
            seen.add(song.id)
        missing = [s.value for s in Stage if s not in self.stages]
        if missing:
            raise ValueError(f"stages: missing pool config for {missing}")
        groups: dict[str, Stage] = {}
        for stage, pool in self.stages.items():
            if pool.gpu_group is None:
                continue
            first = groups.setdefault(pool.gpu_group, stage)
            if self.stages[first].label_selector != pool.label_selector:
                raise ValueError(
                    f"stages.{stage.value}.label_selector={pool.label_selector} differs from stages.{first.value}."
                    f"label_selector={self.stages[first].label_selector}, but both share gpu_group {pool.gpu_group!r}"
                )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Build from a plain (resolved) dict; errors name the offending key path."""
        data = dict(data)
        data.pop("hydra", None)
        songs = data.get("songs")
        if songs is None or isinstance(songs, (str, bytes)) or not isinstance(songs, (list, tuple)):
            raise ValueError(f"songs: expected a list of songs, got {songs!r}")
        data["songs"] = [_song_dict(song, index) for index, song in enumerate(songs)]
        stages = data.get("stages", {})
        if not isinstance(stages, Mapping):
            raise ValueError(f"stages: expected a mapping of stage name to pool config, got {stages!r}")
        unknown = sorted(set(stages) - {s.value for s in Stage})
        if unknown:
            raise ValueError(f"stages: unknown stage(s) {unknown}; expected {[s.value for s in Stage]}")
        data["stages"] = {s.value: stages.get(s.value, {}) for s in Stage}
        return build_dataclass(cls, data, "")


def _song_dict(song: Any, index: int) -> dict[str, Any]:
    """A song entry with defaults filled: id from the position, genres as a tuple, lyrics from file."""
    where = f"songs[{index}]"
    if not isinstance(song, Mapping):
        raise ValueError(f"{where}: expected a mapping with artist, genres, lyrics, duration_s, got {song!r}")
    out = dict(song)
    out.setdefault("id", f"song{index:04d}")
    genres = out.get("genres")
    if isinstance(genres, str):
        out["genres"] = [genres]
    lyrics_file = out.get("lyrics_file")
    if lyrics_file is not None:
        if out.get("lyrics"):
            raise ValueError(f"{where}: give either lyrics or lyrics_file, not both")
        out["lyrics"] = _read_text(str(lyrics_file), f"{where}.lyrics_file")
    return out


def _read_text(url: str, where: str) -> str:
    try:
        with fsspec.open(url, "r", encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{where}: cannot read {url!r}: {err}") from err
