"""Ray's processes end with the driver that started them, even one killed with ``kill -9``.

A driver that starts a local Ray (``ray.init()``) owns its processes (GCS, raylet, agents, the
actors' workers). Killed abruptly, it leaves them: the actors for a few seconds, the dashboard and
runtime-env agents for a minute or more. :func:`watch` starts a small watchdog process that holds
the read end of a pipe whose write end only the driver holds; when the driver is gone, for
whatever reason, the pipe closes and the watchdog kills the processes the driver had started and
their descendants (each recognised by its pid *and* start time, so a reused pid is never hit).
"""
from __future__ import annotations

import json
import subprocess
import sys

import psutil

_GRACE_S = 2.0  # after a normal ray.shutdown(), what is still alive this long later is killed


def watch() -> subprocess.Popen:
    """Start the watchdog of this process's Ray processes (call right after ``ray.init``)."""
    own = [(p.pid, p.create_time()) for p in psutil.Process().children(recursive=True)]
    watchdog = subprocess.Popen(
        [sys.executable, "-m", "pipeline.actors.reaper"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, close_fds=True
    )
    assert watchdog.stdin is not None
    watchdog.stdin.write(json.dumps(own).encode() + b"\n")
    watchdog.stdin.flush()  # the pipe stays open until this process exits (or release() closes it)
    return watchdog


def release(watchdog: subprocess.Popen) -> None:
    """The driver is done with Ray (after ``ray.shutdown()``): let the watchdog clean up and exit."""
    if watchdog.stdin is not None:
        watchdog.stdin.close()
    watchdog.wait()


def _reap(recorded: list[tuple[int, float]]) -> None:
    found: dict[int, psutil.Process] = {}
    for pid, started in recorded:
        try:
            process = psutil.Process(pid)
            if abs(process.create_time() - started) > 1e-3:
                continue  # another process reuses the pid
            found[pid] = process
            for child in process.children(recursive=True):
                found[child.pid] = child
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(list(found.values()), timeout=_GRACE_S)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def main() -> None:
    recorded = [tuple(item) for item in json.loads(sys.stdin.readline() or "[]")]
    sys.stdin.read()  # returns when the driver closes the pipe or dies
    _reap(recorded)


if __name__ == "__main__":
    main()
