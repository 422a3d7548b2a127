"""Atomic result files and folders: complete or absent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hwprof.files import atomic_dir, write_atomic, write_json_atomic


def test_write_atomic_leaves_no_temp_files(tmp_path: Path) -> None:
    write_atomic(tmp_path / "a.txt", "x")
    write_json_atomic(tmp_path / "b.json", {"nan": float("nan")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.json"]
    assert json.loads((tmp_path / "b.json").read_text()) == {"nan": None}


def test_atomic_dir_publishes_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with atomic_dir(out) as d:
        (d / "one.csv").write_text("1")
        assert not out.exists()          # nothing visible until the block ends
    assert [p.name for p in out.iterdir()] == ["one.csv"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_atomic_dir_failure_keeps_the_old_folder(tmp_path: Path, exc: BaseException) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.csv").write_text("old")
    with pytest.raises(type(exc)), atomic_dir(out) as d:
        (d / "new.csv").write_text("new")
        raise exc
    assert [p.name for p in out.iterdir()] == ["old.csv"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_atomic_dir_replaces_an_old_folder_whole(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "stale.png").write_text("stale")
    with atomic_dir(out) as d:
        (d / "new.csv").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.csv"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_atomic_dir_refuses_a_file(tmp_path: Path) -> None:
    f = tmp_path / "run"
    f.write_text("I am a file")
    with pytest.raises(NotADirectoryError), atomic_dir(f):
        pass
    assert f.read_text() == "I am a file"


def test_read_json_record_is_none_for_a_missing_or_unreadable_file(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    from hwprof.files import read_json_record
    path = tmp_path / "k.json"
    assert read_json_record(path, dict, "cache") is None and not caplog.records       # absent: silent
    path.write_text('{"a": 1}')
    assert read_json_record(path, dict, "cache") == {"a": 1}
    path.write_text("{not json")
    with caplog.at_level("WARNING"):
        assert read_json_record(path, dict, "ceilings cache") is None
    assert f"ignoring unreadable ceilings cache {path}" in caplog.text


# ----------------------------------------------------------------------------- never replace what appeared meanwhile
def test_rename_noreplace_refuses_an_existing_target_even_an_empty_folder(tmp_path: Path) -> None:
    from hwprof.files import _native_noreplace, rename_noreplace

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "a").write_text("a")
    dst.mkdir()
    (dst / "mine").write_text("mine")
    with pytest.raises(FileExistsError):          # a folder with files: refused on every platform
        rename_noreplace(src, dst)
    (dst / "mine").unlink()
    if _native_noreplace() is not None:           # os.rename would replace an empty folder; renameat2 does not
        with pytest.raises(FileExistsError):
            rename_noreplace(src, dst)
        assert dst.is_dir() and not any(dst.iterdir())
    dst.rmdir()
    rename_noreplace(src, dst)                    # an absent target: an ordinary rename
    assert (dst / "a").read_text() == "a" and not src.exists()


def test_a_folder_created_while_the_block_runs_is_not_replaced(tmp_path: Path) -> None:
    # absent when the write began, created by someone else before it ended: theirs, left alone
    out = tmp_path / "run"
    with pytest.raises(FileExistsError), atomic_dir(out) as d:
        (d / "new.csv").write_text("new")
        out.mkdir()
        (out / "theirs.txt").write_text("theirs")
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]          # our temporary folder is gone too


def test_removable_removes_only_what_it_lists_and_keeps_the_rest_aside(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "ours.csv").write_text("ours")
    listed: list[str] = []

    def removable(folder: Path) -> list[str]:
        listed.append(folder.name)
        (folder / "appeared.txt").write_text("written by someone in the meantime")
        return ["ours.csv"]
    with caplog.at_level("WARNING"), atomic_dir(out, removable) as d:
        (d / "new.csv").write_text("new")
    assert listed == ["run"] and [p.name for p in out.iterdir()] == ["new.csv"]
    kept = [p for p in tmp_path.iterdir() if p.name.startswith(".run.old-")]
    assert len(kept) == 1 and [p.name for p in kept[0].iterdir()] == ["appeared.txt"]   # no marker: not stale
    assert f"kept {kept[0]}" in caplog.text


def test_removable_none_refuses_to_replace(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "theirs.txt").write_text("theirs")
    with pytest.raises(FileExistsError), atomic_dir(out, lambda folder: None) as d:
        (d / "new.csv").write_text("new")
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def _dead_pid() -> int:
    import subprocess
    import sys
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporary_siblings_of_a_killed_run_are_removed_and_nothing_else(tmp_path: Path) -> None:
    import os
    import socket

    from hwprof.files import MARKER

    def sibling(name: str, pid: int | None) -> Path:
        p = tmp_path / name
        p.mkdir()
        (p / "half.csv").write_text("half written")
        if pid is not None:
            (p / MARKER).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
        return p
    dead = sibling(".run.tmp-dead0001", _dead_pid())            # killed: removed
    old = sibling(".run.old-dead0002", _dead_pid())             # killed while replacing: removed
    alive = sibling(".run.tmp-live0001", os.getppid())          # a run still writing: kept
    unmarked = sibling(".run.tmp-user0001", None)               # not hwprof's (no marker): kept
    other = sibling(".other.tmp-dead0003", _dead_pid())         # another folder's: kept
    with atomic_dir(tmp_path / "run") as d:
        (d / "new.csv").write_text("new")
    assert not dead.exists() and not old.exists()
    assert alive.exists() and unmarked.exists() and other.exists()
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["new.csv"]     # the marker is not published


def test_a_result_saved_inside_a_folder_being_built_keeps_its_marker(tmp_path: Path) -> None:
    # Profile.save(d) inside out_folder's temporary d: d is replaced by the saved folder, which must
    # still be recognisable as hwprof's temporary folder should the run be killed now
    from hwprof.files import MARKER

    with atomic_dir(tmp_path / "run") as outer:
        with atomic_dir(outer) as inner:
            (inner / "layers.csv").write_text("x")
        assert (outer / MARKER).is_file() and (outer / "layers.csv").is_file()
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["layers.csv"]
