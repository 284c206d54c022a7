"""An output is a folder this project owns.

A run writes, renames and deletes files in its output folder; it must never do so in a folder
that holds someone else's files. So an output folder is either new (absent or empty), or carries
the project's marker file, ``.jukebox-output``, which a run writes (:func:`mark_output`) as soon
as it holds the output's lease. Anything else is refused before any work, naming the path:

- a folder that holds files but no marker (a user's folder, or an output of a version of this
  tool that wrote no marker: ``touch OUTPUT/.jukebox-output`` adopts such an output);
- the file-system root, the home directory, the folder this package runs from, and any folder
  that holds one of them (a run there would write among, or sweep, files that are not its own);
- a folder inside another output (an ancestor carries the marker). A folder *around* another
  output is refused by the first rule: it holds that output's files and has no marker of its own.
"""
from __future__ import annotations

import json
import os
import posixpath
from pathlib import Path

from pipeline.store.manifest import MANIFEST_NAME
from pipeline.store.writer import LEASE_NAME, SUMMARY_NAME, RunStorage

MARKER_NAME = ".jukebox-output"
_OWN_FILES = (MANIFEST_NAME, SUMMARY_NAME, LEASE_NAME)
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the checkout, or site-packages for a wheel
_SHOWN_ENTRIES = 5


class OutputNotOursError(ValueError):
    """The output folder is not one this project owns (a usage error: choose another folder)."""


def _protected_folders() -> list[tuple[str, str]]:
    """Local folders a run may never use as its output, nor any folder that holds them."""
    return [(os.path.realpath(os.sep), "the file-system root"), (os.path.realpath(Path.home()), "the home directory"),
            (os.path.realpath(_PACKAGE_ROOT), "the folder this package runs from")]


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _ancestors(path: str) -> list[str]:
    """The folders above ``path`` (``a/b/c`` -> ``a/b``, ``a``), the file-system root left out."""
    found, parent = [], posixpath.dirname(path.rstrip("/"))
    while parent not in ("", "/", ".") and parent not in found:
        found.append(parent)
        parent = posixpath.dirname(parent)
    return found


def check_output_folder(storage: RunStorage) -> None:
    """Refuse ``storage``'s output folder unless the project owns it or it is new (module doc).

    Raises:
        OutputNotOursError: naming the path and why.
    """
    root, fs, url = storage.root, storage.fs, storage.url
    if storage.is_local:
        real = os.path.realpath(root)
        for folder, what in _protected_folders():
            if _inside(folder, real):
                why = f"is {what}" if folder == real else f"holds {what} ({folder})"
                raise OutputNotOursError(f"output.url {url!r} {why}: a run may not write there; choose a folder of its "
                                         "own, e.g. outputs/jukebox")
    for parent in _ancestors(root):
        if fs.exists(posixpath.join(parent, MARKER_NAME)):
            raise OutputNotOursError(f"output.url {url!r} lies inside the output {storage.uri(parent)!r}: outputs may "
                                     "not nest (a run sweeps and rewrites its whole folder); choose a folder outside it")
    if fs.exists(posixpath.join(root, MARKER_NAME)):
        for name in _OWN_FILES:  # what the tool writes there as files must be files
            path = posixpath.join(root, name)
            if fs.exists(path) and fs.isdir(path):
                raise OutputNotOursError(f"output.url {url!r}: {name} is a folder, expected the file this tool writes "
                                         "there; move it away")
        return
    if not fs.exists(root):
        return
    if not fs.isdir(root):
        raise OutputNotOursError(f"output.url {url!r} is a file, expected a folder (new, empty, or an output of this tool)")
    entries = sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(root, detail=False))
    if entries:
        shown = ", ".join(entries[:_SHOWN_ENTRIES]) + (f" and {len(entries) - _SHOWN_ENTRIES} more" if len(entries) > _SHOWN_ENTRIES else "")
        raise OutputNotOursError(
            f"output.url {url!r} holds files this tool did not write ({shown}) and no {MARKER_NAME} marker: a run "
            f"writes and deletes files in its output folder, so it must be new, empty, or an output of this tool; "
            f"choose another folder (an output of an earlier version of this tool: create {MARKER_NAME} in it to adopt it)"
        )


def mark_output(storage: RunStorage) -> bool:
    """Write the marker that makes the folder an output of this tool, unless it is there (a run
    calls this once it holds its lease, before writing anything else). True when written."""
    unfenced = RunStorage(storage.url)  # a training run's lease is in its own subfolder
    path = unfenced.path(MARKER_NAME)
    if unfenced.fs.exists(path):
        return False
    unfenced.write_bytes(path, json.dumps({"written_by": "jukebox-pipeline", "format": 1}).encode())
    return True


def unmark_if_unused(storage: RunStorage) -> None:
    """Remove the marker a run wrote when the run left nothing else there (it was refused or
    failed before writing anything): a run that did nothing leaves nothing behind."""
    unfenced = RunStorage(storage.url)
    entries = [posixpath.basename(p.rstrip("/")) for p in unfenced.fs.ls(unfenced.root, detail=False)]
    if entries == [MARKER_NAME]:
        unfenced.fs.rm(unfenced.path(MARKER_NAME))
