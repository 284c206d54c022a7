"""``python -m pipeline.corpus``: write the synthetic corpus the default model is trained on.

    python -m pipeline.corpus --out outputs/corpus            # 24 training + 4 held-out songs per style

Layout under ``--out`` (a local path or any fsspec URL)::

    train/<style>/<style>-000.wav ...     44.1 kHz mono PCM_16
    heldout/<style>/<style>-000.wav ...
    train_labels.csv, heldout_labels.csv  file, artist, genres, lyrics (+ style, seed)

The labels files are what ``encode.labels_url`` takes (``file`` is the path under the split's
folder). The same arguments write the same bytes.
"""
from __future__ import annotations

import argparse
import csv
import io
import logging
import posixpath
import sys
import time
from collections.abc import Sequence

import fsspec
import soundfile

from pipeline.corpus.songs import SPLITS, CorpusSong, corpus_songs, render_song
from pipeline.corpus.styles import STYLES
from pipeline.corpus.synth import SAMPLE_RATE

logger = logging.getLogger("pipeline.corpus")

LABEL_COLUMNS = ("file", "artist", "genres", "lyrics", "style", "seed")


def labels_name(split: str) -> str:
    """The labels file of a split, beside the split's audio folder."""
    return f"{split}_labels.csv"


def write_corpus(out: str, seed: int, per_split: dict[str, int], seconds: float, styles: Sequence[str] = tuple(STYLES)) -> dict[str, int]:
    """Write every split's WAVs and labels under ``out``; returns the songs written per split."""
    fs, root = fsspec.core.url_to_fs(out)
    written = {}
    for split, count in per_split.items():
        songs: list[CorpusSong] = corpus_songs(seed, split, count, tuple(styles))
        rows = []
        for song in songs:
            audio, lyrics = render_song(song.style, song.seed, seconds)
            path = posixpath.join(root, split, song.file)
            fs.makedirs(posixpath.dirname(path), exist_ok=True)
            buffer = io.BytesIO()
            soundfile.write(buffer, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
            fs.pipe_file(path, buffer.getvalue())
            style = STYLES[song.style]
            rows.append({"file": song.file, "artist": style.artist, "genres": style.genre, "lyrics": lyrics,
                         "style": song.style, "seed": song.seed})
        table = io.StringIO()
        writer = csv.DictWriter(table, fieldnames=LABEL_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        fs.pipe_file(posixpath.join(root, labels_name(split)), table.getvalue().encode())
        written[split] = len(songs)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="outputs/corpus", help="folder or fsspec URL (default: outputs/corpus)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    parser.add_argument("--train-songs", type=int, default=24, help="training songs per style (default 24)")
    parser.add_argument("--heldout-songs", type=int, default=4, help="held-out songs per style (default 4)")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of every song (default 6)")
    parser.add_argument("--styles", default=",".join(STYLES), help=f"comma-separated styles (default {','.join(STYLES)})")
    args = parser.parse_args(argv)
    styles = [s for s in args.styles.split(",") if s]
    unknown = [s for s in styles if s not in STYLES]
    if unknown or not styles:
        parser.error(f"--styles={args.styles!r}: expected some of {','.join(STYLES)}")
    if args.train_songs < 1 or args.heldout_songs < 0 or args.seed < 0:
        parser.error("--train-songs must be >= 1, --heldout-songs and --seed >= 0")
    if not 0.5 <= args.seconds <= 600:
        parser.error(f"--seconds={args.seconds}: expected 0.5 to 600")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    began = time.perf_counter()
    counts = dict(zip(SPLITS, (args.train_songs, args.heldout_songs)))
    written = write_corpus(args.out, args.seed, {k: v for k, v in counts.items() if v}, args.seconds, styles)
    logger.info("corpus in %s: %s songs of %.1f s (%s), labels %s, in %.1f s", args.out, written, args.seconds,
                ", ".join(f"{s}: {STYLES[s].genre} / {STYLES[s].artist}" for s in styles),
                ", ".join(labels_name(s) for s in written), time.perf_counter() - began)
    return 0


if __name__ == "__main__":
    sys.exit(main())
