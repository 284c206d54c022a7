"""Actor pools: one per stage, placed on their own resources.

Each stage (or each ``gpu_group`` of stages) reserves a placement group before any actor starts.
GPU actors are packed onto *whole* GPUs that the group alone holds, so fractional actors of two
stages never land on one GPU unless the config puts the stages in one ``gpu_group``. Bundles carry
the stage's ``label_selector`` and custom ``resources``, which is how stages are pinned to nodes.
A group that cannot be placed within ``placement_timeout_s`` fails the run with a message naming
the stage, what it asked for and what the cluster has, instead of waiting forever.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from pipeline.actors import builders
from pipeline.actors.base import ActorSettings
from pipeline.actors.base import StageFactory
from pipeline.actors.decode import DecodeActor
from pipeline.actors.encode import EncodeActor
from pipeline.actors.prior import PriorActor
from pipeline.actors.tokenize import TokenizeActor
from pipeline.faults import actor_runtime_env
from pipeline.run.config import PoolSpec, RunConfig, RunMode
from pipeline.run.spec import Stage, stage_level
from pipeline.store.writer import RunStorage

logger = logging.getLogger(__name__)

_MAX_CONCURRENCY = 10_000  # calls an async actor holds at once (each waits only for the model)
_MIN_BUNDLE_CPU = 0.001  # Ray refuses bundles without resources; CPU-free actors get a token amount


class PlacementError(RuntimeError):
    """A stage's resources could not be reserved in time."""


@dataclass
class _Bundle:
    gpus: float
    cpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)
    label_selector: dict[str, str] = field(default_factory=dict)
    members: list[tuple[Stage, int]] = field(default_factory=list)
    used_gpus: float = 0.0

    def as_resources(self) -> dict[str, float]:
        out = {"CPU": max(self.cpus, _MIN_BUNDLE_CPU), **self.resources}
        if self.gpus:
            out["GPU"] = self.gpus
        return out


def pack_bundles(stages: Mapping[Stage, PoolSpec]) -> list[_Bundle]:
    """Bundles of one placement group holding every actor of ``stages``.

    Whole-GPU actors get a bundle each; fractional-GPU actors are packed first-fit onto bundles of
    one whole GPU; CPU actors get a bundle each.
    """
    bundles: list[_Bundle] = []
    fractional: list[_Bundle] = []
    for stage, pool in stages.items():
        for index in range(pool.num_actors):
            member = (stage, index)
            if 0 < pool.num_gpus < 1:
                target = next((b for b in fractional if b.used_gpus + pool.num_gpus <= 1.0 + 1e-9), None)
                if target is None:
                    target = _Bundle(gpus=1.0, label_selector=dict(pool.label_selector))
                    fractional.append(target)
                    bundles.append(target)
                target.used_gpus += pool.num_gpus
            else:
                target = _Bundle(gpus=pool.num_gpus, label_selector=dict(pool.label_selector))
                bundles.append(target)
            target.cpus += pool.num_cpus
            for name, amount in pool.resources.items():
                target.resources[name] = target.resources.get(name, 0.0) + amount
            target.members.append(member)
    return bundles


@dataclass
class StagePool:
    """The actors of one stage, with simple per-song routing."""

    stage: Stage
    actors: list[Any]
    infos: list[dict[str, Any]] = field(default_factory=list)
    _load: list[int] = field(default_factory=list)
    _routes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._load = [0] * len(self.actors)

    def actor_for(self, song_id: str) -> Any:
        """The actor serving a song: the least loaded one when the song is first seen."""
        if song_id not in self._routes:
            index = min(range(len(self.actors)), key=lambda i: self._load[i])
            self._routes[song_id] = index
            self._load[index] += 1
        return self.actors[self._routes[song_id]]

    def peers(self, song_id: str) -> int:
        """Songs in flight on the actor serving ``song_id`` (routing it if new)."""
        self.actor_for(song_id)
        return self._load[self._routes[song_id]]

    def release(self, song_id: str) -> None:
        """Forget a finished song's route."""
        index = self._routes.pop(song_id, None)
        if index is not None:
            self._load[index] -= 1


