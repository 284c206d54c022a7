"""Jukebox conditioning tokenizer: artist, genres and lyrics to one label sequence per prior.

The label layout, per prior, is the one the priors read (and that transformers 4.40.2 emits)::

    [total_length, offset, duration, artist, genre_1 .. genre_n_genres, lyric_1 .. lyric_k]

The first three entries are placeholders (0) that the prior fills per window; unused genre
slots hold -1; only the first prior (the top prior, index 0, which attends to lyrics) carries
lyric ids. Every id this module gives equals the transformers ``JukeboxTokenizer``'s for the
same vocabulary files, including its departures from the original OpenAI code, which are kept
on purpose so that released checkpoints see the labels they were ported with:

- v2 genres are split on ``"_"`` before normalisation, so ``"Country Rock"`` becomes the single
  unknown key ``"country_rock.v2"`` (the original normalised first and split into two genres);
- a v2 top prior strips ``"+"`` from lyrics although its alphabet has it, while a v3 top prior
  keeps ``"+"`` and its 79-entry vocabulary maps it to ``<unk>`` (id 0);
- the lyrics are never truncated: ``max_n_lyric_tokens`` is only carried in the config; the prior
  picks the window of ``nb_relevant_lyric_tokens`` it needs.

Vocabulary data and files (label versions, lyric alphabets, name normalisation) live in
:mod:`models.vocabulary`; the names importers use are re-exported here.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import fsspec
import numpy as np
import torch

from models.checks import is_int
from models.vocabulary import (
    N_SUGGESTIONS,
    ARTISTS_FILE,
    GENRES_FILE,
    LYRIC_ALPHABETS,
    LYRICS_FILE,
    TOKENIZER_CONFIG_FILE,
    UNKNOWN_LYRIC,
    V2_SUFFIX,
    LabelVersion,
    NameKind,
    as_version,
    close_names,
    first_names,
    load_vocabulary,
    lyric_removal,
    lyric_vocabulary,
    lookup_form,
    names_of,
    normalize_v2_name,
    read_tokenizer_settings,
    strip_accents,
    write_tokenizer_settings,
    write_vocabulary_files,
)

__all__ = [  # the vocabulary names are re-exported for existing importers
    "ARTISTS_FILE", "GENRES_FILE", "GENRE_PADDING_ID", "LYRICS_FILE", "LYRIC_ALPHABETS",
    "N_HEADER_TOKENS", "TOKENIZER_CONFIG_FILE", "UNKNOWN_LYRIC", "V2_SUFFIX", "DecodedLabels",
    "JukeboxEncoding", "JukeboxTokenizer", "LabelVersion", "NameKind", "TensorFormat", "UnknownName", "UnknownNamePolicy",
    "lyric_vocabulary", "normalize_v2_name", "strip_accents",
]

logger = logging.getLogger(__name__)

# [total_length, offset, duration] placeholders that start every label sequence.
N_HEADER_TOKENS = 3
GENRE_PADDING_ID = -1


class UnknownNamePolicy(str, Enum):
    """What :meth:`JukeboxTokenizer.encode` does with an artist or genre its vocabulary lacks
    (encoded as id 0, "unknown": the prior then conditions on nothing)."""

    WARN = "warn"  # log a warning naming it, with close matches
    ERROR = "error"  # raise ValueError naming it, with close matches
    IGNORE = "ignore"  # encode it as 0 silently (callers that checked the names already)


class TensorFormat(str, Enum):
    """Container of each prior's ids in :meth:`JukeboxTokenizer.__call__`."""

    PT = "pt"  # torch.LongTensor [1, L]
    NP = "np"  # numpy int64 array [1, L]


@dataclass(frozen=True)
class UnknownName:
    """A user-given name that one label version's vocabulary lacks (it encodes as id 0)."""

    kind: NameKind
    name: str  # as the user gave it
    key: str  # the vocabulary key looked up
    version: LabelVersion


@dataclass(frozen=True)
class DecodedLabels:
    """Names and lyrics read back from one prior's label ids."""

    artist: str
    genres: list[str]
    lyrics: str


@dataclass(frozen=True, eq=False)
class JukeboxEncoding(Mapping):
    """Output of :meth:`JukeboxTokenizer.__call__`; ``enc["input_ids"]`` or ``enc.input_ids``.

    ``input_ids[i]`` is the label sequence of prior ``i`` (transformers order: 0 is the top
    prior), int64 of shape [1, L_i] (a list of lists when no tensor format was asked).
    """

    input_ids: list[Any]

    def __getitem__(self, key: str) -> list[Any]:
        if key != "input_ids":
            raise KeyError(key)
        return self.input_ids

    def __iter__(self) -> Iterator[str]:
        return iter(("input_ids",))

    def __len__(self) -> int:
        return 1


