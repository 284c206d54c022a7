"""JukeboxModel: window arithmetic through ``_sample`` with a counting prior, seeds, validation,
alignments, and parity with transformers 4.40.2 on a tiny random model."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import transformers
from torch import nn

from models.config import JukeboxConfig
from models.jukebox import UPSAMPLER_TEMPERATURE, JukeboxModel
from models.seeding import window_seed
from models.windows import get_starts
from tests.models.test_windows import simulate_reference_level

N_GENRES = 1
CODES = 4096  # large enough for a counting prior's position-valued tokens


def counting_config(n_ctx: tuple[int, int, int] = (16, 16, 16), hop_fraction=(0.125, 0.5, 0.5), lyrics: int = 4,
                    top_layers: int = 1) -> JukeboxConfig:
    """Hops of 2, 4 and 8 samples per token (ratio 2 between levels); tiny widths (the priors are stand-ins)."""
    vqvae = dict(levels=3, res_downs_t=[1, 1, 1], res_strides_t=[2, 2, 2], embed_dim=8, nb_discrete_codes=CODES,
                 multipliers=[1, 1, 1], res_conv_width=8, res_conv_depth=1, hop_fraction=list(hop_fraction), sample_length=4096)
    priors = []
    for index in range(3):
        priors.append(dict(level=index, n_ctx=n_ctx[index], hidden_size=8, num_layers=1, n_heads=1, blocks=2,
                           attention_pattern="raw_column_previous_row_attention", is_encoder_decoder=index == 0,
                           nb_relevant_lyric_tokens=lyrics if index == 0 else 0, music_vocab_size=CODES,
                           metadata_dims=[10, 20], res_downs_t=[1, 1, 1], res_strides_t=[2, 2, 2], mask=True))
    priors[0].update(num_layers=top_layers, alignment_layer=top_layers - 1, alignment_head=0,
                     attention_pattern="enc_dec_with_lyrics")
    return JukeboxConfig.from_dict(dict(vqvae_config=vqvae, prior_config_list=priors, nb_priors=3, max_nb_genres=N_GENRES,
                                        sampling_rate=1000, max_duration=100.0))


class CountingPrior(nn.Module):
    """Stand-in prior whose tokens encode their own position (``mode="count"``) or come from the
    window seed (``mode="seeded"``); it records every ``sample_window`` call."""

    def __init__(self, mode: str = "count", offset: int = 0):
        super().__init__()
        self.mode, self.value_offset, self.calls = mode, offset, []

    def sample_window(self, labels, context, upper, start, n_new, total_length, seeds, options, offset=0):
        assert labels.dtype == context.dtype == torch.long and len(seeds) == labels.shape[0] == context.shape[0]
        self.calls.append(dict(labels=labels.clone(), context=context.clone(),
                               upper=None if upper is None else upper.clone(), start=start, n_new=n_new,
                               total_length=total_length, seeds=list(seeds), options=options, offset=offset))
        first = start + context.shape[1]
        if self.mode == "count":
            return (torch.arange(first, first + n_new) + self.value_offset).repeat(context.shape[0], 1)
        rows = [torch.randint(0, CODES, (n_new,), generator=torch.Generator().manual_seed(seed)) for seed in seeds]
        return torch.stack(rows)


def counting_model(mode: str = "count", **config_kwargs) -> JukeboxModel:
    priors = [CountingPrior(mode, offset=1000 * index) for index in range(3)]
    return JukeboxModel(counting_config(**config_kwargs), priors=priors)


def make_labels(batch: int = 1, lyrics: int = 6) -> list[torch.Tensor]:
    header = [[0, 0, 0, 3 + row, row % 10] for row in range(batch)]
    return [torch.tensor([h + [1 + i % 70 for i in range(lyrics)] for h in header]), torch.tensor(header), torch.tensor(header)]


def check_level(model: JukeboxModel, tokens, index: int, total_length: int, hop: int, n_existing: int = 0, upper=None):
    """Every window of prior ``index`` was sampled at the original starts with the right context and upper slice."""
    prior, geometry = model.priors[index], model.geometries[index]
    n_tokens = total_length // geometry.raw_to_tokens
    expected = simulate_reference_level(n_tokens, geometry.n_ctx, hop, n_existing)
    windows, rows_of = [], {}
    for call in prior.calls:  # one call per window and batch chunk
        window = (call["start"], call["context"].shape[1], call["n_new"])
        if not windows or windows[-1] != window:
            windows.append(window)
        rows_of.setdefault(window, []).extend((call["labels"][:, 3] - 3).tolist())  # row r has artist id 3 + r
    assert windows == expected
    assert all(rows == list(range(tokens[index].shape[0])) for rows in rows_of.values()), "each row once per window"
    level = tokens[index]
    for call in prior.calls:
        start, n_context = call["start"], call["context"].shape[1]
        rows = (call["labels"][:, 3] - 3).tolist()
        assert torch.equal(call["context"], level[rows, start : start + n_context])
        assert call["total_length"] == total_length
        if index == 0:
            assert call["upper"] is None
        else:
            ratio = geometry.upper_ratio
            source = tokens[index - 1] if upper is None else upper
            span = slice(start // ratio, (start + n_context + call["n_new"]) // ratio)
            assert torch.equal(call["upper"], source[rows, span]), (index, start)
    return expected


@pytest.mark.parametrize("hop_fraction", [None, 1.0, [0.25, 0.25, 0.75], [0.0625, 1.0, 0.125]])
def test_long_song_every_window_at_the_right_place(hop_fraction):
    model = counting_model()
    total_length = 8 * 100  # 100 top tokens, 200 middle, 400 bottom: dozens of windows per level
    labels = make_labels(batch=3)
    out = model.ancestral_sample(labels, n_samples=3, sample_length=total_length, hop_fraction=hop_fraction, seeds=[5, 6, 7])
    fractions = model.config.hop_fraction if hop_fraction is None else hop_fraction
    fractions = [fractions] * 3 if isinstance(fractions, float) else fractions
    for index in range(3):
        n_tokens = total_length // model.geometries[index].raw_to_tokens
        assert torch.equal(out[index], (torch.arange(n_tokens) + 1000 * index).repeat(3, 1)), "each token sampled once, in place"
        hop = int(fractions[index] * 16)
        windows = check_level(model, out, index, total_length, hop)
        assert len(windows) > 3
        level = 2 - index
        for call in model.priors[index].calls:
            assert call["seeds"] == [window_seed(seed, level, call["start"]) for seed in (5, 6, 7)]
            assert torch.equal(call["labels"], labels[index])
    assert model.priors[0].calls[0]["options"].temperature == 0.98
    assert {c["options"].temperature for p in model.priors[1:] for c in p.calls} == {UPSAMPLER_TEMPERATURE}


def test_batch_splitting_and_per_level_options():
    model = counting_model()
    out = model.ancestral_sample(make_labels(5), n_samples=5, sample_length=8 * 40, max_batch_size=2, lower_batch_size=3,
                                 sampling_temperature=[0.5, 0.6, 0.7], top_k=[0, 5, 7], top_p=0.9, chunk_size=4)
    assert [o.shape for o in out] == [(5, 40), (5, 80), (5, 160)]
    top_rows = [c["context"].shape[0] for c in model.priors[0].calls]
    assert top_rows == [2, 2, 1] * (len(top_rows) // 3)
    low_rows = [c["context"].shape[0] for c in model.priors[2].calls]
    assert low_rows == [3, 2] * (len(low_rows) // 2)
    for index in range(3):
        check_level(model, out, index, 8 * 40, model.geometries[index].hop_length)
    for index, prior in enumerate(model.priors):
        options = prior.calls[0]["options"]
        got = (options.temperature, options.top_k, options.top_p, options.chunk_size)
        assert got == ([0.5, 0.6, 0.7][index], [0, 5, 7][index], 0.9, 4)


def test_continue_sample_keeps_given_tokens_and_uses_them_as_context():
    model = counting_model()
    total_length = 8 * 60
    given = [torch.randint(0, 50, (2, 23)), torch.randint(0, 50, (2, 50)), torch.randint(0, 50, (2, 0))]
    out = model.continue_sample(given, make_labels(2), sample_length=total_length)
    for index in range(3):
        n_tokens = total_length // model.geometries[index].raw_to_tokens
        n_given = given[index].shape[1]
        assert out[index].shape == (2, n_tokens)
        assert torch.equal(out[index][:, :n_given], given[index])
        assert torch.equal(out[index][:, n_given:], (torch.arange(n_given, n_tokens) + 1000 * index).repeat(2, 1))
        check_level(model, out, index, total_length, model.geometries[index].hop_length, n_existing=n_given)
    assert model.priors[0].calls[0]["context"].shape[1] == 16 - model.priors[0].calls[0]["n_new"]


def test_upsample_conditions_each_window_on_its_own_upper_slice():
    model = counting_model()
    top = torch.randint(0, CODES, (2, 50))
    out = model.upsample([top, None, None], make_labels(2), sample_length=8 * 50)
    assert not model.priors[0].calls
    assert torch.equal(out[0], top)
    check_level(model, out, 1, 8 * 50, 8, upper=top)
    check_level(model, out, 2, 8 * 50, 8)
    assert len(model.priors[1].calls) > 5 and len({c["start"] for c in model.priors[1].calls}) == len(model.priors[1].calls)


def test_song_shorter_than_one_window():
    model = counting_model(n_ctx=(32, 64, 64))
    out = model.ancestral_sample(make_labels(), sample_length=8 * 5)
    assert [o.shape[1] for o in out] == [5, 10, 20]
    for index, n_tokens in enumerate((5, 10, 20)):
        (call,) = model.priors[index].calls
        assert (call["start"], call["context"].shape[1], call["n_new"]) == (0, 0, n_tokens)
        if index:
            assert torch.equal(call["upper"], out[index - 1][:, : n_tokens // 2])


def test_sample_tokens_stops_each_level_early():
    model = counting_model()
    out = model.ancestral_sample(make_labels(), sample_length=8 * 100, sample_tokens=30, sample_levels=[0])
    assert out[0].shape == (1, 30) and out[1].shape == (1, 0)
    assert sum(c["n_new"] for c in model.priors[0].calls) == 30


def test_seeded_tokens_do_not_depend_on_batching():
    model = counting_model(mode="seeded")
    kwargs = dict(sample_length=8 * 48)
    together = model.ancestral_sample(make_labels(3), n_samples=3, seeds=[11, 12, 13], max_batch_size=16, **kwargs)
    for size in (1, 2):
        again = model.ancestral_sample(make_labels(3), n_samples=3, seeds=[11, 12, 13], max_batch_size=size,
                                       lower_batch_size=size, **kwargs)
        assert all(torch.equal(a, b) for a, b in zip(together, again))
    alone = model.ancestral_sample(make_labels(1), n_samples=1, seeds=[12], **kwargs)
    assert all(torch.equal(a[1:2], b) for a, b in zip(together, alone))
    with_others = model.ancestral_sample(make_labels(3), n_samples=3, seeds=[99, 12, 98], **kwargs)
    assert all(torch.equal(a[1:2], b[1:2]) for a, b in zip(together, with_others))
    assert not torch.equal(together[0][0], with_others[0][0])
    # Split across calls: the top level first, the upsamplers later.
    top = model.ancestral_sample(make_labels(3), n_samples=3, seeds=[11, 12, 13], sample_levels=[0], **kwargs)
    rest = model.upsample(list(top), make_labels(3), seeds=[11, 12, 13], **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(together, rest))


def test_unseeded_sampling_follows_torch_manual_seed():
    model = counting_model(mode="seeded")
    torch.manual_seed(3)
    first = model.ancestral_sample(make_labels(2), n_samples=2, sample_length=8 * 20)
    torch.manual_seed(3)
    second = model.ancestral_sample(make_labels(2), n_samples=2, sample_length=8 * 20)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[0][0], first[0][1])


def test_primed_sample_uses_prompt_codes_in_prior_order():
    model = counting_model()
    prompt = torch.randn(2, 8 * 12 + 5, 1)  # 5 samples past whole top tokens are cut
    codes = model.vqvae.encode(prompt[:, : 8 * 12])
    out = model.primed_sample(prompt, make_labels(2), sample_length=8 * 40, sampling_rate=1000)
    for index in range(3):
        given = codes[2 - index]
        assert given.shape[1] == 12 * 2**index
        assert torch.equal(out[index][:, : given.shape[1]], given)
        first = model.priors[index].calls[0]  # continues right after the prompt, with it as context
        assert torch.equal(first["context"], given[:, first["start"] :])


def test_offset_is_passed_and_no_files_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = counting_model()
    model.ancestral_sample(make_labels(), sample_length=8 * 20, offset=3, save_results=True, metas=[{"artist": "x"}])
    assert {c["offset"] for p in model.priors for c in p.calls} == {3}
    assert os.listdir(tmp_path) == []


def test_alignments_are_the_top_prior_attention_window_by_window():
    model = JukeboxModel(counting_config(top_layers=16)).eval()  # layer 15 attends from music to lyrics
    labels = make_labels(batch=2, lyrics=10)
    top = torch.randint(0, CODES, (2, 40), generator=torch.Generator().manual_seed(0))
    out = model.continue_sample([top, None, None], labels, sample_levels=[0], sample_length=8 * 40, compute_alignments=True)
    assert torch.equal(out[0], top), "nothing left to sample"
    assert len(out.alignments) == 2 and all(a.shape == (40, 10) for a in out.alignments)
    # The original's rule: windows written last to first, each over its own lyric columns.
    prior, expected = model.priors[0], [np.zeros((40, 11)) for _ in range(2)]
    for start in reversed(get_starts(40, 16, model.geometries[0].hop_length)):
        metadata, indices = prior.get_metadata(labels[0], start, 8 * 40, 0, get_indices=True)
        weights = prior.get_alignment_weights(top[:, start : start + 16], metadata).double().numpy()
        assert weights.shape == (2, 16, 4) and np.all(weights >= 0)
        for row in range(2):
            expected[row][start : start + 16, indices[row]] = weights[row]
    for row in range(2):
        np.testing.assert_allclose(out.alignments[row], expected[row][:, :-1], rtol=1e-6, atol=1e-9)
    assert counting_model().continue_sample([top, None, None], labels, sample_levels=[0], sample_length=8 * 40).alignments is None


def test_builds_on_meta_device_and_decodes_prior_order_tokens():
    config = counting_config()
    with torch.device("meta"):
        meta = JukeboxModel(config)
    assert all(t.is_meta for t in meta.state_dict().values())
    model = counting_model()
    out = model.ancestral_sample(make_labels(), sample_length=8 * 10)
    for index, tokens in enumerate(out):
        audio = model.decode([tokens % CODES], start_level=2 - index)
        assert audio.shape == (1, 8 * 10, 1) and torch.isfinite(audio).all()


def test_state_of_components():
    model = counting_model()
    assert isinstance(model.priors, nn.ModuleList) and len(model.priors) == 3
    assert all(p.sampling_rate == 1000 and p.max_nb_genres == N_GENRES for p in model.prior_configs)
    assert [g.level for g in model.geometries] == [2, 1, 0]
    with pytest.raises(ValueError, match="2 priors"):
        JukeboxModel(counting_config(), priors=[CountingPrior(), CountingPrior()])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, L: m.ancestral_sample(L, sample_length=7), "shorter than one top-level token"),
        (lambda m, L: m.ancestral_sample(L, sample_length_in_seconds=0.004), "shorter than one top-level token"),
        (lambda m, L: m.ancestral_sample(L, sample_length=100 * 1000), "max_duration"),
        (lambda m, L: m.ancestral_sample(L, sample_length_in_seconds=250), "max_duration"),
        (lambda m, L: m.ancestral_sample(L, sample_length=8 * 20, offset=100), "past the end"),
        (lambda m, L: m.ancestral_sample(L, sample_length=8 * 20, offset=-1), "offset"),
        (lambda m, L: m.ancestral_sample(L, sample_length=8 * 20, offset=1.5), "offset"),
        (lambda m, L: m.ancestral_sample(L, sample_length=80, sampling_temperature=0.0), "temperature"),
        (lambda m, L: m.ancestral_sample(L, sample_length=80, sampling_temperature=[1.0, 1.0, -1.0]), "prior 2.*temperature"),
        (lambda m, L: m.ancestral_sample(L, sample_length=80, top_k=-1), "top_k"),
        (lambda m, L: m.ancestral_sample(L, sample_length=80, top_p=1.5), "top_p"),
        (lambda m, L: m.ancestral_sample(L, sample_length=80, top_p=[0.5, 0.5]), "one value per prior"),
        (lambda m, L: m.ancestral_sample(L, sample_length=80, hop_fraction=0.0), "hop_fraction"),
        (lambda m, L: m.ancestral_sample(L, sample_length=80, hop_fraction=0.1875), "not multiples of the 2x ratio"),
        (lambda m, L: m.ancestral_sample(L[:2], sample_length=80), "list of 3 tensors"),
        (lambda m, L: m.ancestral_sample([L[1], L[0], L[2]], sample_length=80), r"labels\[1\] has width 11"),
        (lambda m, L: m.ancestral_sample([L[0], L[0], L[2]], sample_length=80), r"labels\[1\] has width 11"),
        (lambda m, L: m.ancestral_sample([L[0], L[1], torch.zeros(1, 7, dtype=torch.long)], sample_length=80), "n_genres"),
        (lambda m, L: m.ancestral_sample([L[0], L[1], torch.tensor([[0, 0, 0, 50, 1]])], sample_length=80), "artist ids"),
        (lambda m, L: m.ancestral_sample([L[0], L[1], torch.tensor([[0, 0, 0, 1, 99]])], sample_length=80), "genre ids"),
        (lambda m, L: m.ancestral_sample([L[0], L[1].repeat(2, 1), L[2]], n_samples=3, sample_length=80), "2 rows"),
        (lambda m, L: m.ancestral_sample(L, sample_levels=[0, 3], sample_length=80), "sample_levels"),
        (lambda m, L: m.ancestral_sample(L, sample_levels=[1, 1], sample_length=80), "sample_levels"),
        (lambda m, L: m.ancestral_sample(L, sample_length=80, seeds=[1, 2]), "one int per song"),
        (lambda m, L: m.ancestral_sample(L, sample_length=80, max_batch_size=0), "max_batch_size"),
        (lambda m, L: m.ancestral_sample(L, n_samples=0, sample_length=80), "n_samples"),
        (lambda m, L: m.upsample([torch.zeros(1, 4, dtype=torch.long), None, None], L, sample_length=80), "inconsistent lengths"),
        (lambda m, L: m.continue_sample([torch.full((1, 4), CODES), None, None], L, sample_length=80), "outside the codebook"),
        (lambda m, L: m.continue_sample([torch.zeros(1, 4, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long), None], L,
                                        sample_length=80), r"music_tokens\[1\]"),
        (lambda m, L: m.continue_sample([torch.zeros(1, 4)], L, sample_length=80), "list of 3 tensors"),
        (lambda m, L: m.continue_sample([None, None, None], L, sample_length=80), r"no \[batch, length\] tensor"),
        (lambda m, L: m.continue_sample([torch.zeros(1, 4), None, None], L, sample_length=80), "integer codes"),
        (lambda m, L: m.primed_sample(torch.zeros(1, 80), L, sample_length=160), "batch, samples, channels"),
        (lambda m, L: m.primed_sample(torch.zeros(1, 80, 2), L, sample_length=160), "channels=1"),
        (lambda m, L: m.primed_sample(torch.zeros(1, 80, 1), L, sample_length=160, sampling_rate=44100), "sampling_rate=44100"),
        (lambda m, L: m.primed_sample(torch.zeros(1, 5, 1), L, sample_length=160), "shorter than one top-level token"),
    ],
)
def test_validation_errors_before_any_sampling(call, match):
    model = counting_model()
    with pytest.raises(ValueError, match=match):
        call(model, make_labels())
    assert not any(p.calls for p in model.priors)


# -- parity with transformers 4.40.2 on a tiny random model --------------------------------------

ARGMAX_TEMPERATURE = 1e-6  # the reference's _sample has no top_k: a vanishing temperature makes it argmax


def reference_config():
    vqvae = dict(levels=3, res_downs_t=[1, 1, 1], res_strides_t=[2, 2, 2], embed_dim=16, nb_discrete_codes=64,
                 multipliers=[1, 1, 1], res_conv_width=8, res_conv_depth=1, hop_fraction=[0.125, 0.5, 0.5], sample_length=4096)
    priors = []
    for index in range(3):
        prior = dict(level=index, n_ctx=32, hidden_size=32, num_layers=2, n_heads=2, blocks=4, music_vocab_size=64, mask=True,
                     metadata_dims=[10, 20], timing_dims=8, res_conv_width=8, res_conv_depth=1, res_downs_t=[1, 1, 1],
                     res_strides_t=[2, 2, 2], attention_pattern="raw_column_previous_row_attention", is_encoder_decoder=False,
                     nb_relevant_lyric_tokens=0)
        if index == 0:
            prior.update(attention_pattern="enc_dec_with_lyrics", is_encoder_decoder=True, nb_relevant_lyric_tokens=8)
        priors.append(prior)
    return transformers.JukeboxConfig(vqvae_config=vqvae, prior_config_list=priors, nb_priors=3, max_nb_genres=1, timing_dims=8,
                                      sampling_rate=1000, min_duration=0, max_duration=100.0)


def random_weights(model: nn.Module, seed: int = 0) -> None:
    """Deterministic random weights (the reference leaves some parameters uninitialised)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 1 and "norm" in name and name.endswith("weight"):
                parameter.copy_(1 + 0.1 * torch.randn(parameter.shape, generator=generator))
            else:
                parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))


