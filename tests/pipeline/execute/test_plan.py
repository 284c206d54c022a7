"""Song plans: chunks tile each level, every window gets exactly the inputs it needs."""
from __future__ import annotations

import pytest

from models.loading import load_model_config
from models.prior.sampling import SamplingOptions
from models.seeding import song_seed, window_seed
from models.windows import length_for_seconds, level_geometries
from pipeline.execute.plan import PlanCounter, plan_song
from pipeline.run.spec import SongSpec

OPTIONS = {level: SamplingOptions() for level in range(3)}


def _plan(seconds: float, levels=(2, 1, 0), margin: int = 5, previews: bool = False, seed=None):
    config = load_model_config("tiny")
    geometries = level_geometries(config)
    total = length_for_seconds(seconds, config.sampling_rate, geometries[0].raw_to_tokens)
    song = SongSpec(id="s", artist="a", genres=("g",), duration_s=seconds, seed=seed)
    return plan_song(song, 3, total, geometries, list(levels), OPTIONS, {0: margin, 1: margin, 2: margin}, previews), geometries


@pytest.mark.parametrize("seconds", [0.1, 0.4, 1.0, 2.3])
def test_chunks_tile_levels_and_inputs_cover_windows(seconds):
    plan, geometries = _plan(seconds)
    assert plan.seed == song_seed(3, "s")
    by_level = {g.level: g for g in geometries}
    for level, chunks in plan.chunks.items():
        geometry = by_level[level]
        assert plan.n_tokens[level] == plan.total_length // geometry.raw_to_tokens
        assert [c.window for c in chunks] == geometry.windows(plan.total_length)  # the models' windows
        assert chunks[0].start == 0 and chunks[-1].end == plan.n_tokens[level]
        for before, after in zip(chunks, chunks[1:]):
            assert before.end == after.start
        for chunk in chunks:
            assert chunk.seed == window_seed(plan.seed, level, chunk.window.start)
            held = [chunks[i] for i in chunk.context_chunks]
            if chunk.window.n_context:
                assert held[0].start <= chunk.window.start and held[-1].end == chunk.start
            else:
                assert held == []
            if level == 2:
                assert chunk.upper_span is None and chunk.upper_chunks == ()
                continue
            lo, hi = chunk.upper_span
            assert (lo, hi) == (chunk.window.start // geometry.upper_ratio, chunk.window.end // geometry.upper_ratio)
            upper = [plan.chunks[level + 1][i] for i in chunk.upper_chunks]
            assert upper[0].start <= lo and upper[-1].end >= hi
            assert all(u.end > lo and u.start < hi for u in upper)  # no chunk it does not need


def test_decode_segments_follow_the_lowest_level_with_margins():
    plan, _ = _plan(1.0, margin=7)
    assert list(plan.decodes) == [0] and plan.audio_level == 0
    segments, chunks = plan.decodes[0], plan.chunks[0]
    assert [(d.start, d.end) for d in segments] == [(c.start, c.end) for c in chunks]
    for d in segments:
        assert d.lo == max(0, d.start - 7) and d.hi == min(plan.n_tokens[0], d.end + 7)
        held = [chunks[i] for i in d.chunks]
        assert held[0].start <= d.lo and held[-1].end >= d.hi


def test_partial_levels_and_previews():
    plan, _ = _plan(1.0, levels=(2, 1), previews=True)
    assert plan.levels == [2, 1] and plan.audio_level == 1 and sorted(plan.decodes) == [1, 2]
    with pytest.raises(ValueError, match="needs level 2 sampled first"):
        _plan(1.0, levels=(1, 0))


def test_fingerprint_changes_with_what_decides_tokens():
    a, _ = _plan(1.0, seed=5)
    b, _ = _plan(1.0, seed=6)
    c, _ = _plan(1.2, seed=5)
    assert a.fingerprint("tiny", 0) == _plan(1.0, seed=5)[0].fingerprint("tiny", 0)
    assert a.fingerprint("tiny", 0) != b.fingerprint("tiny", 0)
    assert a.fingerprint("tiny", 0) != c.fingerprint("tiny", 0)
    assert a.fingerprint("tiny", 0) != a.fingerprint("tiny", 1)


def test_a_prompt_is_chunk_0_of_every_level_and_windows_continue_from_it():
    config = load_model_config("tiny")
    geometries = level_geometries(config)
    total = length_for_seconds(1.0, config.sampling_rate, 128)
    song = SongSpec(id="p", artist="a", genres=("g",), duration_s=1.0, seed=4, prompt="/x.wav")
    prompt = 40 * 128
    plan = plan_song(song, 0, total, geometries, [2, 1, 0], OPTIONS, {0: 5, 1: 5, 2: 5}, prompt_samples=prompt)
    by_level = {g.level: g for g in geometries}
    for level, chunks in plan.chunks.items():
        n_prompt = prompt // by_level[level].raw_to_tokens
        assert chunks[0].prompt and (chunks[0].start, chunks[0].end) == (0, n_prompt) == (0, plan.prompt_tokens(level))
        assert [c.window for c in chunks[1:]] == by_level[level].windows(total, n_prompt)  # JukeboxModel's continuation
        assert chunks[-1].end == plan.n_tokens[level] and plan.n_windows(level) == len(chunks) - 1
        assert all(0 in c.context_chunks for c in chunks[1:] if c.window.start < n_prompt)
        if level < 2:
            assert 0 in chunks[1].upper_chunks  # conditioned on the upper level's prompt too
    assert plan.fingerprint("tiny", 0)["prompt_samples"] == prompt
    with pytest.raises(ValueError, match="whole top-level tokens"):
        plan_song(song, 0, total, geometries, [2, 1, 0], OPTIONS, {0: 5, 1: 5, 2: 5}, prompt_samples=prompt + 1)


def test_decode_segments_join_chunks_up_to_decode_tokens():
    config = load_model_config("tiny")
    geometries = level_geometries(config)
    total = length_for_seconds(2.0, config.sampling_rate, 128)
    song = SongSpec(id="s", artist="a", genres=("g",), duration_s=2.0)
    plan = plan_song(song, 0, total, geometries, [2, 1, 0], OPTIONS, {0: 9, 1: 9, 2: 9}, decode_tokens=1000)
    segments, chunks = plan.decodes[0], plan.chunks[0]
    assert segments[0].start == 0 and segments[-1].end == plan.n_tokens[0]
    assert all(a.end == b.start for a, b in zip(segments, segments[1:]))
    assert all(s.end - s.start >= 1000 for s in segments[:-1]) and len(segments) < len(chunks)
    ends = {c.end for c in chunks}
    assert all(s.end in ends for s in segments)  # whole chunks: a segment needs no chunk it only partly covers
    for s in segments:
        held = [chunks[i] for i in s.chunks]
        assert held[0].start <= s.lo and held[-1].end >= s.hi and (s.lo, s.hi) == (max(0, s.start - 9), min(plan.n_tokens[0], s.end + 9))


def test_plan_counter_counts_every_token_once():
    config = load_model_config("tiny")
    geometries = {g.level: g for g in level_geometries(config)}
    lengths = [length_for_seconds(s, 44100, 128) for s in (2.0, 2.0, 0.4, 5.0)]
    counter = PlanCounter(list(geometries.values()), [2, 1, 0], config.sampling_rate)
    for n in lengths:
        counter.add(n)
    summary = counter.summary()
    assert summary["songs"] == 4
    assert summary["audio_seconds"] == pytest.approx(sum(lengths) / 44100, abs=1e-3)
    for stage, level in (("top", 2), ("middle", 1), ("bottom", 0)):
        entry = summary["levels"][stage]
        windows = [w for n in lengths for w in geometries[level].windows(n)]
        assert entry["tokens"] == sum(n // geometries[level].raw_to_tokens for n in lengths)
        assert entry["tokens"] == sum(w.n_new for w in windows)  # every token is sampled exactly once
        assert entry["windows"] == len(windows) and entry["window_tokens"] >= entry["tokens"]
    assert summary["windows"] == sum(e["windows"] for e in summary["levels"].values())
    top_only = PlanCounter(list(geometries.values()), [2], config.sampling_rate)
    for n in lengths:
        top_only.add(n)
    assert list(top_only.summary()["levels"]) == ["top"] and top_only.summary()["windows"] == summary["levels"]["top"]["windows"]
