"""The project's configuration as package data: the Hydra config tree (``config.yaml``, ``stages/``,
``experiment/``), the model presets (``model/``) and example song grids (``grids/``).

It ships inside the wheel, so an installed package (a cluster's ``runtime_env``, a non-editable
install) finds it: Hydra through its ``pkg://conf`` search path, the presets through
``importlib.resources``. Nothing here is code.
"""
