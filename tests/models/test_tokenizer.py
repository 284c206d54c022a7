"""JukeboxTokenizer: the seed example, id parity with transformers 4.40.2, I/O and errors."""
from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from models.tokenizer import (
    LYRIC_ALPHABETS,
    DecodedLabels,
    JukeboxEncoding,
    JukeboxTokenizer,
    LabelVersion,
    NameKind,
    UnknownName,
    lyric_vocabulary,
    normalize_v2_name,
)

REPO = Path(__file__).resolve().parents[2]
IDS_DIR = Path("/work/shared/data/jukebox_ids")

SEED_TOP = [0, 0, 0, 6785, 546, 41, 38, 30, 76, 46, 41, 49, 40, 76, 44, 41, 27, 30]
SEED_UPSAMPLER = [0, 0, 0, 145, 0]

ARTISTS = [
    "Alan Jackson",
    "The Beatles",
    "Björk",
    "Andraé Crouch",
    "王力宏 (Leehom Wang)",
    "  Frank   Sinatra ",
    "AC/DC",
    "Nobody Ever Heard Of Them",
    "",
]
GENRES = ["Country Rock", "pop", "Jazz", "hip hop", "R&B", "Unknown Genre Xyz", ""]
MULTI_GENRES = ["pop_rock", "Blues_Jazz_Soul", "a_b_c_d_e"]
LYRICS = [
    "",
    "old town road",
    "Je t'aime, café crème à la française!",
    "Ça va? Ünïcödé ÀÉÎÕÜ ñ ß æ ø",
    "你好世界 こんにちは 안녕하세요",
    "emoji 😀🎸🔥 and symbols @#$%^&*_=+{}|<>~`",
    "a+b-c [x] (y) \"q\" 'z' ; : ... !?",
    "line one\\line two\r\nline three\ttabbed\n",
    "ﬁ ligature, ² superscript, ½ fraction, \u00a0nbsp",
]
VERSIONS = [("v3", "v2", "v2"), ("v2", "v2", "v2"), ("v3", "v3", "v3"), ("v2",)]


def _long_lyrics(n: int = 3000) -> str:
    rng = random.Random(0)
    words = ["hello", "world", "café", "naïve", "你好", "rock+roll", "don't", "stop", "\n"]
    text = ""
    while len(text) < n:
        text += rng.choice(words) + " "
    return text


def _ids(encoding) -> list[list[int]]:
    return [t.tolist()[0] for t in encoding["input_ids"]]


# ---------------------------------------------------------------------------- ours alone
@pytest.fixture(scope="module")
def shipped() -> JukeboxTokenizer:
    return JukeboxTokenizer(n_genres=1)


def test_seed_example(shipped):
    out = shipped("Alan Jackson", "Country Rock", "old town road")
    assert isinstance(out, JukeboxEncoding) and out.input_ids is out["input_ids"]
    assert [t.dtype for t in out["input_ids"]] == [torch.int64] * 3
    assert [tuple(t.shape) for t in out["input_ids"]] == [(1, 18), (1, 5), (1, 5)]
    assert _ids(out) == [SEED_TOP, SEED_UPSAMPLER, SEED_UPSAMPLER]


def test_reference_defaults():
    tok = JukeboxTokenizer()
    assert tok.version == (LabelVersion.V3, LabelVersion.V2, LabelVersion.V2)
    assert (tok.n_genres, tok.max_n_lyric_tokens, tok.unk_token) == (5, 512, "<|endoftext|>")
    top = tok("Alan Jackson", "Country Rock", "old town road")["input_ids"][0].tolist()[0]
    assert top[:9] == [0, 0, 0, 6785, 546, -1, -1, -1, -1]


def test_output_formats(shipped):
    pt = _ids(shipped("Alan Jackson", "Country Rock", "old town road"))
    as_np = shipped("Alan Jackson", "Country Rock", "old town road", return_tensors="np")["input_ids"]
    assert all(a.dtype == np.int64 and a.shape[0] == 1 for a in as_np)
    assert [a.tolist()[0] for a in as_np] == pt
    lists = shipped("Alan Jackson", "Country Rock", "old town road", return_tensors=None)["input_ids"]
    assert [row[0] for row in lists] == pt == shipped.encode("Alan Jackson", "Country Rock", "old town road")
    enc = shipped("x", "y")
    assert list(enc.keys()) == ["input_ids"] and len(enc) == 1 and dict(enc)["input_ids"] is enc.input_ids


