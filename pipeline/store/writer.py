"""Durable run state under one output URL, through fsspec and Parquet: the run's one writer.

Layout (``{L}`` a VQ-VAE level, 0 = finest; token positions in that level's tokens)::

    lease.json                                     which run writes here now (pipeline.store.lease)
    parts/{song}/spec.json                         the song's settings (checked on resume)
    parts/{song}/level={L}/{start}-{end}.parquet   one sampled chunk (CHUNK_SCHEMA)
    parts/{song}/audio={L}/{start}-{end}.parquet   one decoded audio segment (AUDIO_SCHEMA)
    tokens/level={L}/{song}.parquet                a finished song's tokens (song_id, n_tokens, tokens)
    audio/{song}.wav                               a finished song's audio
    previews/level={L}/{song}.wav                  optional audio decoded from an upper level
    done/{song}.json                               marker: the song is complete (its manifest row and
                                                   the size and xxh64 checksum of each of its files)
    damaged/{run}/...                              files found damaged on resume, set aside
    manifest.parquet, summary.json                 the manifest; every run's figures ({"runs": [...]})

Every durable write of a run, in whichever process, goes through :class:`RunStorage`: "what
exists" has one definition. Every file is written whole: to a temporary name and renamed on local
disks, straight to its key on object stores (where a PUT is atomic), so a reader never sees half a
file. A part exists only once its chunk is complete, which is what resuming relies on. Paths in
the manifest and markers are relative to the output root, so an output can be moved or copied
(to another file system too) and resumed there. ``tokens/`` is hive-partitioned by level (the level
is not stored inside the files), so ``pyarrow.dataset``, pandas and ``ray.data.read_parquet`` read
it directly.

Writers are fenced: a ``RunStorage`` made for a run (``run_id``) checks, at most once a second and
before writing, that the output's lease still belongs to that run and is alive; otherwise it raises
:class:`LeaseLostError` and writes nothing (the orphaned actors of a dead driver stop within a
second of a new run taking the output over).
"""
from __future__ import annotations

import io
import json
import logging
import os
import posixpath
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile
import xxhash

from pipeline import faults
from pipeline.store.parts import TOKENS_SCHEMA, PartInfo, chunk_tokens

logger = logging.getLogger(__name__)


_PART_NAME = re.compile(r"(level|audio)=(\d+)/(\d+)-(\d+)\.parquet$")
TEMPORARY_TAG = ".jukebox-tmp-"  # a file being written: <final name>.jukebox-tmp-<8 hex digits>
_TEMPORARY = re.compile(re.escape(TEMPORARY_TAG) + r"[0-9a-f]{8}$")
# What the project writes at an output's root: its only folders, and its files there.
OWN_FOLDERS = ("parts", "done", "tokens", "audio", "previews", "damaged")
TRAIN_FOLDER_PREFIX = "train-"

LEASE_NAME = "lease.json"
SUMMARY_NAME = "summary.json"
FENCE_INTERVAL_S = 1.0  # how long a process trusts its last look at the lease


class LeaseLostError(RuntimeError):
    """This process's run no longer holds the output's lease: it must not write there."""


def temporary_name(path: str) -> str:
    """Where a file is written before it is renamed to ``path``: a name only this project makes."""
    return f"{path}{TEMPORARY_TAG}{uuid.uuid4().hex[:8]}"


def checksum(payload: bytes) -> str:
    """The files' checksum: xxh64 of the bytes, as 16 hex digits."""
    return xxhash.xxh64(payload).hexdigest()


@dataclass(frozen=True)
class StoredFile:
    """A file as written: its path (relative to the output root), size and checksum."""

    path: str
    size: int
    xxh64: str

    def record(self) -> dict[str, Any]:
        """How a done marker records it."""
        return {"size": self.size, "xxh64": self.xxh64}