@pytest.fixture(scope="module")
def pair():
    transformers.utils.logging.disable_progress_bar()
    reference = transformers.JukeboxModel(reference_config()).eval()
    random_weights(reference)
    # The merged top prior predicts lyric ids too: the reference clamps a drawn lyric id to code 0,
    # ours draws music codes only. Zero logits for lyric ids keep argmax on music codes in both.
    with torch.no_grad():
        reference.priors[0].prior.fc_proj_out.weight[: reference.config.prior_configs[0].lyric_vocab_size] = 0
    ours = JukeboxModel(JukeboxConfig.from_dict(reference.config.to_dict())).eval()
    ours.load_state_dict(reference.state_dict())
    labels = [torch.tensor([[0, 0, 0, 3, 2] + [1 + i % 70 for i in range(20)]]), torch.tensor([[0, 0, 0, 3, 2]]),
              torch.tensor([[0, 0, 0, 3, 2]])]
    return reference, ours, labels


def empty_tokens(batch: int = 1) -> list[torch.Tensor]:
    return [torch.zeros(batch, 0, dtype=torch.long) for _ in range(3)]


def test_state_dict_keys_and_shapes_match_reference(pair):
    reference, ours, _ = pair
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == theirs
    assert any(k.startswith("priors.2.") for k in theirs) and any(k.startswith("vqvae.") for k in theirs)


