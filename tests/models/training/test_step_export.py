"""The optimisation step, the schedule, and trained components written into whole-model directories."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from models.jukebox import JukeboxModel
from models.loading import load_prior
from models.presets import load_preset
from models.training import OptimizerSettings, component_prefix, save_model_with_component, step_seed, train_step

transformers = pytest.importorskip("transformers")


def test_warmup_then_constant_rate():
    settings = OptimizerSettings(lr=1e-3, warmup_steps=4)
    assert [settings.learning_rate(s) for s in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert OptimizerSettings(lr=1e-3).learning_rate(0) == 1e-3


def test_step_seeds_differ_per_step_and_seed_and_stay_stable():
    seeds = {step_seed(seed, step) for seed in range(3) for step in range(100)}
    assert len(seeds) == 300
    assert step_seed(0, 0) == step_seed(0, 0)


class _Objective(torch.nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(3))
        self.value = value

    def forward(self, x):
        loss = (self.weight * x).sum() * self.value
        return loss, {"loss": loss.detach()}


def test_non_finite_loss_raises_before_the_weights_change():
    objective = _Objective(float("nan"))
    optimizer = OptimizerSettings().build(objective.parameters())
    with pytest.raises(FloatingPointError, match="loss is nan"):
        train_step(objective, optimizer, [torch.ones(3)], lr=1e-3, grad_clip=1.0)
    assert torch.equal(objective.weight, torch.ones(3))


def test_gradient_norm_is_clipped():
    objective = _Objective(100.0)
    optimizer = torch.optim.SGD(objective.parameters(), lr=1.0)
    result = train_step(objective, optimizer, [torch.ones(3)], lr=1.0, grad_clip=1.0)
    assert float(result.grad_norm) == pytest.approx(100 * 3**0.5)
    assert float(torch.linalg.vector_norm(objective.weight.detach() - 1)) == pytest.approx(1.0, rel=1e-5)


def _tied_tiny_config():
    config = load_preset("tiny")
    return dataclasses.replace(config, prior_configs=[dataclasses.replace(p, merged_decoder=False) for p in config.prior_configs])


def test_trained_component_replaces_only_its_own_tensors_and_loads_everywhere(tmp_path):
    config = _tied_tiny_config()
    torch.manual_seed(0)
    base = JukeboxModel(config)
    base_state = base.state_dict()
    trained = JukeboxModel(config).priors[1]  # other random weights
    with torch.no_grad():
        trained.prior.embed_tokens.weight.add_(1.0)  # the tied head moves with it
    save_model_with_component(config, base_state, 1, trained, str(tmp_path))

    loaded = JukeboxModel.from_pretrained(str(tmp_path))
    prefix = component_prefix(config, 1)
    for key, value in loaded.state_dict().items():
        want = trained.state_dict()[key[len(prefix):]] if key.startswith(prefix) else base_state[key]
        assert torch.equal(value, want), key
    for prior in loaded.priors:
        assert prior.prior.fc_proj_out.weight is prior.prior.embed_tokens.weight
    alone = load_prior(str(tmp_path), 1)
    assert torch.equal(alone.prior.fc_proj_out.weight, trained.prior.embed_tokens.weight)

    reference = transformers.JukeboxModel.from_pretrained(str(tmp_path)).eval()
    theirs = reference.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(theirs[key], value), key


def test_a_component_that_does_not_fit_is_refused(tmp_path):
    config = load_preset("tiny")
    base_state = JukeboxModel(config).state_dict()
    with pytest.raises(ValueError, match="does not match the model's priors.0"):
        save_model_with_component(config, base_state, 0, JukeboxModel(config).priors[1], str(tmp_path))
    with pytest.raises(ValueError, match="component must be 'vqvae' or a prior index"):
        component_prefix(config, 3)
