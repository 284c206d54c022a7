"""Conditioning grids: expansion, stable ids, file formats, errors."""
from __future__ import annotations

import csv
import itertools
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from omegaconf import OmegaConf

from pipeline.run.grid import GridSpec, SamplingOverride, iter_grid
from pipeline.run.spec import SamplingSpec

ARTISTS = ["Alan Jackson", "Ella Fitzgerald", "Björk"]
GENRE_LYRICS = [(["country"], "dusty road"), (["jazz"], "midnight city")]
SEEDS = [0, 7]


def songs_of(grid):
    return list(iter_grid(grid))


def demo_section(seeds=SEEDS, n_samples=2):
    return {
        "name": "demo",
        "base": {"duration_s": 2.0},
        "zip": [{"genres": [g for g, _ in GENRE_LYRICS], "lyrics": [lyr for _, lyr in GENRE_LYRICS]}],
        "product": {"artist": ARTISTS, "seed": list(seeds)},
        "n_samples": n_samples,
    }


def test_expansion_is_the_product_of_zip_and_product_axes():
    grid = GridSpec.from_config(demo_section())
    songs = songs_of(grid)
    expected = [
        (artist, tuple(genres), lyrics, seed, sample)
        for (genres, lyrics), artist, seed in itertools.product(GENRE_LYRICS, ARTISTS, SEEDS)
        for sample in range(2)
    ]
    got = [(s.song.artist, s.song.genres, s.song.lyrics, s.cell, s.sample) for s in songs]
    assert [(a, g, lyr, smp) for a, g, lyr, _, smp in expected] == [(a, g, lyr, smp) for a, g, lyr, _, smp in got]
    assert grid.n_cells == 12 and grid.n_songs == len(songs) == 24
    assert [s.cell for s in songs] == [c for c in range(12) for _ in range(2)]
    # sample 0 keeps the cell's seed; sample i gets a seed of its own that depends only on the
    # cell's seed and i, so cells differing only in conditioning stay comparable
    seeds = {}
    for song, (_, _, _, seed, sample) in zip(songs, expected):
        assert (song.song.seed == seed) == (sample == 0)
        assert seeds.setdefault((seed, sample), song.song.seed) == song.song.seed
    assert len(set(seeds.values())) == len(SEEDS) * 2
    assert all(s.song.duration_s == 2.0 for s in songs)
    assert len({s.song.id for s in songs}) == 24
    assert songs_of(grid) == songs  # deterministic


def test_ids_are_readable_and_stable_when_seeds_and_samples_are_added():
    small = {s.song.id: s.song for s in songs_of(GridSpec.from_config(demo_section(seeds=[0], n_samples=1)))}
    big = {s.song.id: s.song for s in songs_of(GridSpec.from_config(demo_section(seeds=[0, 7, 9], n_samples=3)))}
    assert len(small) == 6 and len(big) == 54
    assert set(small) <= set(big)
    assert all(big[song_id] == spec for song_id, spec in small.items())
    some = next(iter(small))
    assert some.startswith("demo.alan_jackson.country-") and len(some.rsplit("-", 1)[1]) == 12
    assert any(i.startswith("demo.bjork.") for i in small)


def test_ids_depend_on_conditioning_not_on_how_the_grid_is_written():
    written_as_product = GridSpec.from_config(
        {"base": {"genres": "jazz", "duration_s": 3}, "product": {"artists": ["Ella Fitzgerald"], "seeds": [1, 2]}}
    )
    written_as_rows = GridSpec.from_config(
        {"songs": [{"artist": "Ella Fitzgerald", "genres": ["jazz"], "duration_s": 3.0, "seed": s} for s in (1, 2)]}
    )
    assert [s.song for s in songs_of(written_as_product)] == [s.song for s in songs_of(written_as_rows)]


