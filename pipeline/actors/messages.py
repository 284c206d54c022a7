"""What the driver and the stage actors send each other.

To an actor: one window to sample (:class:`WindowTask`), one audio segment to decode
(:class:`DecodeTask`), one song's prompt (:class:`PromptTask`), one input file to encode
(:class:`EncodeFileTask`); finished songs are closed with a :class:`~pipeline.store.finalize.FinalizeJob`.
Back: chunks (:class:`~pipeline.store.parts.Chunk`), labels, manifest rows, and with each call
its :class:`CallStats`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.prior.sampling import SamplingOptions
from pipeline.store.audio_input import AudioSource


@dataclass(frozen=True)
class WindowTask:
    """One window to sample; the call's chunk arguments hold its context and upper tokens."""

    song_id: str
    level: int
    index: int
    start: int
    n_context: int
    n_new: int
    total_length: int
    seed: int
    options: SamplingOptions
    upper_span: tuple[int, int] | None
    priority: int = 0  # the song's place in the run: older songs are batched first
    peers: int | None = None  # songs in flight on the actor: the most that could share a batch
    follow_up: bool = False  # the song sends this actor another window after this one


@dataclass(frozen=True)
class DecodeTask:
    """One audio segment to decode: tokens [start, end) of ``level`` from [lo, hi)."""

    song_id: str
    level: int
    index: int
    start: int
    end: int
    lo: int
    hi: int
    priority: int = 0
    peers: int | None = None
    follow_up: bool = False  # the song sends this actor another segment after this one


@dataclass(frozen=True)
class EncodeFileTask:
    """Encode one input file of an encode-only run into ``storage`` under ``source.song_id``;
    ``labels`` (artist, genres, lyrics columns) go into its manifest row; ``weights`` says which
    weights encode it (:attr:`pipeline.run.config.ModelSpec.weights_tag`)."""

    source: AudioSource
    index: int
    model: str
    init_seed: int | None
    labels: dict[str, Any] | None = None
    weights: str | None = None

    def fingerprint(self) -> dict[str, Any]:
        """What decides the tokens: compared with a finished song's marker on resume."""
        s = self.source
        return {"model": self.model, "init_seed": self.init_seed, "weights": self.weights, "content": s.digest,
                "frames": s.frames, "sampling_rate": s.sampling_rate, "channels": s.channels}


@dataclass(frozen=True)
class PromptTask:
    """Make one song's prompt chunks: ``prompt_samples`` samples of ``prompt``, as tokens of
    each of ``levels`` (``n_tokens[i]`` tokens of ``levels[i]``)."""

    song_id: str
    prompt: str
    prompt_samples: int
    levels: tuple[int, ...]
    n_tokens: tuple[int, ...]


@dataclass(frozen=True)
class CallStats:
    """What one actor call did, for the driver's progress and summary.

    Attributes:
        stage: the stage's name.
        song_id: whose work it was.
        level: the VQ-VAE level (-1 for calls of no level: labels, prompts, files).
        start, end: the span made, in tokens of ``level`` (audio samples for an encoded file).
        entered_at, returned_at: the call's time in the actor (inputs, model, storage).
        started_at, finished_at: its forward pass, shared by ``batch_size`` calls.
        batch_size: calls sharing that forward pass.
        actor: the actor's name (or id).
    """

    stage: str
    song_id: str
    level: int
    start: int
    end: int
    entered_at: float
    started_at: float
    finished_at: float
    returned_at: float
    batch_size: int
    actor: str
