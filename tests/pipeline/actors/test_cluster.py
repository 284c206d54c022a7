"""Requests checked against what Ray has, before any placement group; how a run starts its own Ray."""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from pipeline.actors.cluster import LOCAL_ONLY_ENV, Node, check_resources, describe_local, local_nodes, local_ray_env
from pipeline.actors.pools import needed_stages
from pipeline.execute.runner import to_run_config
from pipeline.run.spec import Stage
from tests.pipeline.conftest import compose_config

REPO = Path(__file__).resolve().parents[3]
SAMPLING = [Stage.TOKENIZE, Stage.TOP, Stage.MIDDLE, Stage.BOTTOM, Stage.DECODE]


def _cfg(*overrides: str):
    return to_run_config(compose_config(list(overrides)))


def _check(nodes: list[Node], *overrides: str) -> None:
    cfg = _cfg(*overrides)
    check_resources(cfg, needed_stages(cfg), nodes, "the test cluster")


CPU_NODE = Node({"CPU": 8.0})
GPU_NODE = Node({"CPU": 8.0, "GPU": 1.0})


def test_a_stage_asking_for_a_gpu_on_a_cluster_without_any_names_stage_and_field():
    with pytest.raises(ValueError, match=r"^stages\.middle\.num_gpus=0\.5: the test cluster has no GPU; set stages\.middle\.num_gpus=0"):
        _check([CPU_NODE, CPU_NODE], "stages.middle.num_gpus=0.5")
    _check([CPU_NODE, GPU_NODE], "stages.middle.num_gpus=0.5")


def test_fractional_gpus_are_counted_as_the_whole_gpus_they_are_packed_onto():
    # 3 actors of half a GPU take 2 whole GPUs: one GPU is not enough, two are
    with pytest.raises(ValueError, match=r"stages\.top\.num_gpus=0\.5 x stages\.top\.num_actors=3: the stages need 2 GPU in all.* has 1"):
        _check([GPU_NODE], "stages.top.num_gpus=0.5", "stages.top.num_actors=3")
    _check([GPU_NODE, GPU_NODE], "stages.top.num_gpus=0.5", "stages.top.num_actors=3")
    # stages of one gpu_group share their whole GPUs
    _check([GPU_NODE], "stages.top.num_gpus=0.5", "stages.middle.num_gpus=0.5", "stages.top.gpu_group=g", "stages.middle.gpu_group=g")
    with pytest.raises(ValueError, match=r"stages\.top\.num_gpus=0\.5 x .*, stages\.middle\.num_gpus=0\.5 x .*: the stages need 2 GPU"):
        _check([GPU_NODE], "stages.top.num_gpus=0.5", "stages.middle.num_gpus=0.5")


def test_actors_spread_over_nodes_but_one_actor_needs_one_node():
    _check([GPU_NODE, GPU_NODE], "stages.bottom.num_gpus=1", "stages.bottom.num_actors=2")
    with pytest.raises(ValueError, match=r"^stages\.bottom\.num_gpus=2 x stages\.bottom\.num_actors=1: stage\(s\) bottom need "
                                         r"\{'CPU': 0\.25, 'GPU': 2\.0\} on one node.*the most any node has: \{'CPU': 8\.0, 'GPU': 1\.0\}"):
        _check([GPU_NODE, GPU_NODE], "stages.bottom.num_gpus=2")


