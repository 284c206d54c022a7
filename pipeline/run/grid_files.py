"""Reading song-grid files and checking the values of song fields.

A grid file holds rows of songs (CSV with a header, Parquet, a YAML/JSON list of mappings) or,
for YAML/JSON, a whole grid mapping. Values are checked field by field and strings (CSV cells)
are converted to the field's type; every error names where the value came from (the file, row
and field, or the config key).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import posixpath
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any, Callable

import pyarrow.parquet as pq
import yaml

from models.checks import is_number
from pipeline.run.spec import SAMPLING_STAGES
from pipeline.run.urls import LYRICS_MAX_BYTES, TABLE_MAX_BYTES, read_bounded

PROMPT_FIELDS = ("prompt", "prompt_s")
SONG_FIELDS = ("id", "artist", "genres", "lyrics", "lyrics_file", "duration_s", "seed", *PROMPT_FIELDS)
OPTION_FIELDS = ("temperature", "top_k", "top_p")
FIELDS = SONG_FIELDS + OPTION_FIELDS + tuple(f"{s.value}.{o}" for s in SAMPLING_STAGES for o in OPTION_FIELDS)
_ALIASES = {"artists": "artist", "genre": "genres", "seeds": "seed", "duration": "duration_s",
            "durations": "duration_s", "lyrics_files": "lyrics_file"}
FORMATS = {".yaml": "yaml", ".yml": "yaml", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def flatten_fields(mapping: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Nested level options (``{top: {temperature: x}}``) as dotted names; aliases resolved."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        key = _ALIASES.get(str(key), str(key))
        if key in {s.value for s in SAMPLING_STAGES} and isinstance(value, Mapping):
            flat.update({f"{key}.{option}": v for option, v in value.items()})
        else:
            flat[key] = value
    unknown = sorted(set(flat) - set(FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; expected some of {list(FIELDS)}")
    return flat


def check_fields(row: Mapping[str, Any], where: str, where_field: Callable[[str], str]) -> dict[str, Any]:
    """The fields of one row (or base, or zip position), checked and converted.

    Empty values (None, NaN, blank strings: empty CSV cells) count as not given. ``where`` names
    the row in errors, ``where_field(name)`` one field of it.
    """
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: expected a mapping of song fields, got {row!r}")
    flat = flatten_fields(row, where)
    out = {}
    for name, value in flat.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if isinstance(value, float) and math.isnan(value):
            continue
        out[name] = _coerce(name, value, where_field(name))
    return out


def _coerce(name: str, value: Any, where: str) -> Any:
    """Check one field's value, converting strings (CSV cells) to the field's type."""
    option = name.rsplit(".", 1)[-1]
    if name in ("id", "artist", "lyrics", "lyrics_file", "prompt"):
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    if name == "genres":
        genres = _genres(value)
        if genres is None:
            raise ValueError(f"{where}: expected a genre name, names joined by '|', or a non-empty list of names, got {value!r}")
        return genres
    if name in ("duration_s", "prompt_s") or option in ("temperature", "top_p"):
        number = _number(value, float)
        if number is None:
            raise ValueError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(number):
            raise ValueError(f"{where}: expected a finite number, got {value!r}")
        if name in ("duration_s", "prompt_s") and number <= 0:
            raise ValueError(f"{where}: expected a duration > 0 seconds, got {value!r}")
        if option == "temperature" and number <= 0:
            raise ValueError(f"{where}: expected a temperature > 0, got {value!r}")
        if option == "top_p" and not 0 <= number <= 1:
            raise ValueError(f"{where}: expected top_p in [0, 1], got {value!r}")
        return float(number)
    integer = _number(value, int)
    if integer is None:
        raise ValueError(f"{where}: expected an integer, got {value!r}")
    if option == "top_k" and integer < 0:
        raise ValueError(f"{where}: expected top_k >= 0, got {value!r}")
    return integer


def _number(value: Any, kind: type) -> int | float | None:
    """``value`` as an int or float (strings parsed, integral floats accepted as ints); None if it is not one."""
    if isinstance(value, str):
        try:
            value = kind(value.strip())
        except ValueError:
            return None
    if not is_number(value):
        return None
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            return None
        return int(value)
    return float(value)


def _genres(value: Any) -> tuple[str, ...] | None:
    """Genres from a list, a JSON list string or names joined by ``|``; None if malformed."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text.startswith("[") else text.split("|")
        except ValueError:
            return None
    if isinstance(value, (list, tuple)) and value and all(isinstance(g, str) and g.strip() for g in value):
        return tuple(g.strip() for g in value)
    return None


def read_text(url: str, where: str) -> str:
    """The UTF-8 text of a lyrics file (a regular file of at most ``LYRICS_MAX_BYTES``), read by
    the driver; ValueError naming ``where``."""
    payload = read_bounded(url, where, LYRICS_MAX_BYTES)
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{where}: {url!r} is not UTF-8 text: {err}") from err


MAX_YAML_NODES = 1_000_000  # values in a grid file once its aliases are expanded


def _expanded_size(data: Any, where: str) -> int:
    """How many values ``data`` holds with every YAML alias expanded, counted without expanding
    (a shared list is counted once per reference, its size computed once); ValueError past
    :data:`MAX_YAML_NODES` (an alias bomb: a few hundred bytes that expand to billions)."""
    sizes: dict[int, int] = {}
    total = _node_size(data, sizes)
    if total > MAX_YAML_NODES:
        raise ValueError(f"{where} expands to {total} values once its YAML aliases are expanded, more than the "
                         f"{MAX_YAML_NODES} a grid file may hold")
    return total


def _node_size(node: Any, sizes: dict[int, int]) -> int:
    if not isinstance(node, (list, dict)):
        return 1
    key = id(node)
    if key not in sizes:
        sizes[key] = 1  # a cycle (an alias to an ancestor) counts once, and must not recurse forever
        children = node.values() if isinstance(node, dict) else node
        sizes[key] = 1 + sum(min(_node_size(child, sizes), MAX_YAML_NODES + 1) for child in children)
    return sizes[key]


def packaged_grid(name: str) -> str | None:
    """The path of the example grid ``name`` shipped in ``conf/grids/`` (``"example"``), or None."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        return None
    entry = resources.files("conf") / "grids" / f"{name.removesuffix('.yaml')}.yaml"
    return str(entry) if entry.is_file() else None


def resolve_grid_file(url: str) -> str:
    """A grid file's URL: ``url`` itself when it exists (or is remote), else the shipped grid of that name."""
    if "://" in url or os.path.exists(url):
        return url
    return packaged_grid(url) or url


def read_grid_file(url: str) -> list[Any] | dict[str, Any]:
    """Rows of a CSV/Parquet/YAML/JSON file, or the grid mapping a YAML/JSON file holds."""
    suffix = posixpath.splitext(url.split("?", 1)[0])[1].lower()
    kind = FORMATS.get(suffix)
    if kind is None:
        raise ValueError(f"grid file {url!r}: unknown format {suffix!r}; expected one of {sorted(FORMATS)}")
    payload = read_bounded(url, "grid file", TABLE_MAX_BYTES)
    try:
        if kind == "parquet":
            return pq.read_table(io.BytesIO(payload)).to_pylist()
        text = payload.decode("utf-8")
        if kind == "csv":
            reader = csv.DictReader(io.StringIO(text, newline=""))
            if not reader.fieldnames:
                raise ValueError("no header row")
            rows = list(reader)
            bad = [i + 1 for i, row in enumerate(rows) if None in row]
            if bad:
                raise ValueError(f"row {bad[0]} has more cells than the header")
            return rows
        data = yaml.safe_load(text) if kind == "yaml" else json.loads(text)
    except (ValueError, yaml.YAMLError, OSError) as err:  # pyarrow's errors subclass these
        raise ValueError(f"grid file {url!r} is not valid {kind}: {err}") from err
    if isinstance(data, (list, dict)):
        _expanded_size(data, f"grid file {url!r}")
        return data
    raise ValueError(f"grid file {url!r}: expected a list of songs or a grid mapping, got {type(data).__name__}")

