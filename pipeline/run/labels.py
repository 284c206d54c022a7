"""Labels manifests: the artist, genres and lyrics of each audio file, for training the priors.

A labels manifest is a CSV (with a header), Parquet, JSON or YAML file of rows. Each row names its
file with ``file`` (the path under the scanned audio folder, as ``a/b.wav``) or its song id with
``song_id`` (``a.b`` for that file, as encode mode names songs), and gives some of:

- ``artist``: a name;
- ``genres``: a list of names, or names joined by ``|`` (a CSV cell);
- ``lyrics``: text; an empty cell means an instrumental song.

Other columns are ignored. Encode mode (``encode.labels_url``) copies the labels into the token
dataset's manifest, where prior training reads them.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.run.grid_files import check_fields, read_grid_file
from pipeline.store.audio_input import AudioSource, song_id_from_path

logger = logging.getLogger(__name__)

LABEL_FIELDS = ("artist", "genres", "lyrics")
_KEYS = ("song_id", "file")


@dataclass(frozen=True)
class SongLabels:
    """One song's labels; None where the manifest gives none."""

    artist: str | None = None
    genres: tuple[str, ...] | None = None
    lyrics: str | None = None

    def to_row(self) -> dict[str, Any]:
        """The manifest columns ``artist``, ``genres`` (a list) and ``lyrics``."""
        return {"artist": self.artist, "genres": None if self.genres is None else list(self.genres), "lyrics": self.lyrics}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SongLabels:
        """Labels from a manifest row (missing or null columns give None)."""
        genres = row.get("genres")
        return cls(row.get("artist"), None if genres is None else tuple(genres), row.get("lyrics"))


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def _song_key(row: Mapping[str, Any], where: str) -> str:
    given = [key for key in _KEYS if not _blank(row.get(key))]
    if len(given) != 1:
        raise ValueError(f"{where}: name the song with exactly one of {list(_KEYS)}, got {given or 'neither'}")
    value = row[given[0]]
    if not isinstance(value, str):
        raise ValueError(f"{where}.{given[0]}: expected a string, got {value!r}")
    return song_id_from_path(value) if given[0] == "file" else value


def read_labels(url: str) -> dict[str, SongLabels]:
    """The labels of a manifest, keyed by song id; ValueError naming the file, row and field."""
    rows = read_grid_file(url)
    if not isinstance(rows, list):
        raise ValueError(f"labels file {url!r}: expected rows (a list), got a {type(rows).__name__}")
    labels: dict[str, SongLabels] = {}
    for index, row in enumerate(rows):
        where = f"labels file {url!r} row {index + 1}"
        if not isinstance(row, Mapping):
            raise ValueError(f"{where}: expected a mapping of columns, got {row!r}")
        song_id = _song_key(row, where)
        if song_id in labels:
            raise ValueError(f"{where}: song {song_id!r} is labelled twice")
        fields = check_fields({k: row[k] for k in ("artist", "genres") if k in row}, where, lambda name: f"{where}.{name}")
        lyrics = None
        if "lyrics" in row:
            value = row["lyrics"]
            if not _blank(value) and not isinstance(value, str):
                raise ValueError(f"{where}.lyrics: expected text, got {value!r}")
            lyrics = "" if _blank(value) else value
        labels[song_id] = SongLabels(fields.get("artist"), fields.get("genres"), lyrics)
    return labels


def match_labels(sources: Iterable[AudioSource], labels: Mapping[str, SongLabels], url: str) -> dict[str, SongLabels]:
    """The labels of each audio file, by song id. Every file must have a row (ValueError naming
    the files without one); rows naming no file are logged and left out."""
    sources = list(sources)
    ids = {source.song_id for source in sources}
    unlabelled = [source.url for source in sources if source.song_id not in labels]
    if unlabelled:
        shown = ", ".join(unlabelled[:10]) + (f", ... ({len(unlabelled) - 10} more)" if len(unlabelled) > 10 else "")
        raise ValueError(f"labels file {url!r} has no row for {len(unlabelled)} audio file(s): {shown} (rows name a "
                         f"file by its path under the audio folder, or a song id such as {sources[0].song_id!r})")
    unused = sorted(set(labels) - ids)
    if unused:
        logger.warning("labels file %s: %d row(s) name no audio file: %s", url, len(unused), unused[:10])
    return {song_id: labels[song_id] for song_id in sorted(ids)}
