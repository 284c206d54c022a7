"""Checking artist and genre names against a model's vocabulary before a run, and listing them.

A name the vocabulary lacks is encoded as id 0 ("unknown") and the prior silently conditions on
nothing, so a typo would waste a whole run. :func:`check_vocabulary` looks up every distinct
artist/genres of the songs once per label version the model's priors use, lists the unknown ones
with close matches, and raises one ``ValueError`` unless unknown names are allowed; when they
are, :meth:`VocabularyCheck.unknown_for` gives each song's unknown names for the manifest.

List and search the names a model knows::

    python -m pipeline.run.vocabulary --model 1b_lyrics --kind artists --search jackson --limit 20
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from models.tokenizer import JukeboxTokenizer, LabelVersion, NameKind
from models.vocabulary import lookup_form, strip_accents
from pipeline.actors.builders import build_tokenizer
from pipeline.errors import program_name, raise_usage_errors, report
from pipeline.run.grid import GridSong
from pipeline.run.spec import SongSpec

_SONGS_SHOWN = 3


@dataclass(frozen=True)
class UnknownNameReport:
    """One name a label version's vocabulary lacks, with the songs using it.

    Attributes:
        kind: artist or genre.
        name: as the user wrote it.
        version: the label version (and so the priors) that do not know it.
        key: the vocabulary key looked up (v2 keys without their ``.v2`` suffix).
        songs: ids of the songs using it, in song order.
        suggestions: close matches among the names this version knows, best first.
    """

    kind: NameKind
    name: str
    version: LabelVersion
    key: str
    songs: tuple[str, ...]
    suggestions: tuple[str, ...]

    def describe(self) -> str:
        """One line: the name, where it is used and what it may have meant."""
        shown = ", ".join(repr(s) for s in self.songs[:_SONGS_SHOWN])
        more = f" and {len(self.songs) - _SONGS_SHOWN} more" if len(self.songs) > _SONGS_SHOWN else ""
        hint = f"close matches: {', '.join(repr(s) for s in self.suggestions)}" if self.suggestions else "no close match"
        return (f"{self.kind.value} {self.name!r} ({self.version.value} key {self.key!r}; songs {shown}{more}): {hint}")

    @property
    def label(self) -> str:
        """Short form for the manifest: ``artist:Name@v3``."""
        return f"{self.kind.value}:{self.name}@{self.version.value}"


@dataclass(frozen=True)
class VocabularyCheck:
    """Result of :func:`check_vocabulary`: the unknown names, if they were allowed."""

    unknown: tuple[UnknownNameReport, ...]
    _by_song: dict[str, list[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_song: dict[str, list[str]] = {}
        for unknown in self.unknown:
            for song_id in unknown.songs:
                by_song.setdefault(song_id, []).append(unknown.label)
        object.__setattr__(self, "_by_song", by_song)

    @property
    def ok(self) -> bool:
        """True when every name is known."""
        return not self.unknown

    def unknown_for(self, song_id: str) -> list[str]:
        """A song's unknown names (``artist:Name@v3``...), empty when all are known: the
        manifest's ``unknown_names`` column."""
        return list(self._by_song.get(song_id, ()))

    def describe(self) -> str:
        """The unknown names, one per line."""
        return "\n".join("  " + report.describe() for report in self.unknown)


def load_tokenizer(source: str) -> JukeboxTokenizer:
    """The tokenizer of a model preset (``tiny``, ``1b_lyrics``...) or checkpoint (directory/URL),
    as the run builds it (:func:`pipeline.actors.builders.build_tokenizer`)."""
    try:
        return build_tokenizer(source)
    except (OSError, ValueError) as err:
        raise ValueError(f"model {source!r} is neither a preset nor a readable checkpoint: {err}") from err


