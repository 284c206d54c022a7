"""The decode step's runner: sessions kept across windows, one cache for every batch size, the
serving dtype, weights loaded later, compiled == eager (and CUDA graphs on a GPU)."""
from __future__ import annotations

import pytest
import torch

from models.loading import load_model, load_prior
from models.prior import SamplingOptions
from models.prior.decoder import DecodeOptions
from models.seeding import window_seed
from tests.models.prior import build_ours, every_kind_prior, make_labels, random_tokens, single_thread  # noqa: F401

TOTAL_LENGTH = 3 * 64 * 128 + 1000
# (start, n_context, n_new): the song's start, mid-song through the rings' wrap-around, a long decode.
WINDOWS = [(0, 0, 20), (128, 40, 24), (64, 10, 40)]


def sample(prior, batch: int, start: int, n_context: int, n_new: int, seed: int = 0, options=SamplingOptions(temperature=0.9)):
    labels = make_labels(prior, batch, n_lyrics=30, seed=seed + start)
    context = random_tokens(batch, n_context, prior.config.music_vocab_size, seed + start + 1)
    upper = None
    if prior.level:
        ratio = prior.cond_downsample
        upper = random_tokens(batch, (start + n_context + n_new) // ratio - start // ratio, prior.config.music_vocab_size, seed + 2)
    seeds = [window_seed(seed + row, prior.vqvae_level, start) for row in range(batch)]
    return prior.sample_window(labels, context, upper, start, n_new, TOTAL_LENGTH, seeds, options)


def test_every_kind_prior_samples_like_a_fresh_prior_whatever_ran_before():
    """Sessions of several batch sizes share one cache allocation and are kept across windows:
    no window sees anything of an earlier one."""
    prior = every_kind_prior()
    runs = [(3, WINDOWS[1]), (1, WINDOWS[0]), (3, WINDOWS[2]), (2, WINDOWS[1]), (4, WINDOWS[0]), (2, WINDOWS[2])]
    for batch, window in runs:
        kept = sample(prior, batch, *window)
        fresh = every_kind_prior()
        assert torch.equal(kept, sample(fresh, batch, *window)), (batch, window)
    decoder = prior.prior.decoder
    assert sorted(decoder._sessions) == [2, 4]  # batch 4 reallocated: sessions made before it were dropped
    session = decoder.session(2)
    assert session is decoder.session(2)
    assert session.cache.layers[0].keys.data_ptr() == decoder.session(4).cache.layers[0].keys.data_ptr()


def test_weights_loaded_after_sampling_are_the_ones_sampled_with():
    prior, other = build_ours("no_lyrics", seed=1), build_ours("no_lyrics", seed=2)
    sample(prior, 2, *WINDOWS[1])
    prior.load_state_dict(other.state_dict())  # in place
    assert torch.equal(sample(prior, 2, *WINDOWS[1]), sample(other, 2, *WINDOWS[1]))
    third = build_ours("no_lyrics", seed=3)
    prior.load_state_dict({k: v.clone() for k, v in third.state_dict().items()}, assign=True)
    prior.prior.reset_non_persistent_buffers()
    assert torch.equal(sample(prior, 2, *WINDOWS[1]), sample(third, 2, *WINDOWS[1]))


def test_transformers_api_and_sample_window_share_the_decoder():
    """``sample`` runs under no_grad, ``sample_window`` under inference_mode: the kept buffers
    must serve both."""
    prior = build_ours("upsampler_1", seed=4)
    first = sample(prior, 2, *WINDOWS[1])
    metadata = prior.get_metadata(make_labels(prior, 2), 0, TOTAL_LENGTH, 0)
    upper = [random_tokens(2, prior.n_ctx // prior.cond_downsample, prior.config.music_vocab_size)]
    prior.sample(2, music_tokens=random_tokens(2, 5, 48), music_tokens_conds=upper, metadata=metadata, sample_tokens=20)
    assert torch.equal(sample(prior, 2, *WINDOWS[1]), first)


@pytest.mark.parametrize("variant", ["merged_lyrics", "upsampler_1"])
def test_bfloat16_prior_samples_in_bfloat16_with_float32_logits(variant):
    """Weights, cache and activations in the serving dtype; the logits stay float32 and close to
    the float32 model's."""
    prior = build_ours(variant, seed=5)
    low = build_ours(variant, seed=5).to(torch.bfloat16)
    recorded = {}
    for name, model in (("float32", prior), ("bfloat16", low)):
        original = model.prior.decode_one_token

        def record(session, token, position, original=original, name=name):
            logits = original(session, token, position)
            recorded.setdefault(name, []).append(logits.clone())
            return logits

        model.prior.decode_one_token = record
        tokens = sample(model, 2, 64, 12, 10, options=SamplingOptions(top_k=1))
        del model.prior.decode_one_token
        assert tokens.dtype == torch.long
    session = low.prior.decoder.session(2)
    assert session.cache.layers[0].keys.dtype == torch.bfloat16 and session.buffers.weights.head.dtype == torch.float32
    assert all(logits.dtype == torch.float32 for logits in recorded["bfloat16"])
    first_fp32, first_bf16 = recorded["float32"][0], recorded["bfloat16"][0]
    torch.testing.assert_close(first_bf16, first_fp32, atol=0.1, rtol=0.05)


def test_serving_dtype_resolves_at_load():
    assert load_prior("tiny", 1).prior.embed_tokens.weight.dtype == torch.float32  # auto on CPU
    assert load_prior("tiny", 1, dtype="bfloat16").prior.embed_tokens.weight.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype must be one of"):
        load_prior("tiny", 1, dtype="float8")
    model = load_model("tiny", dtype="bfloat16")  # the priors serve in it; the VQ-VAE keeps float32
    assert {p.dtype for prior in model.priors for p in prior.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.vqvae.parameters()} == {torch.float32}


def test_decode_options_are_checked():
    with pytest.raises(ValueError, match="compile"):
        DecodeOptions(compile="yes")
    with pytest.raises(ValueError, match="cuda_graphs"):
        DecodeOptions(cuda_graphs="auto")
    prior = build_ours("no_lyrics")
    prior.set_decode_options(DecodeOptions(cuda_graphs=True))
    with pytest.raises(ValueError, match="needs a CUDA model"):
        sample(prior, 1, *WINDOWS[0])


@pytest.mark.slow
def test_compiled_step_gives_the_eager_tokens_without_recompiling():
    """One compile of the step serves every position of every window (dynamo counters): the
    compiled and eager samplers draw the same tokens on a prior with every attention kind, from
    the song's start, mid-song across the ring wrap-around, and over a long decode."""
    from torch._dynamo.utils import counters

    prior = every_kind_prior(seed=6)
    eager = [sample(prior, 2, *window) for window in WINDOWS]
    torch._dynamo.reset()
    counters.clear()
    prior.set_decode_options(DecodeOptions(compile=True))
    compiled = [sample(prior, 2, *WINDOWS[0])]
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    with torch._dynamo.config.patch(error_on_recompile=True):
        compiled += [sample(prior, 2, *window) for window in WINDOWS[1:]]
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    for window, a, b in zip(WINDOWS, eager, compiled):
        assert torch.equal(a, b), window


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_replays_the_eager_step():
    """On CUDA: the default serving dtype is bfloat16; one graph per batch size is captured once
    and replayed for every token of every window, giving the eager step's tokens."""
    prior = every_kind_prior(seed=7).to("cuda", torch.bfloat16)
    prior.set_decode_options(DecodeOptions(cuda_graphs=False))
    eager = [sample(prior, 2, *window, options=SamplingOptions(top_k=1)) for window in WINDOWS]
    prior.set_decode_options(DecodeOptions())  # graphs by default on CUDA
    graphed = [sample(prior, 2, *window, options=SamplingOptions(top_k=1)) for window in WINDOWS]
    session = prior.prior.decoder.session(2)
    assert session.graph is not None and list(prior.prior.decoder._sessions) == [2]
    for window, a, b in zip(WINDOWS, eager, graphed):
        assert torch.equal(a, b), window
    assert load_prior("tiny", 1, device="cuda").prior.embed_tokens.weight.dtype == torch.bfloat16


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_cuda_graph_gives_the_eager_tokens():
    """In float32: fused bfloat16 kernels round differently from eager ones."""
    prior = every_kind_prior(seed=8).to("cuda", torch.float32)
    prior.set_decode_options(DecodeOptions(cuda_graphs=False))
    eager = [sample(prior, 2, *window, options=SamplingOptions(top_k=1)) for window in WINDOWS]
    prior.set_decode_options(DecodeOptions(compile=True, cuda_graphs=True))
    compiled = [sample(prior, 2, *window, options=SamplingOptions(top_k=1)) for window in WINDOWS]
    for window, a, b in zip(WINDOWS, eager, compiled):
        assert torch.equal(a, b), window


def test_copies_start_without_the_decoder_and_threads_take_turns():
    import copy
    import threading

    prior = build_ours("no_lyrics", seed=9)
    expected = sample(prior, 2, *WINDOWS[1])
    twin = copy.deepcopy(prior)
    assert twin.prior._decoder is None and prior.prior._decoder is not None
    assert torch.equal(sample(twin, 2, *WINDOWS[1]), expected)
    results = [None] * 4

    def run(index):
        results[index] = sample(prior, 2, *WINDOWS[1])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(torch.equal(result, expected) for result in results)
