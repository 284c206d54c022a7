"""The streaming Ray pipeline: Hydra config in, songs (tokens, audio, manifest) out.

``python -m pipeline`` (or ``jukebox-pipeline``) composes ``conf/config.yaml`` and calls
:func:`pipeline.execute.runner.run`. Four concerns, a subpackage each:

- :mod:`pipeline.run`: what a run is (typed config, songs and grids, prompts, labels, and every
  check made before anything starts);
- :mod:`pipeline.execute`: how it executes (plans, the driver's scheduler, batching, progress);
- :mod:`pipeline.actors`: where it executes (actor pools, stage actors, the tasks they take,
  cluster checks);
- :mod:`pipeline.store`: what it writes (the one writer and its lease, parts, checks, manifests).

:mod:`pipeline.train` trains the model's components on Ray Train from the same config.
"""
