"""Typed options of a training run (``mode: train``), the ``train`` section of the Hydra config.

Plain frozen dataclasses validated on construction; :mod:`pipeline.run.config` builds them from the
composed config with every other section, so a typo fails before Ray starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from models.training import OptimizerSettings, STFTResolution, VQVAELossWeights


class Component(str, Enum):
    """What a run trains: the VQ-VAE, or one prior (named as the sampling stages are)."""

    VQVAE = "vqvae"
    TOP = "top"
    MIDDLE = "middle"
    BOTTOM = "bottom"

    @property
    def is_prior(self) -> bool:
        return self is not Component.VQVAE

    def prior_index(self) -> int:
        """Index in ``JukeboxModel.priors`` (0 = top prior)."""
        if not self.is_prior:
            raise ValueError("the VQ-VAE is not a prior")
        return {Component.TOP: 0, Component.MIDDLE: 1, Component.BOTTOM: 2}[self]

    def vqvae_level(self) -> int:
        """The VQ-VAE level (0 = finest) whose tokens this prior models."""
        return 2 - self.prior_index()


# The original release's optimiser settings: Adam at 3e-4 for the VQ-VAE, at 1.5e-4 with beta2 0.95
# for the priors.
_DEFAULT_LR = {True: 1.5e-4, False: 3e-4}
_DEFAULT_BETA2 = {True: 0.95, False: 0.999}


@dataclass(frozen=True)
class OptimizerSpec:
    """AdamW settings; ``lr`` and ``beta2`` null take the original's value for the component."""

    lr: float | None = None
    beta1: float = 0.9
    beta2: float | None = None
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 1.0

    def settings(self, component: Component) -> OptimizerSettings:
        """The optimiser of ``component`` (validated by :class:`OptimizerSettings`)."""
        try:
            return OptimizerSettings(
                lr=_DEFAULT_LR[component.is_prior] if self.lr is None else self.lr,
                beta1=self.beta1,
                beta2=_DEFAULT_BETA2[component.is_prior] if self.beta2 is None else self.beta2,
                weight_decay=self.weight_decay,
                warmup_steps=self.warmup_steps,
                grad_clip=self.grad_clip,
            )
        except ValueError as err:
            raise ValueError(f"train.optimizer: {err}") from err


@dataclass(frozen=True)
class VQVAETrainSpec:
    """What the VQ-VAE trains on and how its loss is weighted.

    Attributes:
        crop_samples: audio samples per training crop (rounded down to whole top-level tokens).
        recon_weight, spectral_weight: weights of the sample-level and spectral losses.
        commit_weight: weight of the commitment loss; null takes the model's ``commit``.
        stft: the spectral loss's resolutions, ``[n_fft, hop_length, window_length]`` each.
        scale_crops: crops measured before training to normalise the losses by the audio's loudness.
        reinit_codebooks: draw the codebooks from the first batch's latents (as the original
            does when it starts); null: when the model starts from random weights (a preset with
            ``model.weights=random`` or one that ships none), not when fine-tuning trained ones.
    """

    crop_samples: int = 32768
    recon_weight: float = 1.0
    spectral_weight: float = 1.0
    commit_weight: float | None = None
    stft: tuple[tuple[int, ...], ...] = ((2048, 240, 1200), (1024, 120, 600), (512, 50, 240))
    scale_crops: int = 64
    reinit_codebooks: bool | None = None

    def __post_init__(self) -> None:
        if self.crop_samples < 1:
            raise ValueError(f"train.vqvae.crop_samples must be >= 1, got {self.crop_samples}")
        if self.scale_crops < 1:
            raise ValueError(f"train.vqvae.scale_crops must be >= 1, got {self.scale_crops}")
        for index, entry in enumerate(self.stft):
            if len(entry) != 3:
                raise ValueError(f"train.vqvae.stft[{index}] must be [n_fft, hop_length, window_length], got {list(entry)}")
        self.weights()  # validates weights and resolutions

    def weights(self) -> VQVAELossWeights:
        try:
            resolutions = tuple(STFTResolution(*entry) for entry in self.stft)
            return VQVAELossWeights(self.recon_weight, self.spectral_weight, self.commit_weight, resolutions)
        except ValueError as err:
            raise ValueError(f"train.vqvae: {err}") from err


