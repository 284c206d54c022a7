"""Jukebox conditioning vocabularies: label versions, lyric alphabets, name normalisation and the
vocabulary files.

Vocabulary files (``artists.json``, ``genres.json``, ``lyrics.json``) are flat JSON objects in
the transformers format: v3 names are stored lowercased as given, v2 names in their normalised
form with a ``".v2"`` suffix; lyrics map one character to its id. With no file given, the
vocabulary shipped in ``models/vocab`` (the released models') is used. Paths may be local or
fsspec URLs. :class:`models.tokenizer.JukeboxTokenizer` turns names into ids with these tables.
"""
from __future__ import annotations

import difflib
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from enum import Enum
from importlib import resources
from typing import Any

import fsspec

from models.checks import is_int

ARTISTS_FILE = "artists.json"
GENRES_FILE = "genres.json"
LYRICS_FILE = "lyrics.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"

V2_SUFFIX = ".v2"
UNKNOWN_LYRIC = "<unk>"


class LabelVersion(str, Enum):
    """Label scheme of a prior: how names are normalised and which lyric alphabet it reads."""

    V2 = "v2"
    V3 = "v3"


class NameKind(str, Enum):
    ARTIST = "artist"
    GENRE = "genre"


_LETTERS_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# Lyric alphabets of the released models; a character's id is its index + 1, 0 is <unk>.
# v3 lost the "+" of v2, so its vocabulary has 79 entries with <unk> and v2's has 80.
LYRIC_ALPHABETS: dict[LabelVersion, str] = {
    LabelVersion.V2: _LETTERS_DIGITS + ".,:;!?-+'\"()[] \t\n",
    LabelVersion.V3: _LETTERS_DIGITS + ".,:;!?-'\"()[] \t\n",
}


def as_version(value: Any) -> LabelVersion:
    """``value`` as a :class:`LabelVersion`; ValueError naming the allowed versions otherwise."""
    try:
        return LabelVersion(value)
    except ValueError:
        raise ValueError(
            f"label version must be one of {[v.value for v in LabelVersion]}, got {value!r}"
        ) from None


def lyric_vocabulary(version: LabelVersion | str) -> dict[str, int]:
    """The ``{character: id}`` lyric vocabulary of a label version, ``<unk>`` = 0 included."""
    alphabet = LYRIC_ALPHABETS[as_version(version)]
    return {UNKNOWN_LYRIC: 0, **{char: index + 1 for index, char in enumerate(alphabet)}}


def _removal_pattern(kept: str) -> re.Pattern[str]:
    return re.compile("[^" + "".join(re.escape(char) for char in kept) + "]+")


# Characters removed from lyrics before lookup, keyed by the top prior's version. As in
# transformers 4.40.2 (not as in the original code), a v2 top prior keeps only the v3 alphabet
# and a v3 top prior keeps the v2 alphabet.
_LYRIC_REMOVALS: dict[LabelVersion, re.Pattern[str]] = {
    LabelVersion.V2: _removal_pattern(LYRIC_ALPHABETS[LabelVersion.V3]),
    LabelVersion.V3: _removal_pattern(LYRIC_ALPHABETS[LabelVersion.V2]),
}
_NOT_V2_NAME_CHARS = re.compile(r"[^a-z0-9.]+")


def lyric_removal(top_version: LabelVersion) -> re.Pattern[str]:
    """Pattern of the characters a top prior of ``top_version`` drops from lyrics."""
    return _LYRIC_REMOVALS[top_version]


def normalize_v2_name(name: str) -> str:
    """v2 form of an artist or genre name: lowercase, runs of characters other than
    ``[a-z0-9.]`` become one ``"_"``, and leading/trailing ``"_"`` are dropped
    (``"Björk"`` -> ``"bj_rk"``)."""
    return _NOT_V2_NAME_CHARS.sub("_", name.lower()).strip("_")


def strip_accents(text: str) -> str:
    """Canonical decomposition (NFD) without its combining marks: ``"é"`` -> ``"e"``."""
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def first_names(encoder: Mapping[str, int], version: LabelVersion) -> dict[int, str]:
    """id -> first name (in file order) of one version's part of a flat artist/genre vocabulary
    (v2 names without their suffix)."""
    names: dict[int, str] = {}
    for key, index in encoder.items():
        if key.endswith(V2_SUFFIX) == (version is LabelVersion.V2):
            names.setdefault(index, key[: -len(V2_SUFFIX)] if version is LabelVersion.V2 else key)
    return names


