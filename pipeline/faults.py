"""Injection points for fault tests: named places in the pipeline where a test can make a
process die or pause.

Tests set ``JUKEBOX_FAULTS`` to ``point@N[:action],...`` (a point may appear with several N); the
N-th time a process passes ``point`` (counted per process) it takes the action:

- ``exit`` (default): ``os._exit(137)``, as a ``kill -9`` would end it (no cleanup, no finally);
- ``enospc``: raise ``OSError(ENOSPC)``, as a write to a full disk does;
- ``pause=DIR``: write a line to the FIFO ``DIR/paused`` (blocks until the test reads it: the test
  now knows where the process is), then read one from ``DIR/resume`` (blocks until the test
  writes it). No clocks: faults land at exact points of the work, whatever the machine's load.

An actor restarted by Ray after a fault killed it does not fire again (it finishes the work).

Without the variable a point costs one dictionary lookup. The driver hands the variable to the
stage actors it starts (:func:`actor_runtime_env`).
"""
from __future__ import annotations

import errno
import logging
import os
import select
from collections import Counter

logger = logging.getLogger(__name__)

ENV = "JUKEBOX_FAULTS"

_hits: Counter[str] = Counter()


def _plan() -> dict[str, dict[int, str]]:
    """``point -> {hit: action}`` from the environment."""
    plan: dict[str, dict[int, str]] = {}
    for entry in filter(None, (item.strip() for item in os.environ.get(ENV, "").split(","))):
        point, _, rest = entry.partition("@")
        hit, _, action = rest.partition(":")
        plan.setdefault(point, {})[int(hit or 1)] = action or "exit"
    return plan


def point(name: str) -> None:
    """A place a fault test may stop this process at (see the module docstring)."""
    if ENV not in os.environ:
        return
    planned = _plan().get(name)
    if planned is None:
        return
    if _restarted_actor():
        return  # the fault killed this actor once; Ray restarted it to finish the work
    _hits[name] += 1
    hit = _hits[name]
    action = planned.get(hit)
    if action is None:
        return
    if action == "exit":
        logger.warning("fault injection: %s (hit %d): exiting", name, hit)
        os._exit(137)
    if action == "enospc":
        logger.warning("fault injection: %s (hit %d): no space left", name, hit)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)
    kind, _, where = action.partition("=")
    if kind != "pause" or not where:
        raise ValueError(f"{ENV}: unknown action {action!r} for {name!r}: expected exit, enospc or pause=DIR")
    with open(os.path.join(where, "paused"), "w") as fifo:
        fifo.write(f"{name}\n")
    _read_line(os.path.join(where, "resume"))


def _read_line(path: str) -> None:
    """Wait for a line on the FIFO ``path``, in short waits: a signal to this process (Ctrl-C,
    SIGTERM) is handled while it waits, as it would be while the pipeline works."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready and os.read(fd, 4096).endswith(b"\n"):
                return
    finally:
        os.close(fd)


def _restarted_actor() -> bool:
    """Whether this process is a Ray actor restarted after dying (a fault fires once per actor)."""
    import ray

    if not ray.is_initialized():
        return False
    context = ray.get_runtime_context()
    return context.get_actor_id() is not None and context.was_current_actor_reconstructed


def actor_runtime_env() -> dict:
    """The runtime environment that hands this process's fault plan to the actors it starts."""
    if ENV not in os.environ:
        return {}
    return {"env_vars": {ENV: os.environ[ENV]}}
