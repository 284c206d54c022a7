"""Where a run executes.

The Ray actor pools, the stage actors and the messages they take, the checks of a cluster's
resources, the watchdog of a local Ray.
"""