def test_sampling_overrides_per_level_and_for_all_levels():
    grid = GridSpec.from_config(
        {
            "base": {"artist": "Ella Fitzgerald", "genres": ["jazz"], "duration_s": 1, "temperature": 0.9},
            "product": {"top": {"top_k": [0, 20]}, "bottom.top_p": [0.5]},
        }
    )
    songs = songs_of(grid)
    assert [s.top for s in songs] == [SamplingOverride(0.9, 0), SamplingOverride(0.9, 20)]
    assert songs[1].middle == SamplingOverride(temperature=0.9)
    assert songs[1].bottom == SamplingOverride(temperature=0.9, top_p=0.5)
    spec = songs[1].sampling(SamplingSpec())
    assert (spec.top.temperature, spec.top.top_k, spec.top.top_p) == (0.9, 20, 0.0)
    assert (spec.bottom.temperature, spec.bottom.top_p) == (0.9, 0.5)
    assert spec.levels == SamplingSpec().levels
    assert songs[1].level_options(SamplingSpec(levels=("top", "middle"))) == {2: spec.top, 1: spec.middle}
    assert songs[0].song.id != songs[1].song.id
    fields = songs[1].manifest_fields()
    assert fields["grid_cell"] == 1 and json.loads(fields["sampling_overrides"])["top"] == {"temperature": 0.9, "top_k": 20}
    with pytest.raises(ValueError, match="temperature"):
        GridSpec.from_config({"base": {"top.temperature": 0}})


ROWS = [
    {"artist": "Alan Jackson", "genres": ["country"], "duration_s": 2.5, "seed": 3, "lyrics_file": "a.txt"},
    {"artist": "Ella Fitzgerald", "genres": ["jazz", "swing"], "duration_s": 1.0, "lyrics": "la la", "top.temperature": 0.8},
]


def _csv_row(row):
    out = {k: ("|".join(v) if k == "genres" else v) for k, v in row.items()}
    return {k: out.get(k, "") for k in ("artist", "genres", "duration_s", "seed", "lyrics", "lyrics_file", "top.temperature")}


@pytest.fixture()
def grid_files(tmp_path):
    (tmp_path / "a.txt").write_text("lyrics from a file\n")
    paths = {}
    paths["yaml"] = tmp_path / "songs.yaml"
    paths["yaml"].write_text(yaml.safe_dump(ROWS))
    paths["json"] = tmp_path / "songs.json"
    paths["json"].write_text(json.dumps(ROWS))
    paths["csv"] = tmp_path / "songs.csv"
    with paths["csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(_csv_row(ROWS[0])))
        writer.writeheader()
        writer.writerows(_csv_row(r) for r in ROWS)
    paths["parquet"] = tmp_path / "songs.parquet"
    columns = ("artist", "genres", "duration_s", "seed", "lyrics", "lyrics_file", "top.temperature")
    pq.write_table(pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in ROWS]), paths["parquet"])
    paths["grid.yml"] = tmp_path / "grid.yml"
    paths["grid.yml"].write_text(yaml.safe_dump({"songs": ROWS, "n_samples": 1}))
    return paths


@pytest.mark.parametrize("kind", ["yaml", "json", "csv", "parquet", "grid.yml"])
def test_every_file_format_gives_the_same_songs(grid_files, kind):
    reference = songs_of(GridSpec.from_file(str(grid_files["yaml"])))
    songs = songs_of(GridSpec.from_config({"file": "file://" + str(grid_files[kind])}))
    assert [s.song.id for s in songs] == [s.song.id for s in reference]
    assert songs[0].song.lyrics == "lyrics from a file\n" and songs[0].song.lyrics_file.endswith("a.txt")
    assert songs[1].song.genres == ("jazz", "swing") and songs[1].song.seed is None
    assert songs[1].top == SamplingOverride(temperature=0.8)