def test_shipped_vocabulary_files():
    vocab_dir = REPO / "models" / "vocab"
    for name in ("artists.json", "genres.json", "lyrics.json"):
        text = (vocab_dir / name).read_text(encoding="utf-8")
        assert "\n" not in text.strip() and ", " not in text[:200], f"{name} should be compact"
    lyrics = json.loads((vocab_dir / "lyrics.json").read_text(encoding="utf-8"))
    assert lyrics == lyric_vocabulary("v3") and len(lyrics) == 79
    assert len(lyric_vocabulary("v2")) == 80 and set(LYRIC_ALPHABETS[LabelVersion.V2]) - set(
        LYRIC_ALPHABETS[LabelVersion.V3]
    ) == {"+"}
    artists = json.loads((vocab_dir / "artists.json").read_text(encoding="utf-8"))
    assert artists["alan jackson"] == 6785 and artists["alan_jackson.v2"] == 145
    assert artists["speaker"] == 7896  # listed twice in the v3 ids; the last line wins


@pytest.mark.skipif(not IDS_DIR.is_dir(), reason="released id lists not available")
def test_build_vocab_reproduces_shipped_files(tmp_path):
    spec = importlib.util.spec_from_file_location("build_vocab", REPO / "scripts" / "build_vocab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    counts = module.build(IDS_DIR, tmp_path)
    assert counts["lyrics.json"] == 79
    for name in counts:
        assert (tmp_path / name).read_bytes() == (REPO / "models" / "vocab" / name).read_bytes()


def test_v2_top_prior_uses_v2_alphabet():
    tok = JukeboxTokenizer(version=["v2", "v2", "v2"], n_genres=1)
    assert tok.lyric_vocab_size == 80 and tok.lyrics_encoder == lyric_vocabulary("v2")
    # " " is id 77 in v2 (after "+"), 76 in v3; "+" is stripped for a v2 top prior (reference quirk).
    assert tok.encode_lyrics("a b+") == [27, 77, 28]
    assert JukeboxTokenizer().encode_lyrics("a b+") == [27, 76, 28, 0]


def test_normalisation(shipped):
    assert normalize_v2_name("  Björk & The__Sugarcubes!! ") == "bj_rk_the_sugarcubes"
    assert normalize_v2_name("Mr. Big") == "mr._big"
    assert shipped.artist_key("Andraé Crouch", "v3") == "andraé crouch"
    assert shipped.artist_key("Andraé Crouch", "v2") == "andra_crouch.v2"
    assert shipped.genre_keys("Country Rock", "v2") == ["country_rock.v2"]
    assert shipped.genre_keys(["Pop", "Soul_Jazz"], "v2") == ["pop.v2", "soul.v2", "jazz.v2"]
    assert shipped.genre_keys(["Pop", "Soul Jazz"], "v3") == ["pop", "soul jazz"]
    assert shipped.clean_lyrics("Café\\ 你好 😀\r\n") == "Cafe\n  \n"


def test_tokenize_and_decode(shipped):
    artists, genres, chars = shipped.tokenize("Alan Jackson", "Country Rock", "old town road!")
    assert artists == ["alan jackson", "alan_jackson.v2", "alan_jackson.v2"]
    assert genres == [["country rock"], ["country_rock.v2"], ["country_rock.v2"]]
    assert "".join(chars) == "old town road!"
    assert shipped.convert_lyric_tokens_to_string(["a", "b"]) == "a b"  # as transformers
    ids = shipped("Alan Jackson", "Country Rock", "Old Town Road, café 你")["input_ids"]
    assert shipped.decode(ids[0], prior=0) == DecodedLabels("alan jackson", ["country rock"], "Old Town Road, cafe ")
    assert shipped.decode(ids[1][0], prior=1) == DecodedLabels("alan_jackson", ["unknown"], "")
    five = JukeboxTokenizer(n_genres=5)
    assert five.decode(five.encode("x", ["pop", "rock"])[1], prior=1).genres == ["pop", "rock"]


def test_unknown_names_and_listings(shipped):
    assert shipped.unknown_names("Alan Jackson", "Country Rock") == [
        UnknownName(NameKind.GENRE, "Country Rock", "country_rock.v2", LabelVersion.V2)
    ]
    lower, upper = shipped.unknown_names("alan jackson", "country rock"), shipped.unknown_names("ALAN JACKSON", "ROCK")
    assert [u.key for u in lower] == ["country_rock.v2"] and upper == []
    missing = shipped.unknown_names("Nobody Ever Heard Of Them", ["jazz", "Pop"])
    assert [(u.kind, u.key, u.version) for u in missing] == [
        (NameKind.ARTIST, "nobody ever heard of them", LabelVersion.V3),
        (NameKind.ARTIST, "nobody_ever_heard_of_them.v2", LabelVersion.V2),
    ]
    v3_artists, v2_artists = shipped.known_artists("v3"), shipped.known_artists(LabelVersion.V2)
    assert "alan jackson" in v3_artists and "alan_jackson" in v2_artists and v3_artists == sorted(v3_artists)
    assert len(v3_artists) + len(v2_artists) == len(shipped.artists_encoder)
    assert "country rock" in shipped.known_genres("v3") and "country" in shipped.known_genres("v2")
    for name in ("unknown", "country rock"):  # every listed name encodes to its own id
        assert shipped.encode("x", name)[0][4] == shipped.genres_encoder[name]


def test_save_vocabulary_round_trip(tmp_path, shipped):
    paths = shipped.save_vocabulary(tmp_path / "new_dir", filename_prefix="jb")
    assert [Path(p).name for p in paths] == ["jb-artists.json", "jb-genres.json", "jb-lyrics.json"]
    again = JukeboxTokenizer(*paths, n_genres=1)
    assert again.get_vocab() == shipped.get_vocab()
    v2 = JukeboxTokenizer(version=["v2"], n_genres=2)
    v2_dir = tmp_path / "v2"
    v2.save_pretrained(v2_dir)
    loaded = JukeboxTokenizer.from_pretrained(v2_dir)
    assert (loaded.version, loaded.n_genres) == ((LabelVersion.V2,), 2)
    for lyrics in LYRICS:
        assert loaded.encode("Björk", "pop_rock", lyrics) == v2.encode("Björk", "pop_rock", lyrics)


def test_fsspec_urls(shipped):
    root = "memory://tokenizer-test/vocab"
    shipped.save_pretrained(root)
    from_url = JukeboxTokenizer.from_pretrained(root)
    assert from_url.n_genres == 1 and from_url.get_vocab() == shipped.get_vocab()
    files = JukeboxTokenizer(f"{root}/artists.json", f"{root}/genres.json", f"{root}/lyrics.json", n_genres=1)
    assert files.encode("Alan Jackson", "Country Rock", "old town road") == [SEED_TOP, SEED_UPSAMPLER, SEED_UPSAMPLER]
    assert JukeboxTokenizer.from_pretrained(root, n_genres=3).n_genres == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"version": ["v4"]}, "'v4'"),
        ({"version": "v3"}, "'v3'"),
        ({"version": []}, "non-empty"),
        ({"n_genres": 0}, "n_genres"),
        ({"max_n_lyric_tokens": -1}, "max_n_lyric_tokens"),
    ],
)
def test_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        JukeboxTokenizer(**kwargs)


