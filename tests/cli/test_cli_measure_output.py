"""`hwprof measure`: the structure of what it prints and writes (times vary; their layout does not)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from hwprof.cli import main

LENET_MODULES = ["", "conv1", "pool1", "conv2", "pool2", "fc1", "relu", "fc2"]   # root first, then call order
MS = r"\d+(\.\d+)?(e[+-]\d+)? ms"


def _measure(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["measure", "lenet5", "--device", "cpu", "--budget", "0.01", "--warmup", "1", *argv]) == 0
    return capsys.readouterr().out


def _table(lines: list[str], title: str) -> tuple[list[str], list[list[str]]]:
    """(header columns, rows split on whitespace) of the table printed under ``title``."""
    i = lines.index(title)
    end = lines.index("", i)
    body = lines[i + 1:end]
    first_row = 2 if body[1].split() == [body[1].strip()] else 1   # pandas prints the index name on its own line
    return body[0].split(), [r.split() for r in body[first_row:]]


def test_measure_text_layout(capsys: pytest.CaptureFixture[str]) -> None:
    lines = _measure(capsys, "--per-layer").splitlines()
    assert re.fullmatch(r"lenet5 \(input 1x28x28, batch 1, float32, inference\) on cpu: .+, torch \S+, threads \d+",
                        lines[0]), lines[0]
    cols, rows = _table(lines, "phases (times in ms; raw seconds in csv/json):")
    assert cols == ["median", "iqr", "min", "mean", "reps", "iqr_over_median"]
    assert [r[0] for r in rows] == ["fwd_nograd"]
    assert re.fullmatch(rf"fwd_nograd +{MS} +{MS} +{MS} +{MS} +\d+ +\d+\.\d%", " ".join(rows[0]))
    assert "memory:" in lines
    cols, rows = _table(lines, "per layer (self = inclusive - children; times in ms):")
    assert cols == ["type", "is_leaf", "depth", "calls", "fwd_self", "bwd_self", "fwd_incl", "bwd_incl"]
    assert [r[0] for r in rows] == ["<root>", *LENET_MODULES[1:]]
    assert [r[1] for r in rows] == ["LeNet5", "Conv2d", "MaxPool2d", "Conv2d", "MaxPool2d", "Linear", "ReLU", "Linear"]
    assert any(re.match(rf"fwd: whole model {MS}, sum of per-layer self {MS}", ln) for ln in lines)
    last_block = lines[len(lines) - lines[::-1].index(""):]      # after the last blank line: the notes
    assert last_block and all(ln.startswith("note: ") for ln in last_block)


def test_measure_csv_and_json_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layers = pd.read_csv(io.StringIO(_measure(capsys, "--per-layer", "--format", "csv")), keep_default_na=False)
    assert list(layers.columns) == ["module", "type", "is_leaf", "depth", "calls", "fwd_s", "bwd_s", "fwd_incl_s",
                                    "bwd_incl_s"]
    assert list(layers["module"]) == LENET_MODULES
    out = tmp_path / "train"
    phases = pd.read_csv(io.StringIO(_measure(capsys, "--mode", "train", "--format", "csv", "--out", str(out))))
    assert list(phases.columns) == ["phase", "median_s", "iqr_s", "min_s", "mean_s", "reps", "iqr_over_median"]
    assert list(phases["phase"]) == ["fwd", "bwd"] and (phases["median_s"] > 0).all()
    # --out: every format whatever --format printed (README), and the manifest: the printed CSV,
    # the whole record as JSON, the tables in Markdown, the table view
    every = ["manifest.json", "measure.csv", "measure.json", "measure.md", "measure.txt"]
    assert sorted(p.name for p in out.iterdir()) == every
    assert pd.read_csv(out / "measure.csv").equals(phases)
    assert [r["phase"] for r in json.loads((out / "measure.json").read_text())["phases"]] == ["fwd", "bwd"]
    assert (out / "measure.md").read_text().startswith("## phases") and "phases (times in ms" in (out / "measure.txt").read_text()
    out = tmp_path / "json"
    body = json.loads(_measure(capsys, "--format", "json", "--out", str(out)))
    assert {"model", "config", "phases", "timings", "memory", "device", "notes"} <= set(body)
    assert [p["phase"] for p in body["phases"]] == ["fwd_nograd"]
    assert sorted(p.name for p in out.iterdir()) == every
    assert json.loads((out / "measure.json").read_text()) == body
