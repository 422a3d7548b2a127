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