def test_top_level_argmax_equals_reference(pair):
    reference, ours, labels = pair
    total_length = 8 * 44  # 44 top tokens: windows at 0, 4, 8, 12
    expected = reference.ancestral_sample(labels, sample_levels=[0], sample_length=total_length, save_results=False,
                                          sampling_temperature=ARGMAX_TEMPERATURE)
    got = ours.ancestral_sample(labels, sample_levels=[0], sample_length=total_length, top_k=1)
    assert len(ours.geometries[0].windows(total_length)) > 3
    assert got[0].shape == (1, 44) and torch.equal(got[0], expected[0])


def test_primed_top_level_equals_reference(pair):
    reference, ours, labels = pair
    prompt = 0.3 * torch.randn(1, 8 * 10, 1, generator=torch.Generator().manual_seed(1))
    total_length = 8 * 44
    got = ours.primed_sample(prompt, labels, sample_levels=[0], sample_length=total_length, top_k=1)
    top_codes = reference.vqvae.encode(prompt, start_level=2, bs_chunks=1)[0]
    assert torch.equal(got[0][:, :10], top_codes)
    expected = reference._sample([top_codes, None, None], labels, [0], sample_length=total_length, save_results=False,
                                 sampling_temperature=ARGMAX_TEMPERATURE)
    assert torch.equal(got[0], expected[0])
    # Pinned reference bug: its primed_sample hands the VQ-VAE's finest-first list to the top prior,
    # so the "top-level" context it continues is the finest level's codes.
    finest = reference.vqvae.encode(prompt, start_level=0, end_level=1, bs_chunks=1)[0]
    buggy = reference.primed_sample(prompt, labels, sample_levels=[0], sample_length=total_length, save_results=False,
                                    sampling_temperature=ARGMAX_TEMPERATURE)
    assert torch.equal(buggy[0][:, : finest.shape[1]], finest) and not torch.equal(buggy[0], got[0])


