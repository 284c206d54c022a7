"""The output's lease and the writers it fences, on an injected clock (no sleeps, no Ray)."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys

import pytest

from pipeline.store.lease import LeaseInfo, OutputBusyError, RunLease, machine_identity
from pipeline.store.writer import FENCE_INTERVAL_S, LEASE_NAME, LeaseLostError, RunStorage


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


def _storage(url, clock, monotonic=None) -> RunStorage:
    return RunStorage(str(url), clock=clock, monotonic=monotonic or clock)


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_a_second_run_stops_at_once_naming_the_holder(tmp_path, clock):
    first = RunLease(_storage(tmp_path, clock), "run-a")
    first.acquire()
    before = sorted(p.name for p in tmp_path.iterdir())
    clock.now += 30  # alive: heartbeat within stale_s
    with pytest.raises(OutputBusyError, match=rf"in use by run run-a \(pid {os.getpid()} on {socket.gethostname()}.*another output.url"):
        RunLease(_storage(tmp_path, clock), "run-b").acquire()
    assert sorted(p.name for p in tmp_path.iterdir()) == before == [LEASE_NAME]
    assert LeaseInfo.read(_storage(tmp_path, clock)).run_id == "run-a"


def test_a_lease_without_heartbeat_is_taken_over_and_leftovers_removed(tmp_path, clock, caplog):
    RunLease(_storage(tmp_path, clock), "run-a", heartbeat_s=10, stale_s=60).acquire()
    leftover = tmp_path / "parts" / "s" / "level=0" / "000000000000-000000000008.parquet.jukebox-tmp-0123abcd"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a write")
    clock.now += 59
    with pytest.raises(OutputBusyError):
        RunLease(_storage(tmp_path, clock), "run-b").acquire()
    clock.now += 2  # 61 s without a heartbeat
    with caplog.at_level(logging.WARNING, logger="pipeline.store.lease"):
        RunLease(_storage(tmp_path, clock), "run-b").acquire()
    assert "taking over the stale lease of run run-a" in caplog.text
    assert LeaseInfo.read(_storage(tmp_path, clock)).run_id == "run-b"
    assert not leftover.exists()


def test_the_lease_of_a_dead_driver_on_this_host_is_stale_at_once(tmp_path, clock):
    storage = _storage(tmp_path, clock)
    dead = LeaseInfo("run-dead", socket.gethostname(), _dead_pid(), clock.now, clock.now, 60.0, machine_identity())
    storage.write_lease(dead.to_json(), exclusive=True)
    RunLease(storage, "run-new").acquire()  # no wait for the 60 s: its process is gone
    assert LeaseInfo.read(storage).run_id == "run-new"


def test_heartbeat_renews_and_release_removes_only_its_own_lease(tmp_path, clock):
    storage = _storage(tmp_path, clock)
    lease = RunLease(storage, "run-a", heartbeat_s=10, stale_s=60)
    lease.acquire()
    for _ in range(10):  # 100 s of heartbeats: never stale
        clock.now += 10
        lease.beat()
    assert LeaseInfo.read(storage).heartbeat_at == clock.now and lease.lost is None
    with pytest.raises(OutputBusyError):
        RunLease(storage, "run-b").acquire()
    # another run takes it (this one was presumed dead): the heartbeat notices, release leaves it
    storage.write_lease(LeaseInfo("run-b", "elsewhere", 1, clock.now, clock.now, 60.0).to_json(), exclusive=False)
    lease.beat()
    assert lease.lost == "the lease is now held by run run-b (pid 1 on elsewhere)"
    lease.release()
    assert LeaseInfo.read(storage).run_id == "run-b"
    mine = RunLease(_storage(tmp_path / "other", clock), "run-c")
    mine.acquire()
    mine.start_heartbeat()
    mine.release()
    assert not (tmp_path / "other" / LEASE_NAME).exists()


def test_a_writer_stops_within_a_second_of_losing_the_lease(tmp_path, clock):
    RunLease(_storage(tmp_path, clock), "run-a").acquire()
    writer = _storage(tmp_path, clock).for_run("run-a")
    writer.write_bytes(writer.path("one"), b"1")
    # another run takes the output over (this run's driver was presumed dead)
    _storage(tmp_path, clock).write_lease(LeaseInfo("run-b", "elsewhere", 1, clock.now, clock.now, 60.0).to_json(), exclusive=False)
    clock.now += FENCE_INTERVAL_S / 2
    writer.write_bytes(writer.path("two"), b"2")  # within the second it trusts its last look
    clock.now += FENCE_INTERVAL_S
    with pytest.raises(LeaseLostError, match=r"run run-a lost its lease .* \(held by run run-b"):
        writer.write_bytes(writer.path("three"), b"3")
    with pytest.raises(LeaseLostError):
        writer.remove(writer.path("one"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([LEASE_NAME, "one", "two"])


def test_a_writer_whose_driver_stopped_beating_stops(tmp_path, clock):
    """Timed from when the writer saw the heartbeat last change, on its own clock."""
    RunLease(_storage(tmp_path, clock), "run-a", heartbeat_s=10, stale_s=60).acquire()
    writer = _storage(tmp_path, clock).for_run("run-a")
    writer.write_json(writer.path("ok.json"), {"a": 1})
    clock.now += 59
    writer.write_json(writer.path("ok2.json"), {"a": 1})
    clock.now += 2
    with pytest.raises(LeaseLostError, match="no heartbeat for 61 s"):
        writer.write_json(writer.path("late.json"), {"a": 1})
    assert not (tmp_path / "late.json").exists()


def test_a_live_run_survives_a_step_of_the_wall_clock(tmp_path, clock):
    """The wall clock jumps 120 s ahead (and later back) while the run's own time moves on by
    seconds: its writers keep writing, and its heartbeat goes on."""
    own = Clock()
    lease = RunLease(_storage(tmp_path, clock, own), "run-a", heartbeat_s=10, stale_s=60)
    lease.acquire()
    writer = _storage(tmp_path, clock, own).for_run("run-a")
    writer.write_json(writer.path("before.json"), {"a": 1})
    for step in (120.0, -3600.0):
        clock.now += step
        own.now += FENCE_INTERVAL_S * 2
        writer.write_json(writer.path(f"after{step:+.0f}.json"), {"a": 1})
        lease.beat()
        assert lease.lost is None


def test_a_heartbeat_from_the_future_does_not_lock_the_output(tmp_path, clock, caplog):
    ahead = LeaseInfo("run-future", "elsewhere", 1, clock.now + 315_360_000, clock.now + 315_360_000, 60.0, "m:b")
    _storage(tmp_path, clock).write_lease(ahead.to_json(), exclusive=True)
    with caplog.at_level(logging.WARNING, logger="pipeline.store.lease"):
        RunLease(_storage(tmp_path, clock), "run-b").acquire()
    assert "dated 315360000 s ahead of this machine's clock" in caplog.text
    assert LeaseInfo.read(_storage(tmp_path, clock)).run_id == "run-b"
    # within stale_s ahead (clocks a little apart): a live run
    near = LeaseInfo("run-near", "elsewhere", 1, clock.now + 30, clock.now + 30, 60.0, "m:b")
    _storage(tmp_path, clock).write_lease(near.to_json(), exclusive=False)
    with pytest.raises(OutputBusyError, match="dated 30 s ahead"):
        RunLease(_storage(tmp_path, clock), "run-c").acquire()


def test_another_machine_of_the_same_name_is_judged_by_its_heartbeat_not_a_pid(tmp_path, clock):
    """A 4-second-old lease whose host name is this one's, but whose machine or boot is not:
    its pid means nothing here, so it is live until its heartbeat stops."""
    twin = LeaseInfo("run-twin", socket.gethostname(), _dead_pid(), clock.now - 4, clock.now - 4, 60.0, "other-machine:other-boot")
    _storage(tmp_path, clock).write_lease(twin.to_json(), exclusive=True)
    with pytest.raises(OutputBusyError, match="in use by run run-twin"):
        RunLease(_storage(tmp_path, clock), "run-b").acquire()
    assert machine_identity() and machine_identity() != twin.machine


def test_an_unreadable_lease_protects_nothing(tmp_path, clock, caplog):
    (tmp_path / LEASE_NAME).write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="pipeline.store.lease"):
        RunLease(_storage(tmp_path, clock), "run-a").acquire()
    assert "unreadable" in caplog.text
    assert json.loads((tmp_path / LEASE_NAME).read_text())["run_id"] == "run-a"


def test_stores_without_atomic_create_read_back(clock):
    """fsspec's memory file system has no exclusive create: the lease is written, then read back."""
    url = "memory://lease-test/out"
    first = RunLease(RunStorage(url, clock=clock), "run-a")
    first.acquire()
    with pytest.raises(OutputBusyError, match="run-a"):
        RunLease(RunStorage(url, clock=clock), "run-b").acquire()
    first.release()
    RunLease(RunStorage(url, clock=clock), "run-b").acquire()


def test_lease_settings_are_checked(tmp_path):
    with pytest.raises(ValueError, match="lease_heartbeat_s=60.*lease_stale_s=60"):
        RunLease(RunStorage(str(tmp_path)), "run-a", heartbeat_s=60, stale_s=60)
