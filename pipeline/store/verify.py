"""Is what an output holds what was written? Checks of finished files and parts before a resume trusts them.

A done marker records the size and xxh64 checksum of each of its song's files. Resuming checks
every finished song cheaply (the file exists, has that size, and its Parquet footer or WAV header
reads), and with ``output.verify=true`` also reads every file whole against its checksum. Parts
have no record (their write is atomic): they are checked for a readable footer. Nothing here
writes: the scheduler sets aside and remakes what is found damaged.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow.parquet as pq
import soundfile

from pipeline.store.writer import RunStorage, checksum


def file_problem(storage: RunStorage, relative: str, recorded: Mapping[str, Any] | None, deep: bool = False) -> str | None:
    """Why the file at ``relative`` (to the output root) is not what ``recorded`` (``{"size",
    "xxh64"}``, None: unknown) says was written, or None when it is.

    Always: it exists, its size matches, a Parquet file's footer / a WAV file's header reads.
    ``deep``: its whole content matches the checksum too.
    """
    path = storage.resolve(relative)
    try:
        size = storage.fs.info(path)["size"]
    except FileNotFoundError:
        return "missing"
    if recorded is not None and size != recorded.get("size"):
        return f"{size} bytes, {recorded.get('size')} were written"
    try:
        with storage.fs.open(path, "rb") as handle:
            if relative.endswith(".parquet"):
                pq.read_metadata(handle)
            elif relative.endswith(".wav"):
                soundfile.info(handle)
    except Exception as err:  # any reader failure means the file cannot be used
        return f"unreadable ({type(err).__name__}: {err})"
    if deep and recorded is not None and checksum(storage.fs.cat_file(path)) != recorded.get("xxh64"):
        return f"content differs from the checksum {recorded.get('xxh64')} written"
    return None


def marker_problems(storage: RunStorage, marker: Mapping[str, Any], deep: bool = False) -> dict[str, str]:
    """``{relative path: problem}`` for the files a done marker lists (empty: all intact)."""
    files = marker.get("files")
    if not isinstance(files, Mapping) or not files:
        return {"(marker)": "lists no files (written by an older version, or damaged)"}
    problems = {}
    for relative, recorded in files.items():
        problem = file_problem(storage, relative, recorded if isinstance(recorded, Mapping) else None, deep)
        if problem is not None:
            problems[relative] = problem
    return problems


def finished_intact(storage: RunStorage, song_id: str, deep: bool = False) -> bool:
    """Whether a song's done marker reads and every file it lists checks out."""
    try:
        marker = storage.read_json(storage.marker_path(song_id))
    except (OSError, ValueError):
        return False
    return not marker_problems(storage, marker, deep)


def part_problem(storage: RunStorage, path: str) -> str | None:
    """Why a part file cannot be used (unreadable Parquet, not one row), or None."""
    try:
        with storage.fs.open(path, "rb") as handle:
            rows = pq.read_metadata(handle).num_rows
    except Exception as err:  # any reader failure means the part cannot be used
        return f"unreadable ({type(err).__name__}: {err})"
    return None if rows == 1 else f"{rows} rows, a part holds 1"