class JukeboxTokenizer:
    """Turns (artist, genres, lyrics) into the label ids of each Jukebox prior.

    Args:
        artists_file, genres_file, lyrics_file: local paths or fsspec URLs of the vocabulary
            files (transformers format); ``None`` uses the shipped vocabulary.
        version: label version of each prior, in transformers prior order (top prior first);
            ``("v3", "v2", "v2")`` for the released models.
        max_n_lyric_tokens: carried in the config only (the reference does not truncate either).
        n_genres: genre slots per label: one number for every prior, or one per prior (top
            first) when they differ, as in the released models (``[1, 5, 5]``: v3 labels with one
            genre slot for the 1b_lyrics top prior, v2 labels with five for the upsamplers). Each
            must equal its prior's ``max_nb_genres`` (1 in the transformers prior config default
            and the seed example); the reference's default is 5.
        unk_token: carried in the config for compatibility with transformers.
        on_unknown_name: ``"warn"`` (default), ``"error"`` or ``"ignore"``: what encoding an
            artist or genre the vocabulary lacks does (see :class:`UnknownNamePolicy`).
    """

    def __init__(
        self,
        artists_file: str | os.PathLike[str] | None = None,
        genres_file: str | os.PathLike[str] | None = None,
        lyrics_file: str | os.PathLike[str] | None = None,
        version: Sequence[str] = ("v3", "v2", "v2"),
        max_n_lyric_tokens: int = 512,
        n_genres: int | Sequence[int] = 5,
        unk_token: str = "<|endoftext|>",
        on_unknown_name: UnknownNamePolicy | str = UnknownNamePolicy.WARN,
    ) -> None:
        if isinstance(version, str) or not isinstance(version, Sequence) or len(version) == 0:
            raise ValueError(f"version must be a non-empty list of 'v2'/'v3', one per prior, got {version!r}")
        self.version: tuple[LabelVersion, ...] = tuple(as_version(v) for v in version)
        if not is_int(max_n_lyric_tokens) or max_n_lyric_tokens < 0:
            raise ValueError(f"max_n_lyric_tokens must be an integer >= 0, got {max_n_lyric_tokens!r}")
        slots = [n_genres] * len(self.version) if is_int(n_genres) else n_genres
        if (
            isinstance(slots, (str, bytes)) or not isinstance(slots, Sequence) or len(slots) != len(self.version)
            or not all(is_int(n) and n >= 1 for n in slots)
        ):
            raise ValueError(
                f"n_genres must be an integer >= 1 or one per prior ({len(self.version)} integers >= 1), got {n_genres!r}"
            )
        if not isinstance(unk_token, str):
            raise ValueError(f"unk_token must be a string, got {unk_token!r}")
        try:
            self.on_unknown_name = UnknownNamePolicy(on_unknown_name)
        except ValueError:
            raise ValueError(
                f"on_unknown_name must be one of {[p.value for p in UnknownNamePolicy]}, got {on_unknown_name!r}"
            ) from None
        self.genre_slots: tuple[int, ...] = tuple(int(n) for n in slots)
        self.n_genres: int | tuple[int, ...] = self.genre_slots[0] if len(set(slots)) == 1 else self.genre_slots
        self.max_n_lyric_tokens = int(max_n_lyric_tokens)
        self.unk_token = unk_token

        self.artists_encoder = load_vocabulary(artists_file, ARTISTS_FILE)
        self.genres_encoder = load_vocabulary(genres_file, GENRES_FILE)
        # The lyrics file is what save_vocabulary writes back; a v2 top prior reads the fixed v2
        # alphabet instead, as the reference does.
        self._lyrics_file_encoder = load_vocabulary(lyrics_file, LYRICS_FILE)
        top = self.version[0]
        self.lyrics_encoder: dict[str, int] = (
            lyric_vocabulary(LabelVersion.V2) if top is LabelVersion.V2 else self._lyrics_file_encoder
        )
        self.lyrics_decoder: dict[int, str] = {index: char for char, index in self.lyrics_encoder.items()}
        self.lyrics_decoder[0] = ""
        self._lyric_removal = lyric_removal(top)
        self._artist_names = {v: first_names(self.artists_encoder, v) for v in LabelVersion}
        self._genre_names = {v: first_names(self.genres_encoder, v) for v in LabelVersion}

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], **overrides: Any) -> JukeboxTokenizer:
        """Load a directory (local or fsspec URL) written by ours or transformers'
        ``save_pretrained``: the three vocabulary files plus, when present,
        ``tokenizer_config.json`` for ``version``/``n_genres``/``max_n_lyric_tokens``/``unk_token``.
        Keyword arguments override the saved settings. A model preset's name (``"tiny"``,
        ``"1b_lyrics"``, ...; a path that exists wins) gives the tokenizer that preset was made with."""
        from models.presets import is_preset, preset_tokenizer_settings

        root = os.fspath(path).rstrip("/")
        fs, fs_root = fsspec.core.url_to_fs(root)
        if not fs.exists(fs_root) and is_preset(root):
            return cls(**{**preset_tokenizer_settings(root), **overrides})
        settings = read_tokenizer_settings(root)
        settings.update(overrides)
        return cls(
            artists_file=f"{root}/{ARTISTS_FILE}",
            genres_file=f"{root}/{GENRES_FILE}",
            lyrics_file=f"{root}/{LYRICS_FILE}",
            **settings,
        )

    def save_vocabulary(
        self, save_directory: str | os.PathLike[str], filename_prefix: str | None = None
    ) -> tuple[str, str, str]:
        """Write ``[prefix-]artists.json``, ``genres.json`` and ``lyrics.json`` (the lyrics file
        given at construction) into ``save_directory`` (created if missing); returns their paths."""
        root = os.fspath(save_directory).rstrip("/")
        prefix = f"{filename_prefix}-" if filename_prefix else ""
        tables = {
            ARTISTS_FILE: self.artists_encoder,
            GENRES_FILE: self.genres_encoder,
            LYRICS_FILE: self._lyrics_file_encoder,
        }
        artists_path, genres_path, lyrics_path = write_vocabulary_files(root, prefix, tables)
        return artists_path, genres_path, lyrics_path

    def save_pretrained(self, save_directory: str | os.PathLike[str]) -> tuple[str, ...]:
        """Vocabulary plus ``tokenizer_config.json``; loadable by ours and by transformers."""
        vocab_paths = self.save_vocabulary(save_directory)
        config_path = write_tokenizer_settings(os.fspath(save_directory).rstrip("/"), self.config())
        return (*vocab_paths, config_path)

    def config(self) -> dict[str, Any]:
        """Settings as written to ``tokenizer_config.json`` (transformers keys). Genre slots that
        differ per prior go to ``n_genres_per_prior``; ``n_genres`` then holds the top prior's,
        which is what transformers (one number for every prior) reads."""
        settings = {
            "tokenizer_class": "JukeboxTokenizer",
            "version": [v.value for v in self.version],
            "n_genres": self.genre_slots[0],
            "max_n_lyric_tokens": self.max_n_lyric_tokens,
            "unk_token": self.unk_token,
        }
        if isinstance(self.n_genres, tuple):
            settings["n_genres_per_prior"] = list(self.genre_slots)
        return settings

    def get_vocab(self) -> dict[str, dict[str, int]]:
        """The three encoders, keyed as in transformers."""
        return {
            "artists_encoder": self.artists_encoder,
            "genres_encoder": self.genres_encoder,
            "lyrics_encoder": self.lyrics_encoder,
        }

    @property
    def lyric_vocab_size(self) -> int:
        """Entries of the top prior's lyric vocabulary (<unk> included): 80 for v2, 79 for v3."""
        return len(self.lyrics_encoder)

    # ------------------------------------------------------------------ normalisation
    def artist_key(self, artist: str, version: LabelVersion | str) -> str:
        """Vocabulary key of an artist for one label version."""
        _check_artist(artist)
        if as_version(version) is LabelVersion.V3:
            return artist.lower()
        return normalize_v2_name(artist) + V2_SUFFIX

    def genre_keys(self, genres: str | Sequence[str], version: LabelVersion | str) -> list[str]:
        """Vocabulary keys of the genres for one label version.

        A string is one v3 genre, or v2 genres joined by ``"_"``; a list gives one entry per
        genre (each v2 entry may itself join several with ``"_"``).
        """
        names = _genre_list(genres)
        if as_version(version) is LabelVersion.V3:
            return [name.lower() for name in names]
        return [normalize_v2_name(part) + V2_SUFFIX for name in names for part in name.split("_")]

    def clean_lyrics(self, lyrics: str) -> str:
        """Lyrics as the top prior reads them: accents stripped, ``"\\\\"`` read as a newline,
        characters outside the kept alphabet removed."""
        if not isinstance(lyrics, str):
            raise ValueError(f"lyrics must be a string, got {type(lyrics).__name__} {lyrics!r}")
        return self._lyric_removal.sub("", strip_accents(lyrics).replace("\\", "\n"))

    def tokenize(
        self, artist: str, genres: str | Sequence[str], lyrics: str = ""
    ) -> tuple[list[str], list[list[str]], list[str]]:
        """Vocabulary keys before lookup: the artist key and genre keys of each prior, and the
        top prior's lyric characters."""
        artists = [self.artist_key(artist, v) for v in self.version]
        genre_lists = [self.genre_keys(genres, v) for v in self.version]
        return artists, genre_lists, list(self.clean_lyrics(lyrics))

    # ------------------------------------------------------------------ encoding
    def encode_lyrics(self, lyrics: str) -> list[int]:
        """Top-prior lyric ids (no truncation); characters missing from the vocabulary give 0."""
        return [self.lyrics_encoder.get(char, 0) for char in self.clean_lyrics(lyrics)]

    def encode(self, artist: str, genres: str | Sequence[str], lyrics: str = "") -> list[list[int]]:
        """Label ids of every prior as plain lists (see the module docstring for the layout).

        Raises:
            ValueError: bad artist/genres/lyrics types, or more genres than a prior's genre slots.
        """
        artists, genre_lists, lyric_chars = self.tokenize(artist, genres, lyrics)
        if self.on_unknown_name is not UnknownNamePolicy.IGNORE:
            self._report_unknown(artist, genres)
        lyric_ids = [self.lyrics_encoder.get(char, 0) for char in lyric_chars]
        labels = []
        for prior, (artist_key, genre_keys) in enumerate(zip(artists, genre_lists)):
            slots = self.genre_slots[prior]
            if len(genre_keys) > slots:
                raise ValueError(
                    f"genres {genres!r} give {len(genre_keys)} {self.version[prior].value} genres "
                    f"{genre_keys}, more than n_genres={slots} (prior {prior})"
                )
            genre_ids = [self.genres_encoder.get(key, 0) for key in genre_keys]
            genre_ids += [GENRE_PADDING_ID] * (slots - len(genre_ids))
            header = [0] * N_HEADER_TOKENS + [self.artists_encoder.get(artist_key, 0)]
            labels.append(header + genre_ids + (lyric_ids if prior == 0 else []))
        return labels

    def __call__(
        self,
        artist: str,
        genres: str | Sequence[str],
        lyrics: str = "",
        return_tensors: TensorFormat | str | None = "pt",
    ) -> JukeboxEncoding:
        """Label ids of every prior, each int64 [1, L] in ``return_tensors`` format
        (``"pt"``, ``"np"``, or ``None`` for nested lists)."""
        labels = self.encode(artist, genres, lyrics)
        if return_tensors is None:
            return JukeboxEncoding([[ids] for ids in labels])
        try:
            fmt = TensorFormat(return_tensors)
        except ValueError:
            raise ValueError(
                f"return_tensors must be one of {[f.value for f in TensorFormat]} or None, got {return_tensors!r}"
            ) from None
        if fmt is TensorFormat.PT:
            return JukeboxEncoding([torch.tensor([ids], dtype=torch.long) for ids in labels])
        return JukeboxEncoding([np.asarray([ids], dtype=np.int64) for ids in labels])

    # ------------------------------------------------------------------ vocabulary queries
    def unknown_names(self, artist: str, genres: str | Sequence[str]) -> list[UnknownName]:
        """Names that some prior's vocabulary lacks (each encodes as 0, the "unknown" id),
        one entry per (kind, key, version); empty when every name is known."""
        found: dict[tuple[NameKind, str, LabelVersion], UnknownName] = {}
        names = _genre_list(genres)
        for version in dict.fromkeys(self.version):
            key = self.artist_key(artist, version)
            if key not in self.artists_encoder:
                found[(NameKind.ARTIST, key, version)] = UnknownName(NameKind.ARTIST, artist, key, version)
            for name in names:
                for key in self.genre_keys(name, version):
                    if key not in self.genres_encoder:
                        found[(NameKind.GENRE, key, version)] = UnknownName(NameKind.GENRE, name, key, version)
        return list(found.values())

    def close_matches(self, kind: NameKind | str, name: str, version: LabelVersion | str, n: int = N_SUGGESTIONS) -> list[str]:
        """Up to ``n`` names of ``kind`` that ``version`` knows and that look like ``name``, best first."""
        kind, version = NameKind(kind), as_version(version)
        known = self.known_artists(version) if kind is NameKind.ARTIST else self.known_genres(version)
        return close_names(known, lookup_form(name, version), n)

    def _report_unknown(self, artist: str, genres: str | Sequence[str]) -> None:
        unknown = self.unknown_names(artist, genres)
        if not unknown:
            return
        lines = []
        for item in unknown:
            matches = self.close_matches(item.kind, item.name, item.version)
            hint = f"close matches: {', '.join(map(repr, matches))}" if matches else "no close match"
            lines.append(f"{item.kind.value} {item.name!r} is not in the {item.version.value} vocabulary ({hint})")
        message = "; ".join(lines) + ": encoded as the unknown id 0"
        if self.on_unknown_name is UnknownNamePolicy.ERROR:
            raise ValueError(message)
        logger.warning("%s (on_unknown_name='error' makes this an error)", message)

    def known_artists(self, version: LabelVersion | str) -> list[str]:
        """Sorted artist names of one label version (v2 names in their normalised form)."""
        return sorted(names_of(self.artists_encoder, as_version(version)))

    def known_genres(self, version: LabelVersion | str) -> list[str]:
        """Sorted genre names of one label version (v2 names in their normalised form)."""
        return sorted(names_of(self.genres_encoder, as_version(version)))

    # ------------------------------------------------------------------ decoding
    def decode(self, input_ids: torch.Tensor | np.ndarray | Sequence[int], prior: int = 0) -> DecodedLabels:
        """Read one prior's labels back (ids [L] or [1, L]); an id shared by several names
        gives the first in the vocabulary (0 -> "unknown"), unknown ids give ``""``."""
        if not 0 <= prior < len(self.version):
            raise ValueError(f"prior must be in [0, {len(self.version)}), got {prior!r}")
        ids = np.asarray(input_ids.tolist() if isinstance(input_ids, torch.Tensor) else input_ids)
        if ids.ndim == 2 and ids.shape[0] == 1:
            ids = ids[0]
        slots = self.genre_slots[prior]
        if ids.ndim != 1 or ids.shape[0] < N_HEADER_TOKENS + 1 + slots:
            raise ValueError(
                f"input_ids must be [L] or [1, L] with L >= {N_HEADER_TOKENS + 1 + slots}, "
                f"got shape {tuple(ids.shape)}"
            )
        version = self.version[prior]
        genre_start = N_HEADER_TOKENS + 1
        lyric_start = genre_start + slots
        artist = self._artist_names[version].get(int(ids[N_HEADER_TOKENS]), "")
        genres = [
            self._genre_names[version].get(int(i), "") for i in ids[genre_start:lyric_start] if i != GENRE_PADDING_ID
        ]
        return DecodedLabels(artist, genres, self.decode_lyrics(ids[lyric_start:].tolist()))

    def decode_lyrics(self, lyric_ids: Sequence[int]) -> str:
        """Top-prior lyric ids back to text (0 and unknown ids are dropped)."""
        return "".join(self.lyrics_decoder.get(int(i), "") for i in lyric_ids)

    def convert_lyric_tokens_to_string(self, lyrics: Sequence[str]) -> str:
        """Lyric tokens joined with single spaces, exactly as the transformers method does
        (use :meth:`decode_lyrics` or ``"".join`` to get the text back)."""
        return " ".join(lyrics)

    def __repr__(self) -> str:
        versions = [v.value for v in self.version]
        return (
            f"JukeboxTokenizer(version={versions}, n_genres={self.n_genres}, "
            f"artists={len(self.artists_encoder)}, genres={len(self.genres_encoder)}, "
            f"lyric_vocab_size={self.lyric_vocab_size})"
        )


def _check_artist(artist: Any) -> None:
    if not isinstance(artist, str):
        raise ValueError(f"artist must be a string, got {type(artist).__name__} {artist!r}")


def _genre_list(genres: Any) -> list[str]:
    if isinstance(genres, str):
        return [genres]
    if isinstance(genres, Sequence) and len(genres) > 0 and all(isinstance(g, str) for g in genres):
        return list(genres)
    raise ValueError(f"genres must be a string or a non-empty list of strings, got {genres!r}")
