"""``python -m pipeline`` / ``jukebox-pipeline``: the pipeline with Hydra overrides."""
from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from pipeline.runner import run

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    """Run the pipeline on the composed config (see conf/config.yaml)."""
    run(cfg)


if __name__ == "__main__":
    main()