def test_bad_vocabulary_file(tmp_path):
    bad = tmp_path / "artists.json"
    bad.write_text(json.dumps(["not", "a", "mapping"]))
    with pytest.raises(ValueError, match="artists.json"):
        JukeboxTokenizer(artists_file=bad)


@pytest.mark.parametrize(
    "args, match",
    [
        ((None, "pop"), "artist must be a string.*None"),
        ((3, "pop"), "artist must be a string.*3"),
        (("a", 5), "genres must be .*5"),
        (("a", []), r"genres must be .*\[\]"),
        (("a", ["pop", 3]), r"genres must be .*\['pop', 3\]"),
        (("a", "pop", None), "lyrics must be a string"),
        (("a", "pop_rock"), "more than n_genres=1"),
        (("a", ["pop", "rock"]), "more than n_genres=1"),
    ],
)
def test_bad_inputs(shipped, args, match):
    with pytest.raises(ValueError, match=match):
        shipped(*args)


def test_bad_call_options(shipped):
    with pytest.raises(ValueError, match="'tf'"):
        shipped("a", "pop", return_tensors="tf")
    with pytest.raises(ValueError, match="prior must be"):
        shipped.decode([0] * 8, prior=3)
    with pytest.raises(ValueError, match="shape"):
        shipped.decode([0, 0], prior=0)
    with pytest.raises(ValueError, match="'v9'"):
        shipped.known_artists("v9")


# ---------------------------------------------------------------------------- reference parity
@pytest.fixture(scope="module")
def reference_cls():
    transformers = pytest.importorskip("transformers")
    return transformers.JukeboxTokenizer


@pytest.fixture(scope="module")
def vocab_files(tmp_path_factory, shipped):
    return shipped.save_vocabulary(tmp_path_factory.mktemp("vocab"))


def _reference_ids(ref, artist, genres, lyrics) -> list[list[int]]:
    return [t.tolist()[0] for t in ref(artist, genres, lyrics)["input_ids"]]


def test_reference_seed_example(reference_cls, vocab_files):
    ref = reference_cls(*vocab_files, n_genres=1)
    assert _reference_ids(ref, "Alan Jackson", "Country Rock", "old town road") == [
        SEED_TOP,
        SEED_UPSAMPLER,
        SEED_UPSAMPLER,
    ]


