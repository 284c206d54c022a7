"""What an output already holds for a run's songs and files, and what can be trusted of it.

A song (or encoded file) is finished when its done marker exists, was made with this run's
settings (its fingerprint) and its files check out (:mod:`pipeline.store.verify`); a song made
with other settings stops the run (:class:`ResumeMismatchError`). A damaged marker, file, part or
spec is set aside and remade: a finished song's intact token files become its window parts again,
so only what was damaged is redone. Parts left by a run that died after closing a song are removed.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from pipeline.execute.plan import SongPlan
from pipeline.store.parts import chunk_batch
from pipeline.store.verify import file_problem, marker_problems, part_problem
from pipeline.store.writer import RunStorage

logger = logging.getLogger(__name__)

StoredParts = dict[tuple[str, int, int, int], str]
"""A song's usable parts: (kind, level, start, end) -> path."""


class ResumeMismatchError(ValueError):
    """The output holds a song of the same id made with other settings."""


class Resume:
    """The output's finished and partly made songs, checked as the scheduler admits them.

    Args:
        storage: the run's output.
        deep: read finished files whole against their checksums (``output.verify``).
        keep_parts: the run keeps parts after closing songs (otherwise leftovers are removed).
        verified: songs whose finished files this run checked already.
    """

    def __init__(self, storage: RunStorage, *, deep: bool = False, keep_parts: bool = False,
                 verified: set[str] | None = None) -> None:
        self.storage, self.deep, self.keep_parts = storage, deep, keep_parts
        self._verified = verified or set()
        # one listing each at the start, instead of a look-up per song
        self._done = storage.done_songs()
        self._with_parts = storage.songs_with_parts()

    def check_fingerprint(self, job_id: str, stored: dict[str, Any], expected: dict[str, Any], where: str) -> None:
        """ResumeMismatchError naming the settings that differ, unless ``stored == expected``."""
        if stored == expected:
            return
        keys = sorted(k for k in set(stored) | set(expected) if stored.get(k) != expected.get(k))
        raise ResumeMismatchError(
            f"song {job_id!r} already exists in {self.storage.url!r} ({where}) with different settings ({keys}): "
            f"use another output.url, another song id, or delete the song's files to remake it"
        )

    def finished(self, job_id: str, fingerprint: dict[str, Any], plan: SongPlan | None = None) -> dict[str, Any] | None:
        """The done marker of ``job_id`` when it is finished and its files check out; None when it
        is not, or was and is damaged (set aside; with ``plan``, intact token files kept as parts)."""
        if job_id not in self._done:
            return None
        path = self.storage.marker_path(job_id)
        try:
            marker = self.storage.read_json(path)
        except (OSError, ValueError) as err:  # unreadable: remade from what is intact
            self.storage.set_aside(path, str(err))
            self._salvage(plan, {})
            return None
        self.check_fingerprint(job_id, marker.get("fingerprint") or {}, fingerprint, "finished")
        problems = {} if job_id in self._verified else marker_problems(self.storage, marker, deep=self.deep)
        if not problems:
            if job_id in self._with_parts and not self.keep_parts:
                self.storage.remove_parts(job_id)  # left by a run that died after closing it
            return marker
        for relative, problem in problems.items():
            if problem != "missing" and relative != "(marker)":
                self.storage.set_aside(self.storage.resolve(relative), problem)
        self.storage.set_aside(path, "its files are damaged: " + "; ".join(f"{k}: {v}" for k, v in problems.items()))
        self._salvage(plan, marker)
        return None

    def _salvage(self, plan: SongPlan | None, marker: dict[str, Any]) -> None:
        """Turn the intact token files of a damaged finished song back into its window parts."""
        if plan is None:
            return
        song_id = plan.song.id
        files = marker.get("files") if isinstance(marker.get("files"), dict) else {}
        now = time.time()
        for level, chunks in plan.chunks.items():
            relative = self.storage.relative(self.storage.tokens_path(song_id, level))
            if file_problem(self.storage, relative, files.get(relative)) is not None:
                continue
            tokens = self.storage.read_tokens(song_id, level)
            if len(tokens) != plan.n_tokens[level]:
                continue
            for chunk in chunks:
                self.storage.write_chunk(chunk_batch(song_id, level, chunk.start, tokens[chunk.start : chunk.end],
                                                     started_at=now, finished_at=now, compute_s=0.0, batch_size=1))
            logger.info("song %s: level %d kept from its token file", song_id, level)
        self._with_parts.add(song_id)

    def check_spec(self, song_id: str, fingerprint: dict[str, Any]) -> None:
        """The settings of a partly made song must be this run's; a new song's are written."""
        path = self.storage.spec_path(song_id)
        if song_id in self._with_parts and self.storage.fs.exists(path):
            try:
                spec = self.storage.read_json(path)
            except (OSError, ValueError) as err:
                self.storage.set_aside(path, str(err))
            else:
                self.check_fingerprint(song_id, spec, fingerprint, "partly made")
                return
        self.storage.write_json(path, fingerprint)

    def stored_parts(self, plan: SongPlan) -> StoredParts:
        """The song's usable parts; damaged ones are set aside, audio segments of another
        segmentation (``audio.decode_tokens`` changed) removed."""
        song_id = plan.song.id
        if song_id not in self._with_parts:
            return {}
        planned_audio = {("audio", d.level, d.start, d.end) for segments in plan.decodes.values() for d in segments}
        stored: StoredParts = {}
        for part in self.storage.list_parts(song_id):
            key = (part.kind, part.level, part.start, part.end)
            problem = part_problem(self.storage, part.path)
            if problem is not None:
                self.storage.set_aside(part.path, problem)
            elif part.kind == "audio" and key not in planned_audio:
                self.storage.remove(part.path)
            else:
                stored[key] = part.path
        return stored