class Pools:
    """Reserves resources and starts every stage's actors; ``shutdown`` releases them."""

    def __init__(
        self,
        cfg: RunConfig,
        storage: RunStorage,
        factories: Mapping[Stage, StageFactory] | None = None,
        run_id: str | None = None,
        stages: Sequence[Stage] | None = None,
    ) -> None:
        """``factories`` replace the stage objects built from the model (per stage; e.g. stand-ins);
        ``stages`` are the pools to start (default: :func:`needed_stages` without prompts)."""
        self.cfg = cfg
        defaults = builders.stage_factories(
            cfg.model.source, cfg.model.init_seed, cfg.encode.chunk_samples, weights=cfg.model.weights, dtype=cfg.model.dtype,
            decode=cfg.model.decode,
        )
        self.factories = {**defaults, **(factories or {})}
        self.storage = storage
        self.run_id = run_id or storage.run_id or uuid.uuid4().hex[:8]
        self.stages = list(stages) if stages is not None else needed_stages(cfg)
        self.groups: list[PlacementGroup] = []
        self.pools: dict[Stage, StagePool] = {}

    def __getitem__(self, stage: Stage) -> StagePool:
        return self.pools[stage]

    def _needed_stages(self) -> list[Stage]:
        return self.stages

    def _reserve(self, stages: list[Stage]) -> dict[tuple[Stage, int], tuple[PlacementGroup, int]]:
        """One placement group per gpu_group (or stage); waits for all within the timeout."""
        by_group: dict[str, dict[Stage, PoolSpec]] = {}
        for stage in stages:
            pool = self.cfg.stages[stage]
            group = pool.gpu_group if pool.gpu_group is not None else f"stage:{stage.value}"
            by_group.setdefault(group, {})[stage] = pool
        slots: dict[tuple[Stage, int], tuple[PlacementGroup, int]] = {}
        pending = []
        for group, members in by_group.items():
            bundles = pack_bundles(members)
            selectors = [b.label_selector for b in bundles]
            pg = placement_group(
                [b.as_resources() for b in bundles],
                strategy="PACK",
                name=f"jukebox-{self.run_id}-{group}",
                bundle_label_selector=selectors if any(selectors) else None,
            )
            self.groups.append(pg)
            pending.append((group, members, bundles, pg))
            for index, bundle in enumerate(bundles):
                for member in bundle.members:
                    slots[member] = (pg, index)
        timeout = self.cfg.ray.placement_timeout_s
        waits = [pg.ready() for *_, pg in pending]
        ready, _ = ray.wait(waits, num_returns=len(waits), timeout=timeout)
        failed = [(group, members, bundles) for (group, members, bundles, _), ref in zip(pending, waits) if ref not in ready]
        if failed:
            self.shutdown()
            lines = []
            for group, members, bundles in failed:
                names = ", ".join(s.value for s in members)
                asks = [b.as_resources() for b in bundles]
                labels = [b.label_selector for b in bundles if b.label_selector]
                lines.append(f"stage(s) {names}: bundles {asks}" + (f" on nodes labelled {labels[0]}" if labels else ""))
            raise PlacementError(
                f"could not place {len(failed)} stage group(s) within ray.placement_timeout_s={timeout} s: "
                + "; ".join(lines)
                + f". The cluster has {ray.cluster_resources()} in total and {ray.available_resources()} free"
                + f"; node labels: {_node_labels()}. Lower the stages' num_gpus/num_cpus/num_actors, fix their "
                "label_selector/resources, or add nodes."
            )
        return slots

    def start(self) -> None:
        """Reserve resources, start every needed stage's actors and wait until they are loaded."""
        stages = self._needed_stages()
        slots = self._reserve(stages)
        for stage in stages:
            pool = self.cfg.stages[stage]
            actors = [self._start_actor(stage, pool, index, *slots[(stage, index)]) for index in range(pool.num_actors)]
            self.pools[stage] = StagePool(stage, actors)
        all_actors = [(stage, actor) for stage, pool in self.pools.items() for actor in pool.actors]
        refs = [actor.ready.remote() for _, actor in all_actors]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=self.cfg.ray.ready_timeout_s)
        if len(ready) < len(refs):
            slow = sorted({stage.value for (stage, _), ref in zip(all_actors, refs) if ref not in ready})
            self.shutdown()
            raise PlacementError(f"actors of stage(s) {slow} did not load their model within ray.ready_timeout_s={self.cfg.ray.ready_timeout_s} s")
        infos = ray.get(refs)
        for (stage, _), info in zip(all_actors, infos):
            self.pools[stage].infos.append(info)
        for stage, pool in self.pools.items():
            logger.info(
                "stage %-8s %d actor(s) on node(s) %s, GPU ids %s",
                stage.value, len(pool.actors), sorted({i["node_id"][:8] for i in pool.infos}), [i["gpu_ids"] for i in pool.infos],
            )

    def _start_actor(self, stage: Stage, pool: PoolSpec, index: int, pg: PlacementGroup, bundle: int) -> Any:
        options: dict[str, Any] = dict(
            name=f"jukebox-{self.run_id}-{stage.value}-{index}",
            num_cpus=pool.num_cpus,
            num_gpus=pool.num_gpus,
            resources=dict(pool.resources),
            max_restarts=pool.max_restarts,
            max_task_retries=pool.max_task_retries,
            max_concurrency=_MAX_CONCURRENCY,
            scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=bundle),
        )
        runtime_env = actor_runtime_env()
        if runtime_env:
            options["runtime_env"] = runtime_env
        factory = self.factories[stage]
        settings = ActorSettings(num_gpus=pool.num_gpus, torch_threads=pool.torch_threads, nice=pool.nice,
                                 max_batch=pool.max_batch, batch_wait_ms=pool.batch_wait_ms)
        if stage is Stage.TOKENIZE:
            return ray.remote(TokenizeActor).options(**options).remote(factory, self.storage, settings)
        if stage is Stage.ENCODE:
            model = builders.model_config(self.cfg.model.source)
            audio = dict(sampling_rate=model.sampling_rate, channels=model.vqvae_config.conv_input_shape)
            return ray.remote(EncodeActor).options(**options).remote(factory, self.storage, settings, **audio)
        if stage is Stage.DECODE:
            return ray.remote(DecodeActor).options(**options).remote(factory, self.storage, settings)
        return ray.remote(PriorActor).options(**options).remote(stage.value, stage_level(stage), factory, self.storage, settings)

    def infos(self) -> dict[str, list[dict[str, Any]]]:
        """Where each stage's actors run now (a restarted actor reports its new process)."""
        stages = list(self.pools)
        refs = [[actor.ready.remote() for actor in self.pools[stage].actors] for stage in stages]
        for stage, stage_refs in zip(stages, refs):
            self.pools[stage].infos = ray.get(stage_refs)
        return {stage.value: list(pool.infos) for stage, pool in self.pools.items()}

    def shutdown(self) -> None:
        """Kill the actors and release the reserved resources."""
        for pool in self.pools.values():
            for actor in pool.actors:
                ray.kill(actor, no_restart=True)
        self.pools = {}
        for pg in self.groups:
            remove_placement_group(pg)
        self.groups = []


def needed_stages(cfg: RunConfig, prompts: bool = False) -> list[Stage]:
    """The pools a run needs: the encoder alone for an encode-only run; otherwise tokenization,
    the sampled levels and decoding, plus the encoder when songs have ``prompts``."""
    if cfg.mode is RunMode.ENCODE:
        return [Stage.ENCODE]
    levels = set(cfg.sampling.levels)
    wanted = {Stage.TOKENIZE, Stage.DECODE, *levels} | ({Stage.ENCODE} if prompts else set())
    return [s for s in Stage if s in wanted]


def _node_labels() -> list[dict[str, str]]:
    """Labels of the alive nodes, without Ray's own."""
    out = []
    for node in ray.nodes():
        if node.get("Alive"):
            out.append({k: v for k, v in (node.get("Labels") or {}).items() if not k.startswith("ray.io/")})
    return out

