"""Crop and window sampling: deterministic per step, uniform, the same global batch for any world size."""
from __future__ import annotations

import numpy as np
import pytest

from models.training import CropSampler, Pick, audio_crops, shard


def test_draw_is_a_function_of_seed_and_step():
    sampler = CropSampler((100, 50, 70), 20)
    assert sampler.draw(1, 5, 8) == sampler.draw(1, 5, 8)
    assert sampler.draw(1, 5, 8) != sampler.draw(1, 6, 8)
    assert sampler.draw(1, 5, 8) != sampler.draw(2, 5, 8)
    assert sampler.draw(1, 5, 8, stream=1) != sampler.draw(1, 5, 8)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_shards_partition_the_global_batch_in_rank_order(world):
    picks = CropSampler((100, 50), 10).draw(0, 3, 8)
    shards = [shard(picks, rank, world) for rank in range(world)]
    assert [p for part in shards for p in part] == picks
    assert len({len(part) for part in shards}) == 1


def test_uneven_shards_are_refused():
    with pytest.raises(ValueError, match="6 does not split evenly over 4"):
        shard([Pick(0, 0)] * 6, 0, 4)


def test_every_window_is_equally_likely_and_short_items_give_none():
    sampler = CropSampler((10, 5, 2), 3)  # 8 + 3 + 0 windows
    assert sampler.n_windows == 11
    picks = sampler.draw(0, 0, 22000)
    counts: dict[tuple[int, int], int] = {}
    for pick in picks:
        counts[(pick.item, pick.start)] = counts.get((pick.item, pick.start), 0) + 1
    assert sorted(counts) == [(0, s) for s in range(8)] + [(1, s) for s in range(3)]
    assert all(abs(c - 2000) < 4 * np.sqrt(2000) for c in counts.values()), counts


def test_aligned_starts_stay_inside_their_item():
    sampler = CropSampler((64, 37), 16, align=4)
    for pick in sampler.draw(0, 0, 500):
        assert pick.start % 4 == 0 and pick.start + 16 <= (64, 37)[pick.item]
    with pytest.raises(ValueError, match="no item of 2 holds a window of 80"):
        CropSampler((64, 37), 80)


def test_audio_crops_are_the_picked_slices():
    songs = [np.arange(30, dtype=np.float32).reshape(15, 2), np.arange(40, dtype=np.float32).reshape(20, 2) + 100]
    crops = audio_crops(songs, [Pick(1, 3), Pick(0, 0)], 5)
    assert crops.shape == (2, 5, 2)
    np.testing.assert_array_equal(crops[0].numpy(), songs[1][3:8])
    np.testing.assert_array_equal(crops[1].numpy(), songs[0][:5])
