"""Conditioning grids: many songs described by products and zips of conditioning values.

A grid is the ``songs_grid:`` section of the run config, or a file it points to::

    songs_grid:
      file: songs.csv      # rows of songs: YAML, JSON, CSV or Parquet, local path or fsspec URL
      songs: []            # or rows given inline
      base: {duration_s: 20, genres: [pop]}          # defaults of every song
      product: {artist: [Alan Jackson, Ella Fitzgerald], seed: [0, 1]}
      zip: [{genres: [[country], [jazz]], lyrics: ["...", "..."]}]
      n_samples: 2         # songs per cell, each with its own seed
      name: demo           # readable prefix of the song ids

Fields: ``id``, ``artist``, ``genres``, ``lyrics``, ``lyrics_file``, ``duration_s``, ``seed``,
``prompt``, ``prompt_s`` (see :class:`pipeline.run.spec.SongSpec`) and the sampling options ``temperature``, ``top_k``, ``top_p`` (every level) or
``top.temperature``, ``middle.top_k``... (one level; nested ``{top: {temperature: ...}}`` works
too). A genres string may join names with ``|`` or hold a JSON list. Empty values (blank CSV
cells, null) count as not given; ``base`` fills what a cell leaves out.

Cells are the product of the axes: the rows (if any), each zip group (its lists zipped), then
each product axis, the last varying fastest. A cell yields ``n_samples`` songs: sample 0 uses the
cell's ``seed``, sample ``i`` a seed derived from (seed, i), so cells that differ only in their
conditioning share seeds and stay comparable; without a seed the run derives one from the song
id. A song's id is readable plus a hash of its resolved conditioning and sample index, never of
its position, so a grid extended with more seeds or samples keeps every existing id and a rerun
on the same output only produces the new songs. Rows with an ``id`` name their songs themselves (``id``, ``id.1``...).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import posixpath
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from omegaconf import OmegaConf

from models.checks import is_int
from models.prior.sampling import SamplingOptions
from models.seeding import derive_seed
from pipeline.run.grid_files import (
    OPTION_FIELDS,
    PROMPT_FIELDS,
    check_fields,
    flatten_fields,
    read_grid_file,
    read_text,
    resolve_grid_file,
)
from pipeline.run.spec import SAMPLING_STAGES, SamplingSpec, SongSpec, Stage, stage_level
from pipeline.run.urls import check_readable_url

MAX_SONGS = 1_000_000  # songs one run may hold (its plan and manifest are built song by song)
_SECTION_KEYS = ("file", "songs", "base", "product", "zip", "n_samples", "name")
_HASH_CHARS = 12


@dataclass(frozen=True)
class SamplingOverride:
    """Options a grid sets for one level of one song; None keeps the run's value."""

    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        SamplingOptions(**self.to_dict())  # the same checks as the run's options

    def to_dict(self) -> dict[str, Any]:
        """The options that are set."""
        return {name: getattr(self, name) for name in OPTION_FIELDS if getattr(self, name) is not None}

    def apply(self, options: SamplingOptions) -> SamplingOptions:
        """``options`` with this override's values in place."""
        return replace(options, **self.to_dict())


@dataclass(frozen=True)
class GridSong:
    """One song of an expanded grid.

    Attributes:
        song: what to generate.
        cell, sample: position of its cell in the grid and its sample index in the cell.
        top, middle, bottom: per-level sampling overrides.
        source: where the cell's values came from (file rows, axis positions), for messages.
    """

    song: SongSpec
    cell: int
    sample: int
    top: SamplingOverride = SamplingOverride()
    middle: SamplingOverride = SamplingOverride()
    bottom: SamplingOverride = SamplingOverride()
    source: str = ""

    def override(self, stage: Stage) -> SamplingOverride:
        """The override of one sampling stage."""
        return {Stage.TOP: self.top, Stage.MIDDLE: self.middle, Stage.BOTTOM: self.bottom}[stage]

    def sampling(self, base: SamplingSpec) -> SamplingSpec:
        """The run's sampling spec with this song's overrides applied (levels unchanged)."""
        return replace(base, top=self.top.apply(base.top), middle=self.middle.apply(base.middle),
                       bottom=self.bottom.apply(base.bottom))

    def level_options(self, base: SamplingSpec) -> dict[int, SamplingOptions]:
        """Options per sampled VQ-VAE level (the ``options`` of ``pipeline.execute.plan.plan_song``)."""
        spec = self.sampling(base)
        return {stage_level(stage): spec.for_stage(stage) for stage in spec.levels}

    def manifest_fields(self) -> dict[str, Any]:
        """Columns for the run manifest: grid position and the overrides (JSON, ``{}`` if none)."""
        overrides = {s.value: self.override(s).to_dict() for s in SAMPLING_STAGES if self.override(s).to_dict()}
        return {"grid_cell": self.cell, "grid_sample": self.sample,
                "sampling_overrides": json.dumps(overrides, sort_keys=True)}