def check_vocabulary(songs: Iterable[SongSpec | GridSong], tokenizer: JukeboxTokenizer, *,
                     allow_unknown: bool = False) -> VocabularyCheck:
    """Look up every song's artist and genres in every label version the model's priors use.

    Args:
        songs: song specs or expanded grid songs.
        tokenizer: the model's tokenizer (:func:`load_tokenizer`).
        allow_unknown: return the unknown names instead of raising.

    Raises:
        ValueError: listing every unknown name with its songs and close matches (unless
            ``allow_unknown``), or a song with more genres than the model's ``n_genres``
            (always: the tokenizer could not encode it).
    """
    uses: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for item in songs:
        spec = item.song if isinstance(item, GridSong) else item
        uses.setdefault((spec.artist, tuple(spec.genres)), []).append(spec.id)
    reports: dict[tuple[NameKind, str, LabelVersion], tuple[str, list[str]]] = {}
    too_many = []
    for (artist, genres), song_ids in uses.items():
        for version, slots in dict.fromkeys(zip(tokenizer.version, tokenizer.genre_slots)):
            n_keys = len(tokenizer.genre_keys(list(genres), version))
            if n_keys > slots:
                too_many.append(f"  songs {song_ids[:_SONGS_SHOWN]}: genres {list(genres)} are {n_keys} "
                                f"{version.value} genres, more than the model's n_genres={slots}")
        for unknown in tokenizer.unknown_names(artist, list(genres)):
            entry = reports.setdefault((unknown.kind, unknown.key, unknown.version), (unknown.name, []))
            entry[1].extend(song_ids)
    if too_many:
        raise ValueError("songs with too many genres for the model:\n" + "\n".join(dict.fromkeys(too_many)))
    unknown = []
    for (kind, key, version), (name, song_ids) in reports.items():
        lookup = key[: -len(".v2")] if version is LabelVersion.V2 and key.endswith(".v2") else key
        unknown.append(UnknownNameReport(kind, name, version, lookup, tuple(dict.fromkeys(song_ids)),
                                         tuple(tokenizer.close_matches(kind, lookup, version))))
    check = VocabularyCheck(tuple(unknown))
    if unknown and not allow_unknown:
        raise ValueError(
            f"{len(unknown)} artist/genre name(s) are not in the model's vocabulary and would be encoded as the "
            f"unknown id 0:\n{check.describe()}\nFix the names (list them with `jukebox-vocab --search TEXT` or "
            f"`python -m pipeline.run.vocabulary --search TEXT`), or set allow_unknown_names=true to run with them."
        )
    return check


def list_names(tokenizer: JukeboxTokenizer, kind: NameKind | str, version: LabelVersion | str,
               search: str | None = None) -> list[str]:
    """Sorted names of ``kind`` known to ``version``, those containing ``search`` when given
    (case and accents ignored; for v2 the search is normalised like the names)."""
    kind, version = NameKind(kind), LabelVersion(version)
    names = tokenizer.known_artists(version) if kind is NameKind.ARTIST else tokenizer.known_genres(version)
    if not search:
        return names
    query = lookup_form(search, version)
    return [name for name in names if query in strip_accents(name).lower()]


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout, prog: str | None = None) -> int:
    """List and search the artists or genres a model knows, per label version of its priors.

    Bad usage or an unknown model prints one ``error:`` line and returns 2."""
    parser = argparse.ArgumentParser(prog=prog or program_name("pipeline.run.vocabulary"), description=main.__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="preset name (tiny, 1b_lyrics, 5b, 5b_lyrics) or a tokenizer directory")
    parser.add_argument("--kind", choices=("artists", "genres"), default="artists")
    parser.add_argument("--search", default=None, help="show only names containing TEXT (case and accents ignored)")
    parser.add_argument("--limit", type=int, default=None, help="show at most N names per label version")
    raise_usage_errors(parser)
    try:
        args = parser.parse_args(argv)
        if args.limit is not None and args.limit < 0:
            raise ValueError(f"--limit={args.limit}: expected a number >= 0")
        tokenizer = load_tokenizer(args.model)
    except ValueError as err:
        return report(err)
    kind = NameKind.ARTIST if args.kind == "artists" else NameKind.GENRE
    for version in dict.fromkeys(tokenizer.version):
        priors = [str(i) for i, v in enumerate(tokenizer.version) if v is version]
        total = len(list_names(tokenizer, kind, version))
        names = list_names(tokenizer, kind, version, args.search)
        matching = f", {len(names)} containing {args.search!r}" if args.search else ""
        out.write(f"# {args.kind} of model {args.model!r}, label version {version.value} "
                  f"(prior{'s' if len(priors) > 1 else ''} {', '.join(priors)}): {total} names{matching}\n")
        shown = names if args.limit is None else names[: args.limit]
        out.writelines(f"{name}\n" for name in shown)
        if len(shown) < len(names):
            out.write(f"# ... {len(names) - len(shown)} more (raise --limit)\n")
        if args.search and not names:
            matches = tokenizer.close_matches(kind, args.search, version)
            out.write(f"# close matches: {', '.join(matches) if matches else 'none'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
