"""``python -m pipeline`` / ``jukebox-pipeline``: the pipeline with Hydra overrides.

With ``dry_run=true`` nothing runs: the validated plan (songs, windows and tokens per level, or
the files of an encode-only run) is printed as JSON.

With ``-m`` (a Hydra multirun sweep, e.g. ``-m sampling.top.temperature=0.9,0.98``) every job
writes under its own output URL, ``output.url/<the swept keys and this job's values>``, e.g.
``outputs/jukebox/sampling.top.temperature=0.9`` (so rerunning the sweep resumes each job in
place), and the jobs share one Ray session: the first job starts it (or joins ``ray.address``),
the others reuse it, and it stops when the sweep ends.

Exit status: 0 done; 2 bad input; 3 no space left on the output's device; 130 interrupted
(Ctrl-C); 143 terminated (SIGTERM); 1 anything else. A run stopped early prints one line,
``stopped: <why>; ...``, keeps what it finished and is resumed by the same command.

Bad input exits with status 2 and one line on stderr, ``error: <field>=<value>: <what was
expected>``, before any Ray actor exists: a malformed override or an unknown config key or group
(checked here, before Hydra runs the job), or a ``ValueError`` of the run's validation (an
unknown name, a malformed grid, a missing file, a request the cluster cannot hold...). Set
``HYDRA_FULL_ERROR=1`` for tracebacks instead.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import hydra
from hydra import compose, initialize_config_module
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from hydra.types import RunMode as HydraMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from pipeline.errors import (
    Terminated,
    full_errors,
    one_line,
    program_name,
    raise_usage_errors,
    report,
    report_stop,
    sigterm_raises,
    storage_full,
)

CONFIG_PATH = "pkg://conf"  # the config tree ships as package data (conf/)
CONFIG_NAME = "config"
OVERRIDE_GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic/"
_MAX_DIR_CHARS = 120
_HASH_CHARS = 8
_MAX_CHECKED_JOBS = 32
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
    them when None; ``output.url`` never), sorted, made file-name safe; ``job<N>`` when none.

    Names that making them safe changed (``a b`` and ``a/b`` both become ``a_b``) or that are
    too long get a hash of the exact overrides, so every job has its own directory; names
    already safe are kept as they are.
    """
    kept = sorted(o for o in overrides if _key(o) != "output.url" and (swept is None or _key(o) in swept))
    if not kept:
        return f"job{job_num}"
    exact = ",".join(kept)
    name = _UNSAFE.sub("_", exact).strip("._")
    if name == exact and len(name) <= _MAX_DIR_CHARS:
        return name
    digest = hashlib.sha256(exact.encode()).hexdigest()[:_HASH_CHARS]
    return f"{name[: _MAX_DIR_CHARS - _HASH_CHARS - 1]}-{digest}" if name else f"job-{digest}"


# ------------------------------------------------------------------------- checks before Hydra runs


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    with initialize_config_module(config_module="conf", version_base=None):
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=True)


def _composition_reason(err: Exception, override: str, prog: str) -> str:
    """What is wrong with ``override``, from Hydra's composition error, on one line."""
    if isinstance(err, MissingConfigException) and err.options is not None:
        return f"config group option {err.missing_cfg_file!r} does not exist; expected one of {sorted(err.options)}"
    cause = err.__cause__
    if isinstance(cause, (KeyError, AttributeError)) and isinstance(cause, OmegaConfBaseException):
        missing = getattr(cause, "full_key", "") or ""
        key = _key(override)
        if missing.startswith(f"{key}."):  # a mapping given to a key whose mapping is empty in the config
            return (f"{key} is a mapping, and Hydra adds keys to a mapping of the config only with '++': "
                    f"++{override.lstrip('+')}")
        return f"unknown config key {missing!r} (`{prog} --cfg job` prints every key)"
    first = str(err).split("\n\n", 1)[0]
    return one_line(f"{first}\n{cause}" if cause is not None else first)


def _job_overrides(parsed: list[Override], multirun: bool) -> list[list[str]]:
    """The override lists to compose: the command line as given, or for a sweep its first job plus
    one list per other value of each swept key, ``_MAX_CHECKED_JOBS`` at most (each costs a
    composition, ~0.1 s; later values, and those of ``glob`` sweeps, which are not enumerable, are
    checked when their job starts)."""
    if not multirun:
        return [[o.input_line for o in parsed]]
    base: list[str] = []
    sweeps: list[tuple[int, str, list[str]]] = []
    for o in parsed:
        if not o.is_sweep_override():
            base.append(o.input_line)
            continue
        try:
            values = list(o.sweep_string_iterator())
        except HydraException:
            continue
        if values:
            sweeps.append((len(base), o.get_key_element(), values))
            base.append(f"{o.get_key_element()}={values[0]}")
    jobs = [base]
    for position, key, values in sweeps:
        for value in values[1:]:
            job = list(base)
            job[position] = f"{key}={value}"
            jobs.append(job)
    return jobs[:_MAX_CHECKED_JOBS]


