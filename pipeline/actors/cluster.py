"""What a run asks of Ray, checked against what Ray has before any placement group or actor exists;
and how a run starts its own local Ray.

Pools reserve one placement group per stage (or ``gpu_group``) and wait for it; a request the
cluster can never satisfy would wait ``ray.placement_timeout_s`` and then fail with Ray's bundle
names. :func:`check_resources` refuses such a request at once, naming the stage and the field: a
GPU, a custom resource or a node label the cluster does not have, an actor's bundle no node can
hold, or more of a resource in all than the cluster has. It checks only what is necessary for
placement (a request that passes may still wait for resources that other jobs hold, or fail to
pack onto the nodes), so it never refuses a run that could be placed.

Before a local Ray starts, :func:`local_nodes` gives what ``ray.init`` will have where the config
says it (``ray.num_cpus``, ``ray.num_gpus``; no custom resources, no labels); once connected,
:func:`cluster_nodes` reads the live cluster (``ray.nodes()``: no actor is created).

A local Ray started by a run (:func:`local_ray_env`) listens on loopback only and keeps Ray's
token authentication on, with a token private to the run's process (nothing under ``~/.ray``).
Ray's temporary files stay where Ray puts them, under the system temporary directory
(``RAY_TMPDIR``, else ``TMPDIR``, else ``/tmp``), never under the home directory. Joining a
cluster (``ray.address``) changes nothing of the cluster's own settings.
"""
from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from ray._private import ray_constants

from pipeline.actors.pools import pack_bundles
from pipeline.run.config import PoolSpec, RunConfig
from pipeline.run.spec import Stage

AUTH_MODE_ENV = "RAY_AUTH_MODE"
AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"
LOCAL_ONLY_ENV = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR  # "0": a local Ray on loopback
_AUTH_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"
_SYSTEM_LABEL_PREFIX = "ray.io/"
_EPSILON = 1e-9


@dataclass(frozen=True)
class Node:
    """One node's total resources and labels, as far as they are known.

    Attributes:
        resources: total amount per resource name (``CPU``, ``GPU``, custom names).
        labels: the node's labels.
        unknown: resources whose amount is not known yet (a local Ray not started, sized by Ray).
        system_labels_known: whether Ray's own ``ray.io/`` labels are in ``labels``.
    """

    resources: Mapping[str, float]
    labels: Mapping[str, str] = field(default_factory=dict)
    unknown: frozenset[str] = frozenset()
    system_labels_known: bool = True

    def matches(self, selector: Mapping[str, str]) -> bool:
        """Whether the node satisfies a label selector (``v``, ``!v``, ``in(a,b)``, ``!in(a,b)``)."""
        return all(self._matches(key, wanted) for key, wanted in selector.items())

    def _matches(self, key: str, wanted: str) -> bool:
        if key.startswith(_SYSTEM_LABEL_PREFIX) and not self.system_labels_known:
            return True
        negate = wanted.startswith("!")
        wanted = wanted[1:] if negate else wanted
        if wanted.startswith("in(") and wanted.endswith(")"):
            allowed = {v.strip() for v in wanted[3:-1].split(",")}
        else:
            allowed = {wanted}
        return (self.labels.get(key) in allowed) != negate


def stage_groups(cfg: RunConfig, stages: Sequence[Stage]) -> dict[str, dict[Stage, PoolSpec]]:
    """The placement groups a run reserves: one per ``gpu_group``, else one per stage (as
    :class:`pipeline.actors.pools.Pools` does)."""
    groups: dict[str, dict[Stage, PoolSpec]] = {}
    for stage in stages:
        pool = cfg.stages[stage]
        name = pool.gpu_group if pool.gpu_group is not None else f"stage:{stage.value}"
        groups.setdefault(name, {})[stage] = pool
    return groups


