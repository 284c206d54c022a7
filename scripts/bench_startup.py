"""Benchmark: where the default job's wall time goes, from the command to its exit.

Runs the README's main command (``python -m pipeline``, the embedded default: two 1-second songs
with the tiny model) ``--repeats`` times, each a fresh process on a fresh output, and reads the
phases every run writes to its ``summary.json`` (starting Ray, starting the stage actors and
loading their models, the work, stopping Ray). The rest of the process's wall time is Python
imports, config composition and validation before Ray starts, and interpreter exit. It also times
the README's first Python block (the model API, no Ray) the same way. Prints one line per run and
the medians, then a JSON line::

    {"job": {"wall_s": ..., "to_last_wav_s": ..., "work_s": ..., "ray_start_s": ..., ...},
     "python_block_s": ..., "cores": 2, "load_before": ...}

Usage: ``python scripts/bench_startup.py [--repeats 3]``. Run it on an idle machine: every phase
but the work is CPU-bound start-up of processes (each stage actor imports torch).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _time(command: list[str], cwd: str) -> tuple[float, subprocess.CompletedProcess]:
    began = time.monotonic()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.monotonic() - began, done


def job_once() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as folder:
        out = os.path.join(folder, "out")
        wall, _ = _time([sys.executable, "-m", "pipeline", f"output.url={out}"], folder)
        summary = json.loads(Path(out, "summary.json").read_text())["runs"][-1]
    phases = summary["phases"]
    before_ray = wall - sum(phases.values())  # imports, compose, validation; and interpreter exit
    return {"wall_s": wall, "to_last_wav_s": wall - phases["shutdown_s"], **phases, "imports_and_exit_s": before_ray,
            "pipeline_wall_s": summary["wall_s"]}


def python_block_once() -> float:
    block = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)[0]
    with tempfile.TemporaryDirectory(prefix="bench-block-") as folder:
        wall, _ = _time([sys.executable, "-c", block], folder)
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    runs = []
    for index in range(args.repeats):
        runs.append(job_once())
        print(f"job {index + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in runs[-1].items()), flush=True)
    job = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    blocks = [python_block_once() for _ in range(args.repeats)]
    print("median: " + ", ".join(f"{k} {v:.2f}" for k, v in job.items()))
    print(f"python block: median {statistics.median(blocks):.2f} s ({', '.join(f'{b:.2f}' for b in blocks)})")
    print(f"to the last WAV / pipeline work: {job['to_last_wav_s'] / job['work_s']:.1f}x")
    print(json.dumps({"job": job, "python_block_s": statistics.median(blocks), "cores": os.cpu_count(),
                      "load_before": load, "repeats": args.repeats}))


if __name__ == "__main__":
    main()
