"""Typed options of a pipeline run, read once from the Hydra config.

``RunConfig.from_dict`` turns the composed (and resolved) Hydra config into frozen dataclasses and
refuses anything malformed with a ``ValueError`` naming the field (``songs[1].duration_s``,
``stages.top.num_gpus``...), unknown keys included, so a typo fails before Ray starts or a model
loads. Checks that need the model's own config (durations, levels) live in :mod:`pipeline.run.validate`.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from models.loading import ServingDtype
from models.prior.decoder import DecodeOptions
from models.shipped import Weights, describe_weights, weights_tag
from pipeline.run.grid import GridSong, GridSpec, iter_grid
from pipeline.run.grid_files import read_text
from pipeline.run.spec import (
    SamplingSpec,
    SongSpec,
    Stage,
    check_seed,
)
from pipeline.run.typed import build_dataclass
from pipeline.train.config import TrainSpec

logger = logging.getLogger(__name__)


class ScheduleMode(str, Enum):
    """How windows of different levels are ordered.

    PIPELINED: a window starts as soon as its inputs exist (all levels at once).
    LEVEL_BY_LEVEL: a level starts only once the level above is complete (the reference's order);
    kept for benchmarks and debugging.
    """

    PIPELINED = "pipelined"
    LEVEL_BY_LEVEL = "level_by_level"


@dataclass(frozen=True)
class ModelSpec:
    """Which model to run: a preset name (its shipped trained weights, or random ones) or a checkpoint.

    Attributes:
        preset: name of a preset in ``conf/model/`` (``tiny``, ``1b_lyrics``, ``5b``, ``5b_lyrics``).
        checkpoint: a ``save_pretrained`` directory, local or fsspec URL; wins over ``preset``
            (and ``weights``).
        init_seed: seed of the random weights of a preset (every actor builds identical weights).
        weights: ``default``: the preset's shipped trained weights (``tiny``), random ones for a
            preset that ships none; ``random``: random weights from ``init_seed``.
        dtype: what the priors sample in (weights, KV cache, activations): ``auto`` is bfloat16
            on CUDA and float32 on CPU; logits and the seeded draws stay float32/float64.
        compile: ``torch.compile`` the priors' one-token step (compile time is paid per actor
            and batch size).
        cuda_graphs: capture the step in CUDA graphs (one per batch size, kept across windows);
            None: on CUDA devices.
    """

    preset: str | None = "tiny"
    checkpoint: str | None = None
    init_seed: int = 0
    weights: Weights = Weights.DEFAULT
    dtype: ServingDtype = ServingDtype.AUTO
    compile: bool = False
    cuda_graphs: bool | None = None

    def __post_init__(self) -> None:
        if self.preset is None and self.checkpoint is None:
            raise ValueError("preset=null and checkpoint=null: set model.preset (e.g. tiny) or model.checkpoint (a directory or URL)")
        check_seed(self.init_seed, "init_seed")

    @property
    def source(self) -> str:
        """What the model loaders take: the checkpoint when given, else the preset name."""
        return self.checkpoint if self.checkpoint is not None else str(self.preset)

    @property
    def used_init_seed(self) -> int | None:
        """The seed of the weights when a preset's random weights are used, None for a checkpoint."""
        return self.init_seed if self.checkpoint is None else None

    @property
    def decode(self) -> DecodeOptions:
        """How the priors' one-token step runs."""
        return DecodeOptions(compile=self.compile, cuda_graphs=self.cuda_graphs)

    @property
    def weights_tag(self) -> str:
        """Which weights the run uses, as outputs' fingerprints record it (:func:`models.shipped.weights_tag`)."""
        return weights_tag(self.source, self.weights, self.init_seed)

    def describe_weights(self) -> str:
        """The line a run logs at its start to say which weights it uses."""
        line = describe_weights(self.source, self.weights, self.init_seed)
        if self.checkpoint is not None and self.weights is not Weights.DEFAULT:
            line += f" (model.weights={self.weights.value} is ignored: model.checkpoint wins)"
        return line


MAX_ACTORS = 10_000  # per stage; far beyond any cluster's GPUs for models of this size


@dataclass(frozen=True)
class PoolSpec:
    """Resources and behaviour of one stage's actor pool.

    Attributes:
        num_actors: actors in the pool (1 to ``MAX_ACTORS``: a pool's actors are reserved in
            one placement group, packed one by one).
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
        if not 1 <= self.num_actors <= MAX_ACTORS:
            raise ValueError(f"num_actors must be between 1 and {MAX_ACTORS}, got {self.num_actors}")
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
        verify: on resume, read every finished file whole against its checksum (always: its
            size and its Parquet footer / WAV header).
        lease_heartbeat_s: seconds between renewals of the run's lease on the output.
        lease_stale_s: a lease not renewed for this long is taken over by the next run.
    """

    url: str = "outputs/jukebox"
    keep_parts: bool = False
    verify: bool = False
    lease_heartbeat_s: float = 10.0
    lease_stale_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.url.strip():
            raise ValueError("url must be a path or URL, got an empty string")
        if not 0 < self.lease_heartbeat_s < self.lease_stale_s:
            raise ValueError(f"lease_heartbeat_s={self.lease_heartbeat_s} must be > 0 and below "
                             f"lease_stale_s={self.lease_stale_s}")


