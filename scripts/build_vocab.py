"""Build the shipped tokenizer vocabulary (models/vocab/*.json) from the released id lists.

Input: a directory with v2_artist_ids.txt, v2_genre_ids.txt, v3_artist_ids.txt and
v3_genre_ids.txt, one ``name;id`` per line (the lists of the original OpenAI release).
Output, in the transformers ``JukeboxTokenizer`` format (flat JSON objects, no indentation):
  artists.json / genres.json  v3 names lowercased as listed, then v2 names + ".v2"
                              (a name listed twice keeps its last id, as the original loader)
  lyrics.json                 the v3 lyric vocabulary {character: id} with "<unk>": 0

Usage: python scripts/build_vocab.py --ids-dir /path/to/jukebox_ids [--out-dir models/vocab]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from models.tokenizer import (
    ARTISTS_FILE,
    GENRES_FILE,
    LYRICS_FILE,
    V2_SUFFIX,
    LabelVersion,
    lyric_vocabulary,
)

DEFAULT_OUT_DIR = Path(__file__).resolve().parents[1] / "models" / "vocab"


def read_ids(path: Path) -> dict[str, int]:
    """``name;id`` lines -> {lowercased name: id}; later lines win over earlier ones."""
    table: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line:
            continue
        name, sep, index = line.rpartition(";")
        if not sep or not index.strip().lstrip("-").isdigit():
            raise ValueError(f"{path}:{number}: expected 'name;id', got {line!r}")
        table[name.lower()] = int(index)
    return table


def merge_versions(v3: dict[str, int], v2: dict[str, int], kind: str) -> dict[str, int]:
    """One flat table: v3 names as they are, v2 names with the ".v2" suffix."""
    clashes = [name for name in v3 if name.endswith(V2_SUFFIX)]
    if clashes:
        raise ValueError(f"v3 {kind} names ending in {V2_SUFFIX!r} would clash with v2 keys: {clashes}")
    return {**v3, **{name + V2_SUFFIX: index for name, index in v2.items()}}


def build(ids_dir: Path, out_dir: Path) -> dict[str, int]:
    """Write the three files; returns the number of entries of each."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {
        ARTISTS_FILE: merge_versions(
            read_ids(ids_dir / "v3_artist_ids.txt"), read_ids(ids_dir / "v2_artist_ids.txt"), "artist"
        ),
        GENRES_FILE: merge_versions(
            read_ids(ids_dir / "v3_genre_ids.txt"), read_ids(ids_dir / "v2_genre_ids.txt"), "genre"
        ),
        LYRICS_FILE: lyric_vocabulary(LabelVersion.V3),
    }
    for name, table in tables.items():
        (out_dir / name).write_text(json.dumps(table, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    return {name: len(table) for name, table in tables.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ids-dir", type=Path, required=True, help="directory of the v2/v3 *_ids.txt lists")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="where the JSON files go")
    args = parser.parse_args()
    counts = build(args.ids_dir, args.out_dir)
    for name, count in counts.items():
        size = (args.out_dir / name).stat().st_size
        print(f"{args.out_dir / name}: {count} entries, {size} bytes")


if __name__ == "__main__":
    main()
