"""hwprof.predict: max(FLOPs / roof, bytes / level bandwidth) + op overhead per op, summed per layer
and model; the join's predicted_s, predicted_time_s and residual per layer class; cache-aware
placement leaving "ABOVE ROOF" to real anomalies."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

import hwprof
from hwprof.errors import HwprofError
from hwprof.files import to_jsonable
from hwprof.hardware.ceilings import Ceilings
from hwprof.hardware.levels import MemoryLevel
from hwprof.predict import calibrated, fit_efficiency, predict, predict_layers, predict_ops, residuals
from hwprof.roofline import MathModes

MiB = 2**20
FIXTURE = Path(__file__).parents[1] / "data" / "saved_profile"
# fp32 100 GFLOP/s, bf16 400 GFLOP/s; an L2 of 1 MiB at 200 GB/s, DRAM at 20 GB/s; 1 us per op
LEVELS = (MemoryLevel("L2", MiB, 200e9, MiB, "sweep"), MemoryLevel("DRAM", None, 20e9, None, "copy"))
K = Ceilings("cpu", "test cpu", torch.__version__, "2026-11-30", "measured", {"fp32": 1e11, "bf16": 4e11}, 20e9,
             levels=LEVELS, op_overhead_s=1e-6)


def _ops() -> pd.DataFrame:
    rows = [  # module, phase, op, op_class, dtype, flops, bytes, counted
        ("conv", "fwd", "aten.convolution", "conv", "float32", 2e9, 4 * MiB, True),
        ("relu", "fwd", "aten.relu", "elementwise", "float32", 1e5, 819200, True),
        ("add", "fwd", "aten.add", "elementwise", "float32", 10.0, 80, True),
        ("fc", "fwd", "aten.mm", "matmul", "bfloat16", 4e9, 2 * MiB, True),
        ("odd", "fwd", "aten.foo", "other", "float32", math.nan, 2 * MiB, False),
        ("fc", "bwd", "aten.mm", "matmul", "bfloat16", 8e9, 4 * MiB, True),
    ]
    return pd.DataFrame(rows, columns=["module", "phase", "op", "op_class", "dtype", "flops", "bytes", "counted"])


def test_predict_ops_is_the_roofline_as_a_time_model() -> None:
    out = predict_ops(_ops(), K, MathModes("cpu"))
    conv, relu, add, fc, odd, _ = (out.iloc[i] for i in range(6))
    # conv: 2e9 / 1e11 = 20 ms of compute vs 4 MiB / 20 GB/s (DRAM: 4 MiB > 1 MiB) = 0.2097 ms -> compute
    assert conv["memory_level"] == "DRAM" and conv["compute_s"] == pytest.approx(0.02)
    assert conv["predicted_s"] == pytest.approx(0.02 + 1e-6) and conv["predicted_bound"] == "compute"
    # relu: 819200 B in the L2 at 200 GB/s = 4.096 us vs 1e5 / 1e11 = 1 us -> memory; + 1 us
    assert relu["memory_level"] == "L2" and relu["predicted_s"] == pytest.approx(4.096e-6 + 1e-6)
    assert relu["predicted_bound"] == "memory"
    # add: 80 B / 200 GB/s = 0.4 ns, 10 / 1e11 = 0.1 ns: the 1 us overhead sets its time
    assert add["predicted_bound"] == "overhead" and add["predicted_s"] == pytest.approx(1e-6 + 0.4e-9)
    # fc in bf16 runs on the bf16 roof: 4e9 / 4e11 = 10 ms
    assert fc["roof_key"] == "bf16" and fc["compute_s"] == pytest.approx(0.01)
    # no FLOP formula: bytes alone, 2 MiB / 20 GB/s = 104.86 us
    assert odd["compute_s"] == 0 and odd["predicted_s"] == pytest.approx(2 * MiB / 20e9 + 1e-6)
    no_bf16 = predict_ops(_ops(), dataclasses.replace(K, flop_per_s={"fp32": 1e11}), MathModes("cpu"))
    assert math.isnan(no_bf16.loc[3, "predicted_s"]) and no_bf16.loc[3, "predicted_bound"] == ""   # never zero


def test_layers_sum_their_own_ops_in_the_phases_asked() -> None:
    ops = predict_ops(_ops(), K, MathModes("cpu"))
    fwd = predict_layers(ops, ("fwd",))
    train = predict_layers(ops, ("fwd", "bwd"))
    # fc forward 10 ms + 1 us; with backward 8e9 / 4e11 = 20 ms + 1 us more, 2 ops, the larger working set 4 MiB
    assert fwd.loc["fc", "predicted_s"] == pytest.approx(0.010001)
    assert train.loc["fc", "predicted_s"] == pytest.approx(0.030002) and train.loc["fc", "predicted_ops"] == 2
    assert train.loc["fc", "working_set_bytes"] == 4 * MiB and fwd.loc["fc", "working_set_bytes"] == 2 * MiB


def _tiny() -> tuple[nn.Module, hwprof.counting.counter.CountResult]:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 4))
    return model, hwprof.count(model, "3x8x8", backward=False)


def test_predict_a_counted_model() -> None:
    model, c = _tiny()
    p = predict(c, K)
    assert p.total_s == pytest.approx(float(p.ops["predicted_s"].sum()))
    assert p.total_s == pytest.approx(float(p.layers["predicted_s"].sum()))
    assert list(p.layers.index) == ["0", "1", "3"]                     # Flatten runs no op
    assert p.layers.loc["0", "kind"] == "dense" and p.layers.loc["3", "kind"] == "Linear"
    assert set(p.layers["memory_level"]) == {"L2"}                       # a few KiB each
    # conv: 2 x 8*8*8*27 MACs = 27648 FLOPs: compute 0.276 us; its bytes in the L2 at 200 GB/s
    conv_bytes = float(c.ops.loc[c.ops["module"] == "0", "bytes"].sum())
    assert p.layers.loc["0", "predicted_s"] == pytest.approx(max(27648 / 1e11, conv_bytes / 200e9) + 1e-6)
    assert p.by("kind")["predicted_s"].sum() == pytest.approx(p.total_s)
    with pytest.raises(HwprofError, match=r"no fp32 roof, which 3 ops need"):   # conv, relu, addmm
        predict(c, dataclasses.replace(K, flop_per_s={"bf16": 1e12}))
    with pytest.raises(HwprofError, match="no 'op_class' column"):
        predict(dataclasses.replace(c, ops=c.ops.drop(columns=["op_class"])), K)


def test_residuals_per_class() -> None:
    layers = pd.DataFrame({"kind": ["a", "a", "b", "c"], "time_s": [1.0, 1.0, 4.0, float("nan")],
                           "predicted_s": [0.5, 0.5, 5.0, 1.0]})
    r = residuals(layers, "kind")
    # a: 1.0 predicted vs 2.0 measured = -50%, |gap| 1.0; b: 5 vs 4 = +25%, |gap| 1.0 -> half the gap each
    assert list(r.index) == ["b", "a"] and r.loc["a", "error"] == pytest.approx(-0.5)
    assert r.loc["b", "error"] == pytest.approx(0.25) and r.loc["a", "residual_share"] == pytest.approx(0.5)


# ----------------------------------------------------------------------------- in the join
@pytest.fixture(scope="module")
def saved() -> hwprof.Profile:
    return hwprof.load_profile(FIXTURE)


def test_join_predicts_every_layer_and_the_whole_model(saved: hwprof.Profile) -> None:
    p = hwprof.join(saved.counts, saved.measurement, K)
    s = p.summary
    train_ops = p.ops[p.ops["phase"].isin(["fwd", "bwd"])]
    assert s["predicted_time_s"] == pytest.approx(float(train_ops["predicted_s"].sum()))
    assert s["predicted_time_s"] == pytest.approx(float(p.layers["predicted_s"].sum()))
    assert s["prediction_error"] == pytest.approx(s["predicted_time_s"] / s["whole_model_time_s"] - 1)
    assert s["op_overhead_time_s"] == pytest.approx(len(train_ops) * 1e-6)   # one overhead per op
    assert p.layers.loc["5", "predicted_s"] == 0.0                          # Flatten: a view, no op
    by = s["by_type"]
    assert {"predicted_s", "prediction_error", "residual_share"} <= set(by.columns)
    assert by["predicted_s"].sum() == pytest.approx(s["predicted_time_s"])
    no_roof = hwprof.join(saved.counts, saved.measurement, dataclasses.replace(K, flop_per_s={"bf16": 1e12}))
    assert math.isnan(no_roof.summary["predicted_time_s"])                  # never a partial sum


def test_layers_are_held_to_the_level_their_working_set_fits(saved: hwprof.Profile) -> None:
    """A layer moving bytes faster than DRAM allows but within the L2's bandwidth is no anomaly
    once the ceilings know the L2 (with DRAM alone it is flagged ABOVE ROOF)."""
    relu = saved.layers.loc["2"]                        # ReLU on 2x8x16x16 fp32: 16 KiB in, 16 KiB out per pass
    rate = float(relu["achieved_bytes_per_s"])
    dram_only = dataclasses.replace(K, bytes_per_s=rate / 2, levels=())
    flat = hwprof.join(saved.counts, saved.measurement, dram_only).layers.loc["2"]
    assert flat["memory_level"] == "DRAM" and bool(flat["above_roof"])
    assert flat["pct_of_memory_roof"] == pytest.approx(200.0)
    levels = (MemoryLevel("L2", MiB, 2 * rate, MiB, "sweep"), MemoryLevel("DRAM", None, rate / 2, None, "copy"))
    placed = hwprof.join(saved.counts, saved.measurement, dataclasses.replace(dram_only, levels=levels)).layers.loc["2"]
    assert placed["memory_level"] == "L2" and placed["level_bytes_per_s"] == 2 * rate
    assert not bool(placed["above_roof"]) and placed["pct_of_memory_roof"] == pytest.approx(50.0)


def test_efficiency_per_kind_and_the_calibrated_prediction() -> None:
    conv, relu = ("Conv2d", "conv", "float32"), ("ReLU", "other", "float32")
    rows = [(*conv, "depthwise", 1.0, 4.0), (*conv, "depthwise", 1.0, 4.0), (*conv, "depthwise", 1.0, 2.0),
            (*conv, "dense", 3.0, 4.0), (*relu, "", 1.0, 1.0), (*relu, "", 1.0, 1.0), (*relu, "", 1.0, 2.0),
            (*relu, "", 1.0, float("nan"))]
    a = pd.DataFrame(rows, columns=["type", "op_class", "dtype", "variant", "predicted_s", "time_s"])
    eff = fit_efficiency([a.iloc[:5], a.iloc[5:]])          # two profiles
    # depthwise 3 / 10 = 0.3; the single dense layer is below MIN_LAYERS (3): no key of its own;
    # the conv class (1 + 1 + 1 + 3) / (4 + 4 + 2 + 4) = 6 / 14; ReLU 3 / 4 (the NaN time left out)
    assert eff == pytest.approx({"depthwise|float32": 0.3, "depthwise": 0.3, "class:conv|float32": 6 / 14,
                                 "class:conv": 6 / 14, "ReLU|float32": 0.75, "ReLU": 0.75,
                                 "class:other|float32": 0.75, "class:other": 0.75})
    new = pd.DataFrame({"type": ["Conv2d", "Conv2d", "Linear", "Conv2d"], "variant": ["depthwise", "dense", "", "depthwise"],
                        "op_class": ["conv", "conv", "matmul", "conv"], "dtype": ["float32", "float32", "float32", "bfloat16"],
                        "predicted_s": [0.3, 0.6, 0.5, 0.3]})
    # depthwise fp32 0.3 / 0.3; dense: the conv class 0.6 / (6 / 14) = 1.4; Linear: no key, kept;
    # a bf16 depthwise: no "depthwise|bfloat16", so the kind's 0.3
    assert list(calibrated(new, eff)) == pytest.approx([1.0, 1.4, 0.5, 1.0])
    model, c = _tiny()
    p = predict(c, K, efficiency={"dense|float32": 0.5})
    assert p.layers.loc["0", "calibrated_s"] == pytest.approx(2 * p.layers.loc["0", "predicted_s"])
    assert p.calibrated_total_s == pytest.approx(p.total_s + p.layers.loc["0", "predicted_s"])
    assert any(n.startswith("no measured efficiency for Linear, ReLU") for n in p.notes)


def test_predict_cli_calibrated_by_saved_profiles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hwprof.cli import main

    f = tmp_path / "k.json"
    f.write_text(json.dumps(to_jsonable(K.to_dict())))
    assert main(["predict", "lenet5", "--on", str(f), "--calibrate", str(FIXTURE)]) == 0
    out = capsys.readouterr().out
    assert "calibrated by the measured efficiency of each layer kind: " in out
    assert f"efficiencies (predicted / measured per layer kind, from {FIXTURE}): " in out and "ReLU " in out
