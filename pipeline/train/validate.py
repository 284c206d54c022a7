"""Every check of a training run that needs no worker: bad input fails here, in seconds.

Only the model's config and vocabulary, the audio files' headers and the token dataset's
manifest are read. A missing or unreadable input, a token dataset without the labels its prior
conditions on, a name the model's vocabulary lacks, a song too short for one window, a batch
that does not split over the workers: each raises a ``ValueError`` naming the setting and the
songs, before Ray Train starts a worker.
"""
from __future__ import annotations

import logging
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
import pyarrow.parquet as pq

from models.config import JukeboxConfig, JukeboxPriorConfig
from models.presets import available_presets, is_preset
from models.prior.conditioners import ARTIST, FIRST_GENRE
from models.shipped import Weights
from models.training import MultiResolutionSpectralLoss
from pipeline.actors import builders
from pipeline.run.config import RunConfig
from pipeline.run.labels import SongLabels
from pipeline.run.spec import level_stage
from pipeline.store.audio_input import AudioSource, scan_audio
from pipeline.store.manifest import MANIFEST_NAME
from pipeline.store.writer import RunStorage
from pipeline.train.config import Component, TrainSpec

logger = logging.getLogger(__name__)

_SHOWN = 10


@dataclass(frozen=True)
class TokenSongInfo:
    """A song of a prior's token dataset that training uses: its labels row for the prior."""

    song_id: str
    total_length: int
    n_tokens: int
    labels: np.ndarray  # int64, the tokenizer's row for this prior (timing placeholders 0)


