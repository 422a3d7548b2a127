"""`hwprof memory`: prediction, --validate with a fake measure, --fit, formats, user errors."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

import hwprof.memory.validate as validate_mod
from hwprof.cli import main
from hwprof.errors import MeasurementError


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["memory", "lenet5", "--batch", "8", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "predicted memory (MiB)" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()
            if line.split()[:1] and line.split()[0] in ("seed", "seed_per_layer", "formula", "simulated")}
    assert list(rows) == ["seed", "seed_per_layer", "formula", "simulated"]
    # LeNet-5 at batch 8, train with Adam, by hand (MiB = 2**20 B): params 431,080 x 4 = 1,724,320 B = 1.6,
    # grads the same, Adam's 2 states 3,448,640 B = 3.3; feature maps = input 25,088 + leaf outputs (conv1
    # 368,640, pool1 92,160, conv2 102,400, pool2 25,600, fc1 16,000, its in-place relu 16,000 again, fc2
    # 320) = 646,208 B = 0.6, twice in training; seed 000: 4 x 1,724,320 + 2 x 646,208 = 8,189,696 B = 7.8
    # columns: params buffers grads optimizer_state activations_saved inputs transient workspace
    #          allocator_rounding peak_predicted
    assert rows["seed"] == ["1.6", "-", "1.6", "3.3", "0.6", "-", "0.6", "-", "-", "7.8"]
    assert rows["seed_per_layer"] == ["1.6", "-", "-", "-", "0.6", "-", "-", "-", "-", "2.3"]   # 2,370,528 B
    assert "feature maps = input + sum of 7 leaf outputs (1 in-place/view outputs counted again)" in out


def test_csv_and_out_folder(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mem"
    assert main(["memory", "lenet5", "--batch", "8", "--device", "cuda", "--format", "csv", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    df = pd.read_csv(io.StringIO(printed), index_col="predictor")
    assert list(df.index) == ["seed", "seed_per_layer", "formula", "simulated"]
    assert df.loc["formula", "params_bytes"] == 431_080 * 4           # seed 001's LeNet-5, fp32
    assert df.loc["formula", "optimizer_state_bytes"] == 2 * 431_080 * 4     # default optimizer: adam
    assert df.loc["simulated", "reserved_predicted_bytes"] > 0
    # --out is a folder with every format of the result, whichever --format was printed, and a manifest
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "memory.csv", "memory.json", "memory.md",
                                                     "memory.txt"]
    assert (out / "memory.csv").read_text() == printed
    assert pd.read_csv(out / "memory.csv", index_col="predictor").equals(df)
    body = json.loads((out / "memory.json").read_text())
    assert body["model"] == "lenet5" and body["config"]["batch"] == 8
    assert (out / "memory.txt").read_text().startswith("lenet5 (input 1x28x28, batch 8, float32, train, adam) "
                                                       "predicted for cuda\n")
    assert (out / "memory.md").read_text().startswith("| predictor |")
    man = json.loads((out / "manifest.json").read_text())
    assert man["command"] == f"hwprof memory lenet5 --batch 8 --device cuda --format csv --out {out}"
    assert man["device"]["requested"] == "cuda" or man["device"]["type"] == "cuda"   # predicted for a GPU
    assert man["files"] == ["manifest.json", "memory.csv", "memory.json", "memory.md", "memory.txt"]


def test_json_inference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["memory", "lenet5", "--batch", "2", "--mode", "inference", "--format", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["config"]["mode"] == "inference" and body["config"]["optimizer"] is None
    assert body["components"]["grads"] == 0


def test_validate_with_a_fake_measure(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def measure(model: Any, inputs: Any, **kw: Any) -> Any:
        return SimpleNamespace(memory={"alloc_peak_bytes": None, "reserved_peak_bytes": None,
                                       "nvml_used_peak_bytes": None, "nvml_baseline_bytes": None,
                                       "rss_peak_bytes": 300_000_000, "rss_baseline_bytes": 200_000_000})
    monkeypatch.setattr(validate_mod, "load_measure", lambda: measure)
    assert main(["memory", "lenet5", "--batch", "8", "--device", "cpu", "--validate", "--format", "csv"]) == 0
    df = pd.read_csv(io.StringIO(capsys.readouterr().out), index_col="predictor")
    assert (df["measured_rss_delta_bytes"] == 100_000_000).all()
    # on the CPU the prediction is compared with the RSS growth: the predicted peak minus what was allocated
    # before the baseline, params 1,724,320 + input 25,088 = 1,749,408 B. Seed 000: 8,189,696 - 1,749,408 =
    # 6,440,288 B predicted, error 100 x (6,440,288 - 1e8) / 1e8 = -93.559712%
    assert df.loc["seed", "predicted_delta_bytes"] == 6_440_288
    assert df.loc["seed", "error_pct"] == pytest.approx(-93.559712)
    assert (df["error_pct"] == df["rss_error_pct"]).all()
    assert main(["memory", "lenet5", "--batch", "8", "--device", "cpu", "--validate"]) == 0
    assert "validation on cpu" in capsys.readouterr().out


def test_fit_with_validation(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def measure(model: Any, inputs: Any, *, batch: int | None = None, **kw: Any) -> Any:
        if batch is not None and batch > 3:
            raise MeasurementError("fwd", batch, "out of memory", oom=True)
        return SimpleNamespace(memory={"rss_peak_bytes": 2, "rss_baseline_bytes": 1})
    monkeypatch.setattr(validate_mod, "load_measure", lambda: measure)
    assert main(["memory", "lenet5", "--device", "cpu", "--fit", "16MB", "--validate", "--format", "csv"]) == 0
    df = pd.read_csv(io.StringIO(capsys.readouterr().out))
    predicted = df[df["kind"] == "predicted"]
    fit = int(predicted.loc[predicted["fits"], "batch"].max())
    assert fit >= 1 and not predicted.loc[predicted["batch"] == fit + 1, "fits"].any()
    measured = df[df["kind"] == "measured"]
    assert list(measured["batch"]) == [fit, fit + 1]
    assert main(["memory", "lenet5", "--device", "cpu", "--fit", "16MB"]) == 0
    assert "largest batch predicted to fit" in capsys.readouterr().out


def test_user_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["memory", "no_such_model"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert main(["memory", "lenet5", "--input", "1x5x5"]) == 2       # LeNet's conv2 cannot run on 1x5x5
    assert "error" in capsys.readouterr().err