@dataclass(frozen=True)
class AudioSpec:
    """Decoding and WAV options.

    Attributes:
        previews: also decode the upper sampled levels into preview WAVs.
        wav_subtype: soundfile subtype of the final WAVs (``PCM_16``, ``PCM_24``, ``FLOAT``).
        margin_tokens: tokens decoded on each side of a chunk so that chunked audio equals
            whole-song audio; None measures the decoder's receptive field once per actor.
        decode_tokens: consecutive chunks are decoded together until a segment holds at least
            this many tokens: fewer decoder calls and less margin decoded twice, at the cost of
            audio arriving in larger pieces (0: one segment per chunk).
    """

    previews: bool = False
    wav_subtype: str = "PCM_16"
    margin_tokens: int | None = None
    decode_tokens: int = 1024

    def __post_init__(self) -> None:
        if self.wav_subtype not in ("PCM_16", "PCM_24", "PCM_32", "FLOAT"):
            raise ValueError(f"wav_subtype={self.wav_subtype!r}: expected one of PCM_16, PCM_24, PCM_32, FLOAT")
        if self.margin_tokens is not None and self.margin_tokens < 0:
            raise ValueError(f"margin_tokens must be >= 0 or null, got {self.margin_tokens}")
        if self.decode_tokens < 0:
            raise ValueError(f"decode_tokens must be >= 0, got {self.decode_tokens}")


@dataclass(frozen=True)
class SchedulerSpec:
    """Driver-side scheduling.

    Attributes:
        mode: pipelined (default) or level_by_level.
        max_songs_in_flight: songs whose windows are submitted at once (admission control).
            None derives it from the sampling stages: three cohorts of ``max_batch *
            num_actors`` songs (of the stage batching the most): songs are admitted a cohort at
            a time, so that a cohort's windows have the same shapes and fill batches together,
            and a new cohort is admitted once the previous one reached the lowest level, so
            that while one cohort starts (upper levels) two keep the lowest level's actors
            busy, one batch sampling while the next gathers (a song has one window of a level
            in flight at a time). No more: every song in flight holds driver and object-store
            memory.
        progress_interval_s: seconds between progress lines.
    """

    mode: ScheduleMode = ScheduleMode.PIPELINED
    max_songs_in_flight: int | None = None
    progress_interval_s: float = 2.0

    def __post_init__(self) -> None:
        if self.max_songs_in_flight is not None and self.max_songs_in_flight < 1:
            raise ValueError(f"max_songs_in_flight must be >= 1 or null (derived from the stages), got {self.max_songs_in_flight}")
        if not self.progress_interval_s > 0:
            raise ValueError(f"progress_interval_s must be > 0, got {self.progress_interval_s}")


class RunMode(str, Enum):
    """What a run does: generate songs (sample and decode), encode audio files into tokens, or
    train a component (:mod:`pipeline.train`)."""

    GENERATE = "generate"
    ENCODE = "encode"
    TRAIN = "train"


