"""Ray's processes end with the driver that started them, even one killed with ``kill -9`` or
interrupted while Ray was still starting.

A driver that starts a local Ray (``ray.init()``) owns its processes (GCS, raylet, agents, the
actors' workers). Killed abruptly, it leaves them: the actors for a few seconds, the dashboard and
runtime-env agents for a minute or more. :func:`watch` (called just *before* ``ray.init``) starts a
small watchdog process that holds the read end of a pipe whose write end only the driver holds.
While the pipe is open the watchdog notes, twice a second, the Ray processes among the driver's
descendants (each by its pid *and* start time, so a reused pid is never hit); when the pipe
closes -- :func:`release` after ``ray.shutdown()``, or the driver gone for whatever reason -- it
kills those still alive after a grace period, and their descendants.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys

import psutil

_GRACE_S = 2.0  # after a normal ray.shutdown(), what is still alive this long later is killed
_POLL_S = 0.5
_RAY_NAMES = ("raylet", "gcs_server")


def watch() -> subprocess.Popen:
    """Start the watchdog of this process's Ray processes (call right before ``ray.init``)."""
    return subprocess.Popen([sys.executable, "-m", "pipeline.actors.reaper", str(os.getpid())], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, close_fds=True)


def release(watchdog: subprocess.Popen) -> None:
    """The driver is done with Ray (after ``ray.shutdown()``): let the watchdog clean up and exit."""
    if watchdog.stdin is not None:
        watchdog.stdin.close()
    watchdog.wait()


def _is_ray(process: psutil.Process) -> bool:
    """A process of Ray's (its binaries, agents, workers and actors), not any child of the driver."""
    try:
        name = process.name()
        if name in _RAY_NAMES or name.startswith("ray::"):
            return True
        return any(f"{os.sep}ray{os.sep}" in part for part in process.cmdline()[:3])
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _note(driver: psutil.Process, seen: dict[int, float]) -> None:
    try:
        for child in driver.children(recursive=True):
            if child.pid not in seen and _is_ray(child):
                seen[child.pid] = child.create_time()
    except psutil.NoSuchProcess:
        pass


def _reap(recorded: dict[int, float]) -> None:
    found: dict[int, psutil.Process] = {}
    for pid, started in recorded.items():
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
    # a Ctrl-C at the terminal, or a SIGTERM to the whole process group, reaches this process
    # too: it must outlive the driver to clean up after it, and it exits once the driver is gone
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    driver = psutil.Process(int(sys.argv[1]))
    seen: dict[int, float] = {}
    stdin = sys.stdin.buffer
    while True:
        _note(driver, seen)
        ready, _, _ = select.select([stdin], [], [], _POLL_S)
        if ready and not stdin.read1(4096):  # end of file: the driver released Ray, or is gone
            break
    _reap(seen)


if __name__ == "__main__":
    main()
