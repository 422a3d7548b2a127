"""Derived roofline metrics on synthetic records (exact arithmetic)."""

from __future__ import annotations

import pandas as pd
import pytest

from hwprof.roofline import MathModes, derive, ridge_intensity, roof_key

ROOFS = {"fp32": 50e12, "tf32": 400e12, "bf16": 750e12, "fp16": 750e12}
BW = 3e12


def test_roof_selection_follows_math_mode() -> None:
    cuda = MathModes("cuda", cudnn_tf32=True, matmul_tf32=False)
    assert roof_key("float32", "conv", cuda) == "tf32"        # cuDNN default: TF32 convs
    assert roof_key("float32", "matmul", cuda) == "fp32"      # matmuls: TF32 off by default
    assert roof_key("float32", "matmul", MathModes("cuda", matmul_tf32=True)) == "tf32"
    assert roof_key("float32", "conv", MathModes("cuda", cudnn_tf32=False)) == "fp32"
    assert roof_key("bfloat16", "conv", cuda) == "bf16"
    assert roof_key("bfloat16", "other", cuda) == "fp32"      # elementwise: no tensor cores
    assert roof_key("float32", "conv", MathModes("cpu")) == "fp32"


@pytest.mark.parametrize("op_class", ["matmul", "attention", "rnn"])
def test_matmul_attention_and_rnn_follow_the_cublas_switch(op_class: str) -> None:
    assert roof_key("float32", op_class, MathModes("cuda", cudnn_tf32=True, matmul_tf32=False)) == "fp32"
    assert roof_key("float32", op_class, MathModes("cuda", cudnn_tf32=False, matmul_tf32=True)) == "tf32"
    assert roof_key("bfloat16", op_class, MathModes("cuda")) == "bf16"


@pytest.mark.parametrize("op_class", ["norm", "elementwise", "view", "pool", "reduction", "other"])
def test_every_other_class_is_held_to_the_fp32_roof(op_class: str) -> None:
    all_tf32 = MathModes("cuda", cudnn_tf32=True, matmul_tf32=True)
    assert roof_key("float32", op_class, all_tf32) == "fp32"
    assert roof_key("bfloat16", op_class, all_tf32) == "fp32"     # no tensor cores for elementwise work
    assert roof_key("float16", op_class, all_tf32) == "fp32"
    assert roof_key("float64", op_class, all_tf32) == "fp64"


def test_bound_efficiency_and_flag() -> None:
    df = pd.DataFrame({
        # depthwise-like: 2.25 FLOP/B -> memory roof 6.75 TFLOP/s; achieved 1.75 TFLOP/s
        "flops": [2.25e9, 1e12, 1e9, 1e9],
        "bytes": [1e9, 1e9, 1e6, 0],
        "time_s": [2.25e9 / 1.75e12, 1e12 / 300e12, 1e9 / 800e12, 1e-3],
        "roof_key": ["tf32", "tf32", "bf16", "fp32"],
    }, index=["dw", "dense", "winograd", "nobytes"])
    out = derive(df, ROOFS, BW)
    dw = out.loc["dw"]
    assert dw["intensity"] == 2.25
    assert dw["attainable_flop_per_s"] == pytest.approx(2.25 * 3e12)      # 6.75e12 < 400e12
    assert dw["bound"] == "memory"
    assert dw["efficiency"] == pytest.approx(1.75e12 / 6.75e12)
    assert dw["pct_of_memory_roof"] == pytest.approx(100 * (1e9 / (2.25e9 / 1.75e12)) / 3e12)
    dense = out.loc["dense"]
    assert dense["bound"] == "compute" and dense["attainable_flop_per_s"] == 400e12
    assert dense["efficiency"] == pytest.approx(300 / 400)
    # 800 TFLOP/s "achieved" over a 750 roof: flagged, never clipped
    w = out.loc["winograd"]
    assert w["above_roof"] and w["achieved_flop_per_s"] == pytest.approx(800e12)
    assert out.loc["nobytes"].isna()["intensity"] and out.loc["nobytes", "bound"] == ""
    assert not out.loc["dw", "above_roof"]


def test_ridge() -> None:
    assert ridge_intensity(400e12, 3e12) == pytest.approx(133.333, rel=1e-4)
