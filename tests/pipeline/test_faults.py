"""Faults against a real local Ray and real files: whatever happens to a run or its output, running
it again ends with every song complete, readable by plain pyarrow/pandas, identical to a clean
run, and nothing left in ``parts/``.

Faults land at exact points of the work through injection points (:mod:`pipeline.faults`): a
process dies (``os._exit``, as ``kill -9``) or pauses on a FIFO until the test lets it go. Drivers
that must die run as their own process (``python -m tests.pipeline.runs``, with its own Ray). The
priors are counting stand-ins, so runs take seconds; tokenization, decoding, storage and the
scheduler are the real ones.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import soundfile

from pipeline.faults import ENV as FAULTS
from pipeline.store.lease import LeaseInfo, OutputBusyError
from pipeline.store.ownership import MARKER_NAME
from pipeline.execute.runner import run
from pipeline.store.writer import LEASE_NAME
from tests.pipeline.conftest import compose_config
from tests.pipeline.fakes import counting_factories
from tests.pipeline.runs import DELAY_S, SONG_IDS, SONGS, assert_same, outputs, three_songs

REPO = Path(__file__).resolve().parents[2]


def _cfg(out: Path, *overrides: str):
    return three_songs(compose_config([f"output.url={out}", "scheduler.progress_interval_s=0.5", *SONGS, *overrides]))


def _run(out: Path, *overrides: str):
    return run(_cfg(out, *overrides), factories=counting_factories(DELAY_S))


def _calls(result, *stages: str) -> int:
    return sum(result.summary.stages[s]["calls"] for s in stages if s in result.summary.stages)


def _assert_complete(out: Path, expected: dict) -> None:
    """Every song complete and identical, readable without project code, no parts or lease left."""
    assert_same(outputs(str(out)), expected)
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert sorted(manifest["song_id"]) == sorted(SONG_IDS)
    for level in (0, 1, 2):
        assert len(pd.read_parquet(out / "tokens" / f"level={level}")) == len(SONG_IDS)
    assert sorted(p.stem for p in (out / "done").iterdir()) == sorted(SONG_IDS)
    assert not (out / "parts").exists() or not any((out / "parts").iterdir())
    assert not (out / LEASE_NAME).exists()
    assert not list(out.rglob("*.jukebox-tmp-*"))


@pytest.fixture(scope="module")
def clean(ray_session, tmp_path_factory):
    """A clean run's output and what it holds."""
    out = tmp_path_factory.mktemp("clean") / "out"
    _run(out)
    return out, outputs(str(out))


@pytest.fixture(scope="module")
def parts(ray_session, tmp_path_factory):
    """A clean run that kept its parts: interrupted states are made from them."""
    out = tmp_path_factory.mktemp("parts") / "out"
    _run(out, "output.keep_parts=true")
    return out


