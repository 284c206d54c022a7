"""``python -m pipeline`` / ``jukebox-pipeline``: the pipeline with Hydra overrides.

With ``dry_run=true`` nothing runs: the validated plan (songs, windows and tokens per level, or
the files of an encode-only run) is printed as JSON.

With ``-m`` (a Hydra multirun sweep, e.g. ``-m sampling.top.temperature=0.9,0.98``) every job
writes under its own output URL, ``output.url/<the swept keys and this job's values>``, e.g.
``outputs/jukebox/sampling.top.temperature=0.9`` (so rerunning the sweep resumes each job in place), and the jobs share one Ray session: the first job starts it (or
joins ``ray.address``), the others reuse it, and it stops when the sweep ends.

Bad input (a ``ValueError`` raised before anything runs: an unknown name, a malformed grid, a
missing file...) is printed as its message alone and exits with status 2; set
``HYDRA_FULL_ERROR=1`` for the traceback.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Iterable, Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode as HydraMode
from omegaconf import DictConfig, open_dict

from pipeline.runner import run

CONFIG_PATH = "pkg://conf"  # the config tree ships as package data (conf/)
_MAX_DIR_CHARS = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+@-]+")


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def swept_keys(arguments: Iterable[str], sweeper_params: Iterable[str] = ()) -> set[str]:
    """Keys a sweep varies: command-line overrides with several values (``a=1,2``, ``range``,
    ``choice``, ``glob``...) and the keys of ``hydra.sweeper.params``."""
    overrides = [a for a in arguments if not a.startswith("-") and "=" in a]
    parsed = OverridesParser.create().parse_overrides(overrides)
    return {o.key_or_group for o in parsed if o.is_sweep_override()} | {_key(k) for k in sweeper_params}


def job_dirname(overrides: Sequence[str], job_num: int, swept: set[str] | None = None) -> str:
    """The output subdirectory of one sweep job: its overrides of the ``swept`` keys (all of
    them when None; ``output.url`` never), sorted, made file-name safe; cut to a readable
    prefix plus a hash when long; ``job<N>`` when none."""
    kept = sorted(o for o in overrides if _key(o) != "output.url" and (swept is None or _key(o) in swept))
    if not kept:
        return f"job{job_num}"
    name = _UNSAFE.sub("_", ",".join(kept)).strip("._") or f"job{job_num}"
    if len(name) > _MAX_DIR_CHARS:
        digest = hashlib.sha256(",".join(kept).encode()).hexdigest()[:10]
        name = f"{name[: _MAX_DIR_CHARS - 11]}-{digest}"
    return name


@hydra.main(version_base=None, config_path=CONFIG_PATH, config_name="config")
def main(cfg: DictConfig) -> None:
    """Run the pipeline on the composed config (see conf/config.yaml)."""
    hydra_cfg = HydraConfig.get()
    sweeping = hydra_cfg.mode == HydraMode.MULTIRUN
    if sweeping:
        with open_dict(cfg):
            swept = swept_keys(sys.argv[1:], (hydra_cfg.sweeper.get("params") or {}).keys())
            name = job_dirname(hydra_cfg.overrides.task, hydra_cfg.job.num, swept)
            cfg.output.url = f"{str(cfg.output.url).rstrip('/')}/{name}"
    try:
        result = run(cfg, keep_ray=sweeping)
    except ValueError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if result.dry_run:
        print(json.dumps(result.plan, indent=1))
    if result.rejected:
        print(f"error: {len(result.rejected)} input file(s) rejected (the others are encoded): "
              + " | ".join(result.rejected), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
