"""One local Ray for the whole test session, with fake GPUs, inside a temporary directory."""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

N_FAKE_GPUS = 4


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray (4 CPUs, 4 fake GPUs) shared by every pipeline test; its files stay in a temp dir."""
    import ray

    tmp = tempfile.mkdtemp(prefix="ray")
    saved = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "RAY_AUTH_MODE")}
    os.environ["RAY_TMPDIR"] = tmp
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(num_cpus=4, num_gpus=N_FAKE_GPUS, include_dashboard=False, namespace="jukebox-tests", _temp_dir=tmp, log_to_driver=False)
    yield ray
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    shutil.rmtree(tmp, ignore_errors=True)


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """The real conf/config.yaml composed with ``overrides``."""
    with initialize_config_module(config_module="conf", version_base=None):
        return compose(config_name="config", overrides=overrides or [])


@pytest.fixture
def make_cfg(tmp_path):
    """Compose the real config, writing to tmp_path, with small test settings."""

    def make(*overrides: str, out: str = "out") -> DictConfig:
        base = [f"output.url={tmp_path / out}", "scheduler.progress_interval_s=0.5"]
        return compose_config(base + list(overrides))

    return make
