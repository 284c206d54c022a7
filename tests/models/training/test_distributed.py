"""Two gloo ranks with DDP train as one process on the same global batch.

What is invariant, and asserted: the first step (same weights, same global batch) gives the same
loss and the same averaged gradients as one process, up to float rounding of the reduction; the
ranks hold bit-identical replicas after the last step (DDP averages gradients, the codebook
update gathers the whole batch). That runs on Ray Train learn as much as one process does is
checked in tests/pipeline/train/test_train_run.py. Later steps are not compared with the single
process: an averaged gradient rounds differently, a latent near the halfway point between two
codes moves to the other one, and from there the two trajectories part by more than any
tolerance that holds on every machine.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from models.config import JukeboxVQVAEConfig
from models.training import (
    AudioScale,
    CropSampler,
    OptimizerSettings,
    PriorObjective,
    VQVAELossWeights,
    VQVAEObjective,
    all_reduce_mean,
    audio_crops,
    prior_inputs,
    shard,
    step_seed,
    train_step,
)
from models.vqvae import JukeboxVQVAE
from tests.models.training.test_prior_objective import build_prior, corpus
from tests.models.training.test_vqvae_objective import SMALL_STFTS, tones
from tests.models.vqvae import TINY_CONFIGS

STEPS, BATCH, LR = 4, 4, 3e-3


def _objective_and_batches(kind: str):
    """(objective, function step -> global batch picks, function picks -> inputs)."""
    if kind == "vqvae":
        torch.manual_seed(0)
        vqvae = JukeboxVQVAE(JukeboxVQVAEConfig(sample_length=4096, **TINY_CONFIGS["three_levels_mono"])).train()
        songs = [tones(seed) for seed in range(3)]
        crop = 32 * vqvae.hop_lengths[-1]
        sampler = CropSampler(tuple(len(s) for s in songs), crop)
        objective = VQVAEObjective(vqvae, VQVAELossWeights(resolutions=SMALL_STFTS), AudioScale(0.2, 50.0))
        return objective, lambda step: sampler.draw(0, step, BATCH), lambda picks: [audio_crops(songs, picks, crop)]
    prior = build_prior("upsampler_1", merged_decoder=False)
    songs = corpus(prior)
    sampler = CropSampler(tuple(len(s.tokens) for s in songs), prior.n_ctx, prior.cond_downsample)
    return PriorObjective(prior), lambda step: sampler.draw(0, step, BATCH), lambda picks: prior_inputs(prior, songs, picks)


def _train(kind: str, rank: int, world: int) -> tuple[list[float], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(loss per step averaged over ranks, final state, the first step's gradients after clipping)."""
    objective, global_batch, inputs = _objective_and_batches(kind)
    model = DistributedDataParallel(objective) if world > 1 else objective
    settings = OptimizerSettings(lr=LR)
    optimizer = settings.build(objective.parameters())
    losses, first_grads = [], {}
    for step in range(STEPS):
        torch.manual_seed(step_seed(0, step))
        result = train_step(model, optimizer, inputs(shard(global_batch(step), rank, world)), lr=settings.lr, grad_clip=1.0)
        losses.append(all_reduce_mean({"loss": result.loss})["loss"])
        if step == 0:
            first_grads = {name: p.grad.clone() for name, p in objective.named_parameters() if p.grad is not None}
    state = {k: v.clone() for k, v in objective.state_dict().items()}
    if kind == "vqvae":  # the EMA statistics are not in the state dict
        for level, block in enumerate(objective.vqvae.bottleneck.level_blocks):
            state[f"ema_count.{level}"], state[f"ema_sum.{level}"] = block.ema_count.clone(), block.ema_sum.clone()
    return losses, state, first_grads


def _rank_main(rank: int, world: int, store: str, out: str, kind: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        torch.save(_train(kind, rank, world), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["vqvae"])  # the priors' DDP path runs on Ray Train in tests/pipeline/train
def test_two_ranks_take_the_single_process_first_step_and_stay_in_sync(kind, tmp_path):
    single_losses, _, single_grads = _train(kind, 0, 1)
    out = str(tmp_path / "result")
    mp.spawn(_rank_main, args=(2, str(tmp_path / "store"), out, kind), nprocs=2, join=True)
    ranks = [torch.load(f"{out}.{rank}", weights_only=True) for rank in range(2)]
    for losses, _, grads in ranks:
        np.testing.assert_allclose(losses[0], single_losses[0], rtol=1e-5)
        assert grads.keys() == single_grads.keys() and grads
        for key, grad in grads.items():
            scale = single_grads[key].abs().max().item()
            torch.testing.assert_close(grad, single_grads[key], rtol=1e-4, atol=1e-5 * scale + 1e-12, msg=key)
    (losses0, state0, _), (losses1, state1, _) = ranks
    assert losses0 == losses1 and state0.keys() == state1.keys()
    for key in state0:  # replicas, not approximations of each other
        assert torch.equal(state0[key], state1[key]), key
