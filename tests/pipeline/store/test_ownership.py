"""An output is a folder the project owns: new, empty or marked; nothing else, and never a
folder around or inside the places a run must not touch."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.store.lease import RunLease
from pipeline.store.ownership import MARKER_NAME, OutputNotOursError, check_output_folder, mark_output
from pipeline.store.writer import RunStorage

REPO = Path(__file__).resolve().parents[3]


def test_a_new_or_empty_folder_is_taken_and_marked(tmp_path):
    for folder in (tmp_path / "new", tmp_path / "empty"):
        if folder.name == "empty":
            folder.mkdir()
        storage = RunStorage(str(folder))
        check_output_folder(storage)
        mark_output(storage)
        assert (folder / MARKER_NAME).is_file()
        check_output_folder(storage)  # marked: ours from now on


def test_a_folder_with_someone_elses_files_is_refused_naming_them(tmp_path):
    (tmp_path / "manifest.parquet").write_bytes(b"the user's own")
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(OutputNotOursError, match=rf"output.url '{tmp_path}' holds files this tool did not write "
                                                 r"\(manifest.parquet, summary.json\) and no \.jukebox-output marker"):
        check_output_folder(RunStorage(str(tmp_path)))
    assert (tmp_path / "manifest.parquet").read_bytes() == b"the user's own"
    (tmp_path / MARKER_NAME).write_text("")  # adopted by its owner
    check_output_folder(RunStorage(str(tmp_path)))


@pytest.mark.parametrize("where", ["root", "home", "checkout", "around the checkout"])
def test_places_a_run_must_not_touch_are_refused(where):
    folder = {"root": "/", "home": str(Path.home()), "checkout": str(REPO), "around the checkout": str(REPO.parent)}[where]
    with pytest.raises(OutputNotOursError, match=r"a run may not write there"):
        check_output_folder(RunStorage(folder))


def test_outputs_do_not_nest(tmp_path):
    outer = tmp_path / "outer"
    mark_output(RunStorage(str(outer)))
    with pytest.raises(OutputNotOursError, match=r"lies inside the output .*outer"):
        check_output_folder(RunStorage(str(outer / "deep" / "inner")))
    inner = tmp_path / "around" / "inner"
    mark_output(RunStorage(str(inner)))
    with pytest.raises(OutputNotOursError, match=r"holds files this tool did not write \(inner\)"):
        check_output_folder(RunStorage(str(tmp_path / "around")))


def test_a_file_is_no_output(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputNotOursError, match=r"is a file, expected a folder"):
        check_output_folder(RunStorage(str(tmp_path / "file")))


def test_the_sweep_removes_only_the_projects_own_temporaries(tmp_path):
    storage = RunStorage(str(tmp_path))
    mark_output(storage)
    own = [tmp_path / "parts" / "s" / "level=0" / "000000000000-000000000008.parquet.jukebox-tmp-0123abcd",
           tmp_path / "manifest.parquet.jukebox-tmp-deadbeef", tmp_path / "train-top" / "metrics.parquet.jukebox-tmp-00000000"]
    users = [tmp_path / "backup.tmp-deadbeef", tmp_path / "docs" / "deep" / "report.tmp-0123abcd",
             tmp_path / "docs" / "notes.jukebox-tmp-0123abcd", tmp_path / "parts" / "s" / "mine.tmp-0123abcd"]
    for path in own + users:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    lease = RunLease(storage, "run-a")
    lease.acquire()  # takes the lease and sweeps
    try:
        assert [p.exists() for p in own] == [False] * len(own)
        assert [p.exists() for p in users] == [True] * len(users)
    finally:
        lease.release()
