"""Sampling primitives: options validation, filtering, seeded per-row draws."""
from __future__ import annotations

import math

import pytest
import torch

from models.prior.sampling import SamplingOptions, SeededDrawer, draw_with_uniforms, filter_logits, token_probabilities
from tests.models.prior import single_thread  # noqa: F401  (autouse fixture)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(temperature=0.0), "temperature"),
        (dict(temperature=-1.0), "temperature"),
        (dict(temperature=math.nan), "temperature"),
        (dict(top_k=-1), "top_k"),
        (dict(top_k=1.5), "top_k"),
        (dict(top_p=-0.1), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(chunk_size=True), "chunk_size"),
    ],
)
def test_options_refuse_bad_values(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SamplingOptions(**kwargs)


def test_options_are_frozen():
    options = SamplingOptions(temperature=0.9, top_k=5, top_p=0.5, chunk_size=8)
    with pytest.raises(AttributeError):
        options.top_k = 3  # type: ignore[misc]


@pytest.mark.parametrize("top_k, top_p", [(0, 0.0), (1, 0.0), (5, 0.0), (0, 0.3), (0, 0.9), (4, 0.5), (100, 1.0)])
def test_filter_logits_matches_reference_and_is_pure(top_k, top_p):
    from transformers.models.jukebox.modeling_jukebox import filter_logits as reference_filter

    logits = torch.randn(3, 1, 40, generator=torch.Generator().manual_seed(top_k))
    before = logits.clone()
    ours = filter_logits(logits, top_k=top_k, top_p=top_p)
    assert torch.equal(logits, before)
    assert torch.equal(ours, reference_filter(logits, top_k=top_k, top_p=top_p))
    assert torch.isfinite(ours).any(dim=-1).all()  # at least one token always survives


def test_draws_never_pick_filtered_tokens_and_follow_the_distribution():
    logits = torch.tensor([[0.0, 1.0, 2.0, -math.inf, 0.5]])
    probs = token_probabilities(logits, top_k=3)
    assert probs[0, 3] == 0 and probs[0, 0] == 0
    uniforms = torch.linspace(0, 1 - 1e-9, 2001)
    tokens = draw_with_uniforms(probs.expand(len(uniforms), -1), uniforms)
    assert set(tokens.tolist()) == {1, 2, 4}
    counts = torch.bincount(tokens, minlength=5).double() / len(uniforms)
    torch.testing.assert_close(counts, probs[0].double(), atol=2e-3, rtol=0)


def test_each_row_draws_only_from_its_own_seed():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    options = SamplingOptions(temperature=1.3, top_p=0.95)
    together = SeededDrawer(options, [11, 22, 33], n_steps=6, device="cpu")
    alone = SeededDrawer(options, [22], n_steps=6, device="cpu")
    reordered = SeededDrawer(options, [33, 22], n_steps=6, device="cpu")
    for step in range(6):
        row = together(logits, step)
        assert row[1] == alone(logits[1:2], step)[0]
        assert row[1] == reordered(logits[[2, 1]], step)[1] and row[2] == reordered(logits[[2, 1]], step)[0]
    different = SeededDrawer(options, [23], n_steps=6, device="cpu")
    assert [int(different(logits[1:2], s)) for s in range(6)] != [int(alone(logits[1:2], s)) for s in range(6)]


def test_temperature_sharpens_the_distribution():
    logits = torch.tensor([[0.0, 1.0, 2.0]])
    cold, hot = token_probabilities(logits, temperature=0.25), token_probabilities(logits, temperature=4.0)
    assert cold[0, 2] > token_probabilities(logits)[0, 2] > hot[0, 2]
    torch.testing.assert_close(cold.sum(), torch.tensor(1.0))
