"""`hwprof profile`: the structure of what it prints and writes, the model run once before the
ceilings, the dense-twin comparison from paired timing, exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from cli_helpers import fixed_ceilings

from hwprof.cli import main
from hwprof.cli import profile as cli_profile
from hwprof.measuring.paired import PairedTiming

LENET_LAYERS = ["conv1", "pool1", "conv2", "pool2", "fc1", "relu", "fc2"]
TABLE_COLUMNS = ["type", "output", "flops", "time", "predicted", "time%", "flop/s", "%roof", "roof", "AI", "level", "bound"]
PROFILE_FILES = ["ceilings.json", "count.json", "layer_time.png", "layer_time.svg", "layers.csv", "manifest.json",
                 "measurement.json", "ops.csv", "profile.json", "report.html", "report.md", "roofline.png", "roofline.svg",
                 "trace.json"]


def _run(*argv: str, cwd: Any = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hwprof", "profile", *argv], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


@pytest.fixture(scope="module")
def lenet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """`hwprof profile lenet5 --quick --out DIR` in this process, with fixed ceilings."""
    out = tmp_path_factory.mktemp("profile") / "lenet"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli_profile, "measure_ceilings", fixed_ceilings)
        import contextlib
        import io

        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            rc = main(["profile", "lenet5", "--device", "cpu", "--quick", "--out", str(out)])
    yield SimpleNamespace(rc=rc, out=out, stdout=stdout.getvalue(), stderr=stderr.getvalue())


def test_profile_prints_header_table_and_summary(lenet: SimpleNamespace) -> None:
    assert lenet.rc == 0, lenet.stderr
    lines = lenet.stdout.splitlines()
    assert lines[0] == "== lenet5 on test cpu: inference, float32, batch 1"
    assert lines[1].split() == TABLE_COLUMNS and lines[2].strip() == "layer"
    rows = lines[3:lines.index("")]
    assert sorted(r.split()[0] for r in rows) == sorted(LENET_LAYERS)    # one row per leaf layer
    times = [float(re.search(r" (\d+\.\d{3}) ms ", r)[1]) for r in rows]  # type: ignore[index]
    assert times == sorted(times, reverse=True)                           # slowest first
    for r in rows:
        assert re.search(r" fp32 +\d+\.\d\d +(L1|L2|L3|LLC|DRAM|HBM|-)? +(memory|compute)( ABOVE ROOF)?$", r), r
    summary = lines[lines.index("") + 1:]
    assert summary[0].startswith("device test cpu: roofs fp32 300.00GFLOP/s, bf16 2.40TFLOP/s, bandwidth 25.00GB/s")
    assert re.match(r"whole model \(forward\): \d+\.\d{3} ms for 4\.60MFLOPs = ", summary[1])   # LeNet-5 fwd: 4.60 MFLOPs
    assert "Dense twin" not in lenet.stdout                                      # one model: no comparison


def test_profile_writes_its_files_and_their_columns(lenet: SimpleNamespace) -> None:
    out = lenet.out
    assert sorted(p.name for p in out.iterdir()) == PROFILE_FILES
    layers = pd.read_csv(out / "layers.csv", index_col="path")
    assert sorted(layers.index) == sorted(LENET_LAYERS)
    for col in ("type", "flops", "bytes", "time_s", "time_share", "flops_share", "achieved_flop_per_s", "intensity",
                "attainable_flop_per_s", "efficiency", "bound", "roof_key", "variant", "above_roof"):
        assert col in layers.columns, col
    assert (layers["time_s"] > 0).all() and layers.loc["conv1", "variant"] == "dense"
    ops = pd.read_csv(out / "ops.csv")
    for col in ("module", "phase", "op", "flops", "bytes", "time_s", "roof_key", "bound"):
        assert col in ops.columns, col
    assert set(ops["phase"]) == {"fwd"} and set(ops["module"]) <= set(LENET_LAYERS)
    assert "aten.convolution" in set(ops["op"])
    body = json.loads((out / "profile.json").read_text())
    assert {"summary", "config", "notes", "phases", "memory", "ceilings", "layers"} <= set(body)
    assert (out / "roofline.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    man = json.loads((out / "manifest.json").read_text())
    assert man["command"] == f"hwprof profile lenet5 --device cpu --quick --out {out}"
    assert man["torch"] and man["files"] == PROFILE_FILES
    assert (out / "report.md").read_text().startswith("# ")


def test_no_progress_bars_when_stderr_is_not_a_terminal(lenet: SimpleNamespace) -> None:
    # stderr is a StringIO here: no tqdm bar, only hwprof's own lines
    assert "\r" not in lenet.stderr and "it/s" not in lenet.stderr, lenet.stderr
    assert all(line.startswith("hwprof: ") for line in lenet.stderr.splitlines()), lenet.stderr


def test_a_broken_model_fails_before_the_ceilings(user_models: Path, no_ceilings_measured: list[Any],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "hwprof_test_models:raises", "--input", "4", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "hwprof profile: error: module '1' (Boom) failed on input shapes [(1, 4)]: boom: this layer is broken"]
    assert no_ceilings_measured == []          # nothing long ran before the model's own forward


def test_twin_lines_take_the_paired_ratio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_profile, "comparison_lines", lambda a, b: [
        "MobileNetV1: the 13 depthwise layers hold ...", "Dense twin: 8.4x the FLOPs but only 0.7x the time"])
    sep = SimpleNamespace(config={"model": "mobilenet_v1"}, summary={"flops": 1.0e9})
    dense = SimpleNamespace(config={"model": "mobilenet_v1_dense"}, summary={"flops": 8.4e9})
    # three alternating pairs; the machine slows down 2x in the second: each pair's ratio stays 3
    paired = PairedTiming(("mobilenet_v1", "mobilenet_v1_dense"),
                          {"mobilenet_v1": [0.1, 0.2, 0.1], "mobilenet_v1_dense": [0.3, 0.6, 0.3]}, "mobilenet_v1")
    lines = cli_profile.twin_lines(sep, dense, paired, train=False)  # type: ignore[arg-type]
    # medians 0.1 s and 0.3 s: achieved 8.4e9 / 0.3 = 28 GFLOP/s and 1e9 / 0.1 = 10 GFLOP/s
    assert lines == ["MobileNetV1: the 13 depthwise layers hold ...",
                     "Dense twin: 8.4x the FLOPs of MobileNetV1 for 3.0x the time (median of 3 alternating pairs, "
                     "q25-q75 3.00-3.00x; forward 300.00 ms vs 100.00 ms); achieved 28.00GFLOP/s vs 10.00GFLOP/s."]


TWIN = re.compile(r"Dense twin: (?P<flops>\d+\.\d)x the FLOPs of MobileNetV1 for (?P<ratio>\d+\.\d)x the time "
                  r"\(median of (?P<n>\d+) alternating pairs, q25-q75 (?P<q25>\d+\.\d\d)-(?P<q75>\d+\.\d\d)x; "
                  r"forward (?P<tb>\d+\.\d\d) ms vs (?P<ta>\d+\.\d\d) ms\); achieved \S+FLOP/s vs \S+FLOP/s\.$")


def test_default_profiles_mobilenet_and_dense_twin(tmp_path: Path) -> None:
    r = _run("--device", "cpu", "--quick", "--batch", "1", "--ceilings-cache", str(tmp_path / "c"),
             "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"== mobilenet_v1 on {lines[0].split(' on ', 1)[1].split(':')[0]}: inference, float32, batch 1"
    comp = lines[lines.index("== MobileNetV1 vs its dense twin (measured in this run)") + 1:]
    assert comp[0].startswith("MobileNetV1: the 13 depthwise layers hold ")
    # on a machine other processes load, a third line says so (this suite often runs on one)
    assert len(comp) == 2 or (len(comp) == 3 and comp[2].startswith("Warning: the 1-minute load average was "))
    m = TWIN.match(comp[1])
    assert m is not None, comp[1]
    # FLOPs: 9.75 G vs 1.16 G forward (README's counts) -> 8.4x. The times are real here and not checked;
    # the line's ratio, quartiles and achieved rates from given times: test_twin_lines_take_the_paired_ratio
    assert m["flops"] == "8.4" and int(m["n"]) >= 3
    out = tmp_path / "o"
    assert sorted(p.name for p in out.iterdir()) == ["comparison.md", "manifest.json", "mobilenet_v1",
                                                    "mobilenet_v1_dense"]
    for name in ("mobilenet_v1", "mobilenet_v1_dense"):
        assert sorted(p.name for p in (out / name).iterdir()) == PROFILE_FILES
    assert comp[1] in (out / "comparison.md").read_text()
    assert json.loads((out / "manifest.json").read_text())["command"].startswith("hwprof profile --device cpu")


def test_unknown_model_and_bad_input_exit_2(tmp_path: Path) -> None:
    for argv in (["no_such_model"], ["lenet5", "--input", "2xx"]):
        r = _run(*argv, "--device", "cpu", "--quick", "--ceilings-cache", str(tmp_path))
        assert r.returncode == 2, (argv, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1


def test_twin_lines_warn_when_other_processes_compete(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_profile, "comparison_lines", lambda a, b: [])
    monkeypatch.setattr(cli_profile.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    sep = SimpleNamespace(config={"model": "a"}, summary={"flops": 1.0e9})
    dense = SimpleNamespace(config={"model": "b"}, summary={"flops": 8.4e9})

    def paired(load: tuple[float, float]) -> PairedTiming:
        return PairedTiming(("a", "b"), {"a": [0.1], "b": [0.3]}, "a", load_average=load)
    # this run's 2 threads alone make a load of ~2: no other process, no warning
    assert len(cli_profile.twin_lines(sep, dense, paired((2.1, 2.6)), False, threads=2)) == 1  # type: ignore[arg-type]
    # load 5.7 with 2 threads of our own: ~3.7 other runnable processes on 2 CPUs
    lines = cli_profile.twin_lines(sep, dense, paired((5.2, 5.7)), False, threads=2)  # type: ignore[arg-type]
    assert lines[-1].startswith("Warning: the 1-minute load average was 5.7 on 2 CPUs during this comparison "
                                "(this run's 2 threads included)")