def test_file_rows_combine_with_axes_from_the_config(grid_files):
    grid = GridSpec.from_config(
        OmegaConf.create({"file": str(grid_files["csv"]), "product": {"temperature": [0.7, 0.9]}, "n_samples": 2})
    )
    songs = songs_of(grid)
    assert len(songs) == grid.n_songs == 8
    assert [s.song.artist for s in songs[:4]] == ["Alan Jackson"] * 4
    assert songs[0].source.startswith(f"file {str(grid_files['csv'])!r}, row 1 x songs_grid.product.temperature[0]")


def test_explicit_ids_are_kept(tmp_path):
    grid = GridSpec.from_config({"songs": [{"id": "first", "artist": "a", "genres": "pop", "duration_s": 1}],
                                 "n_samples": 3})
    assert [s.song.id for s in songs_of(grid)] == ["first", "first.1", "first.2"]


@pytest.mark.parametrize(
    "content, match",
    [
        ("artist,genres,duration_s\nAlan Jackson,country,2\nElla,jazz,abc\n", r"songs\.csv', row 2, field 'duration_s'.*'abc'"),
        ("artist,genre,duration_s,tempo\nAlan Jackson,country,2,3\n", r"songs\.csv', row 1: unknown field\(s\) \['tempo'\]"),
        ("artist,genres,duration_s,seed\nA,pop,2,1.5\n", r"row 1, field 'seed': expected an integer"),
        ("artist,genres,duration_s\nA,pop,-1\n", r"row 1, field 'duration_s': expected a duration > 0"),
        ("artist,genres,duration_s\nA,pop,2,extra\n", r"songs\.csv' is not valid csv: row 1 has more cells"),
        ("", r"songs\.csv' is not valid csv: no header row"),
    ],
)
def test_malformed_csv_names_file_row_and_field(tmp_path, content, match):
    path = tmp_path / "songs.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        GridSpec.from_file(str(path))


def test_malformed_files_and_sections(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("- artist: [unclosed\n")
    with pytest.raises(ValueError, match=r"bad\.yaml' is not valid yaml"):
        GridSpec.from_file(str(bad_yaml))
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([{"artist": "a", "genres": ["pop"], "duration_s": 1}, {"artist": "b", "genres": [], "duration_s": 1}]))
    with pytest.raises(ValueError, match=r"rows\.json', row 2, field 'genres'"):
        GridSpec.from_file(str(rows))
    with pytest.raises(ValueError, match="unknown format '.txt'"):
        GridSpec.from_file(str(tmp_path / "songs.txt"))
    with pytest.raises(ValueError, match="grid file: cannot read .*missing.csv.*: it does not exist"):
        GridSpec.from_file(str(tmp_path / "missing.csv"))
    bad_parquet = tmp_path / "x.parquet"
    bad_parquet.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=r"x\.parquet' is not valid parquet"):
        GridSpec.from_file(str(bad_parquet))
    with pytest.raises(ValueError, match=r"zip\[0\]: zipped lists must have equal lengths"):
        GridSpec.from_config({"zip": [{"artist": ["a", "b"], "seed": [1]}]})
    with pytest.raises(ValueError, match="field 'artist' is set by both"):
        GridSpec.from_config({"zip": {"artist": ["a"]}, "product": {"artist": ["b"]}})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['prodcut'\]"):
        GridSpec.from_config({"prodcut": {}})
    with pytest.raises(ValueError, match="n_samples must be an integer >= 1"):
        GridSpec.from_config({"n_samples": 0})
    with pytest.raises(ValueError, match=r"product\.seed: expected a list"):
        GridSpec.from_config({"product": {"seed": 3}})
    with pytest.raises(ValueError, match=r"has no \['duration_s'\]"):
        songs_of(GridSpec.from_config({"base": {"artist": "a", "genres": "pop"}}))
    with pytest.raises(ValueError, match="lyrics_file: cannot read"):
        songs_of(GridSpec.from_config({"base": {"artist": "a", "genres": "pop", "duration_s": 1,
                                              "lyrics_file": str(tmp_path / "none.txt")}}))