def local_nodes(cfg: RunConfig) -> list[Node]:
    """The node a local ``ray.init`` will start, with what the config fixes: ``ray.num_cpus`` and
    ``ray.num_gpus`` when set (else unknown: Ray sizes them), no custom resources, no labels."""
    resources: dict[str, float] = {}
    unknown = set()
    for name, amount in (("CPU", cfg.ray.num_cpus), ("GPU", cfg.ray.num_gpus)):
        if amount is None:
            unknown.add(name)
        else:
            resources[name] = float(amount)
    return [Node(resources, {}, frozenset(unknown), system_labels_known=False)]


def cluster_nodes() -> list[Node]:
    """The alive nodes of the Ray cluster this process is connected to (totals, labels)."""
    import ray

    return [Node(dict(node.get("Resources") or {}), dict(node.get("Labels") or {}))
            for node in ray.nodes() if node.get("Alive")]


def _amount(value: float) -> str:
    return f"{value:g}"


def _stage_fields(stage: Stage, pool: PoolSpec, resource: str) -> str:
    """The config fields that make a stage's request of ``resource``."""
    key = f"stages.{stage.value}"
    if resource == "GPU":
        return f"{key}.num_gpus={_amount(pool.num_gpus)} x {key}.num_actors={pool.num_actors}"
    if resource == "CPU":
        return f"{key}.num_cpus={_amount(pool.num_cpus)} x {key}.num_actors={pool.num_actors}"
    return f"{key}.resources={dict(pool.resources)} x {key}.num_actors={pool.num_actors}"


def _requests(pool: PoolSpec, resource: str) -> bool:
    if resource == "GPU":
        return pool.num_gpus > 0
    if resource == "CPU":
        return pool.num_cpus > 0
    return pool.resources.get(resource, 0) > 0


def check_resources(cfg: RunConfig, stages: Sequence[Stage], nodes: Sequence[Node], where: str) -> None:
    """Refuse requests of ``stages`` that ``nodes`` can never satisfy.

    Args:
        cfg: the run (its ``stages`` pool specs).
        stages: the pools the run starts.
        nodes: the cluster (:func:`cluster_nodes`) or the local Ray to be started (:func:`local_nodes`).
        where: how messages name the cluster (``"the Ray cluster"``, ``"the local Ray (ray.num_gpus=0)"``).

    Raises:
        ValueError: naming the stage, the field and its value, and what the cluster has.
    """
    for stage in stages:
        _check_stage(stage, cfg.stages[stage], nodes, where)
    totals: dict[str, float] = {}
    for name, members in stage_groups(cfg, stages).items():
        for bundle in pack_bundles(members):
            asks = bundle.as_resources()
            if not any(_fits(node, asks, bundle.label_selector) for node in nodes):
                member_stages = sorted({stage.value for stage, _ in bundle.members})
                candidates = [node for node in nodes if node.matches(bundle.label_selector)]
                largest = {r: max((node.resources.get(r, 0.0) for node in candidates), default=0.0) for r in asks}
                # the resources no single node has enough of; all of them when only their combination fails
                short = [r for r in asks if asks[r] > largest[r] + _EPSILON] or list(asks)
                fields = "; ".join(_stage_fields(s, members[s], r) for s in members if s.value in member_stages
                                   for r in short if _requests(members[s], r))
                raise ValueError(
                    f"{fields}: stage(s) {', '.join(member_stages)} need {asks} on one node, and no node of {where} has "
                    f"that much (the most any node has: {largest}); lower num_cpus/num_gpus or use a gpu_group"
                )
            for resource, amount in asks.items():
                totals[resource] = totals.get(resource, 0.0) + amount
    for resource, demand in totals.items():
        if any(resource in node.unknown for node in nodes):
            continue
        supply = sum(node.resources.get(resource, 0.0) for node in nodes)
        if demand > supply + _EPSILON:
            fields = ", ".join(_stage_fields(s, cfg.stages[s], resource) for s in stages if _requests(cfg.stages[s], resource))
            raise ValueError(
                f"{fields}: the stages need {_amount(demand)} {resource} in all"
                f"{' (fractional GPUs are packed onto whole GPUs per stage or gpu_group)' if resource == 'GPU' else ''}, "
                f"and {where} has {_amount(supply)}; lower the stages' num_actors or their {_field_name(resource)}"
            )