class RunStorage:
    """Reads and writes one run's files under ``url`` (local path or fsspec URL); picklable.

    Args:
        url: the output root.
        run_id: the run this process writes for; its writes are fenced by the output's lease
            (None: unfenced, for readers and tools that hold no lease).
        clock: wall-clock seconds, the lease's timestamps (tests inject their own).
        monotonic: this process's own timing of its fence (tests inject their own).
    """

    def __init__(self, url: str, run_id: str | None = None, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.url = url.rstrip("/") or url
        self.run_id = run_id
        self.clock = clock
        self.monotonic = monotonic
        self._beat_seen: float | None = None  # the lease's heartbeat as last seen, and when (monotonic)
        self._beat_seen_at = 0.0
        self._fs: fsspec.AbstractFileSystem | None = None
        self._root: str | None = None
        self._fenced_until = -float("inf")

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "run_id": self.run_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], state["run_id"])

    def for_run(self, run_id: str) -> RunStorage:
        """The same output, written for ``run_id`` (fenced by its lease)."""
        return RunStorage(self.url, run_id, self.clock, self.monotonic)

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        if self._fs is None:
            self._fs, self._root = fsspec.core.url_to_fs(self.url)
        return self._fs

    @property
    def root(self) -> str:
        _ = self.fs
        assert self._root is not None
        return self._root

    @property
    def is_local(self) -> bool:
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return protocol in ("file", "local")

    def path(self, *parts: str) -> str:
        """Path of a file under the root, as the file system names it."""
        return posixpath.join(self.root, *parts)

    def uri(self, path: str) -> str:
        """A path as a URL readers can open (``file://`` paths stay plain)."""
        return path if self.is_local else self.fs.unstrip_protocol(path)

    def relative(self, path: str) -> str:
        """``path`` (as :meth:`path` gives it) relative to the output root: what the manifest and
        markers hold."""
        return posixpath.relpath(path, self.root)

    def resolve(self, relative: str) -> str:
        """A path relative to the output root, as the file system names it."""
        return self.path(relative)

    # ------------------------------------------------------------------ fencing
    def _fence(self) -> None:
        """Refuse to write unless this process's run still holds a live lease (checked at most
        once per :data:`FENCE_INTERVAL_S` seconds)."""
        if self.run_id is None:
            return
        now = self.monotonic()
        if now < self._fenced_until:
            return
        from pipeline.store.lease import LeaseInfo  # the lease's rules; its file is written here

        holder = LeaseInfo.read(self)
        if holder is None or holder.run_id != self.run_id:
            owner = "no run" if holder is None else f"run {holder.run_id} ({holder.owner})"
            raise LeaseLostError(f"run {self.run_id} lost its lease on {self.url!r} (held by {owner}): not writing")
        # alive while its heartbeat changes, timed on this process's monotonic clock (a step of
        # the wall clock moves the heartbeat's timestamps, not this)
        if holder.heartbeat_at != self._beat_seen:
            self._beat_seen, self._beat_seen_at = holder.heartbeat_at, now
        elif now - self._beat_seen_at > holder.stale_s:
            raise LeaseLostError(
                f"run {self.run_id}'s lease on {self.url!r} has had no heartbeat for {now - self._beat_seen_at:.0f} s "
                f"(stale after {holder.stale_s:.0f} s): its driver is gone, not writing"
            )
        self._fenced_until = now + FENCE_INTERVAL_S

    # ------------------------------------------------------------------ writing
    def _put(self, path: str, payload: bytes) -> None:
        """Write a whole file: temp name + rename on local disks, one PUT elsewhere (unfenced)."""
        if self.is_local:
            os.makedirs(posixpath.dirname(path), exist_ok=True)
            tmp = temporary_name(path)
            with open(tmp, "wb") as handle:
                handle.write(payload)
            faults.point(f"write.{self.relative(path).split('/')[0]}.temp")  # e.g. write.audio.temp
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, payload)

    def write_bytes(self, path: str, payload: bytes) -> StoredFile:
        """Write a whole file atomically (fenced); returns its size and checksum."""
        self._fence()
        self._put(path, payload)
        return StoredFile(self.relative(path), len(payload), checksum(payload))

    def write_parquet(self, path: str, table: pa.Table | pa.RecordBatch) -> StoredFile:
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        sink = io.BytesIO()
        pq.write_table(table, sink)
        return self.write_bytes(path, sink.getvalue())

    def write_json(self, path: str, data: Mapping[str, Any]) -> StoredFile:
        return self.write_bytes(path, json.dumps(data, indent=1, sort_keys=True).encode())

    def read_json(self, path: str) -> dict[str, Any]:
        """A JSON file's object; ValueError naming the file when it is not one."""
        with self.fs.open(path, "rb") as handle:
            raw = handle.read()
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{self.uri(path)} is not valid JSON ({len(raw)} bytes): {err}") from err
        if not isinstance(data, dict):
            raise ValueError(f"{self.uri(path)} holds a JSON {type(data).__name__}, expected an object")
        return data

    def remove(self, path: str) -> None:
        """Delete one file or directory tree (fenced); a missing one is fine."""
        self._fence()
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def set_aside(self, path: str, reason: str) -> str:
        """Move a damaged file out of the run's layout, to ``damaged/<run>/<its path>``; returns
        where it went. The run remakes it; the damaged copy stays for inspection."""
        self._fence()
        target = self.path("damaged", self.run_id or "unfenced", self.relative(path))
        logger.warning("%s is damaged (%s): set aside as %s and remade", self.uri(path), reason, self.uri(target))
        if self.is_local:
            os.makedirs(posixpath.dirname(target), exist_ok=True)
            os.replace(path, target)
        else:
            self.fs.mv(path, target)
        return target

    def write_lease(self, payload: bytes, exclusive: bool) -> bool:
        """Write ``lease.json`` (the lease's rules are :mod:`pipeline.store.lease`'s; the lease is what
        fences, so this write is not fenced). ``exclusive``: only if none exists, atomically
        where the file system can (local disks); True when written."""
        path = self.path(LEASE_NAME)
        if not exclusive:
            self._put(path, payload)
            return True
        if self.is_local:
            os.makedirs(self.root, exist_ok=True)
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
            return True
        if self.fs.exists(path):  # object stores: the caller reads back who won
            return False
        self._put(path, payload)
        return True

    def remove_lease(self) -> None:
        """Delete ``lease.json`` (its holder, at the end of its run)."""
        path = self.path(LEASE_NAME)
        if self.fs.exists(path):
            self.fs.rm(path)

    def remove_temporaries(self) -> int:
        """Delete the temporary files interrupted writes left (local disks write through them):
        only files named as this project names them (:func:`temporary_name`), at the root or in
        the project's own folders; only the lease holder may call this. Returns how many."""
        self._fence()
        if not self.is_local or not self.fs.exists(self.root):
            return 0
        found = []
        for entry in self.fs.ls(self.root, detail=True):
            name = posixpath.basename(entry["name"])
            if entry["type"] == "directory" and (name in OWN_FOLDERS or name.startswith(TRAIN_FOLDER_PREFIX)):
                found += [p for p in self.fs.find(entry["name"]) if _TEMPORARY.search(p)]
            elif entry["type"] == "file" and _TEMPORARY.search(name):
                found.append(entry["name"])
        for path in found:
            self.fs.rm(path)
        return len(found)

    def check_writable(self) -> None:
        """Create the root and write/delete a probe file; ValueError naming the URL if that fails."""
        probe = self.path(f".write-probe-{uuid.uuid4().hex[:8]}")
        try:
            self.fs.makedirs(self.root, exist_ok=True)
            self._put(probe, b"ok")
            self.fs.rm(probe)
        except Exception as err:  # any file-system failure means the URL is unusable
            raise ValueError(f"output.url {self.url!r} cannot be written: {type(err).__name__}: {err}") from err

    # ------------------------------------------------------------------ parts
    def part_path(self, song_id: str, kind: str, level: int, start: int, end: int) -> str:
        return self.path("parts", song_id, f"{kind}={level}", f"{start:012d}-{end:012d}.parquet")

    def _write_part(self, kind: str, batch: pa.RecordBatch) -> str:
        song_id, level, start, end = (batch.column(name)[0].as_py() for name in ("song_id", "level", "start", "end"))
        path = self.part_path(song_id, kind, level, start, end)
        self.write_parquet(path, batch)
        return path

    def write_chunk(self, batch: pa.RecordBatch) -> str:
        """Store a sampled chunk (CHUNK_SCHEMA) as its own part; returns its path."""
        return self._write_part("level", batch)

    def write_audio_part(self, batch: pa.RecordBatch) -> str:
        """Store a decoded audio segment (AUDIO_SCHEMA) as its own part; returns its path."""
        return self._write_part("audio", batch)

    def read_part(self, path: str) -> pa.RecordBatch:
        """A part file as one record batch."""
        with self.fs.open(path, "rb") as handle:
            table = pq.ParquetFile(handle).read()
        return table.combine_chunks().to_batches()[0]

    def list_parts(self, song_id: str) -> list[PartInfo]:
        """Every complete part of a song (temporary files are ignored)."""
        base = self.path("parts", song_id)
        if not self.fs.exists(base):
            return []
        found = []
        for path in self.fs.find(base):
            match = _PART_NAME.search(path)
            if match:
                kind, level, start, end = match.group(1), *map(int, match.groups()[1:])
                found.append(PartInfo(kind, level, start, end, path))
        return sorted(found, key=lambda p: (p.kind, p.level, p.start))

    def remove_parts(self, song_id: str) -> None:
        self.remove(self.path("parts", song_id))

    def songs_with_parts(self) -> set[str]:
        """Ids of the songs that have a ``parts/`` folder (one listing)."""
        base = self.path("parts")
        if not self.fs.exists(base):
            return set()
        return {posixpath.basename(p.rstrip("/")) for p in self.fs.ls(base, detail=False)}

    # ------------------------------------------------------------------ song spec and markers
    def spec_path(self, song_id: str) -> str:
        return self.path("parts", song_id, "spec.json")

    def marker_path(self, song_id: str) -> str:
        return self.path("done", f"{song_id}.json")

    def done_songs(self) -> set[str]:
        """Ids of the songs whose completion marker exists."""
        base = self.path("done")
        if not self.fs.exists(base):
            return set()
        return {posixpath.basename(p)[: -len(".json")] for p in self.fs.ls(base, detail=False) if p.endswith(".json")}

    # ------------------------------------------------------------------ finished songs
    def tokens_path(self, song_id: str, level: int) -> str:
        return self.path("tokens", f"level={level}", f"{song_id}.parquet")

    def audio_path(self, song_id: str) -> str:
        return self.path("audio", f"{song_id}.wav")

    def preview_path(self, song_id: str, level: int) -> str:
        return self.path("previews", f"level={level}", f"{song_id}.wav")

    def write_tokens(self, song_id: str, level: int, tokens: np.ndarray) -> StoredFile:
        tokens = np.asarray(tokens, dtype=np.int32)
        table = pa.Table.from_pylist([{"song_id": song_id, "n_tokens": len(tokens), "tokens": tokens}], schema=TOKENS_SCHEMA)
        return self.write_parquet(self.tokens_path(song_id, level), table)

    def read_tokens(self, song_id: str, level: int) -> np.ndarray:
        """A finished song's tokens at ``level`` (int32 [n])."""
        with self.fs.open(self.tokens_path(song_id, level), "rb") as handle:
            return chunk_tokens(pq.read_table(handle))

    def write_wav(self, path: str, audio: np.ndarray, sampling_rate: int, subtype: str) -> StoredFile:
        """Write float audio [samples, channels] as a WAV file."""
        sink = io.BytesIO()
        soundfile.write(sink, np.asarray(audio, dtype=np.float32), sampling_rate, subtype=subtype, format="WAV")
        return self.write_bytes(path, sink.getvalue())

    def read_wav(self, path: str) -> tuple[np.ndarray, int]:
        """Audio (float32 [samples, channels]) and sampling rate of a WAV file."""
        with self.fs.open(path, "rb") as handle:
            audio, rate = soundfile.read(io.BytesIO(handle.read()), dtype="float32", always_2d=True)
        return audio, rate

    # ------------------------------------------------------------------ manifest and summary
    def parquet_stream(self, path: str, schema: pa.Schema) -> ParquetStream:
        """A Parquet file written a row group at a time, published whole by ``close``."""
        self._fence()
        return ParquetStream(self, path, schema)

    def append_summary(self, figures: Mapping[str, Any]) -> str:
        """Add one run's figures to ``summary.json`` (``{"runs": [...]}``, oldest first); a
        damaged summary is set aside and a new one started. Returns its path."""
        path = self.path(SUMMARY_NAME)
        runs: list[Any] = []
        if self.fs.exists(path):
            try:
                runs = self.read_json(path).get("runs", [])
                if not isinstance(runs, list):
                    raise ValueError(f"{self.uri(path)} 'runs' is a {type(runs).__name__}, expected a list")
            except ValueError as err:
                self.set_aside(path, str(err))
                runs = []
        self.write_bytes(path, json.dumps({"runs": [*runs, dict(figures)]}, indent=1, default=str).encode())
        return path


