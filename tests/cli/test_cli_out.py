"""`--out DIR`: a folder for every command, every format plus manifest.json, checked before any
work, written complete or not at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import hwprof.files
from hwprof.cli import main
from hwprof.files import to_jsonable

COUNT_FILES = ["count.csv", "count.json", "count.md", "count.txt", "manifest.json"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def _bad_paths(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """case -> (--out value, what the one-line error says)."""
    afile = tmp_path / "somefile"
    afile.write_text("not a folder\n")
    foreign = tmp_path / "my_documents"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work\n")
    return {"unwritable": ("/proc/x", "cannot create a folder in /proc"),
            "below a file": (str(afile / "sub"), "is a file, not a folder"),
            "existing file": (str(afile), "exists and is not a folder"),
            "foreign folder": (str(foreign), "not an hwprof result")}


@pytest.mark.parametrize("case", ["unwritable", "below a file", "existing file", "foreign folder"])
@pytest.mark.parametrize("argv", [["count", "resnet18", "--format", "csv"], ["memory", "lenet5"],
                                  ["profile", "lenet5", "--device", "cpu"], ["measure", "lenet5", "--device", "cpu"],
                                  ["study", "depthwise", "--device", "cpu"], ["ceilings", "--device", "cpu"]])
def test_bad_out_is_one_line_rc2_before_any_work(case: str, argv: list[str], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    def no_work(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("work started before --out was checked")
    for target in ("hwprof.cli.count.count", "hwprof.cli.profile.measure_ceilings",
                   "hwprof.memory.estimate.estimate_memory", "hwprof.measuring.runner.measure",
                   "hwprof.hardware.ceilings.measure_ceilings", "hwprof.studies.depthwise.compute_study"):
        monkeypatch.setattr(target, no_work)
    out, says = _bad_paths(tmp_path)[case]
    before = _snapshot(tmp_path)
    t0 = time.perf_counter()
    rc = main([*argv, "--out", out])
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and says in err, err
    assert elapsed < 1.0   # a path check, not a run
    assert _snapshot(tmp_path) == before and _leftovers(tmp_path) == []


def test_bad_out_from_a_fresh_process_in_well_under_a_second(tmp_path: Path) -> None:
    # checked before the commands (and torch) are imported: the interpreter's start is most of it
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "hwprof", "count", "resnet18", "--format", "csv", "--out", "/proc/x.csv"],
                       capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - t0
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert r.stderr.strip().splitlines() == [
        "hwprof count: error: --out /proc/x.csv: cannot create a folder in /proc (No such file or directory)"]
    assert elapsed < 1.0


def test_count_out_is_a_folder_of_every_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "lenet"
    assert main(["count", "lenet5", "--format", "md", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == COUNT_FILES
    assert (out / "count.md").read_text().rstrip("\n") == printed.out.rstrip("\n")   # what was printed, and the rest
    assert (out / "count.txt").read_text().startswith("lenet5 (input 1x28x28, batch 1, float32, inference mode, forward) ")
    assert (out / "count.csv").read_text().startswith("layer,type,")
    assert {r["layer"] for r in json.loads((out / "count.json").read_text())["layers"]} >= {"conv1", "fc2"}
    man = json.loads((out / "manifest.json").read_text())
    assert man["command"] == f"hwprof count lenet5 --format md --out {out}"
    for key in ("hwprof", "torch", "python", "date", "versions"):
        assert man[key], key
    assert man["device"]["type"] == "cpu" and man["files"] == COUNT_FILES
    assert f"wrote {out}/" in printed.err


@pytest.mark.parametrize("fmt, files", [("json", ["ceilings.csv", "ceilings.json", "ceilings.md", "ceilings.txt", "manifest.json"]),
                                         ("csv", ["ceilings.csv", "ceilings.json", "ceilings.md", "ceilings.txt", "manifest.json"])])
def test_ceilings_out_folder(fmt: str, files: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    from cli_helpers import fixed_ceilings

    monkeypatch.setattr("hwprof.hardware.ceilings.measure_ceilings", fixed_ceilings)
    out = tmp_path / "ceil"
    assert main(["ceilings", "--device", "cpu", "--format", fmt, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == files
    assert (out / f"ceilings.{fmt}").read_text().rstrip("\n") == printed.rstrip("\n")


def test_predict_out_is_a_folder_of_every_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # predict (like measure and ceilings) printed one format and wrote only it; README: every format
    out = tmp_path / "pred"
    assert main(["predict", "lenet5", "--on", "H100", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "predict.csv", "predict.json", "predict.md",
                                                     "predict.txt"]
    assert (out / "predict.txt").read_text().rstrip("\n") == printed.rstrip("\n")
    assert (out / "predict.csv").read_text().startswith("layer,kind,")


def test_earlier_result_is_replaced_complete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["count", "lenet5", "--out", str(out)]) == 0
    assert main(["count", "lenet5", "--mode", "train", "--backward", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == COUNT_FILES
    assert "train mode, forward + backward" in (out / "count.txt").read_text()
    assert _leftovers(tmp_path) == []


def test_a_user_file_and_a_nested_result_survive_out_into_an_old_result(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # the repro: R is an hwprof result, then the user puts R/mine/a.csv in it and a second
    # result lands in R/sub; a new `--out R` may replace only the files R's manifest lists, and as
    # R holds more, it replaces nothing and says what is in the way
    out = tmp_path / "R"
    assert main(["count", "lenet5", "--out", str(out)]) == 0
    (out / "mine").mkdir()
    (out / "mine" / "a.csv").write_text("x\n")
    assert main(["count", "alexnet", "--out", str(out / "sub")]) == 0
    before = _snapshot(out)
    capsys.readouterr()
    assert main(["count", "lenet5", "--backward", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hwprof count: error: --out "), err
    assert "mine/" in err and "sub/ (an hwprof result)" in err and "--force" in err
    assert _snapshot(out) == before and _leftovers(tmp_path) == []
    assert (out / "mine" / "a.csv").read_text() == "x\n" and (out / "sub" / "manifest.json").is_file()


def test_force_replaces_an_old_result_that_holds_more(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["count", "lenet5", "--out", str(out)]) == 0
    (out / "stale.txt").write_text("from an older version\n")
    assert main(["count", "lenet5", "--mode", "train", "--backward", "--out", str(out)]) == 2
    assert (out / "stale.txt").exists()
    assert main(["count", "lenet5", "--mode", "train", "--backward", "--out", str(out), "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == COUNT_FILES        # the stale file went with the old folder
    assert _leftovers(tmp_path) == []


def test_force_never_replaces_a_folder_hwprof_did_not_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # --force is about an earlier result holding more; a folder with no hwprof manifest (or one
    # whose manifest lists paths outside it) is never an hwprof result
    foreign = tmp_path / "docs"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work\n")
    (foreign / "manifest.json").write_text(json.dumps({"command": "hwprof count", "files": ["../../etc/x"]}))
    assert main(["count", "lenet5", "--out", str(foreign), "--force"]) == 2
    assert "not an hwprof result" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["manifest.json", "thesis.tex"]


def _saved_result(folder: Path) -> Path:
    """A folder as `hwprof profile --out` leaves it, as far as the --out checks look: a manifest and ceilings.json."""
    from cli_helpers import fixed_ceilings

    folder.mkdir()
    (folder / "ceilings.json").write_text(json.dumps(to_jsonable(fixed_ceilings().to_dict())))
    (folder / "manifest.json").write_text(json.dumps({"command": "hwprof profile lenet5",
                                                      "files": ["ceilings.json", "manifest.json"]}))
    return folder


@pytest.mark.parametrize("argv", [["compare", "{A}", "{B}", "--out", "{A}"],
                                  ["compare", "{A}", "{B}", "--out", "{A}", "--force"],
                                  ["predict", "resnet18", "--on", "{A}", "--out", "{A}"],
                                  ["predict", "resnet18", "--on", "{A}/ceilings.json", "--out", "{A}"],
                                  ["predict", "resnet18", "--on", "H100", "--calibrate", "{B}", "--out", "{B}"],
                                  ["profile", "lenet5", "--ceilings-cache", "{A}/cache", "--out", "{A}"]])
def test_an_output_that_is_an_input_is_refused_before_work(argv: list[str], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    def no_work(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("work started before --out was checked")
    for target in ("hwprof.cli.compare.compare", "hwprof.cli.predict.count", "hwprof.cli.profile.measure_ceilings"):
        monkeypatch.setattr(target, no_work)
    a, b = _saved_result(tmp_path / "A"), _saved_result(tmp_path / "B")
    before = _snapshot(tmp_path)
    rc = main([x.format(A=a, B=b) for x in argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "an input of this command" in err, err
    assert _snapshot(tmp_path) == before


def test_a_folder_created_while_the_command_works_is_not_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # absent when checked; the user creates it (with a file) while hwprof is saving: it stays theirs
    import hwprof.cli.common as common

    out = tmp_path / "run"
    real = common._write_manifest

    def user_creates_it(folder: Path) -> list[str]:
        out.mkdir()
        (out / "theirs.txt").write_text("mine\n")
        return real(folder)
    monkeypatch.setattr(common, "_write_manifest", user_creates_it)
    assert main(["count", "lenet5", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "created by someone else while hwprof was writing" in err, err
    assert [p.name for p in out.iterdir()] == ["theirs.txt"] and _leftovers(tmp_path) == []


def test_a_file_added_to_the_old_result_while_the_command_works_is_kept(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # replaceable when checked; the user adds a file before the rename: the new result goes in, the
    # file is not deleted (the old folder keeps it, aside, with a warning)
    import hwprof.cli.common as common

    out = tmp_path / "run"
    assert main(["count", "lenet5", "--out", str(out)]) == 0
    real = common._write_manifest

    def user_adds_a_file(folder: Path) -> list[str]:
        (out / "notes.txt").write_text("mine\n")
        return real(folder)
    monkeypatch.setattr(common, "_write_manifest", user_adds_a_file)
    assert main(["count", "lenet5", "--backward", "--out", str(out)]) == 2
    assert (out / "notes.txt").read_text() == "mine\n"      # checked again at the rename: now it holds more
    assert "forward + backward" not in (out / "count.txt").read_text() and _leftovers(tmp_path) == []


@pytest.mark.parametrize("case", ["symlink", "long name", "long part"])
def test_odd_out_paths_are_one_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    out = {"symlink": tmp_path / "link", "long name": tmp_path / ("a" * 230),
           "long part": tmp_path / ("b" * 300) / "x"}[case]
    assert main(["count", "lenet5", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hwprof count: error: --out "), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


@pytest.mark.parametrize("raised", [KeyboardInterrupt, OSError])
def test_failure_while_writing_leaves_the_previous_folder(raised: type[BaseException], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["count", "lenet5", "--out", str(out)]) == 0
    before = _snapshot(out)
    real_write = hwprof.files.write_atomic
    written: list[str] = []

    def write_then_fail(path: Any, data: Any) -> Any:
        if written:   # the second file: Ctrl-C, or the disk is full
            raise raised(28, "No space left on device") if raised is OSError else raised()
        written.append(str(path))
        return real_write(path, data)
    monkeypatch.setattr(hwprof.files, "write_atomic", write_then_fail)
    capsys.readouterr()
    rc = main(["count", "lenet5", "--backward", "--out", str(out)])
    err = capsys.readouterr().err
    assert len(written) == 1 and len(err.strip().splitlines()) == 1, err
    if raised is KeyboardInterrupt:
        assert rc == 130 and err == "hwprof count: interrupted\n"
    else:
        assert rc == 2 and "could not write the result" in err and "No space left" in err
    assert _snapshot(out) == before and _leftovers(tmp_path) == []


def test_profile_out_with_a_folder_named_roofline_png(tmp_path: Path, no_ceilings_measured: list[Any],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "prof"
    argv = ["profile", "lenet5", "--device", "cpu", "--quick", "--out", str(out)]
    assert main(argv) == 0
    (out / "roofline.png").unlink()
    (out / "roofline.png").mkdir()          # in the way of the next run's plot
    (out / "roofline.png" / "x").write_text("x")
    assert main(argv) == 2                  # roofline.png/x is not the earlier result's: refused
    assert (out / "roofline.png" / "x").read_text() == "x"
    assert main([*argv, "--force"]) == 0
    # written into a fresh folder, then renamed: complete, the old folder (and its obstacle) gone
    assert (out / "roofline.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    names = {p.name for p in out.iterdir()}
    assert {"layers.csv", "ops.csv", "profile.json", "report.md", "layer_time.png", "manifest.json"} <= names
    assert _leftovers(tmp_path) == []


def test_profile_interrupted_while_saving_leaves_the_previous_folder(tmp_path: Path, no_ceilings_measured: list[Any],
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "prof"
    argv = ["profile", "lenet5", "--device", "cpu", "--quick", "--out", str(out)]
    assert main(argv) == 0
    before = _snapshot(out)
    import hwprof.report.plots as plots

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt
    monkeypatch.setattr(plots, "roofline_plot", interrupted)   # after the CSV/JSON/Markdown files
    capsys.readouterr()
    assert main(argv) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "hwprof profile: interrupted"
    assert _snapshot(out) == before and _leftovers(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == ["prof"]