@dataclass(frozen=True)
class Axis:
    """Fields varying together: position ``i`` sets ``values[i]`` (one dict per position)."""

    name: str
    values: tuple[Mapping[str, Any], ...]
    sources: tuple[str, ...]

    @property
    def fields(self) -> set[str]:
        return {name for row in self.values for name in row}


@dataclass(frozen=True)
class GridSpec:
    """A parsed grid: defaults, axes, samples per cell (see the module docstring).

    ``base_dir`` is where relative ``lyrics_file`` paths of file rows are resolved.
    """

    axes: tuple[Axis, ...] = ()
    base: Mapping[str, Any] = field(default_factory=dict)
    n_samples: int = 1
    name: str | None = None
    base_dir: str | None = None

    def __post_init__(self) -> None:
        if not is_int(self.n_samples) or self.n_samples < 1:
            raise ValueError(f"songs_grid.n_samples must be an integer >= 1, got {self.n_samples!r}")
        if self.n_songs > MAX_SONGS:  # counted, never expanded
            raise ValueError(f"songs_grid expands to {self.n_songs} songs ({self.n_cells} cells x n_samples={self.n_samples}), "
                             f"more than the {MAX_SONGS} one run may hold; split it into several runs")
        if self.name is not None and not _slug(self.name):
            raise ValueError(f"songs_grid.name must contain letters or digits, got {self.name!r}")
        owner: dict[str, str] = {}
        for axis in self.axes:
            if not axis.values:
                raise ValueError(f"songs_grid: {axis.name} has no values; every axis needs at least one")
            for name in sorted(axis.fields):
                if name in owner:
                    raise ValueError(f"songs_grid: field {name!r} is set by both {owner[name]} and {axis.name}; set each field in one place")
                owner[name] = axis.name

    @property
    def n_cells(self) -> int:
        return math.prod(len(axis.values) for axis in self.axes)

    @property
    def n_songs(self) -> int:
        """Songs the grid expands to, without expanding it."""
        return self.n_cells * self.n_samples

    @classmethod
    def from_file(cls, url: str) -> GridSpec:
        """A grid read from a file (rows of songs, or a YAML/JSON grid mapping)."""
        return cls.from_config({"file": url})

    @classmethod
    def from_config(cls, section: Mapping[str, Any], where: str = "songs_grid") -> GridSpec:
        """Parse a ``songs_grid`` mapping (a plain dict or an OmegaConf node, resolved here).

        Raises:
            ValueError: naming the key (``songs_grid.product.seed[2]``) or the file, row and field.
        """
        if OmegaConf.is_config(section):
            section = OmegaConf.to_container(section, resolve=True)
        if not isinstance(section, Mapping):
            raise ValueError(f"{where}: expected a mapping with some of {list(_SECTION_KEYS)}, got {section!r}")
        unknown = sorted(set(section) - set(_SECTION_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; expected some of {list(_SECTION_KEYS)}")
        axes: list[Axis] = []
        base: dict[str, Any] = {}
        n_samples, name, base_dir = section.get("n_samples"), section.get("name"), None
        if section.get("file") is not None:
            url = section["file"]
            if not isinstance(url, str) or not url.strip():
                raise ValueError(f"{where}.file: expected a path or URL, got {url!r}")
            url = resolve_grid_file(url)
            check_readable_url(url, f"{where}.file")
            content = read_grid_file(url)
            base_dir = posixpath.dirname(url)
            if isinstance(content, list):
                axes.append(_rows_axis(content, f"file {url!r}", lambda i: f"file {url!r}, row {i + 1}"))
            else:
                if content.get("file") is not None:
                    raise ValueError(f"file {url!r}: a grid file cannot point to another file (key 'file')")
                inner = cls.from_config(content, where=f"file {url!r}")
                axes.extend(inner.axes)
                base.update(inner.base)
                n_samples = inner.n_samples if n_samples is None else n_samples
                name = inner.name if name is None else name
        if section.get("songs"):
            rows = section["songs"]
            if not isinstance(rows, (list, tuple)):
                raise ValueError(f"{where}.songs: expected a list of songs, got {rows!r}")
            axes.append(_rows_axis(list(rows), f"{where}.songs", lambda i: f"{where}.songs[{i}]"))
        base.update(check_fields(section.get("base") or {}, f"{where}.base", lambda f: f"{where}.base.{f}"))
        zips = section.get("zip") or []
        for index, group in enumerate([zips] if isinstance(zips, Mapping) else zips):
            axes.append(_zip_axis(group, f"{where}.zip[{index}]"))
        product = section.get("product") or {}
        if not isinstance(product, Mapping):
            raise ValueError(f"{where}.product: expected a mapping of field -> list of values, got {product!r}")
        for key, values in flatten_fields(product, f"{where}.product").items():
            axes.append(_zip_axis({key: values}, f"{where}.product"))
        if name is not None and not isinstance(name, str):
            raise ValueError(f"{where}.name: expected a string, got {name!r}")
        return cls(tuple(axes), base, 1 if n_samples is None else n_samples, name, base_dir)


def duplicate_error(first: GridSong, second: GridSong) -> ValueError:
    """The error of two grid songs with one id, naming where both came from."""
    return ValueError(
        f"duplicate song id {second.song.id!r}: {first.source} (sample {first.sample}) and {second.source} "
        f"(sample {second.sample}) give the same id; make their conditioning differ, or drop explicit ids"
    )


def iter_grid(grid: GridSpec) -> Iterator[GridSong]:
    """Every song of the grid, one at a time, cell by cell (the last axis fastest), samples
    innermost.

    Duplicate ids are not checked here: that needs every id (:mod:`pipeline.run.validate` does it).

    Raises:
        ValueError: a cell missing a required field or with bad values (naming where its values
            came from), or an unreadable lyrics file.
    """
    lyrics_cache: dict[str, str] = {}
    positions = itertools.product(*(range(len(axis.values)) for axis in grid.axes))
    for cell, position in enumerate(positions):
        values: dict[str, Any] = {}
        parts = []
        for axis, index in zip(grid.axes, position):
            values.update(axis.values[index])
            parts.append(axis.sources[index])
        base = dict(grid.base)
        if "lyrics" in values or "lyrics_file" in values:  # lyrics given by an axis replace the default's
            base.pop("lyrics", None)
            base.pop("lyrics_file", None)
        values = {**base, **values}
        source = " x ".join(parts) or "songs_grid.base"
        for sample in range(grid.n_samples):
            yield _make_song(grid, values, cell, sample, source, lyrics_cache)


# ---------------------------------------------------------------------------------------------
# Songs from cells


def _make_song(grid: GridSpec, values: Mapping[str, Any], cell: int, sample: int, source: str,
               lyrics_cache: dict[str, str]) -> GridSong:
    missing = [name for name in ("artist", "genres", "duration_s") if name not in values]
    if missing:
        raise ValueError(f"song grid cell {cell} ({source}) has no {missing}; set them in base, rows, zip or product")
    lyrics, lyrics_file = values.get("lyrics"), values.get("lyrics_file")
    if lyrics is not None and lyrics_file is not None:
        raise ValueError(f"song grid cell {cell} ({source}) sets both lyrics and lyrics_file; give one")
    if lyrics_file is not None:
        if grid.base_dir and "://" not in lyrics_file and not lyrics_file.startswith("/"):
            lyrics_file = posixpath.join(grid.base_dir, lyrics_file)
        if lyrics_file not in lyrics_cache:
            lyrics_cache[lyrics_file] = read_text(lyrics_file, f"song grid cell {cell} ({source}), lyrics_file")
        lyrics = lyrics_cache[lyrics_file]
    seed = values.get("seed")
    if seed is not None and sample > 0:
        seed = derive_seed("grid-sample", seed, sample)
    overrides = {}
    for stage in SAMPLING_STAGES:
        options = {o: values[o] for o in OPTION_FIELDS if o in values}
        options.update({o: values[f"{stage.value}.{o}"] for o in OPTION_FIELDS if f"{stage.value}.{o}" in values})
        overrides[stage.value] = SamplingOverride(**options)
    genres = tuple(values["genres"])
    content = {"artist": values["artist"], "genres": list(genres), "lyrics": lyrics or "",
               "duration_s": values["duration_s"], "seed": values.get("seed"), "sample": sample,
               "sampling": {k: v.to_dict() for k, v in overrides.items() if v.to_dict()}}
    content.update({name: values[name] for name in PROMPT_FIELDS if values.get(name) is not None})
    if values.get("id") is not None:
        song_id = values["id"] if sample == 0 else f"{values['id']}.{sample}"
    else:
        song_id = _song_id(grid.name, values["artist"], genres, content)
    try:
        spec = SongSpec(id=song_id, artist=values["artist"], genres=genres, duration_s=values["duration_s"],
                        lyrics=lyrics or "", seed=seed, lyrics_file=lyrics_file,
                        prompt=values.get("prompt"), prompt_s=values.get("prompt_s"))
    except ValueError as err:
        raise ValueError(f"song grid cell {cell} ({source}): {err}") from err
    return GridSong(spec, cell, sample, source=source, **overrides)


def _slug(text: str, limit: int = 32) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "_", ascii_text.lower()).strip("_")[:limit].strip("_")


def _song_id(name: str | None, artist: str, genres: Sequence[str], content: Mapping[str, Any]) -> str:
    digest = hashlib.blake2b(json.dumps(content, sort_keys=True, ensure_ascii=False).encode(), digest_size=16)
    readable = [_slug(name)] if name else []
    readable += [_slug(artist) or "artist", _slug("+".join(genres), 24) or "genre"]
    return ".".join(readable) + "-" + digest.hexdigest()[:_HASH_CHARS]


# ---------------------------------------------------------------------------------------------
# Parsing


def _rows_axis(rows: list[Any], name: str, where_row: Callable[[int], str]) -> Axis:
    values = []
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"{where_row(index)}: expected a mapping of song fields, got {row!r}")
        values.append(check_fields(row, where_row(index), lambda f, i=index: f"{where_row(i)}, field {f!r}"))
    return Axis(f"rows of {name}", tuple(values), tuple(where_row(i) for i in range(len(rows))))


def _zip_axis(group: Any, where: str) -> Axis:
    if not isinstance(group, Mapping) or not group:
        raise ValueError(f"{where}: expected a mapping of field -> list of values, got {group!r}")
    flat = flatten_fields(group, where)
    lengths = {}
    for key, values in flat.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
            raise ValueError(f"{where}.{key}: expected a list of values, got {values!r}")
        lengths[key] = len(values)
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{where}: zipped lists must have equal lengths, got {lengths}")
    n = next(iter(lengths.values()))
    rows = tuple(check_fields({k: flat[k][i] for k in flat}, where, lambda f, i=i: f"{where}.{f}[{i}]") for i in range(n))
    if len(flat) == 1:
        key = next(iter(flat))
        return Axis(f"{where}.{key}", rows, tuple(f"{where}.{key}[{i}]" for i in range(n)))
    return Axis(f"{where} ({', '.join(flat)})", rows, tuple(f"{where}[{i}]" for i in range(n)))