def test_upsampler_windows_equal_reference_prior_given_sliced_conds(pair):
    reference, ours, labels = pair
    total_length = 8 * 40  # 80 middle tokens (4 windows), 160 bottom tokens (9 windows)
    top = torch.randint(0, 64, (1, 40), generator=torch.Generator().manual_seed(2))
    out = ours.upsample([top, None, None], labels, sample_length=total_length, top_k=1)
    for index in (1, 2):
        geometry, prior = ours.geometries[index], reference.priors[index]
        windows = geometry.windows(total_length)
        assert len(windows) >= 4
        for window in windows:
            context = out[index][:, window.start : window.new_start]
            upper = out[index - 1][:, slice(*geometry.upper_span(window))]
            metadata = prior.get_metadata(labels[index], window.start, total_length, 0)
            with torch.no_grad():
                expected = prior.sample(1, music_tokens=context, music_tokens_conds=[upper], metadata=metadata, top_k=1,
                                        sample_tokens=window.end - window.start)
            assert torch.equal(out[index][:, window.new_start : window.end], expected[:, -window.n_new :]), (index, window)


def test_reference_upsampler_differs_only_by_its_conditioning_span(pair):
    reference, ours, labels = pair
    top = torch.randint(0, 64, (1, 30), generator=torch.Generator().manual_seed(3))
    # A song of exactly one middle window: the reference's whole-sequence conditioning is the right span.
    one_window = 32 * 4
    expected = reference._sample([top[:, :16], torch.zeros(1, 0, dtype=torch.long), None], labels, [1],
                                 sample_length=one_window, save_results=False, sampling_temperature=ARGMAX_TEMPERATURE)
    got = ours.upsample([top[:, :16], None, None], labels, sample_levels=[1], sample_length=one_window, top_k=1)
    assert torch.equal(got[1], expected[1])
    # Several windows: the reference conditions each on the whole upper sequence, so it differs.
    many = 8 * 30
    conds = reference.priors[1].get_music_tokens_conds([top, torch.zeros(1, 60, dtype=torch.long), None], 16, 48)
    assert torch.equal(conds[0], top), "reference: whole upper sequence, not top[:, 8:24]"
    expected = reference._sample([top, torch.zeros(1, 0, dtype=torch.long), None], labels, [1], sample_length=many,
                                 save_results=False, sampling_temperature=ARGMAX_TEMPERATURE)
    got = ours.upsample([top, None, None], labels, sample_levels=[1], sample_length=many, top_k=1)
    assert got[1].shape == expected[1].shape == (1, 60) and not torch.equal(got[1], expected[1])