class ParquetStream:
    """Row groups appended to a temporary file, renamed into place by :meth:`close` (fenced
    writes through the :class:`RunStorage` that made it); :meth:`abort` drops it."""

    def __init__(self, storage: RunStorage, path: str, schema: pa.Schema) -> None:
        self.storage, self.path, self.schema = storage, path, schema
        self._tmp = temporary_name(path)
        self._handle: Any = None
        self._writer: pq.ParquetWriter | None = None

    def write(self, table: pa.Table) -> None:
        self.storage._fence()
        if self._writer is None:
            if self.storage.is_local:
                os.makedirs(posixpath.dirname(self._tmp), exist_ok=True)
                self._writer = pq.ParquetWriter(self._tmp, self.schema)
            else:
                self._handle = self.storage.fs.open(self._tmp, "wb")
                self._writer = pq.ParquetWriter(self._handle, self.schema)
        self._writer.write_table(table)

    def close(self) -> str:
        """Publish the file (an empty table when nothing was written); returns its path."""
        if self._writer is None:
            self.storage.write_parquet(self.path, self.schema.empty_table())
            return self.path
        self._writer.close()
        if self._handle is not None:
            self._handle.close()
        self._writer = self._handle = None
        self.storage._fence()
        if self.storage.is_local:
            os.replace(self._tmp, self.path)
        else:
            self.storage.fs.mv(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the unfinished file (a failed run publishes none)."""
        try:
            if self._writer is not None:
                self._writer.close()
            if self._handle is not None:
                self._handle.close()
            if self.storage.fs.exists(self._tmp):
                self.storage.fs.rm(self._tmp)
        except OSError as err:  # cleaning up after a failure must not hide the failure
            logger.warning("could not remove the unfinished file %s: %s", self._tmp, err)
        self._writer = self._handle = None

