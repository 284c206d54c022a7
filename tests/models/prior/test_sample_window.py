"""``JukeboxPrior.sample_window``: cached logits, batch independence, chunking, validation."""
from __future__ import annotations

import pytest
import torch

from models.prior import JukeboxPrior, SamplingOptions
from models.seeding import window_seed
from tests.models.prior import build_ours, make_labels, random_tokens, single_thread  # noqa: F401

TOTAL_LENGTH = 3 * 64 * 128 + 1000
VARIANTS = ["merged_lyrics", "separate_lyrics", "no_lyrics", "upsampler_1"]


@pytest.fixture(scope="module")
def priors():
    return {variant: build_ours(variant, seed=index) for index, variant in enumerate(VARIANTS)}


def window(prior: JukeboxPrior, batch: int, start: int, n_context: int, n_new: int, seed: int = 0):
    """Inputs of one window: (labels, context, upper)."""
    labels = make_labels(prior, batch, n_lyrics=30 + 7 * seed, seed=seed)
    context = random_tokens(batch, n_context, prior.config.music_vocab_size, seed + 1)
    upper = None
    if prior.level:
        ratio = prior.cond_downsample
        needed = (start + n_context + n_new) // ratio - start // ratio
        upper = random_tokens(batch, needed, prior.config.music_vocab_size, seed + 2)
    return labels, context, upper