def test_cpus_custom_resources_and_labels():
    with pytest.raises(ValueError, match=r"stages\.decode\.num_cpus=3 x stages\.decode\.num_actors=3.*need 9\.85 CPU in all.* has 8"):
        _check([CPU_NODE], "stages.decode.num_cpus=3", "stages.decode.num_actors=3")
    with pytest.raises(ValueError, match=r"^stages\.top\.resources=\{'tpu': 1\.0\}: the test cluster has no resource 'tpu' \(its resources: \['CPU'\]\)"):
        _check([CPU_NODE], "++stages.top.resources={tpu: 1}")
    _check([CPU_NODE, Node({"CPU": 1.0, "tpu": 4.0})], "++stages.top.resources={tpu: 1}")
    labelled = [Node({"CPU": 4.0}, {"zone": "a"}), Node({"CPU": 4.0, "GPU": 2.0}, {"zone": "b"})]
    _check(labelled, "++stages.top.label_selector={zone: b}", "stages.top.num_gpus=1")
    _check(labelled, "++stages.top.label_selector={zone: 'in(a,b)'}", "++stages.middle.label_selector={zone: '!c'}")
    with pytest.raises(ValueError, match=r"^stages\.top\.num_gpus=1: no node of the test cluster labelled \{'zone': 'a'\} has GPU"):
        _check(labelled, "++stages.top.label_selector={zone: a}", "stages.top.num_gpus=1")
    with pytest.raises(ValueError, match=r"^stages\.top\.label_selector=\{'zone': 'mars'\}: no node .* has these labels "
                                         r"\(node labels: \[\{'zone': 'a'\}, \{'zone': 'b'\}\]\)"):
        _check(labelled, "++stages.top.label_selector={zone: mars}")


def test_a_local_ray_is_checked_for_what_the_config_fixes_of_it():
    cfg = _cfg("stages.top.num_gpus=1")
    check_resources(cfg, needed_stages(cfg), local_nodes(cfg), describe_local(cfg))  # GPUs: whatever Ray finds
    cfg = _cfg("stages.top.num_gpus=1", "ray.num_gpus=0")
    with pytest.raises(ValueError, match=r"stages\.top\.num_gpus=1: the local Ray \(ray\.num_gpus=0\) has no GPU"):
        check_resources(cfg, needed_stages(cfg), local_nodes(cfg), describe_local(cfg))
    cfg = _cfg("ray.num_cpus=1")  # 5 stages of 0.25 CPU (tokenize 0.1)
    with pytest.raises(ValueError, match=r"need 1\.1 CPU in all.*the local Ray \(ray\.num_cpus=1\) has 1"):
        check_resources(cfg, needed_stages(cfg), local_nodes(cfg), describe_local(cfg))
    cfg = _cfg("++stages.top.resources={tpu: 1}")
    with pytest.raises(ValueError, match=r"stages\.top\.resources=\{'tpu': 1\.0\}: the local Ray has no resource 'tpu'"):
        check_resources(cfg, needed_stages(cfg), local_nodes(cfg), describe_local(cfg))


def test_local_ray_env_keeps_token_auth_and_a_private_token_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv(LOCAL_ONLY_ENV, raising=False)
    with local_ray_env():
        assert "RAY_AUTH_MODE" not in os.environ  # Ray's own default: token authentication on
        token = os.environ["RAY_AUTH_TOKEN"]
        assert len(token) == 64 and os.environ[LOCAL_ONLY_ENV] == "0"
    assert os.environ["RAY_AUTH_TOKEN"] == token and LOCAL_ONLY_ENV not in os.environ  # the token lives on
    with local_ray_env():
        assert os.environ["RAY_AUTH_TOKEN"] == token  # one token per process
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # the user's explicit choice stands
    with local_ray_env():
        assert os.environ["RAY_AUTH_MODE"] == "disabled"
    assert os.environ["RAY_AUTH_MODE"] == "disabled"


