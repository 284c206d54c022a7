"""How a run executes: plans of windows and segments, the driver's scheduler, cross-song batching, progress, ``run(cfg)``."""
