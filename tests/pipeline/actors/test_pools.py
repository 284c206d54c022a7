"""Stage pools: GPU sets kept apart (fake GPUs), placement that cannot happen fails clearly."""
from __future__ import annotations

import time

import pytest

from pipeline.actors.pools import PlacementError, pack_bundles
from pipeline.execute.runner import run
from pipeline.run.config import PoolSpec
from pipeline.run.spec import Stage
from tests.pipeline.fakes import counting_factories


def test_pack_bundles_whole_gpus_per_stage():
    bundles = pack_bundles(
        {
            Stage.TOP: PoolSpec(num_actors=3, num_gpus=0.5, num_cpus=1),
            Stage.MIDDLE: PoolSpec(num_actors=2, num_gpus=2, resources={"big": 1}),
            Stage.TOKENIZE: PoolSpec(num_actors=1, num_gpus=0, num_cpus=0, label_selector={"role": "cpu"}),
        }
    )
    resources = [b.as_resources() for b in bundles]
    # 3 half-GPU actors need 2 whole GPUs; whole-GPU actors get a bundle each; CPU actors a token CPU.
    assert resources == [
        {"CPU": 2.0, "GPU": 1.0},
        {"CPU": 1.0, "GPU": 1.0},
        {"CPU": 0.25, "big": 1.0, "GPU": 2.0},
        {"CPU": 0.25, "big": 1.0, "GPU": 2.0},
        {"CPU": 0.001},
    ]
    assert [len(b.members) for b in bundles] == [2, 1, 1, 1, 1]
    assert bundles[-1].label_selector == {"role": "cpu"}


@pytest.mark.slow
def test_stages_hold_disjoint_gpu_sets(ray_session, make_cfg):
    cfg = make_cfg(
        "songs.0.duration_s=0.3", "songs.1.duration_s=0.3",
        "stages.top.num_gpus=0.5", "stages.top.gpu_group=shared",
        "stages.middle.num_gpus=0.5", "stages.middle.gpu_group=shared",
        "stages.bottom.num_actors=2", "stages.bottom.num_gpus=0.5",
        "stages.decode.num_gpus=1",
    )
    result = run(cfg, factories=counting_factories())
    gpus = {stage: [set(a["gpu_ids"]) for a in actors] for stage, actors in result.actors.items()}
    assert gpus["tokenize"] == [set()]
    top, middle = gpus["top"][0], gpus["middle"][0]
    assert len(top) == 1 and top == middle  # same gpu_group: they may share, and do
    bottom = set().union(*gpus["bottom"])
    assert len(bottom) == 1  # two half-GPU actors packed onto the stage's own GPU
    (decode,) = gpus["decode"]
    assert len(decode) == 1
    assert len(top | bottom | decode) == 3  # every stage's set disjoint from the others
    assert len(result.rows) == 2


def test_a_stage_whose_resources_are_held_fails_with_a_clear_message(ray_session, make_cfg):
    """A request the cluster could hold (so the check before placement lets it through) while other
    work holds the resources: placement gives up after placement_timeout_s, naming the stage."""
    from ray.util.placement_group import placement_group, remove_placement_group

    blocker = placement_group([{"GPU": 1.0}] * 4, strategy="PACK")  # every fake GPU of the session
    ray_session.get(blocker.ready(), timeout=60)
    try:
        cfg = make_cfg("stages.top.num_gpus=1", "ray.placement_timeout_s=1.0")
        started = time.monotonic()
        with pytest.raises(PlacementError) as err:
            run(cfg, factories=counting_factories())
        assert time.monotonic() - started < 20
    finally:
        remove_placement_group(blocker)
    message = str(err.value)
    assert "within ray.placement_timeout_s=1.0 s" in message and "'GPU': 1.0" in message and "The cluster has" in message
    leftover = [pg for pg in ray_session.util.placement_group_table().values() if pg["state"] != "REMOVED"]
    assert leftover == []


@pytest.mark.parametrize(
    "override, needle",
    [("stages.top.num_gpus=8", "stages.top.num_gpus=8"), ("+stages.bottom.label_selector={zone: mars}", "{'zone': 'mars'}")],
)
def test_a_stage_the_cluster_can_never_hold_fails_before_placement(ray_session, make_cfg, override, needle):
    groups = len(ray_session.util.placement_group_table())
    with pytest.raises(ValueError, match="no node of the Ray cluster") as err:
        run(make_cfg(override), factories=counting_factories())
    assert needle in str(err.value)
    assert len(ray_session.util.placement_group_table()) == groups  # not even a placement group was made