def names_of(encoder: Mapping[str, int], version: LabelVersion) -> set[str]:
    """Names of one version's part of a flat artist/genre vocabulary (v2 names without suffix)."""
    if version is LabelVersion.V2:
        return {key[: -len(V2_SUFFIX)] for key in encoder if key.endswith(V2_SUFFIX)}
    return {key for key in encoder if not key.endswith(V2_SUFFIX)}


N_SUGGESTIONS = 3
_MATCH_CUTOFF = 0.6


def lookup_form(name: str, version: LabelVersion | str) -> str:
    """How a user's name is compared with ``version``'s names: no accents, lowercase, and for
    v2 normalised like the v2 names (:func:`normalize_v2_name`)."""
    text = strip_accents(name).lower()
    return normalize_v2_name(text) if as_version(version) is LabelVersion.V2 else text


def close_names(names: Iterable[str], query: str, n: int = N_SUGGESTIONS) -> list[str]:
    """Up to ``n`` of ``names`` that look like ``query`` (difflib ratio >= 0.6), best first;
    accents and case are ignored on both sides."""
    plain = {strip_accents(name).lower(): name for name in sorted(names, reverse=True)}
    found = difflib.get_close_matches(strip_accents(query).lower(), list(plain), n, _MATCH_CUTOFF)
    return [plain[match] for match in found]


# ---------------------------------------------------------------------- files
def _read_json(path: str | os.PathLike[str]) -> Any:
    with fsspec.open(os.fspath(path), "r", encoding="utf-8") as handle:
        return json.load(handle)


def _write_text(path: str, text: str) -> None:
    with fsspec.open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def _shipped_json(name: str) -> Any:
    return json.loads(resources.files(__package__).joinpath("vocab", name).read_text("utf-8"))


def load_vocabulary(path: str | os.PathLike[str] | None, default_name: str) -> dict[str, int]:
    """A ``{name: id}`` vocabulary file; ``None`` reads the shipped file ``default_name``.

    Raises:
        ValueError: the file does not hold a JSON object of string -> integer.
    """
    data = _shipped_json(default_name) if path is None else _read_json(path)
    source = default_name if path is None else os.fspath(path)
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and is_int(v) for k, v in data.items()
    ):
        raise ValueError(f"vocabulary file {source!r} must hold a JSON object of name -> integer id")
    return data


def read_tokenizer_settings(root: str) -> dict[str, Any]:
    """``version``/``n_genres``/``max_n_lyric_tokens``/``unk_token`` from ``root``'s
    ``tokenizer_config.json`` (ours or transformers'); empty when the file is absent."""
    fs, fs_root = fsspec.core.url_to_fs(root)
    config_path = f"{fs_root}/{TOKENIZER_CONFIG_FILE}"
    settings: dict[str, Any] = {}
    if not fs.exists(config_path):
        return settings
    with fs.open(config_path, "r", encoding="utf-8") as handle:
        saved = json.load(handle)
    for key in ("version", "n_genres", "max_n_lyric_tokens"):
        if key in saved:
            settings[key] = saved[key]
    if "n_genres_per_prior" in saved:  # ours, when the priors' genre slots differ
        settings["n_genres"] = saved["n_genres_per_prior"]
    unk = saved.get("unk_token")
    if isinstance(unk, dict):  # transformers may save an AddedToken as a dict
        unk = unk.get("content")
    if isinstance(unk, str):
        settings["unk_token"] = unk
    return settings


def write_vocabulary_files(
    root: str, prefix: str, tables: Mapping[str, Mapping[str, int]]
) -> list[str]:
    """Write each ``{file name: table}`` as ``root/<prefix><file name>`` JSON (``root`` created
    if missing); returns the written paths in ``tables`` order."""
    fs, fs_root = fsspec.core.url_to_fs(root)
    fs.makedirs(fs_root, exist_ok=True)
    paths = []
    for name, table in tables.items():
        target = f"{root}/{prefix}{name}"
        _write_text(target, json.dumps(table, ensure_ascii=False))
        paths.append(target)
    return paths


def write_tokenizer_settings(root: str, settings: Mapping[str, Any]) -> str:
    """Write ``settings`` as ``root/tokenizer_config.json``; returns its path."""
    config_path = f"{root}/{TOKENIZER_CONFIG_FILE}"
    _write_text(config_path, json.dumps(settings, ensure_ascii=False))
    return config_path
