"""What every Ray worker of a training run on its own local Ray does first (a runtime-env
``worker_process_setup_hook``; this module imports nothing heavy, since every worker runs it).

Ray Train starts a ``PlacementGroupCleaner`` actor that asks Ray's state API, once a second,
whether the training controller is still alive. A local Ray started without the dashboard has no
state API: every question fails and logs a warning (45 in a 20-step run), and the cleaner can
never act. It is not needed there: the run's own Ray, placement groups included, ends with the
driver (pipeline.actors.reaper). Its warnings are silenced; errors still show.
"""
from __future__ import annotations

import logging

PLACEMENT_GROUP_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
HOOK = f"{__name__}.quiet_placement_group_cleaner"


def quiet_placement_group_cleaner() -> None:
    logging.getLogger(PLACEMENT_GROUP_CLEANER_LOGGER).setLevel(logging.ERROR)
