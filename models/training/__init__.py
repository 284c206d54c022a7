"""Training Jukebox in plain PyTorch: the paper's objectives and one optimisation step.

- :class:`VQVAEObjective`: reconstruction + multi-resolution spectral + commitment losses per
  level, EMA codebook updates with dead-code restarts over the whole (data-parallel) batch;
- :class:`PriorObjective`: a prior's next-token cross entropy with its conditioning, plus the
  lyric loss fraction;
- :func:`train_step`, :class:`OptimizerSettings`, :func:`step_seed`: the loop's pieces;
- :mod:`models.training.batches`: random crops and windows of in-memory corpora, the same global
  batch for any number of ranks;
- :func:`save_model_with_component`: a trained component back into a whole-model directory.

Nothing here knows of Ray, Hydra or storage layouts (``pipeline.train`` orchestrates).
"""
from models.training.batches import CropSampler, Pick, TokenSong, audio_crops, prior_inputs, shard
from models.training.distributed import all_gather_rows, all_reduce_mean
from models.training.export import component_prefix, save_model_with_component
from models.training.prior_objective import PriorObjective
from models.training.spectral import JUKEBOX_RESOLUTIONS, MultiResolutionSpectralLoss, STFTResolution
from models.training.step import OptimizerSettings, StepResult, step_seed, train_step
from models.training.vqvae_objective import AudioScale, VQVAELossWeights, VQVAEObjective, measure_audio_scale

__all__ = [
    "JUKEBOX_RESOLUTIONS",
    "AudioScale",
    "CropSampler",
    "MultiResolutionSpectralLoss",
    "OptimizerSettings",
    "Pick",
    "PriorObjective",
    "STFTResolution",
    "StepResult",
    "TokenSong",
    "VQVAELossWeights",
    "VQVAEObjective",
    "all_gather_rows",
    "all_reduce_mean",
    "audio_crops",
    "component_prefix",
    "measure_audio_scale",
    "prior_inputs",
    "save_model_with_component",
    "shard",
    "step_seed",
    "train_step",
]
