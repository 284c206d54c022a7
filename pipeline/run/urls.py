"""Which URLs a run may use, checked before any work: one rule for every field that names a URL.

A run's files are written and read by many processes (the driver and every Ray actor, on any
node), so a URL that actors read or write must name a file system that all of them see. fsspec
knows many protocols (``fsspec.registry.known_implementations``); these are the shared ones:

- local paths and ``file://`` / ``local://`` (one machine, or a directory every node mounts);
- object stores: ``s3``, ``s3a`` (s3fs), ``gs``, ``gcs`` (gcsfs), ``az``, ``abfs``, ``abfss``,
  ``adl`` (adlfs), ``oss`` (ossfs), ``oci``, ``ocilake`` (ocifs), ``tos``, ``tosfs`` (tosfs);
- HDFS: ``hdfs``, ``arrow_hdfs`` (pyarrow), ``webhdfs``.

Everything else is refused for those fields: ``memory://`` (each process has its own),
caches and wrappers (``simplecache``, ``filecache``, ``blockcache``, ``dir``, ``async_wrapper``:
per process, or write-through only in one), archives and read-only views (``zip``, ``tar``,
``libarchive``, ``reference``, ``data``, ``http(s)``, ``github``, ``git``, ``gist``, ``hf``,
``dvc``, ``wandb``), and other network file systems (``ftp``, ``sftp``, ``ssh``, ``smb``,
``webdav``, ``dbfs``, ``dropbox``, ``gdrive``, ``box``, ``lakefs``, ``root``, ``jupyter``,
``dask``): the pipeline relies on whole-file writes, renames and listings that it has only been
built for on local disks and object stores. Chained URLs (``simplecache::s3://...``) are refused
there too.

Files only the driver reads (``lyrics_file``, a ``songs_grid`` file) may use any protocol fsspec
knows whose package is installed (:func:`check_readable_url`).
"""
from __future__ import annotations

import os
import stat

import fsspec
from fsspec.core import split_protocol
from fsspec.registry import known_implementations, registry

LOCAL_PROTOCOLS = ("file", "local")
OBJECT_STORE_PROTOCOLS = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "oci", "ocilake", "tos", "tosfs")
HDFS_PROTOCOLS = ("hdfs", "arrow_hdfs", "webhdfs")
SHARED_PROTOCOLS = LOCAL_PROTOCOLS + OBJECT_STORE_PROTOCOLS + HDFS_PROTOCOLS
_CHAIN = "::"


def url_protocol(url: str) -> str:
    """The protocol of one fsspec URL (``file`` for a plain path)."""
    protocol, _ = split_protocol(url)
    return protocol or "file"


def _require_known(url: str, protocol: str, field: str) -> None:
    """ValueError naming ``field`` unless fsspec knows ``protocol`` (installed or not)."""
    if protocol not in known_implementations and protocol not in registry:
        raise ValueError(
            f"{field}={url!r}: unknown protocol {protocol!r}; expected a local path or a URL of one of "
            f"{', '.join(SHARED_PROTOCOLS)}"
        )


def _require_implementation(url: str, protocol: str, field: str) -> None:
    """ValueError naming ``field`` unless fsspec has ``protocol`` and its package imports."""
    _require_known(url, protocol, field)
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as err:
        raise ValueError(f"{field}={url!r}: protocol {protocol!r} needs a package that is not installed: {err}") from None


def check_shared_url(url: str, field: str) -> str:
    """Check that ``url`` names a file system every process of a run shares; returns its protocol.

    Args:
        url: a local path or fsspec URL (``s3://bucket/run``).
        field: the config key it came from (``output.url``), named in the error.

    Raises:
        ValueError: ``"{field}={url!r}: ..."`` for an empty URL, a chained URL, a protocol fsspec
            does not know, one that is not shared between processes (``memory://``...), or one
            whose package is not installed.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"{field}={url!r}: expected a local path or a URL")
    if _CHAIN in url:
        raise ValueError(
            f"{field}={url!r}: chained URLs are not supported here (every Ray process must read and write the same "
            f"files); give the storage's own URL, one of {', '.join(SHARED_PROTOCOLS)}"
        )
    protocol = url_protocol(url)
    if protocol not in SHARED_PROTOCOLS:
        _require_known(url, protocol, field)  # an unknown protocol is named as such first
        raise ValueError(
            f"{field}={url!r}: the {protocol!r} file system is not shared between the run's processes (each Ray worker "
            f"would see its own files); use a local path or a URL of one of {', '.join(SHARED_PROTOCOLS)}"
        )
    _require_implementation(url, protocol, field)
    return protocol


def check_readable_url(url: str, field: str) -> None:
    """Check that fsspec can open ``url`` in this process (every link of a chained URL has a known,
    installed protocol); for files only the driver reads. ValueError naming ``field`` otherwise."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"{field}={url!r}: expected a local path or a URL")
    for link in url.split(_CHAIN):
        _require_implementation(url, url_protocol(link), field)


KIB, MIB = 1024, 1024 * 1024
LYRICS_MAX_BYTES = 1 * MIB  # a song's lyrics are a few KiB
TABLE_MAX_BYTES = 64 * MIB  # a grid or labels file: hundreds of thousands of rows


def read_bounded(url: str, where: str, max_bytes: int) -> bytes:
    """The bytes of a file the driver reads (lyrics, grids, labels), refusing before reading
    anything that is not a regular file (a FIFO would hang, a device never ends) or that is larger
    than ``max_bytes``; at most ``max_bytes + 1`` bytes are ever read (a size the file system
    reported wrongly cannot grow it). ValueError naming ``where`` and the URL.
    """
    check_readable_url(url, where)
    try:
        fs, path = fsspec.core.url_to_fs(url)
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        if protocol in ("file", "local"):
            mode = os.stat(path).st_mode
            if not stat.S_ISREG(mode):
                kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
                raise ValueError(f"{where}: {url!r} is {kind}, expected a regular file")
        size = fs.info(path).get("size")
        if size is not None and size > max_bytes:
            raise ValueError(f"{where}: {url!r} holds {size} bytes, more than the {max_bytes // KIB} KiB such a file may hold")
        with fs.open(path, "rb") as handle:
            payload = handle.read(max_bytes + 1)
    except FileNotFoundError as err:
        raise ValueError(f"{where}: cannot read {url!r}: it does not exist") from err
    except OSError as err:
        raise ValueError(f"{where}: cannot read {url!r}: {type(err).__name__}: {err}") from err
    if len(payload) > max_bytes:
        raise ValueError(f"{where}: {url!r} holds more than the {max_bytes // KIB} KiB such a file may hold")
    return payload
