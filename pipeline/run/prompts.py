"""Prompts of primed songs: how long each is (checked before the run) and its tokens (in an actor).

A song's ``prompt`` is a WAV/FLAC file, encoded by the run's VQ-VAE, or ``DATASET#SONG``: the
tokens of a song of an earlier output (an encode-only run, or a generation run), read from its
``tokens/level={L}/{SONG}.parquet``. Either way the prompt is cut to whole top-level tokens and
each sampled level gets ``prompt_samples // raw_to_tokens`` tokens of it, as
``JukeboxModel.primed_sample`` does.
"""
from __future__ import annotations

import math
import posixpath
from collections.abc import Mapping

import fsspec
import numpy as np
import pyarrow.parquet as pq
import soundfile

from pipeline.run.spec import PromptRef
from pipeline.store.parts import chunk_tokens


def dataset_tokens_path(dataset: str, song_id: str, level: int) -> str:
    """Where a dataset keeps a song's tokens of one level (the pipeline's token layout)."""
    return posixpath.join(dataset.rstrip("/"), "tokens", f"level={level}", f"{song_id}.parquet")


def available_samples(ref: PromptRef, sampling_rate: int, raw_to_tokens: Mapping[int, int]) -> int:
    """Audio samples a prompt offers at the model's ``sampling_rate``.

    An audio file offers its length after resampling; a dataset song offers what every level in
    ``raw_to_tokens`` (level -> samples per token) holds. Reads headers / the token files' small
    ``n_tokens`` column only.

    Raises:
        ValueError: naming the prompt when it cannot be read or a level is missing.
    """
    if ref.audio is not None:
        try:
            with fsspec.open(ref.audio, "rb") as handle:
                info = soundfile.info(handle)
        except Exception as err:  # any unreadable content: the prompt file's fault
            raise ValueError(f"prompt {ref.audio!r}: unreadable as audio ({type(err).__name__}: {err})") from err
        if info.frames <= 0:
            raise ValueError(f"prompt {ref.audio!r}: empty ({info.frames} samples)")
        return math.ceil(info.frames * sampling_rate / info.samplerate)
    assert ref.dataset is not None and ref.song_id is not None, ref
    found = []
    for level, raw in raw_to_tokens.items():
        path = dataset_tokens_path(ref.dataset, ref.song_id, level)
        try:
            with fsspec.open(path, "rb") as handle:
                n_tokens = pq.read_table(handle, columns=["n_tokens"]).column("n_tokens")[0].as_py()
        except (OSError, ValueError, IndexError) as err:  # pyarrow's errors subclass these
            raise ValueError(
                f"prompt {ref.dataset}#{ref.song_id}: no tokens of level {level} at {path!r} ({type(err).__name__}: {err}); "
                "expected the output of an encode-only run (or a generation run sampling that level)"
            ) from err
        found.append(n_tokens * raw)
    return min(found)


def read_dataset_prompt(ref: PromptRef, level: int, n_tokens: int) -> np.ndarray:
    """The first ``n_tokens`` tokens (int32) of a dataset song's ``level``."""
    assert ref.dataset is not None and ref.song_id is not None, ref
    path = dataset_tokens_path(ref.dataset, ref.song_id, level)
    with fsspec.open(path, "rb") as handle:
        tokens = chunk_tokens(pq.read_table(handle))
    if len(tokens) < n_tokens:
        raise ValueError(f"prompt {ref.dataset}#{ref.song_id}: level {level} holds {len(tokens)} tokens, {n_tokens} needed")
    return np.ascontiguousarray(tokens[:n_tokens], dtype=np.int32)
