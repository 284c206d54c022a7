"""PriorWindowStage: cross-song batching never changes a song's tokens."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.loading import load_prior
from models.presets import preset_tokenizer_settings
from models.prior.sampling import SamplingOptions
from models.seeding import window_seed
from models.tokenizer import JukeboxTokenizer
from stages.prior_window import PriorWindowStage, WindowRequest
from tests.pipeline.fakes import CountingPrior
from tests.stages.batches import run_grouped

OPTIONS = SamplingOptions(temperature=0.98)


def _request(song: str, seed: int, *, start: int = 0, n_context: int = 0, n_new: int = 8, upper: int | None = None, labels=(0, 0, 0, 1, 2)) -> WindowRequest:
    rng = np.random.default_rng(seed)
    return WindowRequest(
        song_id=song,
        labels=np.asarray(labels, dtype=np.int64),
        context=rng.integers(0, 256, n_context).astype(np.int32),
        upper=None if upper is None else rng.integers(0, 256, upper).astype(np.int32),
        start=start,
        n_new=n_new,
        total_length=44032,
        seed=seed,
        options=OPTIONS,
    )


def test_batched_equals_one_by_one_and_groups_by_shape():
    requests = [_request(f"s{i}", 100 + i, n_context=4 * (i % 2), n_new=8 - 4 * (i % 2)) for i in range(6)]
    batched = PriorWindowStage(CountingPrior(), max_batch=4)
    alone = PriorWindowStage(CountingPrior(), max_batch=1)
    together = run_grouped(batched, requests)
    single = run_grouped(alone, requests)
    for a, b, request in zip(together, single, requests):
        assert a.tokens.dtype == np.int32 and a.tokens.shape == (request.n_new,)
        np.testing.assert_array_equal(a.tokens, b.tokens)
    # two shapes -> two batches of 3 (not one of 6, not six of 1)
    assert sorted(size for _, _, size in batched.prior.calls) == [3, 3]
    assert {r.batch_size for r in together} == {3}


def test_run_batch_refuses_mismatched_or_oversized_batches():
    stage = PriorWindowStage(CountingPrior(), max_batch=2)
    with pytest.raises(ValueError, match="do not line up"):
        stage.run_batch([_request("a", 1), _request("b", 2, n_new=4)])
    with pytest.raises(ValueError, match="more than max_batch=2"):
        stage.run_batch([_request(str(i), i) for i in range(3)])
    with pytest.raises(ValueError, match="max_batch"):
        PriorWindowStage(CountingPrior(), max_batch=0)


@pytest.mark.slow
def test_tiny_prior_batches_songs_with_different_lyrics():
    """Real tiny top prior: two songs (lyrics of different lengths) batched = sampled alone."""
    torch.manual_seed(0)
    prior = load_prior("tiny", 0, init_seed=0)
    tokenizer = JukeboxTokenizer(**preset_tokenizer_settings("tiny"))
    songs = [("Alan Jackson", ["country"], "old town road"), ("Ella Fitzgerald", ["jazz"], "a much longer line of lyrics to sing")]
    requests = []
    for index, (artist, genres, lyrics) in enumerate(songs):
        labels = np.asarray(tokenizer.encode(artist, genres, lyrics)[0], dtype=np.int64)
        requests.append(
            WindowRequest(f"s{index}", labels, np.zeros(0, np.int32), None, 0, 24, 44032, window_seed(7 + index, 2, 0), OPTIONS)
        )
    assert len(requests[0].labels) != len(requests[1].labels)
    together = run_grouped(PriorWindowStage(prior, max_batch=2), requests)
    alone = run_grouped(PriorWindowStage(prior, max_batch=1), requests)
    assert together[0].batch_size == 2
    for a, b in zip(together, alone):
        np.testing.assert_array_equal(a.tokens, b.tokens)
        assert a.tokens.min() >= 0 and a.tokens.max() < 256


def test_windows_of_songs_of_different_lengths_and_positions_share_a_batch():
    """Real tiny middle prior: windows at different starts of songs of different lengths, batched
    together, give the tokens each gets alone; the batch key ignores position and length."""
    prior = load_prior("tiny", 1, init_seed=0)
    rng = np.random.default_rng(0)
    requests = []
    for index, (start, total) in enumerate([(0, 44032), (128, 88064), (384, 132096)]):
        requests.append(
            WindowRequest(
                # artist 5, genre 3 and four empty genre slots (the upsamplers read five, as released)
                f"s{index}", np.asarray([0, 0, 0, 5, 3, -1, -1, -1, -1], dtype=np.int64), rng.integers(0, 256, 16).astype(np.int32),
                rng.integers(0, 256, 8).astype(np.int32), start, 16, total, window_seed(index, 1, start), OPTIONS,
                offset=index * 1024,
            )
        )
    assert len({r.batch_key() for r in requests}) == 1
    together = run_grouped(PriorWindowStage(prior, max_batch=3), requests)
    alone = run_grouped(PriorWindowStage(prior, max_batch=1), requests)
    assert [r.batch_size for r in together] == [3, 3, 3]
    for a, b in zip(together, alone):
        np.testing.assert_array_equal(a.tokens, b.tokens)
