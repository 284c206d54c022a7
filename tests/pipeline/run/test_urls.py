"""The URL rule: fields read or written by Ray actors need a file system every process shares."""
from __future__ import annotations

import pytest
from fsspec.registry import known_implementations

from pipeline.run.urls import SHARED_PROTOCOLS, check_readable_url, check_shared_url, url_protocol


def test_the_shared_protocols_are_fsspec_protocols_and_memory_is_not_one():
    # every shared protocol is one fsspec knows (abfss is registered by adlfs itself)
    assert set(SHARED_PROTOCOLS) - {"abfss"} <= set(known_implementations)
    assert not {"memory", "simplecache", "filecache", "blockcache", "zip", "tar", "http", "https", "dir"} & set(SHARED_PROTOCOLS)


@pytest.mark.parametrize("url", ["outputs/run", "/abs/run", "file:///abs/run", "local:///abs/run"])
def test_local_paths_are_shared(url):
    assert check_shared_url(url, "output.url") in ("file", "local")


@pytest.mark.parametrize("protocol", sorted(set(known_implementations) - set(SHARED_PROTOCOLS)))
def test_every_other_protocol_fsspec_knows_is_refused_naming_the_field(protocol):
    url = f"{protocol}://bucket/run"
    with pytest.raises(ValueError, match=rf"^output\.url='{protocol}://bucket/run': the '{protocol}' file system is not shared"):
        check_shared_url(url, "output.url")


def test_messages_say_what_is_wrong():
    with pytest.raises(ValueError, match=r"the 'memory' file system is not shared between the run's processes"):
        check_shared_url("memory://jb/out", "output.url")
    with pytest.raises(ValueError, match=r"^encode\.input_url='foo://x': unknown protocol 'foo'; expected a local path or a URL of one of file"):
        check_shared_url("foo://x", "encode.input_url")
    with pytest.raises(ValueError, match=r"chained URLs are not supported"):
        check_shared_url("simplecache::s3://bucket/run", "output.url")
    with pytest.raises(ValueError, match=r"^output\.url='': expected a local path or a URL"):
        check_shared_url("", "output.url")


def test_a_shared_protocol_whose_package_is_missing_says_so():
    try:
        import s3fs  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match=r"^output\.url='s3://b/run': protocol 's3' needs a package that is not installed: .*s3fs"):
            check_shared_url("s3://b/run", "output.url")
    else:
        assert check_shared_url("s3://b/run", "output.url") == "s3"


def test_files_only_the_driver_reads_may_use_any_installed_protocol():
    check_readable_url("memory://lyrics.txt", "songs[0].lyrics_file")
    check_readable_url("zip://lyrics.txt::file:///tmp/a.zip", "songs[0].lyrics_file")
    with pytest.raises(ValueError, match=r"^songs\[0\]\.lyrics_file='foo://l\.txt': unknown protocol 'foo'"):
        check_readable_url("foo://l.txt", "songs[0].lyrics_file")
    assert url_protocol("a/b") == "file" and url_protocol("gs://b/k") == "gs"
