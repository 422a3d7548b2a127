"""hwprof compare: saved profiles joined per layer (speedups, bound changes, moves), folders of
earlier hwprof versions read from what they saved, one-line reasons otherwise, and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from hwprof.cli import main
from hwprof.compare import Run, compare, load_run, summary_lines, table
from hwprof.errors import HwprofError

ROOT = Path(__file__).parents[2]
FIXTURE = ROOT / "tests" / "data" / "saved_profile"
LEGACY = ROOT / "tests" / "data" / "legacy_profile_2026-11-24"   # layers.csv + profile.json as hwprof saved them then


def _run(label: str, times: list[float], bounds: list[str], flops: float = 1e9) -> Run:
    idx = ["conv", "bn", "relu"]
    layers = pd.DataFrame({"type": ["Conv2d", "BatchNorm2d", "ReLU"], "variant": ["dense", "", ""],
                           "time_s": times, "achieved_flop_per_s": [flops / t for t in times],
                           "intensity": [10.0, 0.5, 0.125], "bound": bounds, "efficiency": [0.5, 0.8, 0.9]},
                          index=pd.Index(idx, name="path"))
    summary = {"whole_model_time_s": sum(times) * 1.1, "flops": 3 * flops, "achieved_flop_per_s": 3 * flops / sum(times)}
    return Run(label, Path(label), layers, summary, {"model": "m", "dtype": label, "batch": 8}, None)


def test_speedup_per_layer_and_bound_changes() -> None:
    a = _run("fp32", [4e-3, 1e-3, 1e-3], ["compute", "memory", "memory"])
    b = _run("bf16", [1e-3, 2e-3, 1e-3], ["memory", "memory", "memory"])
    c = compare([a, b])
    # speedup = baseline time / run time: conv 4 / 1 = 4x, bn 1 / 2 = 0.5x, relu 1x
    assert list(c.layers["speedup@bf16"]) == [4.0, 0.5, 1.0]                  # sorted by the baseline's time
    assert list(c.layers.index) == ["conv", "bn", "relu"]
    assert list(c.bound_changes.index) == ["conv"] and list(c.bound_changes.loc["conv"]) == ["compute", "memory"]
    # whole model: 6.6 ms vs 4.4 ms -> 1.5x
    assert c.whole.loc["bf16", "speedup"] == pytest.approx(1.5) and c.whole.loc["fp32", "speedup"] == 1.0
    shown = table(c)
    assert shown.loc["conv", "speedup bf16"] == "4.00x" and shown.loc["conv", "bound"] == "compute -> memory"
    lines = summary_lines(c)
    assert lines[0].startswith("bf16 vs fp32: whole model 1.50x") and "largest gain conv (4.00x)" in lines[0]
    assert lines[1].startswith("bound changed in 1 of 3 layers: conv (compute -> memory)")
    moves = c.moves()
    assert list(moves["achieved_flop_per_s_b"]) == [1e12, 5e11, 1e12] and list(moves["layer_type"]) == ["dense", "BatchNorm2d", "ReLU"]


def test_labels_made_unique_and_layers_not_in_every_run_noted(tmp_path: Path) -> None:
    a, b = _run("x", [1e-3] * 3, ["memory"] * 3), _run("x", [1e-3] * 3, ["memory"] * 3)
    a.path, b.path = tmp_path / "one" / "x", tmp_path / "two" / "x"    # two folders named x
    b.layers = b.layers.drop(index="relu")
    c = compare([a, b])
    assert c.labels == ["one/x", "two/x"]
    assert list(c.layers.index) == ["conv", "bn"] and any("1 layer(s) not in every run" in n for n in c.notes)
    with pytest.raises(HwprofError, match="two or more saved profiles"):
        compare([a])
    d = _run("y", [1e-3] * 3, ["memory"] * 3)
    d.layers.index = pd.Index(["p", "q", "r"])
    with pytest.raises(HwprofError, match="no layer in common"):
        compare([a, d])


def test_a_saved_profile_and_one_of_an_earlier_version() -> None:
    now = load_run(FIXTURE)
    assert now.read_as == "hwprof.load_profile" and "predicted_s" in now.layers and now.ceilings is not None
    old = load_run(LEGACY / "mobilenet_v1")
    assert old.read_as.startswith("layers.csv and profile.json, as saved (an earlier hwprof: ")
    assert "count.json, measurement.json, ceilings.json missing" in old.read_as
    assert old.summary["whole_model_time_s"] == pytest.approx(0.095694, rel=1e-4)   # the README's 95.694 ms
    assert old.ceilings is not None and old.ceilings.roof("fp32") == pytest.approx(401.36e9, rel=1e-4)
    c = compare([old, load_run(LEGACY / "mobilenet_v1_dense")])
    # same layer names in both: the stem, the pool and the classifier (MobileNetV1's blocks differ)
    assert set(c.layers.index) == {"features.0.0", "features.0.1", "features.0.2", "pool", "fc"}
    assert c.whole.loc["mobilenet_v1_dense", "speedup"] == pytest.approx(95.694 / 265.608, rel=1e-3)


def test_what_is_no_saved_profile_gets_one_line(tmp_path: Path) -> None:
    with pytest.raises(HwprofError, match="not a folder"):
        load_run(tmp_path / "absent")
    (tmp_path / "report.md").write_text("# a report\n")
    with pytest.raises(HwprofError) as info:
        load_run(tmp_path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{tmp_path}: cannot compare: ")
    assert "count.json, measurement.json, ceilings.json, profile.json missing" in msg and "no layers.csv" in msg
    (tmp_path / "layers.csv").write_text("garbage\x00")
    (tmp_path / "profile.json").write_text("{not json")
    with pytest.raises(HwprofError, match="unreadable layers.csv/profile.json"):
        load_run(tmp_path)


def test_cli_compares_and_saves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(FIXTURE, a)
    shutil.copytree(FIXTURE, b)
    m = json.loads((b / "measurement.json").read_text())
    for row in m["layers"]:            # run b: every layer twice as fast
        for col in ("fwd_s", "bwd_s"):
            row[col] = row[col] / 2 if row[col] is not None else None
    (b / "measurement.json").write_text(json.dumps(m))
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--labels", "before,after", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "after vs before: whole model 1.00x" in text and "per layer median 2.00x" in text
    names = sorted(p.name for p in out.iterdir())
    assert names == ["compare.csv", "compare.json", "compare.md", "manifest.json", "moves_after.png",
                     "moves_after.svg", "whole.csv"]
    assert json.loads((out / "manifest.json").read_text())["command"].startswith("hwprof compare ")
    # an earlier result (it has hwprof's manifest) is replaced, as with every command's --out
    assert main(["compare", str(a), str(b), "--labels", "before,after", "--out", str(out)]) == 0
    saved = pd.read_csv(out / "compare.csv", index_col=0)
    assert (saved["speedup@after"].dropna() == 2.0).all()
    assert "![moves_after.png](moves_after.png)" in (out / "compare.md").read_text()
    assert main(["compare", str(a), str(b), "--labels", "one"]) == 2
    assert "--labels names 1 runs, but 2 folders are given" in capsys.readouterr().err