@dataclass(frozen=True)
class TrainPlan:
    """What a validated training run trains on.

    Attributes:
        spec: the ``train`` section.
        component: what is trained.
        source: the model it starts from (preset name or checkpoint URL); ``init_seed`` and
            ``weights`` say which weights a preset gives (:mod:`models.shipped`).
        model: the model's config.
        run_url: the run's folder (``output.url/<name>``): checkpoints, published model, metrics.
        window: samples per crop (VQ-VAE) or tokens per window (priors).
        align: window starts are multiples of this (an upsampler's upper-level ratio).
        sources: the VQ-VAE's audio files that hold a crop.
        songs: the prior's songs that hold a window.
        skipped: files or songs left out, with why.
        summary: what the run means, for the log and dry runs.
    """

    spec: TrainSpec
    component: Component
    source: str
    init_seed: int
    model: JukeboxConfig
    storage_url: str
    run_url: str
    window: int
    align: int
    sources: tuple[AudioSource, ...] = ()
    songs: tuple[TokenSongInfo, ...] = ()
    skipped: tuple[str, ...] = ()
    summary: dict[str, Any] = field(default_factory=dict)
    weights: Weights = Weights.DEFAULT

    @property
    def prior_index(self) -> int | None:
        return self.component.prior_index() if self.component.is_prior else None

    @property
    def tokens_per_step(self) -> int:
        """Music tokens (priors) or codes of every level (VQ-VAE) one step trains on."""
        if self.component.is_prior:
            return self.spec.batch_size * self.window
        return self.spec.batch_size * sum(self.window // hop for hop in self.model.vqvae_config.hop_lengths)


def _listing(items: list[str]) -> str:
    return ", ".join(items[:_SHOWN]) + (f", ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")


def _model_config(cfg: RunConfig) -> JukeboxConfig:
    spec = cfg.model
    if spec.checkpoint is None and not is_preset(str(spec.preset)):
        raise ValueError(f"model.preset: unknown preset {spec.preset!r}; expected one of {available_presets()} or set model.checkpoint")
    try:
        return builders.model_config(spec.source)
    except ValueError as err:
        raise ValueError(f"{'model.checkpoint' if spec.checkpoint is not None else 'model.preset'}: {err}") from err


def _vqvae_data(spec: TrainSpec, model: JukeboxConfig) -> tuple[int, tuple[AudioSource, ...], list[str]]:
    if spec.audio_url is None:
        raise ValueError("train.audio_url: training the VQ-VAE needs audio: a WAV/FLAC file or a folder of them")
    if spec.tokens_url is not None:
        logger.warning("train.tokens_url is ignored: the VQ-VAE trains on audio (train.audio_url)")
    hop = model.vqvae_config.hop_lengths[-1]
    crop = spec.vqvae.crop_samples // hop * hop
    needed = MultiResolutionSpectralLoss(spec.vqvae.weights().resolutions).min_samples
    if crop < max(hop, needed):
        raise ValueError(f"train.vqvae.crop_samples={spec.vqvae.crop_samples}: crops need at least {max(hop, needed)} samples "
                         f"(whole top-level tokens of {hop} samples, and more than half the largest STFT)")
    try:
        sources = scan_audio(spec.audio_url, skip_other_files=spec.skip_other_files)
    except ValueError as err:
        raise ValueError(f"train.audio_url: {err}") from err
    rate = model.sampling_rate
    usable, skipped = [], []
    for source in sources:
        samples = -(-source.frames * rate // source.sampling_rate)
        if samples < crop:
            skipped.append(f"{source.url} ({samples / rate:.2f} s at {rate} Hz, shorter than one crop of {crop} samples)")
        else:
            usable.append(source)
    if not usable:
        raise ValueError(f"train.audio_url: no file under {spec.audio_url!r} is as long as one crop of {crop} samples "
                         f"({crop / rate:.2f} s; train.vqvae.crop_samples): {_listing(skipped)}")
    return crop, tuple(usable), skipped


def read_token_manifest(tokens_url: str) -> list[dict[str, Any]]:
    """The rows of a token dataset's manifest, by song id (an encode run lists songs in the order
    they finished: training must not depend on it); ValueError naming what is missing."""
    fs, root = fsspec.core.url_to_fs(tokens_url)
    path = posixpath.join(root, MANIFEST_NAME)
    if not fs.exists(path):
        raise ValueError(f"train.tokens_url: no {MANIFEST_NAME} under {tokens_url!r}; expected the output of an encode run "
                         "(python -m pipeline mode=encode encode.input_url=AUDIO encode.labels_url=LABELS output.url=...)")
    with fs.open(path, "rb") as handle:
        return sorted(pq.read_table(handle).to_pylist(), key=lambda row: str(row.get("song_id")))


def _unknown_names(tokenizer, labels: SongLabels) -> list[str]:
    return sorted({f"{u.kind.value} {u.name!r}" for u in tokenizer.unknown_names(labels.artist, list(labels.genres))})


def _prior_data(cfg: RunConfig, spec: TrainSpec, model: JukeboxConfig) -> tuple[int, int, tuple[TokenSongInfo, ...], list[str]]:
    component = spec.component
    if spec.tokens_url is None:
        raise ValueError(f"train.tokens_url: training the {component.value} prior needs a token dataset "
                         "(the output.url of an encode run with encode.labels_url)")
    prior_index = component.prior_index()
    prior = model.shared_prior_config(prior_index)
    level = component.vqvae_level()
    hops = model.vqvae_config.hop_lengths
    align = hops[level + 1] // hops[level] if prior_index > 0 else 1
    n_tokens_column = f"{level_stage(level).value}_n_tokens"
    rows = _checked_manifest(spec, model, prior, [n_tokens_column] + ([f"{level_stage(level + 1).value}_n_tokens"] if prior_index > 0 else []))
    tokenizer = builders.build_tokenizer(cfg.model.source)
    songs, skipped, unknown, bad = [], [], [], []
    rate = model.sampling_rate
    for row in rows:
        song_id = row["song_id"]
        if prior.metadata_conditioning:
            labels = SongLabels.from_row(row)
            names = _unknown_names(tokenizer, labels)
            if names:
                unknown.append(f"{song_id}: {', '.join(names)}")
            label_row, problem = _label_row(tokenizer, prior, prior_index, labels)
            if problem is not None:
                bad.append(f"{song_id}: {problem}")
                continue
        else:
            label_row = np.zeros(FIRST_GENRE + prior.max_nb_genres, dtype=np.int64)
        n_tokens, total = int(row[n_tokens_column]), int(row["total_length"])
        if n_tokens < prior.n_ctx:
            skipped.append(f"{song_id} ({n_tokens} tokens, fewer than one window of {prior.n_ctx})")
        elif prior_index == 0 and not prior.min_duration * rate <= total < prior.max_duration * rate:
            skipped.append(f"{song_id} ({total / rate:.2f} s, outside the top prior's [{prior.min_duration}, {prior.max_duration}) s)")
        else:
            songs.append(TokenSongInfo(song_id, total, n_tokens, label_row))
    if bad:
        raise ValueError(f"train.tokens_url: labels the model cannot take for {len(bad)} song(s): {_listing(bad)}")
    if unknown and not cfg.allow_unknown_names:
        raise ValueError(f"train.tokens_url: names the model's vocabulary lacks (they would all train the 'unknown' id; "
                         f"allow_unknown_names=true to train anyway) in {len(unknown)} song(s): {_listing(unknown)}")
    if unknown:
        logger.warning("training with names the model does not know (the unknown id): %s", _listing(unknown))
    if not songs:
        raise ValueError(f"train.tokens_url: no song of {spec.tokens_url!r} can be trained on: {_listing(skipped)}")
    return prior.n_ctx, align, tuple(songs), skipped


def _checked_manifest(spec: TrainSpec, model: JukeboxConfig, prior: JukeboxPriorConfig, token_columns: list[str]) -> list[dict[str, Any]]:
    """The token dataset's rows, once they hold the columns the prior trains on (its levels' token
    counts, the labels it conditions on), at the model's sampling rate."""
    rows = read_token_manifest(spec.tokens_url)
    if not rows:
        raise ValueError(f"train.tokens_url: the manifest of {spec.tokens_url!r} lists no songs")
    columns = set(rows[0])
    missing_columns = [c for c in ["song_id", "total_length", "sampling_rate", *token_columns] if c not in columns]
    if missing_columns:
        raise ValueError(f"train.tokens_url: the manifest of {spec.tokens_url!r} lacks columns {missing_columns}: is it the output of an encode run?")
    rates = sorted({row["sampling_rate"] for row in rows})
    if rates != [model.sampling_rate]:
        raise ValueError(f"train.tokens_url: tokens were encoded at {rates} Hz, the model runs at {model.sampling_rate} Hz")
    label_columns = ["artist", "genres"] * prior.metadata_conditioning + ["lyrics"] * (prior.nb_relevant_lyric_tokens > 0)
    absent = [c for c in label_columns if c not in columns]
    if absent:
        raise ValueError(f"train.tokens_url: the {spec.component.value} prior conditions on {label_columns} but the manifest of "
                         f"{spec.tokens_url!r} has no {absent} column(s): encode the audio again with encode.labels_url=LABELS")
    unlabelled = [row["song_id"] for row in rows if any(row.get(c) is None for c in label_columns)]
    if unlabelled:
        raise ValueError(f"train.tokens_url: labels missing from the manifest for {len(unlabelled)} song(s) "
                         f"({label_columns} needed): {_listing(unlabelled)}")
    return rows


def _label_row(tokenizer, prior: JukeboxPriorConfig, prior_index: int, labels: SongLabels) -> tuple[np.ndarray | None, str | None]:
    """The prior's label row of a song, or why the prior cannot take it."""
    try:
        row = np.asarray(tokenizer.encode(labels.artist, list(labels.genres), labels.lyrics or "")[prior_index], dtype=np.int64)
    except ValueError as err:
        return None, str(err)
    n_genres, n_artists = prior.metadata_dims
    head = row[ARTIST : FIRST_GENRE + prior.max_nb_genres]
    if len(row) < FIRST_GENRE + prior.max_nb_genres or head[0] >= n_artists or (head[1:] >= n_genres).any():
        return None, (f"label ids {head.tolist()} do not fit the prior's {prior.max_nb_genres} genre slot(s), "
                      f"{n_artists} artists and {n_genres} genres")
    return row, None


def _worker_visible(source: str) -> str:
    """A model source as workers find it: Ray Train runs them in another working directory, so a
    relative checkpoint or preset-file path becomes absolute (preset names and URLs stay)."""
    if "://" in source or source in available_presets() or not os.path.exists(source):
        return source
    return os.path.abspath(source)


def validate_train(cfg: RunConfig) -> TrainPlan:
    """Check a training run against its model and data; ValueError naming the setting."""
    spec = cfg.train
    component = spec.component
    if component is None:
        raise ValueError("train.component: expected one of vqvae, top, middle, bottom")
    model = _model_config(cfg)
    if model.nb_priors != 3:
        raise ValueError(f"model {cfg.model.source!r} has {model.nb_priors} priors; training knows 3-level Jukebox models")
    sources: tuple[AudioSource, ...] = ()
    songs: tuple[TokenSongInfo, ...] = ()
    if component.is_prior:
        window, align, songs, skipped = _prior_data(cfg, spec, model)
        data = {"songs": len(songs), "tokens": sum(s.n_tokens for s in songs), "window_tokens": window}
    else:
        window, sources, skipped = _vqvae_data(spec, model)
        align = 1
        data = {"files": len(sources), "audio_seconds": round(sum(s.duration_s for s in sources), 3), "crop_samples": window}
    if skipped:
        logger.warning("%d input(s) left out of training: %s", len(skipped), _listing(skipped))
    storage = RunStorage(cfg.output.url)
    run_url = f"{storage.url}/{spec.run_name}"
    if not cfg.dry_run:
        storage.check_writable()
    summary = {"mode": "train", "component": component.value, "model": cfg.model.source, "weights": cfg.model.weights_tag,
               "run": run_url, "steps": spec.steps,
               "batch_size": spec.batch_size, "num_workers": spec.num_workers, **data, "skipped": len(skipped)}
    plan = TrainPlan(spec, component, _worker_visible(cfg.model.source), cfg.model.init_seed, model, storage.url, run_url,
                     window, align, sources, songs, tuple(skipped), summary, cfg.model.weights)
    summary["tokens_per_step"] = plan.tokens_per_step
    return plan