def test_continue_and_upsample_respect_given_tokens(pair):
    _, ours, labels = pair
    given = [torch.randint(0, 64, (2, n)) for n in (12, 20, 7)]
    out = ours.continue_sample(given, labels, sample_length=8 * 24, seeds=[1, 2])
    assert [o.shape for o in out] == [(2, 24), (2, 48), (2, 96)]
    assert all(torch.equal(o[:, : g.shape[1]], g) for o, g in zip(out, given))
    assert all(int(o.min()) >= 0 and int(o.max()) < 64 for o in out)
    again = ours.upsample([out[0], out[1][:, :20], None], labels, sample_length=8 * 24, seeds=[1, 2])
    assert torch.equal(again[0], out[0]) and torch.equal(again[1][:, :20], out[1][:, :20])


def test_seeded_sampling_with_real_priors_does_not_depend_on_batching(pair):
    _, ours, labels = pair
    kwargs = dict(sample_length=8 * 20)
    together = ours.ancestral_sample(labels, n_samples=3, seeds=[4, 5, 6], **kwargs)
    alone = ours.ancestral_sample(labels, n_samples=1, seeds=[5], **kwargs)
    small = ours.ancestral_sample(labels, n_samples=3, seeds=[4, 5, 6], max_batch_size=2, lower_batch_size=1, **kwargs)
    others = ours.ancestral_sample(labels, n_samples=2, seeds=[9, 5], **kwargs)
    top = ours.ancestral_sample(labels, n_samples=3, seeds=[4, 5, 6], sample_levels=[0], **kwargs)
    split = ours.upsample(list(top), labels, seeds=[4, 5, 6], **kwargs)
    for index in range(3):
        assert torch.equal(together[index][1:2], alone[index])
        assert torch.equal(together[index], small[index])
        assert torch.equal(together[index][1:2], others[index][1:2])
        assert torch.equal(together[index], split[index])