class RecordingArgmax:
    """A drawer that keeps every step's logits and picks the most likely token."""

    def __init__(self):
        self.logits: list[torch.Tensor] = []

    def __call__(self, logits, step):
        self.logits.append(logits.clone())
        return logits.argmax(dim=-1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_sampling_logits_equal_a_full_forward_pass(variant, priors):
    prior = priors[variant]
    start, n_context, n_new = 64, 21, 30
    labels, context, upper = window(prior, 2, start, n_context, n_new)
    metadata = prior.get_metadata(labels, start, TOTAL_LENGTH, 0)
    conds = [upper] if upper is not None else None
    recorder = RecordingArgmax()
    with torch.no_grad():
        conditioning, start_emb, lyric_tokens = prior.get_cond(conds, metadata)
        states = None
        if prior.is_encoder_decoder:
            context, conditioning = prior.prior_preprocess([lyric_tokens, context], [None, conditioning])
        else:
            states = prior.get_encoder_states(lyric_tokens)
        new = prior.prior.generate(context, n_new, recorder, conditioning, start_emb, states, chunk_size=8)
        hidden, _ = prior.prior.hidden_states(torch.cat([context, new], dim=1), conditioning, start_emb, states)
        full_logits = prior.prior.fc_proj_out(hidden)
    cached = torch.stack(recorder.logits, dim=1)
    torch.testing.assert_close(cached, full_logits[:, context.shape[1] :], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_rows_do_not_depend_on_batch_composition_order_or_split(variant, priors):
    prior = priors[variant]
    start, n_context, n_new = 64, 12, 20
    labels, context, upper = window(prior, 4, start, n_context, n_new, seed=3)
    seeds = [window_seed(song, prior.vqvae_level, start) for song in (101, 202, 303, 404)]
    options = SamplingOptions(temperature=0.9, top_k=30, top_p=0.97, chunk_size=5)

    def run(rows):
        rows = list(rows)
        return prior.sample_window(
            labels[rows], context[rows], None if upper is None else upper[rows], start, n_new, TOTAL_LENGTH,
            [seeds[i] for i in rows], options,
        )

    together = run(range(4))
    assert together.shape == (4, n_new) and together.dtype == torch.long
    assert 0 <= int(together.min()) and int(together.max()) < prior.config.music_vocab_size
    for row in range(4):
        assert torch.equal(run([row]), together[row : row + 1])
    assert torch.equal(run([2, 0, 3, 1]), together[[2, 0, 3, 1]])
    assert torch.equal(torch.cat([run([0, 1]), run([2, 3])]), together)
    assert torch.equal(run(range(4)), together)  # same seeds, same tokens
    assert len({tuple(row.tolist()) for row in together}) == 4


@pytest.mark.parametrize("variant", ["merged_lyrics", "separate_lyrics", "upsampler_1"])
def test_prefill_chunking_does_not_change_the_tokens(variant, priors):
    prior = priors[variant]
    start, n_context, n_new = 0, 40, 12
    labels, context, upper = window(prior, 2, start, n_context, n_new, seed=5)
    results = [
        prior.sample_window(labels, context, upper, start, n_new, TOTAL_LENGTH, [7, 8], SamplingOptions(chunk_size=chunk))
        for chunk in (None, 1, 3, 16, 64)
    ]
    for result in results[1:]:
        assert torch.equal(result, results[0])


@pytest.mark.parametrize("variant", ["no_lyrics", "upsampler_1"])
def test_top_k_1_window_equals_the_argmax_of_sample(variant, priors):
    prior = priors[variant]
    start, n_context, n_new = 64, 10, prior.n_ctx - 10
    labels, context, upper = window(prior, 2, start, n_context, n_new, seed=6)
    new = prior.sample_window(labels, context, upper, start, n_new, TOTAL_LENGTH, [1, 2], SamplingOptions(top_k=1))
    metadata = prior.get_metadata(labels, start, TOTAL_LENGTH, 0)
    conds = None if upper is None else [upper]  # embed_tokens zero-pads it to a whole window, as sample_window does
    expected = prior.sample(2, music_tokens=context, music_tokens_conds=conds, metadata=metadata, top_k=1)
    assert torch.equal(new, expected[:, n_context:])


def test_merged_prior_draws_only_music_tokens(priors):
    prior = priors["merged_lyrics"]
    labels, context, _ = window(prior, 3, 0, 0, 64, seed=8)
    new = prior.sample_window(labels, context, None, 0, 64, TOTAL_LENGTH, [1, 2, 3], SamplingOptions(temperature=3.0))
    assert 0 <= int(new.min()) and int(new.max()) < prior.config.music_vocab_size


def test_label_rows_of_different_lengths_batch_like_single_rows(priors):
    prior = priors["merged_lyrics"]
    rows = [make_labels(prior, 1, n_lyrics=n, seed=n)[0] for n in (3, 40, 200)]
    context = random_tokens(3, 5, prior.config.music_vocab_size, 1)
    options = SamplingOptions(temperature=0.8)
    together = prior.sample_window(rows, context, None, 64, 16, TOTAL_LENGTH, [4, 5, 6], options)
    for i, row in enumerate(rows):
        alone = prior.sample_window(row[None], context[i : i + 1], None, 64, 16, TOTAL_LENGTH, [4 + i], options)
        assert torch.equal(alone, together[i : i + 1])


@pytest.mark.parametrize("variant", VARIANTS)
def test_rows_of_different_songs_and_positions_batch_like_single_rows(variant, priors):
    """start, total_length and offset per row: each row equals the same window sampled alone."""
    prior = priors[variant]
    n_context, n_new = 12, 20
    ratio = prior.cond_downsample or 1
    starts = [0, 64, 4 * ratio, 128]
    totals = [TOTAL_LENGTH, TOTAL_LENGTH - 5000, 20000, TOTAL_LENGTH]
    offsets = [0, 128, 0, 4096]
    labels = make_labels(prior, 4, n_lyrics=40, seed=9)
    context = random_tokens(4, n_context, prior.config.music_vocab_size, 10)
    upper = None
    if prior.level:
        upper = random_tokens(4, (n_context + n_new) // ratio, prior.config.music_vocab_size, 11)
    seeds = [window_seed(song, prior.vqvae_level, start) for song, start in zip((1, 2, 3, 4), starts)]
    options = SamplingOptions(temperature=0.9, top_k=20)
    together = prior.sample_window(labels, context, upper, starts, n_new, totals, seeds, options, offset=offsets)
    for i in range(4):
        alone = prior.sample_window(
            labels[i : i + 1], context[i : i + 1], None if upper is None else upper[i : i + 1],
            starts[i], n_new, totals[i], seeds[i : i + 1], options, offset=offsets[i],
        )
        assert torch.equal(alone, together[i : i + 1]), f"row {i}"
    # an int is the same as that int on every row
    shared = prior.sample_window(labels, context, upper, 64, n_new, totals, seeds, options)
    assert torch.equal(shared, prior.sample_window(labels, context, upper, [64] * 4, n_new, totals, seeds, options, offset=[0] * 4))
    # the timing conditioning of each row is its own: other positions give other tokens
    if prior.metadata_conditioning and not prior.audio_conditioning:
        moved = prior.sample_window(labels, context, upper, [s + 8 for s in starts], n_new, totals, seeds, options, offset=offsets)
        assert not torch.equal(moved, together)
    metadata = prior.get_metadata(labels, starts, totals, offsets)
    assert metadata[:, 0].tolist() == totals
    assert metadata[:, 1].tolist() == [o + s * prior.raw_to_tokens for s, o in zip(starts, offsets)]


def _valid_call(prior: JukeboxPrior) -> dict:
    labels, context, upper = window(prior, 2, 64, 8, 8)
    return dict(labels=labels, context=context, upper=upper, start=64, n_new=8, total_length=TOTAL_LENGTH, seeds=[1, 2],
                options=SamplingOptions())


@pytest.mark.parametrize(
    "variant, change, match",
    [
        ("no_lyrics", lambda c: c.update(labels=c["labels"][:, :4]), "label row"),
        ("no_lyrics", lambda c: c.update(context=c["context"] + 1000), "context tokens"),
        ("no_lyrics", lambda c: c.update(context=-c["context"] - 1), "context tokens"),
        ("no_lyrics", lambda c: c.update(context=c["context"].float()), "integer tensor"),
        ("no_lyrics", lambda c: c.update(n_new=64 - 8 + 1), "exceeds"),
        ("no_lyrics", lambda c: c.update(n_new=0), "n_new"),
        ("no_lyrics", lambda c: c.update(seeds=[1]), "seeds"),
        ("no_lyrics", lambda c: c.update(seeds=[1, "2"]), "seeds"),
        ("no_lyrics", lambda c: c.update(total_length=10**9), "max_duration"),
        ("no_lyrics", lambda c: c.update(offset=TOTAL_LENGTH), "inside the song"),
        ("no_lyrics", lambda c: c.update(start=10**5), "inside the song"),
        ("no_lyrics", lambda c: c.update(start=[64, 10**5]), "row 1: window start 100000"),
        ("no_lyrics", lambda c: c.update(start=[64]), "start must be an int or a sequence of 2 ints"),
        ("no_lyrics", lambda c: c.update(start=[64, 1.5]), "start must hold ints"),
        ("no_lyrics", lambda c: c.update(start=[64, -1]), "start must be >= 0"),
        ("no_lyrics", lambda c: c.update(total_length=[TOTAL_LENGTH, 10**9]), "row 1: total_length"),
        ("no_lyrics", lambda c: c.update(offset=[0, TOTAL_LENGTH]), "row 1: .*inside the song"),
        ("no_lyrics", lambda c: c.update(options=dict(temperature=1.0)), "SamplingOptions"),
        ("no_lyrics", lambda c: c.update(upper=torch.zeros(2, 4, dtype=torch.long)), "upper must be None"),
        ("no_lyrics", lambda c: c.update(labels=c["labels"][:1]), "rows"),
        ("upsampler_1", lambda c: c.update(upper=c["upper"][:, :-1]), "upper must be"),
        ("upsampler_1", lambda c: c.update(upper=None), "upper must be"),
        ("upsampler_1", lambda c: c.update(upper=torch.zeros(2, 17, dtype=torch.long)), "upper must be"),
        ("upsampler_1", lambda c: c.update(upper=c["upper"] + 1000), "upper tokens"),
        ("merged_lyrics", lambda c: c["labels"].__setitem__((0, 3), 999), "artist"),
        ("merged_lyrics", lambda c: c["labels"][0, 6:].fill_(999), "lyric tokens"),
    ],
)
def test_bad_requests_fail_before_sampling(variant, change, match, priors):
    call = _valid_call(priors[variant])
    change(call)
    with pytest.raises(ValueError, match=match):
        priors[variant].sample_window(**call)


def test_timing_outside_the_trained_range_is_refused(priors):
    prior = priors["no_lyrics"]
    call = _valid_call(prior)
    call["labels"] = call["labels"].clone()
    with pytest.raises(ValueError, match="range"):
        prior.sample_window(**{**call, "total_length": int(prior.config.max_duration * prior.config.sampling_rate)})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sample_window_runs_under_autocast_on_cuda():
    prior = build_ours("separate_lyrics").cuda()
    labels, context, _ = window(prior, 2, 0, 10, 20)
    new = prior.sample_window(labels, context, None, 0, 20, TOTAL_LENGTH, [1, 2], SamplingOptions(top_p=0.9))
    assert new.device.type == "cuda" and new.shape == (2, 20)
    assert 0 <= int(new.min()) and int(new.max()) < prior.config.music_vocab_size


def test_tied_output_projection_survives_loading_by_assignment(priors):
    prior = priors["no_lyrics"]
    assert prior.prior.fc_proj_out.weight is prior.prior.embed_tokens.weight
    with torch.device("meta"):
        loaded = JukeboxPrior(prior.config, level=prior.level)
    loaded.load_state_dict({k: v.clone() for k, v in prior.state_dict().items()}, assign=True)
    for module in loaded.modules():
        if hasattr(module, "reset_non_persistent_buffers"):
            module.reset_non_persistent_buffers()
    assert loaded.prior.fc_proj_out.weight is loaded.prior.embed_tokens.weight
    labels, context, upper = window(prior, 1, 0, 5, 6)
    args = (labels, context, upper, 0, 6, TOTAL_LENGTH, [3], SamplingOptions())
    assert torch.equal(loaded.sample_window(*args), prior.sample_window(*args))


def test_alignment_of_any_layer_of_a_merged_prior():
    prior = build_ours("merged_lyrics", alignment_layer=3, alignment_head=0)  # a block_attn layer, as the tiny preset
    metadata = prior.get_metadata(make_labels(prior, 2), 0, TOTAL_LENGTH, 0)
    weights = prior.get_alignment_weights(random_tokens(2, prior.n_ctx, prior.config.music_vocab_size), metadata)
    assert weights.shape == (2, prior.n_ctx, prior.nb_relevant_lyric_tokens)
    assert (weights >= 0).all() and (weights.sum(-1) <= 1 + 1e-6).all()
    separate = build_ours("separate_lyrics", alignment_layer=0)
    with pytest.raises(ValueError, match="cross_attention"):
        separate.get_alignment_weights(random_tokens(1, 64, 48), separate.get_metadata(make_labels(separate, 1), 0, TOTAL_LENGTH, 0))