_SECURITY_PROBE = """
import json, os, socket, subprocess, sys
import psutil, ray
from pipeline.execute.runner import _connect, _disconnect, to_run_config
from tests.pipeline.conftest import compose_config

assert _connect(to_run_config(compose_config(["ray.num_cpus=1"])))
gcs = ray.get_runtime_context().gcs_address
port = int(gcs.rsplit(":", 1)[1])
ray.get(ray.remote(lambda: 1).remote())  # a worker is up, listening too
listening = sorted({(c.laddr.ip, p.name()) for p in psutil.Process().children(recursive=True)
                    for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN})
# from the network: the machine's own non-loopback addresses, the GCS port
reached = []
for name, addresses in psutil.net_if_addrs().items():
    for address in addresses:
        if address.family == socket.AF_INET and not address.address.startswith("127."):
            with socket.socket() as probe:
                probe.settimeout(5)
                if probe.connect_ex((address.address, port)) == 0:
                    reached.append(address.address)
# on loopback, a driver without the token (Ray's local-only mode, so that it dials 127.0.0.1)
env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_gcs_server_port_wait_time_s="2")
intruder = subprocess.run([sys.executable, "-c", "import ray; ray.init(address=%r); print('RAN', ray.get(ray.remote(lambda: 1).remote()))" % gcs],
                          env=env, capture_output=True, text=True, timeout=120)
_disconnect()
print("RESULT " + json.dumps({"gcs": gcs, "listening": listening, "reached": reached, "intruder_rc": intruder.returncode,
                              "intruder_out": intruder.stdout, "intruder_err": intruder.stderr[-2000:]}))
"""


@pytest.mark.slow
def test_a_runs_own_ray_listens_on_loopback_only_and_refuses_a_driver_without_its_token(tmp_path):
    """The local Ray a run starts, as a newcomer's run starts it (no RAY_AUTH_* set): every
    listening socket of every Ray process is on a loopback address, the GCS port cannot be
    reached at the machine's other addresses, and a second driver on the machine that reaches
    the GCS without the run's token is refused; nothing is written under HOME."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env.update(HOME=str(home), RAY_TMPDIR=tempfile.mkdtemp(prefix="rsec"), PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", _SECURITY_PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert result["gcs"].startswith("127."), result["gcs"]
    assert result["listening"], "no listening socket found: the check would prove nothing"
    exposed = [(ip, name) for ip, name in result["listening"] if not ipaddress.ip_address(ip.removeprefix("::ffff:")).is_loopback]
    assert exposed == [], exposed
    assert result["reached"] == [], result["reached"]
    assert result["intruder_rc"] != 0 and "RAN" not in result["intruder_out"], result
    assert "InvalidAuthToken" in result["intruder_err"], result["intruder_err"]
    assert "token authentication" not in done.stderr.lower()  # no notice printed
    assert sorted(home.rglob("*")) == []


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without GPUs")
def test_a_run_starting_its_own_ray_leaves_home_untouched_and_checks_the_live_cluster(tmp_path):
    """As a newcomer runs it: no RAY_AUTH_MODE, no RAY_TMPDIR. Ray's files go under the system
    temporary directory, nothing under HOME, no auth-token warning; and a GPU request on this
    GPU-less machine is refused once Ray has started, before any placement group, Ray stopped."""
    home = tmp_path / "home"
    home.mkdir()
    system_tmp = Path(tempfile.mkdtemp(prefix="st"))  # short: Ray's socket paths must stay short
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_TMPDIR", "RAY_ADDRESS", "HYDRA_FULL_ERROR")}
    env.update(HOME=str(home), TMPDIR=str(system_tmp), PYTHONPATH=str(REPO))
    base = [sys.executable, "-m", "pipeline", "sampling.levels=[top]", "songs.0.duration_s=0.5", "songs.1.duration_s=0.5",
            "ray.num_cpus=2", f"hydra.run.dir={tmp_path / 'hydra'}"]
    done = subprocess.run([*base, f"output.url={tmp_path / 'out'}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "out" / "manifest.parquet").exists()
    refused = subprocess.run([*base, f"output.url={tmp_path / 'gpu'}", "stages.top.num_gpus=1"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300, env=env)
    assert refused.returncode == 2, refused.stderr[-4000:]
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: stages.top.num_gpus=1: the Ray cluster has no GPU; set stages.top.num_gpus=0 (the stage "
                      "then runs on CPU) or run on a cluster with GPUs"]
    refused_out = tmp_path / "gpu"
    assert not refused_out.exists() or not any(refused_out.iterdir())
    assert sorted(home.rglob("*")) == []
    assert (system_tmp / "ray").is_dir()
    for run in (done, refused):
        assert "token authentication" not in (run.stdout + run.stderr).lower() and "auth_token" not in run.stdout + run.stderr