@dataclass(frozen=True)
class EncodeSpec:
    """Input of an encode-only run (``mode: encode``).

    Attributes:
        input_url: a WAV/FLAC file or a folder of them (searched recursively), local or fsspec.
            Files at any sampling rate and channel count are resampled and mixed to the model's.
        skip_other_files: ignore files that are not WAV/FLAC instead of refusing the folder.
        chunk_samples: audio samples encoded per encoder call and file (bounds memory for long
            files; chunked tokens equal whole-file tokens); None: about 24 s at 44.1 kHz.
        labels_url: a labels manifest (:mod:`pipeline.run.labels`: artist, genres, lyrics per file);
            its labels become columns of the output manifest, which prior training reads.
    """

    input_url: str | None = None
    skip_other_files: bool = False
    chunk_samples: int | None = None
    labels_url: str | None = None

    def __post_init__(self) -> None:
        if self.input_url is not None and not self.input_url.strip():
            raise ValueError("input_url must be a path or URL, got an empty string")
        if self.chunk_samples is not None and self.chunk_samples < 1:
            raise ValueError(f"chunk_samples must be >= 1 or null, got {self.chunk_samples}")
        if self.labels_url is not None and not self.labels_url.strip():
            raise ValueError("labels_url must be a path or URL, got an empty string")


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs, validated.

    Songs come from ``songs`` (a list) or ``songs_grid`` (a :class:`~pipeline.run.grid.GridSpec`,
    expanded lazily by :meth:`iter_songs`); an encode-only run (``mode=encode``) has neither and
    reads ``encode.input_url`` instead, a training run (``mode=train``) reads ``train``.
    """

    model: ModelSpec
    songs: tuple[SongSpec, ...] = ()
    songs_grid: GridSpec | None = None
    mode: RunMode = RunMode.GENERATE
    encode: EncodeSpec = EncodeSpec()
    train: TrainSpec = TrainSpec()
    seed: int = 0
    sampling: SamplingSpec = SamplingSpec()
    stages: dict[Stage, PoolSpec] = field(default_factory=lambda: {s: PoolSpec() for s in Stage})
    ray: RaySpec = RaySpec()
    output: OutputSpec = OutputSpec()
    audio: AudioSpec = AudioSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    allow_unknown_names: bool = False
    dry_run: bool = False

    def __post_init__(self) -> None:
        if self.mode is RunMode.ENCODE:
            if self.encode.input_url is None:
                raise ValueError("encode.input_url=null: an encode-only run (mode=encode) needs a WAV/FLAC file or a folder of them")
        elif self.mode is RunMode.TRAIN:
            if self.train.component is None:
                raise ValueError("train.component=null: a training run (mode=train) needs one of vqvae, top, middle, bottom")
        elif self.songs and self.songs_grid is not None:
            raise ValueError("songs and songs_grid are both given: describe the songs with one of them")
        elif not self.songs and self.songs_grid is None:
            raise ValueError("songs: the song list is empty; give at least one song (artist, genres, lyrics, duration_s) or a songs_grid")
        check_seed(self.seed, "seed")
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

    def iter_songs(self) -> Iterator[GridSong]:
        """The run's songs in order, one at a time (a grid is expanded lazily, never held whole).

        Songs of the ``songs`` list are their own cells (``cell`` = position, ``sample`` 0).
        Duplicate ids of a grid are found by :func:`pipeline.run.validate.validate_run`.
        """
        if self.mode is not RunMode.GENERATE:
            return
        if self.songs_grid is not None:
            yield from iter_grid(self.songs_grid)
            return
        for index, song in enumerate(self.songs):
            yield GridSong(song, index, 0, source=f"songs[{index}]")

    def n_songs(self) -> int:
        """How many songs the run has (a grid is counted without expanding it)."""
        if self.mode is not RunMode.GENERATE:
            return 0
        return self.songs_grid.n_songs if self.songs_grid is not None else len(self.songs)

    def cohort_size(self) -> int:
        """Songs (or input files) admitted together: what the stage batching the most runs at
        once (``max_batch * num_actors``: a sampling stage's windows; the encode stage's files in
        an encode-only run), at most ``songs_in_flight()``."""
        batching = [Stage.ENCODE] if self.mode is RunMode.ENCODE else self.sampling.levels
        cohort = max(self.stages[s].max_batch * self.stages[s].num_actors for s in batching)
        if self.scheduler.max_songs_in_flight is not None:
            return min(cohort, self.scheduler.max_songs_in_flight)
        return cohort

    def songs_in_flight(self) -> int:
        """Songs in flight at most: ``scheduler.max_songs_in_flight``, or when null three
        cohorts (see :class:`SchedulerSpec`)."""
        if self.scheduler.max_songs_in_flight is not None:
            return self.scheduler.max_songs_in_flight
        return 3 * self.cohort_size()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Build from a plain (resolved) dict; errors name the offending key path.

        ``songs_grid`` (a mapping, or the path/URL of a grid file) replaces the ``songs`` list;
        encode-only and training runs (``mode: encode`` / ``train``) use neither.
        """
        data = dict(data)
        data.pop("hydra", None)
        mode = data.get("mode", RunMode.GENERATE.value)
        grid = data.pop("songs_grid", None)
        songs = data.get("songs")
        songless = mode in (RunMode.ENCODE.value, RunMode.TRAIN.value)
        if songless or grid is not None:
            if songs and not songless:
                logger.info("songs_grid is set: it replaces the songs list (%d song(s) not used)", len(songs))
            data["songs"] = []
        elif songs is None or isinstance(songs, (str, bytes)) or not isinstance(songs, (list, tuple)):
            raise ValueError(f"songs: expected a list of songs, got {songs!r}")
        else:
            data["songs"] = [_song_dict(song, index) for index, song in enumerate(songs)]
        if grid is not None and not songless:
            section = {"file": grid} if isinstance(grid, str) else grid
            data["songs_grid"] = GridSpec.from_config(section, where="songs_grid")
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
        out["lyrics"] = read_text(str(lyrics_file), f"{where}.lyrics_file")
    return out
