"""How a run executes.

Plans of windows and segments, the driver's scheduler, cross-song batching, progress,
``run(cfg)``.
"""