def _field_name(resource: str) -> str:
    return {"GPU": "num_gpus", "CPU": "num_cpus"}.get(resource, "resources")


def _check_stage(stage: Stage, pool: PoolSpec, nodes: Sequence[Node], where: str) -> None:
    """What one stage asks for exists somewhere: its labels, a GPU, its custom resources."""
    key = f"stages.{stage.value}"
    candidates = [node for node in nodes if node.matches(pool.label_selector)]
    if pool.label_selector and not candidates:
        labels = [{k: v for k, v in node.labels.items() if not k.startswith(_SYSTEM_LABEL_PREFIX)} for node in nodes]
        raise ValueError(f"{key}.label_selector={dict(pool.label_selector)}: no node of {where} has these labels "
                         f"(node labels: {labels})")

    def lacks(what: str) -> str:
        if pool.label_selector:
            return f"no node of {where} labelled {dict(pool.label_selector)} has {what}"
        return f"{where} has no {what}"

    if pool.num_gpus > 0 and not any("GPU" in n.unknown or n.resources.get("GPU", 0) > 0 for n in candidates):
        raise ValueError(f"{key}.num_gpus={_amount(pool.num_gpus)}: {lacks('GPU')}; set {key}.num_gpus=0 "
                         "(the stage then runs on CPU) or run on a cluster with GPUs")
    for name, amount in pool.resources.items():
        if amount > 0 and not any(name in n.unknown or n.resources.get(name, 0) > 0 for n in candidates):
            known = sorted({r for n in nodes for r in n.resources if not r.startswith("node:") and r not in
                            ("memory", "object_store_memory")})
            raise ValueError(f"{key}.resources={dict(pool.resources)}: {lacks(f'resource {name!r}')}"
                             + (f" (its resources: {known})" if known else ""))


def _fits(node: Node, asks: Mapping[str, float], selector: Mapping[str, str]) -> bool:
    if not node.matches(selector):
        return False
    return all(r in node.unknown or amount <= node.resources.get(r, 0.0) + _EPSILON for r, amount in asks.items())


@contextlib.contextmanager
def local_ray_env() -> Iterator[None]:
    """Around ``ray.init`` starting a local Ray: a Ray closed to the network.

    - Every Ray process listens on loopback only. Ray's own local-only mode (its default on macOS
      and Windows, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) gives the node the loopback address,
      and its GCS, raylet, workers and agents then bind to it instead of every interface.
    - Ray's token authentication stays on, with a token of this process's own
      (``RAY_AUTH_TOKEN``, random, inherited by the Ray processes it starts and by nothing else):
      nothing is written under the home directory, and a driver without the token is refused.
      Ray's notice that it turned authentication on is not printed.

    A ``RAY_AUTH_MODE`` set by the user is left as it is (``disabled`` turns authentication off,
    as Ray documents). The token stays in this process's environment for its lifetime, so later
    local Rays of the same process (a sweep's jobs, tests) use it too; the rest is restored.
    """
    saved = {name: os.environ.get(name) for name in (AUTH_MODE_ENV, LOCAL_ONLY_ENV)}
    os.environ[LOCAL_ONLY_ENV] = "0"  # for the processes ray.init starts
    local_only = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False  # for this process: read when ray.init picks the node address
    notices = logging.getLogger(_AUTH_NOTICE_LOGGER)
    level = notices.level
    if saved[AUTH_MODE_ENV] is None:
        os.environ.setdefault(AUTH_TOKEN_ENV, secrets.token_hex(32))
        notices.setLevel(logging.ERROR)
    try:
        yield
    finally:
        notices.setLevel(level)
        ray_constants.ENABLE_RAY_CLUSTER = local_only
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def describe_local(cfg: RunConfig) -> str:
    """How messages name a local Ray that is not started yet."""
    fixed = [f"ray.{name}={value}" for name, value in (("num_cpus", cfg.ray.num_cpus), ("num_gpus", cfg.ray.num_gpus))
             if value is not None]
    return f"the local Ray ({', '.join(fixed)})" if fixed else "the local Ray"