def _check_job_options(cfg: DictConfig) -> None:
    """The typed options of one job of a sweep (ValueError naming the field), so that a bad value
    of a later job fails before the first job runs."""
    from pipeline.run.config import RunConfig  # loads torch: only sweeps need it before Hydra runs

    with open_dict(cfg):
        del cfg["hydra"]
    RunConfig.from_dict(_resolved(cfg))


def check_command_line(argv: Sequence[str], prog: str) -> None:
    """Check what Hydra would refuse with a multi-line report: unknown flags, malformed overrides,
    unknown keys or config group options; and for a sweep (``-m``), every job's typed options.
    ValueError naming the override or field and what was expected.

    Runs with ``--help``, ``--info``, ``--config-dir`` or ``--config-path`` are left to Hydra.
    """
    parser = raise_usage_errors(get_args_parser())
    parser.prog = prog
    args = parser.parse_args(list(argv))
    if args.help or args.hydra_help or args.info or args.shell_completion or args.config_dir or args.config_path:
        return
    grammar = OverridesParser.create()
    parsed: list[Override] = []
    for line in args.overrides:
        try:
            parsed.extend(grammar.parse_overrides([line]))
        except OverrideParseException as err:
            reason = str(err).splitlines()[0]
            raise ValueError(f"override {line!r} is malformed: {reason} (the override grammar: {OVERRIDE_GRAMMAR})") from err
    config_name = args.config_name or CONFIG_NAME
    for overrides in _job_overrides(parsed, args.multirun):
        try:
            cfg = _compose(config_name, overrides)
        except (HydraException, OmegaConfBaseException) as err:
            failure = err
        else:
            if args.multirun:
                _check_job_options(cfg)
            continue
        for end in range(1, len(overrides) + 1):  # the first override that makes composition fail
            try:
                _compose(config_name, overrides[:end])
            except (HydraException, OmegaConfBaseException) as err:
                raise ValueError(f"{overrides[end - 1]}: {_composition_reason(err, overrides[end - 1], prog)}") from err
        raise ValueError(f"config {config_name!r}: {_composition_reason(failure, '', prog)}") from failure


# ------------------------------------------------------------------------- the Hydra job


def _resolved(cfg: DictConfig) -> dict[str, Any]:
    """The job's config as plain data; a bad interpolation is a ValueError naming its key."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__  # without OmegaConf's key/type lines
        raise ValueError(f"{getattr(err, 'full_key', None) or 'config'}: {reason}") from err


@hydra.main(version_base=None, config_path=CONFIG_PATH, config_name=CONFIG_NAME)
def hydra_main(cfg: DictConfig) -> None:
    """Run the pipeline on the composed config (see conf/config.yaml)."""
    from pipeline.execute.runner import RunResult, run  # torch and Ray load only once the command line is known to be good

    hydra_cfg = HydraConfig.get()
    sweeping = hydra_cfg.mode == HydraMode.MULTIRUN
    if sweeping:
        with open_dict(cfg):
            swept = swept_keys(sys.argv[1:], (hydra_cfg.sweeper.get("params") or {}).keys())
            name = job_dirname(hydra_cfg.overrides.task, hydra_cfg.job.num, swept)
            cfg.output.url = f"{str(cfg.output.url).rstrip('/')}/{name}"
    try:
        with sigterm_raises():
            result = run(_resolved(cfg), keep_ray=sweeping)
    except ValueError as err:
        if full_errors():
            raise
        sys.exit(report(err))
    except (KeyboardInterrupt, Terminated) as err:  # cleaned up by the run's finally blocks
        sys.exit(report_stop(err))
    except Exception as err:
        if full_errors() or storage_full(err) is None:
            raise
        sys.exit(report_stop(err))
    if result.dry_run:
        print(json.dumps(result.plan, indent=1))
    if isinstance(result, RunResult) and result.rejected:  # files an encode-only run refused (not a training run)
        rejected = result.rejected
        sys.exit(report(ValueError(f"{len(rejected)} input file(s) rejected (the others are encoded): " + " | ".join(rejected))))


def cli(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """The command line (``argv`` without the program name; default ``sys.argv[1:]``); returns
    the exit status: 0 done, 2 bad input (one ``error:`` line on stderr), 1 anything else that
    Hydra reports."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or program_name("pipeline")
    if not full_errors():
        try:
            check_command_line(argv, prog)
        except ValueError as err:
            return report(err)
    saved = sys.argv
    sys.argv = [prog, *argv]  # Hydra parses sys.argv; prog names the program in its usage and help
    try:
        hydra_main()
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = saved
    return 0


def main() -> None:
    """Entry point of ``python -m pipeline`` and ``jukebox-pipeline``."""
    sys.exit(cli())


if __name__ == "__main__":
    main()
