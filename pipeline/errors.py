"""How the command-line tools report bad input: one line on stderr, ``error: ...``, exit status 2.

Messages of several lines (a list of unknown names, of unreadable files) are joined into one, so
a script or a person sees exactly one line per failure; ``HYDRA_FULL_ERROR=1`` shows tracebacks
instead (for ``python -m pipeline``, as Hydra does).
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
from collections.abc import Iterator
from typing import NoReturn, TextIO

EXIT_BAD_INPUT = 2
EXIT_STORAGE_FULL = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM
_FULL = (errno.ENOSPC, errno.EDQUOT)
FULL_ERROR_ENV = "HYDRA_FULL_ERROR"


def full_errors() -> bool:
    """Whether the user asked for tracebacks (``HYDRA_FULL_ERROR=1``)."""
    return os.environ.get(FULL_ERROR_ENV) == "1"


def one_line(message: object) -> str:
    """``message`` on one line: its non-blank lines stripped and joined (with a space after a
    line ending in ``:``, else with ``; ``)."""
    out = ""
    for line in str(message).splitlines():
        line = line.strip()
        if line:
            out = line if not out else f"{out}{' ' if out.endswith(':') else '; '}{line}"
    return out


MAX_ERROR_CHARS = 1000  # a message quoting a huge value is cut, never printed whole


def report(message: object, stream: TextIO | None = None) -> int:
    """Print ``error: <message on one line>`` to stderr (at most :data:`MAX_ERROR_CHARS`
    characters of it: the rest is counted, not printed); returns the exit status of bad input (2)."""
    line = one_line(message)
    if len(line) > MAX_ERROR_CHARS:
        line = f"{line[:MAX_ERROR_CHARS]}... ({len(line) - MAX_ERROR_CHARS} more characters cut)"
    print(f"error: {line}", file=stream if stream is not None else sys.stderr)
    return EXIT_BAD_INPUT


def program_name(module: str) -> str:
    """How the user started the program: ``python -m <module>``, or a console script's name
    (``jukebox-vocab``)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if not name or name.endswith(".py") or name in ("-", "-c", "-m"):
        return f"python -m {module}"
    return name


def raise_usage_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make ``parser`` raise ``ValueError`` on bad usage (instead of printing usage and exiting),
    so the caller reports it like any bad input: one line, pointing to ``--help``."""

    def error(message: str) -> NoReturn:
        raise ValueError(f"{message} (see {parser.prog} --help)")

    parser.error = error  # type: ignore[method-assign]
    return parser


class Terminated(BaseException):
    """The process was asked to stop (SIGTERM): raised where it runs, like ``KeyboardInterrupt``,
    so that every ``finally`` runs (actors stopped, Ray shut down, the lease released)."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Inside, SIGTERM raises :class:`Terminated` in the main thread; the previous handler after."""
    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _causes(err: BaseException) -> Iterator[BaseException]:
    """``err`` and what caused it: ``__cause__``/``__context__`` chains, and the ``cause`` a Ray
    task error carries from the actor that raised it."""
    seen: set[int] = set()
    todo = [err]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [current.__cause__, current.__context__, getattr(current, "cause", None)]


def storage_full(err: BaseException) -> OSError | None:
    """The "no space left" (or quota) error behind ``err``, if that is what it is."""
    return next((e for e in _causes(err) if isinstance(e, OSError) and e.errno in _FULL), None)


def report_stop(err: BaseException, stream: TextIO | None = None) -> int:
    """One line for a run that stopped early (Ctrl-C, SIGTERM, a full disk); its exit status."""
    if isinstance(err, KeyboardInterrupt):
        what, code = "interrupted (Ctrl-C)", EXIT_INTERRUPTED
    elif isinstance(err, Terminated):
        what, code = "terminated (SIGTERM)", EXIT_TERMINATED
    else:
        full = storage_full(err)
        where = f" writing {full.filename}" if full is not None and full.filename else ""
        what, code = f"no space left on the device{where}", EXIT_STORAGE_FULL
    print(f"stopped: {what}; every finished window and song is kept: run the same command again to resume",
          file=stream if stream is not None else sys.stderr)
    return code