def _copy(clean_out: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(clean_out, out)
    return out


def _interrupted(parts_out: Path, tmp_path: Path) -> Path:
    """Every window and segment of every song stored, none closed (as a run killed before closing)."""
    out = tmp_path / "out"
    shutil.copytree(parts_out / "parts", out / "parts")
    shutil.copy(parts_out / MARKER_NAME, out / MARKER_NAME)  # the killed run had marked its output
    return out


class Gate:
    """A pause point's two FIFOs: ``wait()`` returns once the paused process is there, ``go()``
    lets it continue."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        os.mkfifo(directory / "paused")
        os.mkfifo(directory / "resume")

    def wait(self) -> str:
        with open(self.dir / "paused") as fifo:
            return fifo.readline().strip()

    def go(self) -> None:
        with open(self.dir / "resume", "w") as fifo:
            fifo.write("go\n")


# ----------------------------------------------------------------------------- damaged files
@pytest.mark.slow
@pytest.mark.parametrize("damage, remade", [
    ("tokens/level=0/jazz_night.parquet", {"bottom", "decode"}),  # upper levels kept from their token files
    # sampling is deterministic: the top level comes back as it was, so the levels below it stay valid
    ("tokens/level=2/third.parquet", {"top", "decode"}),
    ("audio/country_morning.wav", {"decode"}),  # every level kept: decoded again
    ("done/third.json", {"decode"}),  # an unreadable marker: its song is closed again from its files
])
def test_a_damaged_file_is_set_aside_and_remade(damage, remade, clean, tmp_path):
    clean_out, expected = clean
    out = _copy(clean_out, tmp_path)
    with open(out / damage, "r+b") as handle:
        handle.truncate(100)  # as `truncate -s 100`
    result = _run(out)
    _assert_complete(out, expected)
    set_aside = [p.relative_to(out / "damaged") for p in (out / "damaged").rglob("*") if p.is_file()]
    assert any(str(p).endswith(damage) for p in set_aside), set_aside
    song = Path(damage).stem
    assert sorted(result.skipped) == sorted(s for s in SONG_IDS if s != song)
    for stage in ("top", "middle", "bottom", "decode"):
        assert (_calls(result, stage) > 0) == (stage in remade), stage


@pytest.mark.slow
def test_a_damaged_manifest_is_rewritten(clean, tmp_path):
    clean_out, expected = clean
    out = _copy(clean_out, tmp_path)
    (out / "manifest.parquet").write_bytes(b"PAR1 not a parquet file")
    result = _run(out)
    _assert_complete(out, expected)
    assert sorted(result.skipped) == sorted(SONG_IDS)


@pytest.mark.slow
def test_a_damaged_part_and_spec_are_set_aside_and_recomputed(parts, clean, tmp_path):
    _, expected = clean
    out = _interrupted(parts, tmp_path)
    part = sorted((out / "parts" / "jazz_night" / "level=0").iterdir())[3]
    with open(part, "r+b") as handle:
        handle.truncate(40)
    (out / "parts" / "third" / "spec.json").write_text("{not json")
    result = _run(out)
    _assert_complete(out, expected)
    assert _calls(result, "top", "middle", "bottom") == 1  # that one window, nothing else
    damaged = {p.name for p in (out / "damaged").rglob("*") if p.is_file()}
    assert damaged == {part.name, "spec.json"}


@pytest.mark.slow
def test_verify_reads_whole_files_against_their_checksums(clean, tmp_path):
    clean_out, expected = clean
    out = _copy(clean_out, tmp_path)
    wav = out / "audio" / "jazz_night.wav"
    data = bytearray(wav.read_bytes())
    data[-10] ^= 0x40  # one flipped bit in the samples: same size, same header
    wav.write_bytes(bytes(data))
    cheap = _run(out)
    assert sorted(cheap.skipped) == sorted(SONG_IDS)  # size and header cannot see it
    deep = _run(out, "output.verify=true")
    assert deep.skipped and "jazz_night" not in deep.skipped and _calls(deep, "decode") > 0
    _assert_complete(out, expected)


# ----------------------------------------------------------------------------- movable output
@pytest.mark.slow
def test_a_moved_output_resumes_where_it_is(clean, tmp_path):
    clean_out, expected = clean
    out = _copy(clean_out, tmp_path / "moved" / "elsewhere")
    shutil.rmtree(out / "audio")  # and its audio lost on the way
    result = _run(out)
    _assert_complete(out, expected)
    assert _calls(result, "top", "middle", "bottom") == 0
    for path in [out / "manifest.parquet", *(out / "done").iterdir()]:
        assert str(clean_out).encode() not in path.read_bytes()  # nothing points into the old place
    row = pd.read_parquet(out / "manifest.parquet").iloc[0]
    assert row["audio_path"] == f"audio/{row['song_id']}.wav"


# ----------------------------------------------------------------------------- one run at a time
@pytest.mark.slow
def test_a_second_run_on_a_busy_output_stops_at_once(clean, tmp_path, monkeypatch):
    _, expected = clean
    out = tmp_path / "out"
    gate = Gate(tmp_path / "gate")
    monkeypatch.setenv(FAULTS, f"driver.lease_taken@1:pause={gate.dir}")
    failures: list[BaseException] = []

    def first() -> None:
        try:
            _run(out)
        except BaseException as err:  # reported to the test below
            failures.append(err)

    thread = threading.Thread(target=first)
    thread.start()
    assert gate.wait() == "driver.lease_taken"  # the first run holds the output
    before = sorted(str(p) for p in out.rglob("*"))
    with pytest.raises(OutputBusyError, match=r"output.url .* is in use by run \w+ \(pid \d+ on .*wait for it"):
        _run(out)
    assert sorted(str(p) for p in out.rglob("*")) == before  # the second run wrote nothing
    gate.go()
    thread.join()
    assert not failures, failures
    _assert_complete(out, expected)


@pytest.mark.slow
def test_a_run_that_lost_its_lease_stops_writing(tmp_path, monkeypatch):
    """An actor still working for a run whose output was taken over writes nothing more."""
    out = tmp_path / "out"
    gate = Gate(tmp_path / "gate")
    monkeypatch.setenv(FAULTS, f"decode.part@1:pause={gate.dir}")
    failures: list[BaseException] = []
    thread = threading.Thread(target=lambda: _capture(failures, out))
    thread.start()
    assert gate.wait() == "decode.part"  # the decode actor is about to store its first audio segment
    now = time.time()
    intruder = LeaseInfo("intruder", "elsewhere", 1, now, now, 60.0)
    (out / LEASE_NAME).write_bytes(intruder.to_json())  # another run takes the output over
    gate.go()
    thread.join()
    assert failures and "lost its lease" in str(failures[0]), failures
    assert not list(out.glob("parts/*/audio=*/*.parquet"))  # the segment was never written
    assert json.loads((out / LEASE_NAME).read_text())["run_id"] == "intruder"  # and the lease left alone


def _capture(failures: list[BaseException], out: Path) -> None:
    try:
        _run(out)
    except BaseException as err:  # reported to the test
        failures.append(err)


# ----------------------------------------------------------------------------- killed processes
def _driver(out: Path, faults: str, *overrides: str) -> subprocess.CompletedProcess:
    """A driver process with its own Ray, killed (or paused) by ``faults``."""
    env = {**os.environ, FAULTS: faults, "RAY_TMPDIR": tempfile.mkdtemp(prefix="rayf"), "RAY_AUTH_MODE": "disabled",
           "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "tests.pipeline.runs", str(out), *overrides], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["driver.chunk_stored@8", "driver.before_manifest@1"])
def test_a_killed_driver_is_resumed_by_the_next_run(fault, clean, tmp_path):
    _, expected = clean
    out = tmp_path / "out"
    killed = _driver(out, fault)
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert (out / LEASE_NAME).exists()  # left behind by the dead driver...
    stored = len(list(out.glob("parts/*/level=*/*.parquet")))
    result = _run(out)  # ... and taken over at once: its process is gone
    _assert_complete(out, expected)
    if fault.startswith("driver.chunk_stored"):
        clean_manifest = pd.read_parquet(clean[0] / "manifest.parquet")
        windows = sum(int(clean_manifest[f"{name}_windows"].sum()) for name in ("top", "middle", "bottom"))
        assert stored == 8 and _calls(result, "top", "middle", "bottom") == windows - stored  # stored work is kept
    else:
        assert sorted(result.skipped) == sorted(SONG_IDS)


@pytest.mark.slow
@pytest.mark.parametrize("fault", [
    "bottom.batch@3",  # a prior actor dies with windows in flight
    "decode.part@2",  # a decode actor dies before storing a segment
    "finalize.files_written@1",  # ... after writing a song's files, before its marker
    "finalize.marker_written@1",  # ... after the marker, before removing the song's parts
    "write.audio.temp@1",  # ... mid-write: its temporary file is left behind, then swept
])
def test_a_killed_actor_is_restarted_and_the_output_is_unchanged(fault, clean, tmp_path, monkeypatch):
    _, expected = clean
    out = tmp_path / "out"
    monkeypatch.setenv(FAULTS, fault)
    _run(out)
    _assert_complete(out, expected)


@pytest.mark.slow
def test_a_dead_drivers_ray_processes_end_with_it(tmp_path):
    """The driver dies mid-run; its Ray (agents and actors included) is gone right after."""
    gate = Gate(tmp_path / "gate")
    pids_file = tmp_path / "ray_pids.json"
    env = {**os.environ, FAULTS: f"driver.chunk_stored@2:pause={gate.dir},driver.chunk_stored@4",
           "RAY_TMPDIR": tempfile.mkdtemp(prefix="rayd"), "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}
    driver = subprocess.Popen([sys.executable, "-m", "tests.pipeline.runs", str(tmp_path / "out")], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert gate.wait() == "driver.chunk_stored"
    ray_processes = psutil.Process(driver.pid).children(recursive=True)
    names = {p.name() for p in ray_processes}
    assert {"raylet", "gcs_server"} <= names and len(ray_processes) > 5, names
    pids_file.write_text(json.dumps([p.pid for p in ray_processes]))
    gate.go()
    assert driver.wait(timeout=300) == 137
    gone, alive = psutil.wait_procs(ray_processes, timeout=30)
    assert not alive, [(p.pid, p.name()) for p in alive]


# ----------------------------------------------------------------------------- unusable audio
@pytest.mark.slow
def test_audio_holding_nan_is_rejected_per_file_before_any_token(ray_session, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    tone = (0.3 * np.sin(np.linspace(0, 400, 44100))).astype(np.float32)[:, None]
    soundfile.write(folder / "good.wav", tone, 44100, subtype="FLOAT")
    broken = tone.copy()
    broken[20000] = np.nan
    soundfile.write(folder / "broken.wav", broken, 44100, subtype="FLOAT")
    out = tmp_path / "out"
    cfg = compose_config([f"output.url={out}", "mode=encode", f"encode.input_url={folder}"])
    result = run(cfg)
    assert len(result.rejected) == 1 and "broken.wav" in result.rejected[0] and "NaN" in result.rejected[0]
    assert list(pd.read_parquet(out / "manifest.parquet")["song_id"]) == ["good"]
    assert not list(out.glob("tokens/level=*/broken*")) and not (out / "done" / "broken.json").exists()


# ----------------------------------------------------------------------------- stopped early, as a user sees it
def _cli_env(faults: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "RAY_ADDRESS")}, FAULTS: faults,
            "RAY_TMPDIR": tempfile.mkdtemp(prefix="rays"), "PYTHONPATH": str(REPO)}


_SHORT = ["songs.0.duration_s=0.3", "songs.1.duration_s=0.3", "ray.num_cpus=2"]


@pytest.mark.slow
def test_a_full_disk_ends_with_one_line_and_exit_3_and_the_same_command_resumes(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pipeline", f"output.url={out}", f"hydra.run.dir={tmp_path / 'hydra'}", *_SHORT]
    full = subprocess.run(command, cwd=tmp_path, env=_cli_env("write.audio.temp@1:enospc"), capture_output=True, text=True,
                          timeout=600)
    assert full.returncode == 3, full.stderr[-3000:]
    stops = [line for line in full.stderr.splitlines() if line.startswith("stopped: ")]
    assert len(stops) == 1 and stops[0].startswith("stopped: no space left on the device"), full.stderr[-3000:]
    assert "Traceback" not in full.stderr + full.stdout
    again = subprocess.run(command, cwd=tmp_path, env=_cli_env(""), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(pd.read_parquet(out / "manifest.parquet")["song_id"]) == ["country_morning", "jazz_night"]


@pytest.mark.slow
@pytest.mark.parametrize("point, signum, code, why", [
    ("driver.collected@2", signal.SIGTERM, 143, "terminated (SIGTERM)"),  # mid-run, actors working
    ("driver.ray_started@1", signal.SIGINT, 130, "interrupted (Ctrl-C)"),  # while Ray starts, before any actor
])
def test_ctrl_c_and_sigterm_end_with_one_line_and_no_ray_process_outlives_them(point, signum, code, why, tmp_path):
    gate = Gate(tmp_path / "gate")
    command = [sys.executable, "-m", "pipeline", f"output.url={tmp_path / 'out'}", f"hydra.run.dir={tmp_path / 'hydra'}", *_SHORT]
    driver = subprocess.Popen(command, cwd=tmp_path, env=_cli_env(f"{point}:pause={gate.dir}"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert gate.wait() == point.split("@")[0]
        ray_processes = psutil.Process(driver.pid).children(recursive=True)
        assert {"raylet", "gcs_server"} <= {p.name() for p in ray_processes}
        driver.send_signal(signum)  # to the driver (as `kill -INT`, or a job scheduler's SIGTERM); the gate never opens
        _, stderr = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:  # a failed test leaves no driver behind
            driver.kill()
    assert driver.returncode == code, stderr[-3000:]
    stops = [line for line in stderr.splitlines() if line.startswith("stopped: ")]
    assert stops == [f"stopped: {why}; every finished window and song is kept: run the same command again to resume"], stderr[-3000:]
    assert "Traceback" not in stderr
    _, alive = psutil.wait_procs(ray_processes, timeout=10)
    assert not alive, [(p.pid, p.name()) for p in alive]
