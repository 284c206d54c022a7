"""``python -m pipeline`` / ``jukebox-pipeline``: the pipeline with Hydra overrides.

With ``dry_run=true`` nothing runs: the validated plan (songs, windows and tokens per level, or
the files of an encode-only run) is printed as JSON.
"""
from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from pipeline.runner import run

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    """Run the pipeline on the composed config (see conf/config.yaml)."""
    result = run(cfg)
    if result.dry_run:
        print(json.dumps(result.plan, indent=1))


if __name__ == "__main__":
    main()