@dataclass(frozen=True)
class FaultSpec:
    """Fault injection, for testing recovery: worker ``rank`` exits abruptly (``os._exit``) when
    it reaches step ``at_step``, once per run (a marker file in the run's folder records it), so
    the restarted workers resume from the last checkpoint and go past it."""

    at_step: int | None = None
    rank: int = 0

    def __post_init__(self) -> None:
        if self.at_step is not None and self.at_step < 0:
            raise ValueError(f"train.fault.at_step must be >= 0 or null, got {self.at_step}")
        if self.rank < 0:
            raise ValueError(f"train.fault.rank must be >= 0, got {self.rank}")


@dataclass(frozen=True)
class TrainSpec:
    """A training run.

    Attributes:
        component: vqvae, top, middle or bottom.
        audio_url: the VQ-VAE's audio: a WAV/FLAC file or folder (any rate and channels).
        skip_other_files: ignore files under ``audio_url`` that are not WAV/FLAC.
        tokens_url: a prior's data: the output of an encode run (``tokens/level=*/`` and
            ``manifest.parquet`` with the labels columns), encoded by this model's VQ-VAE.
        steps: optimisation steps in all (a rerun with more steps continues the run).
        batch_size: crops or windows per step over all workers (divisible by ``num_workers``).
        seed: which crops each step sees and the codebooks' random draws.
        num_workers, use_gpu, cpus_per_worker: Ray Train's scaling (one GPU per worker with
            ``use_gpu``; DDP over gloo on CPU, NCCL on GPU).
        torch_threads: ``torch.set_num_threads`` in every worker.
        name: the run's folder under ``output.url`` (null: ``train-<component>``); running again
            with the same name resumes from its last checkpoint.
        checkpoint_every: steps between checkpoints (and the last step).
        keep_checkpoints: checkpoints kept in storage (the newest).
        max_failures: worker-group failures recovered from the last checkpoint (-1: no limit).
        log_every: steps between log lines (every step goes to the metrics file).
        progress_bar: a progress bar of the steps (rank 0).
        optimizer, vqvae, fault: see their classes.
    """

    component: Component | None = None
    audio_url: str | None = None
    skip_other_files: bool = False
    tokens_url: str | None = None
    steps: int = 1000
    batch_size: int = 8
    seed: int = 0
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    torch_threads: int = 1
    name: str | None = None
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    max_failures: int = 3
    log_every: int = 10
    progress_bar: bool = True
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    vqvae: VQVAETrainSpec = field(default_factory=VQVAETrainSpec)
    fault: FaultSpec = field(default_factory=FaultSpec)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "num_workers", "torch_threads", "checkpoint_every", "keep_checkpoints", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"train.seed must be >= 0, got {self.seed}")
        if self.cpus_per_worker < 0:
            raise ValueError(f"train.cpus_per_worker must be >= 0, got {self.cpus_per_worker}")
        if self.max_failures < -1:
            raise ValueError(f"train.max_failures must be >= -1 (-1: no limit), got {self.max_failures}")
        if self.batch_size % self.num_workers:
            raise ValueError(f"train.batch_size={self.batch_size} must divide evenly over train.num_workers={self.num_workers} "
                             "(each worker takes an equal share of every global batch)")
        if self.fault.at_step is not None and self.fault.rank >= self.num_workers:
            raise ValueError(f"train.fault.rank={self.fault.rank} names no worker (train.num_workers={self.num_workers})")
        if self.name is not None and (not self.name.strip() or "/" in self.name):
            raise ValueError(f"train.name must be a folder name (no '/'), got {self.name!r}")
        for name in ("audio_url", "tokens_url"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise ValueError(f"train.{name} must be a path or URL, got an empty string")
        self.optimizer.settings(self.component or Component.VQVAE)  # validates the optimiser

    @property
    def run_name(self) -> str:
        """The run's folder under the output URL."""
        if self.name is not None:
            return self.name
        return f"train-{self.component.value if self.component else 'unknown'}"
