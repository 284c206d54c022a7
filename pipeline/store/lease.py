"""One run per output at a time: the output's lease.

A run takes ``lease.json`` at its output root before writing anything and renews it (a heartbeat)
while it runs; a second run on the same output stops at once with a message naming the holder.
The lease is taken with an atomic create where the file system has one (local disks), and by
write-then-read-back where it has not (object stores: the last writer wins, and the loser's
fenced writes stop within a second, see :meth:`pipeline.store.writer.RunStorage._fence`).

A lease is stale, and taken over (the leftovers of the dead run, temporary files, are removed),
when:

- its holder ran on this machine (same host name *and* same machine and boot id: another machine
  may carry the same name, and a rebooted one reuses pids) and its process is gone (a driver
  killed with ``kill -9`` leaves its lease behind); or
- its heartbeat is more than ``stale_s`` old by this machine's clock; or more than ``stale_s`` in
  the future (its holder's clock is set otherwise: the timestamp proves nothing, and a lease that
  can never expire would lock the output for good). Machines that share an output must keep their
  clocks within ``stale_s`` of each other.

A run's own writers (:meth:`pipeline.store.writer.RunStorage._fence`) judge their lease by the
heartbeat changing, timed on their own monotonic clock: a clock step on the machine does not stop
a live run.

Wall time comes from the storage's clock, so tests move it by hand.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import socket
import threading
from dataclasses import asdict, dataclass

from pipeline.store.writer import LEASE_NAME, RunStorage

logger = logging.getLogger(__name__)

HEARTBEAT_S = 10.0
STALE_S = 60.0


def _age(now: float, then: float) -> str:
    return f"{now - then:.0f} s ago" if then <= now else f"dated {then - now:.0f} s ahead of this machine's clock"


class OutputBusyError(ValueError):
    """Another run holds the output's lease (a usage error: wait for it, or use another output)."""


@functools.cache
def machine_identity() -> str:
    """This machine and boot: the machine id and the kernel's boot id (Linux), else empty (then
    no lease is judged by its holder's pid)."""
    parts = []
    for path in ("/etc/machine-id", "/proc/sys/kernel/random/boot_id"):
        try:
            with open(path) as handle:
                parts.append(handle.read().strip())
        except OSError:
            parts.append("")
    return ":".join(parts) if any(parts) else ""


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


@dataclass(frozen=True)
class LeaseInfo:
    """What ``lease.json`` holds: the run, where its driver runs, its last heartbeat."""

    run_id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    stale_s: float
    machine: str = ""

    @property
    def owner(self) -> str:
        return f"pid {self.pid} on {self.host}"

    def expired(self, now: float) -> bool:
        """No heartbeat for longer than ``stale_s``, or one dated more than ``stale_s`` ahead."""
        return abs(now - self.heartbeat_at) > self.stale_s

    def on_this_machine(self) -> bool:
        """Its driver ran on this machine, in this boot (not merely on a host of the same name)."""
        return self.host == socket.gethostname() and bool(self.machine) and self.machine == machine_identity()

    def stale(self, now: float) -> bool:
        """Expired, or its driver ran on this machine and is gone."""
        return self.expired(now) or (self.on_this_machine() and not _process_alive(self.pid))

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def read(cls, storage: RunStorage) -> LeaseInfo | None:
        """The lease of ``storage``'s output; None when there is none or it is unreadable (a
        damaged lease protects nothing)."""
        path = storage.path(LEASE_NAME)
        try:
            with storage.fs.open(path, "rb") as handle:
                data = json.loads(handle.read())
            return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name != "machine"},
                       machine=str(data.get("machine", "")))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as err:
            logger.warning("the lease %s is unreadable (%s): treated as absent", storage.uri(path), err)
            return None


class RunLease:
    """The lease of one run on one output.

    Args:
        storage: the output (its clock is the lease's clock).
        run_id: this run.
        heartbeat_s: seconds between heartbeats (:meth:`start_heartbeat`).
        stale_s: a lease without a heartbeat for this long may be taken over.
    """

    def __init__(self, storage: RunStorage, run_id: str, heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S) -> None:
        if not 0 < heartbeat_s < stale_s:
            raise ValueError(f"output.lease_heartbeat_s={heartbeat_s} must be > 0 and below output.lease_stale_s={stale_s}")
        self.storage, self.run_id = storage, run_id
        self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: str | None = None  # why the heartbeat found the lease gone

    def _info(self, started_at: float | None = None) -> LeaseInfo:
        now = self.storage.clock()
        return LeaseInfo(self.run_id, socket.gethostname(), os.getpid(), now if started_at is None else started_at, now,
                         self.stale_s, machine_identity())

    def _create(self, info: LeaseInfo) -> bool:
        """Create the lease file if none exists; True when this run now holds it."""
        return self.storage.write_lease(info.to_json(), exclusive=True) and self._holds()

    def _holds(self) -> bool:
        """Read back: does the lease file name this run?"""
        holder = LeaseInfo.read(self.storage)
        return holder is not None and holder.run_id == self.run_id

    def acquire(self) -> None:
        """Take the lease, taking over a stale one; :class:`OutputBusyError` naming the holder
        when a live run holds it. Leftovers of a dead run are removed once taken."""
        info = self._info()
        if not self._create(info):
            self._take_over(info)
        removed = self.storage.for_run(self.run_id).remove_temporaries()
        if removed:
            logger.info("removed %d temporary file(s) left by an interrupted run", removed)

    def _take_over(self, info: LeaseInfo) -> None:
        """Take the lease from a stale holder; :class:`OutputBusyError` when it is live."""
        holder = LeaseInfo.read(self.storage)
        now = self.storage.clock()
        if holder is not None and not holder.stale(now):
            raise OutputBusyError(
                f"output.url {self.storage.url!r} is in use by run {holder.run_id} ({holder.owner}, started "
                f"{now - holder.started_at:.0f} s ago, last heartbeat {_age(now, holder.heartbeat_at)}): wait for it "
                f"to finish, or write to another output.url"
            )
        if holder is not None:
            logger.warning("taking over the stale lease of run %s (%s, last heartbeat %s) on %s",
                           holder.run_id, holder.owner, _age(now, holder.heartbeat_at), self.storage.url)
        self.storage.write_lease(info.to_json(), exclusive=False)
        if not self._holds():
            raise OutputBusyError(f"output.url {self.storage.url!r} was taken by another run at the same moment: retry")

    def beat(self) -> None:
        """Renew the heartbeat; records :attr:`lost` (and stops renewing) once another run holds it."""
        holder = LeaseInfo.read(self.storage)
        if holder is None or holder.run_id != self.run_id:
            self.lost = f"the lease is now {'gone' if holder is None else f'held by run {holder.run_id} ({holder.owner})'}"
            self._stop.set()
            return
        self.storage.write_lease(self._info(started_at=holder.started_at).to_json(), exclusive=False)

    def start_heartbeat(self) -> None:
        """Renew the lease every ``heartbeat_s`` seconds on a daemon thread until :meth:`release`."""
        def loop() -> None:
            while not self._stop.wait(self.heartbeat_s):
                try:
                    self.beat()
                except OSError as err:  # a storage hiccup: the next beat retries, stale_s leaves room
                    logger.warning("lease heartbeat on %s failed: %s", self.storage.url, err)

        self._thread = threading.Thread(target=loop, name="lease-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop the heartbeat and delete the lease if this run still holds it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._holds():
            self.storage.remove_lease()
