"""profile(): the join of counts, measured times and ceilings (CPU; ceilings injected)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hwprof
from hwprof.hardware.ceilings import Ceilings
from hwprof.profiler import join_layers, layer_variant, whole_model_time_s
from hwprof.roofline import MathModes

FAKE_CEILINGS = Ceilings("cpu", "test-cpu", torch.__version__, "2026-11-24", "measured",
                         {"fp32": 100e9, "bf16": 400e9}, 20e9)


def test_layer_variant() -> None:
    assert layer_variant(nn.Conv2d(8, 8, 3, groups=8)) == "depthwise"
    assert layer_variant(nn.Conv2d(8, 16, 3, groups=2)) == "grouped"
    assert layer_variant(nn.Conv2d(8, 16, 1)) == "pointwise"
    assert layer_variant(nn.Conv2d(8, 16, 3)) == "dense"
    assert layer_variant(nn.Linear(3, 3)) == ""


def test_join_uses_self_counts_and_self_times() -> None:
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.ReLU())
    c = hwprof.count(model, "4x8x8", backward=False)
    import pandas as pd

    times = pd.DataFrame({"fwd_s": [1e-3, 2e-3, 0.0], "bwd_s": [0.0, 0.0, 0.0]}, index=["0", "1", ""])
    rows = join_layers(c, times, train=False, modes=MathModes("cpu"), variants={"0": "depthwise"})
    assert list(rows.index) == ["0", "1"]  # the root does no work of its own here
    # depthwise 3x3 on 1x4x8x8: MACs = 8*8*4*9 = 2304 -> 4608 FLOPs in 1 ms
    assert rows.loc["0", "flops"] == 4608 and rows.loc["0", "time_s"] == 1e-3
    assert rows.loc["0", "time_share"] == pytest.approx(1 / 3)
    assert rows.loc["0", "op_class"] == "conv" and rows.loc["1", "op_class"] == "other"
    assert rows.loc["0", "roof_key"] == "fp32"


def test_whole_model_time_excludes_step() -> None:
    import pandas as pd

    ph = pd.DataFrame({"median_s": [0.5, 1.0, 2.0, 4.0]}, index=["fwd_nograd", "fwd", "bwd", "step"])
    assert whole_model_time_s(ph, train=False) == 0.5
    assert whole_model_time_s(ph, train=True) == 3.0


def test_profile_end_to_end_cpu(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Flatten(), nn.Linear(8 * 16 * 16, 10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    p = hwprof.profile(model, "3x16x16", device="cpu", batch=2, mode="train", optimizer="sgd",
                       budget_s=0.05, ceilings=FAKE_CEILINGS, name="tiny")
    lay = p.layers
    assert {"achieved_flop_per_s", "intensity", "attainable_flop_per_s", "efficiency", "bound",
            "time_share", "above_roof"} <= set(lay.columns)
    # train: headline FLOPs = fwd + bwd
    assert (lay["flops"] == lay["flops_fwd"] + lay["flops_bwd"]).all()
    assert lay.loc["3", "variant"] == "depthwise"
    assert (lay["time_s"] > 0).all()
    assert p.summary["flops"] == p.counts.totals["flops_fwd"] + p.counts.totals["flops_bwd"]
    assert 0 < p.summary["fraction_of_peak"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # model untouched
    files = {f.name for f in p.save(tmp_path)}
    assert {"layers.csv", "ops.csv", "profile.json", "report.md", "manifest.json", "roofline.png",
            "roofline.svg", "layer_time.png"} <= files


def test_join_ops_aligns_around_extra_measured_ops() -> None:
    import pandas as pd

    from hwprof.profiler import join_ops

    counted = pd.DataFrame({"phase": ["fwd", "fwd", "bwd", "bwd"], "op": ["aten.addmm", "aten.relu", "aten.mm", "aten.mm"],
                            "dtype": ["float32"] * 4})
    # the measured pass also ran the loss (sum, ones_like), and one op the count decomposed differently
    measured = pd.DataFrame({"phase": ["fwd", "fwd", "fwd", "fwd", "bwd", "bwd"],
                             "op": ["aten.addmm", "aten.relu", "aten.sum", "aten.ones_like", "aten.mm", "aten.bmm"],
                             "time_s": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    out = join_ops(counted, measured, MathModes("cpu"))
    assert list(out["time_s"].fillna(-1)) == [1.0, 2.0, 5.0, -1]  # the unmatched op keeps NaN, never a guess
    assert list(out["roof_key"]) == ["fp32"] * 4


def test_profile_ops_have_measured_times() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    p = hwprof.profile(model, "3x8x8", device="cpu", batch=2, budget_s=0.05, ceilings=FAKE_CEILINGS)
    assert p.summary["ops_matched_share"] == 1.0
    assert (p.ops["time_s"] > 0).all() and "achieved_flop_per_s" in p.ops.columns
