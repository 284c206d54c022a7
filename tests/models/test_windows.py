"""Window arithmetic: the original start rule, context/new splits, level geometry."""
from __future__ import annotations

import itertools

import pytest
import transformers
from transformers.models.jukebox.modeling_jukebox import get_starts as reference_get_starts

from models.presets import load_preset
from models.windows import (
    LevelGeometry,
    Window,
    get_starts,
    hop_length,
    length_for_seconds,
    level_geometries,
    plan_windows,
    raw_to_tokens_per_level,
    tokens_for_length,
    windows_covering,
)


def simulate_reference_level(total: int, n_ctx: int, hop: int, n_existing: int) -> list[tuple[int, int, int]]:
    """(start, n_context, n_new) of every prior call the original ``sample_level`` makes."""
    length, calls = n_existing, []
    if total >= n_ctx:
        for start in reference_get_starts(total, n_ctx, hop):
            context = min(length, start + n_ctx) - start
            if n_ctx - context > 0:
                calls.append((start, context, n_ctx - context))
                length = start + n_ctx
    elif n_existing < total:  # one partial window from 0, sampled up to the song's end
        calls.append((0, n_existing, total - n_existing))
    return calls


@pytest.mark.parametrize("n_ctx", [1, 2, 7, 16, 64])
def test_get_starts_equals_reference(n_ctx):
    for total, hop in itertools.product(range(n_ctx, 6 * n_ctx + 3), range(1, n_ctx + 1)):
        assert get_starts(total, n_ctx, hop) == reference_get_starts(total, n_ctx, hop), (total, n_ctx, hop)


def test_get_starts_last_window_ends_at_song_end():
    starts = get_starts(100, 32, 12)
    assert starts == [0, 12, 24, 36, 48, 60, 68]
    assert starts[-1] + 32 == 100
    assert all(b > a for a, b in zip(starts, starts[1:]))


def test_song_shorter_than_window():
    assert get_starts(20, 32, 16) == [0]
    assert get_starts(0, 32, 16) == []
    # The reference rule gives a negative start here: its callers sample one partial window instead.
    assert reference_get_starts(20, 32, 16) == [-12]
    assert plan_windows(20, 32, 16) == [Window(start=0, n_context=0, n_new=20)]
    assert plan_windows(20, 32, 16, n_existing=5) == [Window(start=0, n_context=5, n_new=15)]
    assert plan_windows(20, 32, 16, n_existing=20) == []


def test_hop_length_rule_and_errors():
    assert hop_length(8192, 0.5) == 4096
    assert hop_length(6144, 0.125) == 768
    assert hop_length(10, 0.25) == 2  # int() truncates, as the original
    assert hop_length(10, 1) == 10
    for bad in (0, -0.5, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match="hop_fraction"):
            hop_length(64, bad)
    with pytest.raises(ValueError, match="hop of 0 tokens"):
        hop_length(4, 0.1)


@pytest.mark.parametrize("n_ctx", [4, 16, 33])
def test_plan_equals_reference_sampling_loop(n_ctx):
    for total, hop, existing in itertools.product(range(0, 5 * n_ctx, 3), range(1, n_ctx + 1, 3), (0, 1, n_ctx // 2, n_ctx + 5)):
        plan = plan_windows(total, n_ctx, hop, n_existing=existing)
        assert [(w.start, w.n_context, w.n_new) for w in plan] == simulate_reference_level(total, n_ctx, hop, existing)
        length = existing
        for window in plan:
            assert window.new_start == length, "windows continue exactly where the level ends"
            assert 0 < window.n_new and window.n_context + window.n_new <= n_ctx
            if total >= n_ctx:
                assert window.n_context + window.n_new == n_ctx, "every window has a full context"
            length = window.end
        assert length == max(total, existing)


def test_plan_max_new_cuts_the_plan():
    full = plan_windows(100, 32, 16)
    cut = plan_windows(100, 32, 16, max_new=40)
    assert sum(w.n_new for w in cut) == 40
    assert cut[:-1] == full[: len(cut) - 1]
    last = cut[-1]
    assert (last.start, last.n_context) == (full[len(cut) - 1].start, full[len(cut) - 1].n_context)
    assert plan_windows(100, 32, 16, max_new=1000) == full


def test_plan_rejects_gaps():
    with pytest.raises(ValueError, match="longer than the window"):
        plan_windows(100, 16, 17)


def test_windows_covering_gives_the_producers_of_a_span():
    windows = plan_windows(100, 32, 16)  # new tokens: [0,32) [32,48) [48,64) [64,80) [80,96) [96,100)
    assert windows_covering(windows, 0, 32) == [0]
    assert windows_covering(windows, 40, 50) == [1, 2]
    assert windows_covering(windows, 90, 100) == [4, 5]
    assert windows_covering(windows, 100, 120) == []
    for index, window in enumerate(windows):  # a window's context comes from earlier windows only
        assert all(i < index for i in windows_covering(windows, window.start, window.new_start))


def test_upper_span():
    window = Window(start=64, n_context=96, n_new=32)
    assert window.end == 192 and window.new_start == 160
    assert window.upper_span(4) == (16, 48)


def test_tokens_and_lengths():
    assert raw_to_tokens_per_level([3, 2, 2], [2, 2, 2]) == [8, 32, 128]
    assert tokens_for_length(1058304, 128) == 8268
    assert tokens_for_length(1000, 8) == 125
    assert length_for_seconds(24, 44100, 128) == 1058304  # 1058400 samples cut to whole top tokens
    with pytest.raises(ValueError, match="raw_to_tokens"):
        tokens_for_length(10, 0)
    with pytest.raises(ValueError, match="seconds"):
        length_for_seconds(-1, 44100, 128)


def test_level_geometries_match_reference_priors():
    config = load_preset("tiny")
    reference = transformers.JukeboxConfig.from_dict(config.to_dict())
    geometries = level_geometries(config)
    for index, geometry in enumerate(geometries):
        hf_prior_raw = 1
        prior = reference.prior_configs[index]
        downsamples = [s**d for s, d in zip(prior.res_strides_t, prior.res_downs_t)]
        for d in downsamples[: reference.nb_priors - index]:
            hf_prior_raw *= d
        assert geometry.prior_index == index and geometry.level == config.nb_priors - 1 - index
        assert geometry.raw_to_tokens == hf_prior_raw
        assert geometry.n_ctx == reference.prior_configs[index].n_ctx
        assert geometry.hop_length == int(reference.hop_fraction[index] * geometry.n_ctx)
        assert geometry.upper_ratio == (None if index == 0 else downsamples[index])
    assert [g.raw_to_tokens for g in geometries] == [128, 32, 8]


def test_level_geometries_hop_override_and_alignment():
    config = load_preset("tiny")
    assert [g.hop_length for g in level_geometries(config, 0.25)] == [32, 64, 64]
    assert [g.hop_length for g in level_geometries(config, [1.0, 0.5, 0.75])] == [128, 128, 192]
    with pytest.raises(ValueError, match="one value per prior"):
        level_geometries(config, [0.5, 0.5])
    with pytest.raises(ValueError, match="prior 1"):
        level_geometries(config, [0.5, 0.0, 0.5])
    upsampler = LevelGeometry(prior_index=1, level=1, n_ctx=256, raw_to_tokens=32, hop_length=126, upper_ratio=4)
    with pytest.raises(ValueError, match="not multiples of the 4x ratio"):
        upsampler.windows(32 * 1000)
    top = level_geometries(config)[0]
    with pytest.raises(ValueError, match="top prior"):
        top.upper_span(Window(0, 0, 1))
