"""What a run asks of Ray when it starts its own: the job's runtime environment."""
from __future__ import annotations

import logging

from ray.train.v2._internal.execution.controller import placement_group_cleaner

from pipeline.actors import worker_setup
from pipeline.execute.runner import runtime_env, to_run_config
from tests.pipeline.conftest import compose_config

TRAIN = ["mode=train", "train.component=vqvae", "train.audio_url=unused"]


def test_a_training_run_on_its_own_ray_silences_the_placement_group_cleaner_only_there():
    train = to_run_config(compose_config(TRAIN))
    assert runtime_env(train) == {"worker_process_setup_hook": worker_setup.HOOK}
    # the hook names a function Ray can import, and it silences that logger's warnings
    module, _, name = worker_setup.HOOK.rpartition(".")
    assert getattr(__import__(module, fromlist=[name]), name) is worker_setup.quiet_placement_group_cleaner
    logger = logging.getLogger(worker_setup.PLACEMENT_GROUP_CLEANER_LOGGER)
    saved = logger.level
    try:
        worker_setup.quiet_placement_group_cleaner()
        assert not logger.isEnabledFor(logging.WARNING) and logger.isEnabledFor(logging.ERROR)
    finally:
        logger.setLevel(saved)
    # the module is the one Ray Train logs from (a renamed module would make the hook a no-op)
    assert placement_group_cleaner.logger.name == worker_setup.PLACEMENT_GROUP_CLEANER_LOGGER
    # with a dashboard (a state API), on a cluster, or generating: nothing added
    assert runtime_env(to_run_config(compose_config([*TRAIN, "ray.include_dashboard=true"]))) is None
    assert runtime_env(to_run_config(compose_config([*TRAIN, "ray.address=auto"]))) is None
    assert runtime_env(to_run_config(compose_config([]))) is None