@pytest.mark.parametrize("version", VERSIONS, ids="-".join)
@pytest.mark.parametrize("n_genres", [1, 5])
def test_parity_with_reference(reference_cls, vocab_files, version, n_genres):
    ref = reference_cls(*vocab_files, version=list(version), n_genres=n_genres)
    ours = JukeboxTokenizer(*vocab_files, version=version, n_genres=n_genres)
    genres = GENRES + (MULTI_GENRES if n_genres == 5 else [])
    cases = [(a, g, "old town road") for a in ARTISTS for g in genres]
    cases += [("Alan Jackson", "Country Rock", lyrics) for lyrics in LYRICS + [_long_lyrics()]]
    for artist, genre, lyrics in cases:
        expected = _reference_ids(ref, artist, genre, lyrics)
        assert ours.encode(artist, genre, lyrics) == expected, (artist, genre, lyrics)
        ref_artists, ref_genres, ref_lyrics = ref.tokenize([artist] * len(version), [genre] * len(version), lyrics)
        assert ours.tokenize(artist, genre, lyrics) == (ref_artists, ref_genres, list(ref_lyrics[0]))
    long_ids = ours.encode("Alan Jackson", "pop", _long_lyrics())[0]
    assert len(long_ids) > ours.max_n_lyric_tokens  # neither tokenizer truncates lyrics
    assert ours.get_vocab() == ref.get_vocab()


def test_parity_random_strings(reference_cls, vocab_files):
    pool = LYRIC_ALPHABETS[LabelVersion.V2] + "éèàüößçñÅØİ\u212a你好😀\\\r~@#{}_=ﬁ²\u0301"
    rng = random.Random(1234)

    def sample(chars: str, longest: int) -> str:
        return "".join(rng.choice(chars) for _ in range(rng.randint(0, longest)))

    cases = [(sample(pool, 20), sample(pool.replace("_", ""), 12), sample(pool, 60)) for _ in range(300)]
    for version in (("v3", "v2", "v2"), ("v2", "v2", "v2")):
        ref = reference_cls(*vocab_files, version=list(version), n_genres=1)
        ours = JukeboxTokenizer(*vocab_files, version=version, n_genres=1)
        for artist, genre, lyrics in cases:
            expected = _reference_ids(ref, artist, genre, lyrics)
            assert ours.encode(artist, genre, lyrics) == expected, (artist, genre, lyrics)
            ref_keys = ref.tokenize([artist] * len(version), [genre] * len(version), lyrics)[:2]
            assert ours.tokenize(artist, genre, lyrics)[:2] == ref_keys


def test_reference_over_long_genres_pinned(reference_cls, vocab_files):
    """The reference neither truncates nor rejects too many genres: it emits a longer label that
    shifts the lyrics. Ours raises instead."""
    ref = reference_cls(*vocab_files, n_genres=1)
    upsampler = _reference_ids(ref, "Alan Jackson", "pop_rock", "")[1]
    assert len(upsampler) == 6  # 3 header + artist + 2 genres, where n_genres=1 expects 5
    with pytest.raises(ValueError, match="more than n_genres"):
        JukeboxTokenizer(*vocab_files, n_genres=1).encode("Alan Jackson", "pop_rock", "")


def test_loads_reference_save_pretrained(reference_cls, vocab_files, tmp_path):
    for version in (["v3", "v2", "v2"], ["v2", "v2", "v2"]):
        ref = reference_cls(*vocab_files, version=version, n_genres=1)
        ref("Alan Jackson", "Country Rock", "x")  # a v2 top prior rewrites its lyric vocabulary here
        saved = tmp_path / "-".join(version)
        ref.save_pretrained(saved)
        ours = JukeboxTokenizer.from_pretrained(saved)
        assert ours.version == tuple(LabelVersion(v) for v in version) and ours.n_genres == 1
        reloaded = reference_cls.from_pretrained(saved)
        for artist, genre, lyrics in [(a, "Country Rock", text) for a in ARTISTS[:4] for text in LYRICS]:
            expected = _reference_ids(reloaded, artist, genre, lyrics)
            assert ours.encode(artist, genre, lyrics) == expected == _reference_ids(ref, artist, genre, lyrics)


def test_reference_loads_our_save_pretrained(reference_cls, tmp_path):
    ours = JukeboxTokenizer(version=["v3", "v2", "v2"], n_genres=1)
    ours.save_pretrained(tmp_path)
    ref = reference_cls.from_pretrained(tmp_path)
    assert (ref.n_genres, list(ref.version)) == (1, ["v3", "v2", "v2"])
    for lyrics in LYRICS:
        assert ours.encode("Björk", "Electronic", lyrics) == _reference_ids(ref, "Björk", "Electronic", lyrics)
