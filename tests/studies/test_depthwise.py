"""The depthwise study: grid, per-point counts against closed-form formulas, OOM handling,
roofline columns, summary numbers vs the CSV, plots, FasterNet table, model shares, ncu parsing, CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from torch import nn

import hwprof
from hwprof.errors import MeasurementError
from hwprof.hardware.ceilings import Ceilings
from hwprof.roofline import MathModes
from hwprof.studies import depthwise as D

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CEILINGS = Ceilings("cpu", "test cpu", torch.__version__, "2026-11-24", "measured", {"fp32": 3.0e11, "bf16": 2.4e12},
                    2.5e10)


@dataclass
class FakeStats:
    """What time_fn returns, with a fixed median (no real timing in plumbing tests)."""

    median_s: float = 1e-3
    iqr_s: float = 1e-5
    min_s: float = 9e-4
    reps: int = 3


def fake_time_fn(fn: Any, **kwargs: Any) -> FakeStats:
    fn()   # the timed callable must run
    return FakeStats()


def tiny_config(**overrides: Any) -> D.SweepConfig:
    base: dict[str, Any] = dict(shapes=((32, 8),), batches=(2,), dtypes=("fp32", "bf16"),
                                channels_last=(False, True), budget_s=0.001, warmup=0, min_reps=1)
    base.update(overrides)
    return D.SweepConfig(**base)


# ----------------------------------------------------------------------------- grid and operators
def test_grid_has_every_supported_point_and_skips_impossible_groups() -> None:
    cfg = tiny_config(shapes=((32, 8), (16, 8)))
    points = D.sweep_points(cfg)
    # C=32: all 9 operators; C=16: grouped g=32 impossible -> 8. x 2 dtypes x 2 formats x 2 passes x 1 batch.
    assert len(points) == (9 + 8) * 2 * 2 * 2
    assert not [p for p in points if p.channels == 16 and p.op == "grouped_3x3_g32"]
    assert len(D.sweep_points(D.default_config())) == 7 * 2 * 2 * 2 * 2 * 9   # 7 shapes, batch 1/64


@pytest.mark.parametrize("op", list(D.OPERATORS))
@pytest.mark.parametrize("channels_last", [False, True])
def test_operators_keep_the_shape(op: str, channels_last: bool) -> None:
    p = D.Point(op, 32, 7, 2, "fp32", channels_last, True)
    module, x = D.build_point(p, "cpu")
    y = module(x)
    assert y.shape == x.shape == (2, 32, 7, 7)
    assert x.requires_grad and x.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_build_point_leaves_the_global_rng_alone() -> None:
    state = torch.get_rng_state()
    D.build_point(D.Point("dense_3x3", 32, 8, 1), "cpu")
    assert torch.equal(state, torch.get_rng_state())


def test_point_json_round_trip() -> None:
    p = D.Point("depthwise_5x5", 64, 14, 8, "bf16", True, True)
    assert D.Point.from_json(p.to_json()) == p
    assert p.name == "depthwise_5x5 C64 14x14 bs8 bf16 channels_last fwd+bwd"


# ----------------------------------------------------------------------------- counts vs closed form
def conv_cost(n: int, c: int, hw: int, k: int, groups: int, itemsize: int) -> dict[str, int]:
    """Closed form of one stride-1, 'same'-padded, bias-free k x k conv, C -> C channels, groups g:
    every output element (N*C*H*W of them) is a dot product of length k^2 * C/g, so
    MACs = k^2 (C/g) N C H W and FLOPs = 2 MACs (torch.utils.flop_counter's convention);
    bytes (one aten.convolution, unfused) = itemsize * (input N C H W + weight C (C/g) k^2 + output N C H W).
    Backward (convolution_backward for grad_input and grad_weight): 2x the forward FLOPs (two products of
    the forward's size); reads grad_out, input, weight and writes grad_input, grad_weight:
    itemsize * (3 N C H W + 2 C (C/g) k^2)."""
    nchw = n * c * hw * hw
    weight = c * (c // groups) * k * k
    macs = k * k * (c // groups) * nchw
    return {"flops_fwd": 2 * macs, "macs_fwd": macs, "bytes_fwd": itemsize * (2 * nchw + weight),
            "flops_bwd": 4 * macs, "bytes_bwd": itemsize * (3 * nchw + 2 * weight)}


@pytest.mark.parametrize(("op", "k", "groups"), [
    ("dense_3x3", 3, 1), ("grouped_3x3_g8", 3, 8), ("depthwise_3x3", 3, 32), ("depthwise_7x7", 7, 32),
    ("pointwise_1x1", 1, 1)])
@pytest.mark.parametrize("dtype,itemsize", [("fp32", 4), ("bf16", 2)])
def test_real_counter_matches_the_closed_form(op: str, k: int, groups: int, dtype: str, itemsize: int) -> None:
    n, c, hw = 2, 32, 8
    want = conv_cost(n, c, hw, k, groups, itemsize)
    fwd = D.measure_point(D.Point(op, c, hw, n, dtype), device="cpu", time_fn=fake_time_fn)
    assert fwd["status"] == "ok"
    assert (fwd["flops"], fwd["macs"], fwd["bytes"]) == (want["flops_fwd"], want["macs_fwd"], want["bytes_fwd"])
    both = D.measure_point(D.Point(op, c, hw, n, dtype, backward=True), device="cpu", time_fn=fake_time_fn)
    assert both["flops"] == want["flops_fwd"] + want["flops_bwd"]
    assert both["bytes"] == want["bytes_fwd"] + want["bytes_bwd"]


def test_depthwise_and_dense_intensity_through_derive() -> None:
    # Depthwise 3x3 fp32: FLOPs = 2*9*NCHW, bytes = 4*(2*NCHW + 9*C)  =>  I = 18 NCHW / (4 (2 NCHW + 9 C)),
    # exact (the counter sees exactly one aten.convolution). Dense 3x3: FLOPs = 18 C^2 NHW,
    # bytes = 4 (2 NCHW + 9 C^2)  =>  I = 18 C NCHW / (4 (2 NCHW + 9 C^2)).
    n, c, hw = 2, 32, 8
    nchw = n * c * hw * hw
    rows = [D.measure_point(D.Point(op, c, hw, n), device="cpu", time_fn=fake_time_fn)
            for op in ("depthwise_3x3", "dense_3x3")]
    df = D.derive(pd.DataFrame(rows), CEILINGS, MathModes("cpu"))
    dw, dense = df.iloc[0], df.iloc[1]
    assert dw["intensity"] == pytest.approx(18 * nchw / (4 * (2 * nchw + 9 * c)), rel=1e-12)
    assert dense["intensity"] == pytest.approx(18 * c * nchw / (4 * (2 * nchw + 9 * c * c)), rel=1e-12)
    assert dense["flops"] / dw["flops"] == c   # exactly C x fewer FLOPs


def test_intensity_limits() -> None:
    # Limits of the formulas above as N*H*W grows (a limit, hence the tolerance): depthwise -> 18/8 = 2.25,
    # dense -> C k^2 / 4. The relative gap is the weight's share of the traffic, 9C / (2 N C H W) = 9 / (2 N H W) =
    # 2.2e-5 for depthwise and 9C^2 / (2 N C H W) = 9C / (2 N H W) = 0.57% for dense at DESIGN.md's reference
    # shape N64 C256 56x56.
    n, c, hw = 64, 256, 56
    nchw = n * c * hw * hw
    assert 18 * nchw / (4 * (2 * nchw + 9 * c)) == pytest.approx(2.25, rel=3e-5)
    assert 18 * c * nchw / (4 * (2 * nchw + 9 * c * c)) == pytest.approx(c * 9 / 4, rel=0.006)


# ----------------------------------------------------------------------------- failures
def test_oom_point_is_recorded_and_retried_at_half_batch() -> None:
    calls = {"n": 0}

    def time_oom_once(fn: Any, **kwargs: Any) -> FakeStats:
        calls["n"] += 1
        if calls["n"] == 1:
            raise MeasurementError("fwd", 4, "CUDA out of memory", oom=True)
        return FakeStats()

    points = [D.Point("dense_3x3", 32, 8, 4), D.Point("depthwise_3x3", 32, 8, 4)]
    df = D.run_sweep(points, device="cpu", time_fn=time_oom_once)
    assert list(df["status"]) == ["oom", "ok", "ok"]
    assert list(df["batch"]) == [4, 2, 4] and list(df["batch_requested"]) == [4, 4, 4]
    assert "out of memory" in df["error"].iloc[0]
    assert math.isnan(df["time_s"].iloc[0]) and df["time_s"].iloc[1] == pytest.approx(1e-3)


def test_torch_oom_everywhere_still_completes_the_sweep() -> None:
    def always_oom(fn: Any, **kwargs: Any) -> FakeStats:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    seen: list[tuple[int, int]] = []
    df = D.run_sweep([D.Point("dense_3x3", 32, 8, 4)], device="cpu", time_fn=always_oom,
                     progress=lambda done, total, name: seen.append((done, total)))
    assert list(df["status"]) == ["oom"] * 3 and list(df["batch"]) == [4, 2, 1]
    assert seen == [(1, 2), (2, 3), (3, 3)]   # the total grows as retries are queued


def test_other_failures_are_error_rows() -> None:
    def broken(fn: Any, **kwargs: Any) -> FakeStats:
        raise RuntimeError("no kernel for this dtype")

    df = D.run_sweep([D.Point("depthwise_3x3", 32, 8, 1)], device="cpu", time_fn=broken, oom_fallback=True)
    assert list(df["status"]) == ["error"] and "no kernel" in df["error"].iloc[0]


def test_is_oom_recognises_the_forms() -> None:
    assert D.is_oom(torch.OutOfMemoryError("x"))
    assert D.is_oom(MeasurementError("fwd", 1, "x", oom=True))
    assert D.is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 10 GB"))
    assert not D.is_oom(RuntimeError("shape mismatch"))
    try:
        try:
            raise torch.OutOfMemoryError("inner")
        except torch.OutOfMemoryError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert D.is_oom(outer)


# ----------------------------------------------------------------------------- roofline columns
def test_derive_picks_the_math_mode_roof_and_flags_without_clipping() -> None:
    df = pd.DataFrame([{"dtype": "fp32", "flops": 1e9, "bytes": 1e6, "time_s": 1e-3},
                       {"dtype": "bf16", "flops": 1e9, "bytes": 1e6, "time_s": 1e-3},
                       {"dtype": "fp32", "flops": 1e6, "bytes": 1e6, "time_s": 5e-6},
                       {"dtype": "fp32", "flops": math.nan, "bytes": math.nan, "time_s": math.nan}])
    k = dataclasses.replace(CEILINGS, flop_per_s={"fp32": 5e11, "tf32": 4e12, "bf16": 8e12}, bytes_per_s=1e11)
    cuda = D.derive(df, k, MathModes("cuda", cudnn_tf32=True))
    assert list(cuda["roof_key"]) == ["tf32", "bf16", "tf32", "tf32"]
    assert list(D.derive(df, k, MathModes("cuda", cudnn_tf32=False))["roof_key"])[:2] == ["fp32", "bf16"]
    cpu = D.derive(df, k, MathModes("cpu"))
    assert list(cpu["roof_key"])[:2] == ["fp32", "bf16"]
    # row 0: 1e12 FLOP/s, intensity 1000 > ridge 5 -> compute bound, 2x above the 5e11 fp32 roof: flagged
    assert cpu["achieved_flop_per_s"].iloc[0] == pytest.approx(1e12) and cpu["bound"].iloc[0] == "compute"
    assert bool(cpu["above_roof"].iloc[0]) and bool(cpu["above_compute_roof"].iloc[0])
    assert cpu["pct_of_compute_roof"].iloc[0] == pytest.approx(200.0)
    # row 2: intensity 1 < ridge 5 -> memory bound; 2e11 FLOP/s is under the 5e11 roof but 2e11 B/s is
    # twice the 1e11 B/s slope (attainable 1e11 FLOP/s): above the roofline, not above the compute roof
    assert cpu["bound"].iloc[2] == "memory" and bool(cpu["above_roof"].iloc[2])
    assert not bool(cpu["above_compute_roof"].iloc[2])
    assert cpu["pct_of_memory_roof"].iloc[2] == pytest.approx(200.0)
    assert math.isnan(cpu["intensity"].iloc[3]) and not bool(cpu["above_roof"].iloc[3])


# ----------------------------------------------------------------------------- the whole study, tiny
@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> D.StudyResult:
    """A tiny end-to-end run: real counter, real timer (minimal budget), injected ceilings."""
    out = tmp_path_factory.mktemp("depthwise")
    return D.run_study(out, device="cpu", config=tiny_config(), ceilings=CEILINGS, fasternet=False,
                       models=False, command="hwprof study depthwise --test")


def test_study_writes_one_row_per_point(study: D.StudyResult) -> None:
    csv = pd.read_csv(study.paths["csv"])
    assert len(csv) == len(D.sweep_points(tiny_config())) == 72
    for col in ("op", "channels", "spatial", "batch", "dtype", "format", "pass", "status", "flops", "macs",
                "bytes", "intensity", "time_s", "achieved_flop_per_s", "achieved_bytes_per_s",
                "pct_of_compute_roof", "pct_of_memory_roof", "bound", "above_roof", "roof_key"):
        assert col in csv.columns, col
    assert set(csv["status"]) == {"ok"}
    assert (csv["time_s"] > 0).all() and (csv["flops"] == 2 * csv["macs"]).all()


def test_study_plots_and_manifest(study: D.StudyResult) -> None:
    for role in ("roofline_png", "flops_vs_time_png"):
        assert study.paths[role].read_bytes().startswith(PNG_SIGNATURE)
    for role in ("roofline_svg", "flops_vs_time_svg"):
        assert "<svg" in study.paths[role].read_text()
    import json

    m = json.loads(study.paths["manifest"].read_text())
    assert m["command"] == "hwprof study depthwise --test"
    assert m["ceilings"]["flop_per_s"]["fp32"] == CEILINGS.roof("fp32")
    for key in ("versions", "device", "date_utc", "config", "math_mode", "status_counts"):
        assert key in m
    assert m["versions"]["torch"] == torch.__version__


def test_summary_numbers_come_from_the_csv(study: D.StudyResult) -> None:
    csv = pd.read_csv(study.paths["csv"])
    summary = study.paths["summary"].read_text()
    assert D.headline_shape(csv) == (32, 8, 2)
    bullets = [ln for ln in summary.splitlines() if ln.startswith("- **depthwise 3x3")]
    assert len(bullets) == 8   # 2 dtypes x 2 formats x 2 passes
    pattern = re.compile(r"\((?P<variant>[\w ]+), (?P<pass>fwd\+bwd|fwd)\)\*\*: (?P<ratio>\S+) fewer FLOPs than "
                         r"dense 3x3, only (?P<speed>\S+) faster \((?P<t_dw>[^)]*) vs (?P<t_dense>[^)]*)\); "
                         r"(?P<pc>\S+) of the \w+ compute roof .*; (?P<pm>\S+) of the memory roof")
    for line in bullets:
        m = pattern.search(line)
        if m is None:   # a point slower than dense says so instead of "only ... faster"
            assert "slower" in line
            continue
        sel = csv[(csv["variant"] == m["variant"]) & (csv["pass"] == m["pass"]) & (csv["channels"] == 32)]
        dw = sel[sel["op"] == "depthwise_3x3"].iloc[0]
        dense = sel[sel["op"] == "dense_3x3"].iloc[0]
        assert m["ratio"] == D.fmt_ratio(dense["flops"] / dw["flops"]) == "32.0x"
        assert m["speed"] == D.fmt_ratio(dense["time_s"] / dw["time_s"])
        assert m["t_dw"] == D.fmt_time(dw["time_s"]) and m["t_dense"] == D.fmt_time(dense["time_s"])
        assert m["pc"] == D.fmt_pct(dw["pct_of_compute_roof"]) and m["pm"] == D.fmt_pct(dw["pct_of_memory_roof"])
    assert "*Reference, not this run*" in summary   # the H100 figures are labelled as such


def test_counters_flag_without_ncu_says_so_and_runs_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(D.study, "ncu_path", lambda: None)   # where run_study looks it up
    r = D.run_study(tmp_path, device="cpu", counters=True, config=tiny_config(ops=("dense_3x3", "depthwise_3x3"),
                    dtypes=("fp32",), channels_last=(False,), passes=(False,)), ceilings=CEILINGS,
                    count_fn=None, time_fn=fake_time_fn, fasternet=False, models=False, plots=False)
    assert any("ncu" in n and "not on PATH" in n for n in r.notes)
    assert r.counters is None and len(r.points) == 2 and "counters" not in r.paths


# ----------------------------------------------------------------------------- FasterNet and model level
def test_fasternet_table_converts_the_papers_macs() -> None:
    df = D.fasternet_table(device="cpu", shapes=((16, 8),), layers=2, time_fn=fake_time_fn)
    agg = df[df["shape"] == "all"].set_index("operator")
    assert list(agg.index) == ["Conv", "GConv", "DWConv", "PConv"]
    assert agg.loc["DWConv", "paper_2080ti_mac_per_s"] == 313e9
    assert agg.loc["DWConv", "paper_2080ti_flop_per_s"] == 626e9
    assert agg.loc["Conv", "paper_2080ti_flop_per_s"] == 2 * 10151e9
    assert math.isnan(agg.loc["PConv", "paper_2080ti_mac_per_s"])   # no paper number we are sure of
    assert (agg["achieved_flop_per_s"] == 2 * agg["achieved_mac_per_s"]).all()
    # PConv convolves C/4 channels: 1/16 of the dense conv's FLOPs per layer
    assert agg.loc["PConv", "flops"] * 16 == agg.loc["Conv", "flops"]


def test_depthwise_shares_on_a_synthetic_frame() -> None:
    layers = pd.DataFrame({
        "type": ["MobileNet", "Sequential", "Conv2d", "Conv2d", "Conv2d", "Linear"],
        "flops_fwd": [1000.0, 900.0, 10.0, 90.0, 800.0, 100.0],
        "fwd_s": [1.0, 0.8, 0.3, 0.1, 0.4, 0.2],
        "groups": [0, 0, 32, 1, 1, 0],
        "in_channels": [0, 0, 32, 32, 3, 0],
    }, index=pd.Index(["", "features", "features.dw", "features.pw", "features.conv", "fc"], name="path"))
    # leaves: features.dw, features.pw, features.conv, fc (flops 1000, time 1.0); depthwise: features.dw
    s = D.depthwise_shares(layers)
    assert s["leaf_layers"] == 4 and s["depthwise_layers"] == 1
    assert s["depthwise_flop_share"] == pytest.approx(10 / 1000) and s["depthwise_time_share"] == pytest.approx(0.3)
    assert D.depthwise_shares(layers, {"features.dw"}) == s
    flagged = layers.drop(columns=["groups", "in_channels"]).assign(depthwise=[False, False, True, False, False, False])
    assert D.depthwise_shares(flagged)["depthwise_time_share"] == pytest.approx(0.3)
    with pytest.raises(ValueError):
        D.depthwise_shares(layers.drop(columns=["groups", "in_channels"]))


def test_model_comparison_mobilenet_vs_dense_twin() -> None:
    df = D.model_comparison(device="cpu", input_size=32, time_fn=fake_time_fn, use_profile=False).set_index("model")
    mb, dense = df.loc["mobilenet_v1"], df.loc["mobilenet_v1_dense"]
    assert mb["depthwise_layers"] == 13 and dense["depthwise_layers"] == 0
    assert 0 < mb["depthwise_flop_share"] < 0.1 and dense["depthwise_flop_share"] == 0
    assert dense["flops"] > 5 * mb["flops"]
    assert (df["status"] == "ok").all()


# ----------------------------------------------------------------------------- Nsight Compute
# PARSER FIXTURE, not a measurement: hand-written text in the layout of `ncu --csv --metrics ...`
# ("details" page: one row per kernel x metric, preceded by ==PROF== lines), with the two unit
# styles ncu prints (scaled units with thousands separators, and base units).
NCU_FIXTURE = '''==PROF== Connected to process 4242 (/usr/bin/python3.11)
==PROF== Profiling "conv_depthwise2d_forward_kernel" - 0: 0%....50%....100% - 1 pass
"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"
"0","4242","python3.11","127.0.0.1","conv_depthwise2d_forward_kernel","1","7","(256, 1, 1)","(200704, 1, 1)","0","9.0","Command line profiler metrics","dram__bytes_read.sum","Mbyte","205.52"
"0","4242","python3.11","127.0.0.1","conv_depthwise2d_forward_kernel","1","7","(256, 1, 1)","(200704, 1, 1)","0","9.0","Command line profiler metrics","dram__bytes_write.sum","byte","205,520,896"
"0","4242","python3.11","127.0.0.1","conv_depthwise2d_forward_kernel","1","7","(256, 1, 1)","(200704, 1, 1)","0","9.0","Command line profiler metrics","lts__t_bytes.sum","Gbyte","1.20"
"0","4242","python3.11","127.0.0.1","conv_depthwise2d_forward_kernel","1","7","(256, 1, 1)","(200704, 1, 1)","0","9.0","Command line profiler metrics","dram__throughput.avg.pct_of_peak_sustained_elapsed","%","20.00"
"0","4242","python3.11","127.0.0.1","conv_depthwise2d_forward_kernel","1","7","(256, 1, 1)","(200704, 1, 1)","0","9.0","Command line profiler metrics","sm__throughput.avg.pct_of_peak_sustained_elapsed","%","75.00"
"0","4242","python3.11","127.0.0.1","conv_depthwise2d_forward_kernel","1","7","(256, 1, 1)","(200704, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","usecond","300.00"
"1","4242","python3.11","127.0.0.1","elementwise_kernel","1","7","(128, 1, 1)","(1024, 1, 1)","0","9.0","Command line profiler metrics","dram__bytes_read.sum","byte","1,000"
"1","4242","python3.11","127.0.0.1","elementwise_kernel","1","7","(128, 1, 1)","(1024, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","nsecond","100,000"
"1","4242","python3.11","127.0.0.1","elementwise_kernel","1","7","(128, 1, 1)","(1024, 1, 1)","0","9.0","Command line profiler metrics","dram__throughput.avg.pct_of_peak_sustained_elapsed","%","60.00"
"1","4242","python3.11","127.0.0.1","elementwise_kernel","1","7","(128, 1, 1)","(1024, 1, 1)","0","9.0","Command line profiler metrics","launch__grid_size","","1,024"
==PROF== Disconnected from process 4242
'''


def test_parse_ncu_csv_fixture() -> None:
    k = D.parse_ncu_csv(NCU_FIXTURE).set_index("kernel_id")
    assert list(k.index) == [0, 1]
    assert k.loc[0, "kernel_name"] == "conv_depthwise2d_forward_kernel"
    assert k.loc[0, "dram_bytes_read"] == pytest.approx(205.52e6)
    assert k.loc[0, "dram_bytes_written"] == 205_520_896
    assert k.loc[0, "l2_bytes"] == pytest.approx(1.2e9)
    assert k.loc[0, "kernel_time_s"] == pytest.approx(300e-6)
    assert k.loc[1, "kernel_time_s"] == pytest.approx(100e-6) and k.loc[1, "dram_bytes_read"] == 1000
    assert math.isnan(k.loc[1, "sm_pct_of_peak"])   # metric absent for that kernel: NaN, not 0
    s = D.summarise_kernels(k.reset_index())
    assert s["kernels"] == 2 and s["kernel_time_s"] == pytest.approx(400e-6)
    assert s["dram_bytes"] == pytest.approx(205.52e6 + 205_520_896 + 1000)
    # time-weighted: (20 * 300 + 60 * 100) / 400 = 30; SM only where present: 75
    assert s["dram_pct_of_peak"] == pytest.approx(30.0) and s["sm_pct_of_peak"] == pytest.approx(75.0)


def test_parse_ncu_csv_without_a_table() -> None:
    assert D.parse_ncu_csv("==PROF== ERR_NVGPUCTRPERM: no permission\n").empty


def test_run_counters_with_a_fake_ncu() -> None:
    calls: list[list[str]] = []

    def runner(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        calls.append(cmd)
        ok = "depthwise" in cmd[-3]
        return subprocess.CompletedProcess(cmd, 0 if ok else 1, NCU_FIXTURE if ok else "", "" if ok else "ERR_NVGPUCTRPERM")

    pts = [D.Point("depthwise_3x3", 256, 56, 64), D.Point("dense_3x3", 256, 56, 64)]
    rows, kernels = D.run_counters(pts, ncu="/opt/ncu", runner=runner)
    assert list(rows["status"]) == ["ok", "error"] and "ERR_NVGPUCTRPERM" in rows["error"].iloc[1]
    assert rows["kernels"].iloc[0] == 2 and len(kernels) == 2
    cmd = calls[0]
    assert cmd[0] == "/opt/ncu" and "--csv" in cmd and "--nvtx-include" in cmd
    assert cmd[cmd.index("--clock-control") + 1] == "base"          # ncu's default, stated explicitly
    assert D.Point.from_json(cmd[cmd.index("--point") + 1]) == pts[0]
    D.run_counters(pts[:1], ncu="/opt/ncu", runner=runner, clock_control="none")
    assert calls[-1][calls[-1].index("--clock-control") + 1] == "none"
    with pytest.raises(ValueError):
        D.ncu_command(pts[0], "/opt/ncu", clock_control="boost")


def test_ncu_is_found_through_ncu_env_path_or_install_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hwprof.studies.depthwise import counters

    exe = tmp_path / "ncu-2025"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("NCU", str(exe))
    assert counters.ncu_path() == str(exe)
    monkeypatch.delenv("NCU")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    install = tmp_path / "opt" / "nsight-compute"
    for version in ("2024.1.0", "2025.3.1"):
        (install / version).mkdir(parents=True)
        (install / version / "ncu").write_text("")
    monkeypatch.setattr(counters, "NCU_INSTALL_GLOB", str(install / "*" / "ncu"))
    assert counters.ncu_path() == str(install / "2025.3.1" / "ncu")      # the newest install
    monkeypatch.setattr(counters, "NCU_INSTALL_GLOB", str(tmp_path / "none" / "*" / "ncu"))
    assert counters.ncu_path() is None


def test_single_point_runner_runs_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner ncu profiles builds the point given as JSON and calls it 3 times to warm up, then once:
    a spy around the real callable records each call's module and input."""
    from hwprof.studies.depthwise import counters

    calls: list[tuple[nn.Module, tuple[int, ...], bool]] = []
    real = counters.point_callable

    def spy(module: nn.Module, x: torch.Tensor, backward: bool) -> Any:
        fn = real(module, x, backward)

        def run() -> None:
            calls.append((module, tuple(x.shape), backward))
            fn()
        return run
    monkeypatch.setattr(counters, "point_callable", spy)
    p = D.Point("depthwise_3x3", 8, 4, 1, backward=True)
    assert D._main(["--point", p.to_json(), "--device", "cpu"]) == 0
    assert len(calls) == 4 and len({id(m) for m, _, _ in calls}) == 1
    module, shape, backward = calls[0]
    assert shape == (1, 8, 4, 4) and backward                       # batch 1, 8 channels, 4x4
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.groups, c.kernel_size) for c in convs] == [(8, 8, 8, (3, 3))]


# ----------------------------------------------------------------------------- CLI
def test_cli_tiny_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from hwprof.cli import main

    monkeypatch.setattr(hwprof, "measure_ceilings", lambda device, quick=False, cache_dir=None: CEILINGS, raising=False)
    out = tmp_path / "run"
    rc = main(["study", "depthwise", "--device", "cpu", "--dtype", "fp32", "--channels-last", "no",
               "--channels", "32", "--spatial", "8", "--batch", "1", "--budget-s", "0.001",
               "--no-fasternet", "--no-models", "--no-plots", "--format", "csv", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0
    table = pd.read_csv(pd.io.common.StringIO(captured.out))
    assert set(table["op"]) == set(D.OPERATORS) and set(table["pass"]) == {"fwd", "fwd+bwd"}
    assert (out / "depthwise.csv").exists() and (out / "summary.md").exists() and (out / "manifest.json").exists()
    assert "18 points: 18 ok" in captured.err
    # stderr is not a terminal here: no progress bar
    assert "\r" not in captured.err and "pt/s" not in captured.err and "depthwise:" not in captured.err


def test_cli_rejects_a_bad_dtype(capsys: pytest.CaptureFixture) -> None:
    from hwprof.cli import main

    assert main(["study", "depthwise", "--dtype", "int8", "--out", "/nonexistent"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "int8" in err[0]


# ----------------------------------------------------------------------------- dtypes the device computes in
def test_plan_dtypes_skips_what_the_cpu_has_no_units_for() -> None:
    cpu = torch.device("cpu")
    epyc = frozenset({"avx2", "fma", "sse4_2"})                   # e.g. AMD EPYC (Zen 2/3): no bf16 instructions
    xeon = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})   # Sapphire Rapids
    arm = frozenset({"fp", "asimd", "asimdhp", "bf16"})            # Armv8.6 (e.g. Neoverse V1)
    assert D.plan_dtypes(None, cpu, epyc)[0] == ("fp32",)
    note = D.plan_dtypes(None, cpu, epyc)[1]
    assert len(note) == 1 and note[0].startswith("bf16 skipped: this CPU has no bf16 units")
    assert "--dtype fp32,bf16" in note[0]
    assert D.plan_dtypes(None, cpu, xeon) == (("fp32", "bf16"), [])
    assert D.plan_dtypes(None, cpu, arm) == (("fp32", "bf16"), [])
    # asked for by name: runs, with a note that it is an emulation
    dtypes, notes = D.plan_dtypes(("fp32", "bf16", "fp16"), cpu, epyc)
    assert dtypes == ("fp32", "bf16", "fp16") and [n.split(":")[0] for n in notes] == ["bf16 is emulated",
                                                                                        "fp16 is emulated"]
    assert D.native_units("fp16", cpu, xeon) is False and D.native_units("fp16", cpu, arm) is True


def test_plan_dtypes_on_cuda_by_compute_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))    # T4: no bf16 units
    assert D.plan_dtypes(None, gpu) == (("fp32",), [D.plan_dtypes(None, gpu)[1][0]])
    assert "compute capability 7.5" in D.plan_dtypes(None, gpu)[1][0]
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))    # H100
    assert D.plan_dtypes(None, gpu) == (("fp32", "bf16"), [])


def test_cpu_flags_from_cpuinfo(tmp_path: Path) -> None:
    from hwprof.studies.depthwise.plan import cpu_flags

    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu avx2 fma\n\nprocessor\t: 1\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimdhp bf16\nCPU implementer\t: 0x41\n")
    assert cpu_flags(str(x86)) == {"fpu", "avx2", "fma"} and cpu_flags(str(arm)) == {"fp", "asimd", "asimdhp", "bf16"}
    assert cpu_flags(str(tmp_path / "absent")) == frozenset()


# ----------------------------------------------------------------------------- the time budget
def test_sweep_skips_the_points_left_when_told_to_stop() -> None:
    points = D.sweep_points(tiny_config(dtypes=("fp32",), channels_last=(False,), passes=(False,)))
    timed: list[Any] = []

    def time_fn(fn: Any, **kw: Any) -> FakeStats:
        timed.append(fn)
        return fake_time_fn(fn)
    df = D.run_sweep(points, device="cpu", time_fn=time_fn, stop=lambda: len(timed) >= 3)
    assert len(df) == len(points) == 9 and len(timed) == 3
    assert list(df["status"]) == ["ok"] * 3 + ["skipped"] * 6
    assert df.loc[3:, "time_s"].isna().all() and df.loc[3:, "flops"].isna().all()   # not counted either
    assert set(df.loc[3:, "error"]) == {"not measured: the study's time budget was spent"}


class FakeCount:
    """A count result with fixed totals (no counting in budget tests)."""

    totals = {"flops_fwd": 2e6, "macs_fwd": 1e6, "bytes_fwd": 1e5, "flops_bwd": 4e6, "macs_bwd": 2e6, "bytes_bwd": 2e5}
    uncounted: dict[str, int] = {}


def test_quick_study_stops_measuring_at_its_time_budget() -> None:
    now = [0.0]

    def emulated(fn: Any, **kw: Any) -> FakeStats:
        now[0] += 2.0                 # a bf16 point emulated on a CPU without bf16 units: 2 s each
        return FakeStats()
    r = D.compute_study(device="cpu", quick=True, ceilings=CEILINGS, count_fn=lambda *a, **k: FakeCount(),
                        time_fn=emulated, use_profile=False, clock=lambda: now[0])
    assert D.quick_config().time_budget_s == D.QUICK_TIME_BUDGET_S == 40.0
    # 40 s / 2 s per point: points start at 0, 2, ..., 38 s (20 of them); at 40 s the budget is spent
    assert now[0] == 40.0 and (r.points["status"] == "ok").sum() == 20
    assert (r.points["status"] == "skipped").sum() == 72 - 20 and len(r.points) == 72
    assert r.fasternet is None and r.models is None
    assert "time budget of 40 s spent: 52 of 72 points not measured (status skipped)" in r.notes
    assert "time budget spent: FasterNet table skipped" in r.notes
    assert "time budget spent: model level skipped" in r.notes
    assert r.manifest["status_counts"] == {"skipped": 52, "ok": 20} and r.manifest["wall_s"] == 40.0


def test_compute_writes_nothing_save_writes_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(ops=("dense_3x3", "depthwise_3x3"), dtypes=("fp32",), channels_last=(False,))
    r = D.compute_study(device="cpu", config=cfg, ceilings=CEILINGS, time_fn=fake_time_fn, fasternet=False,
                        models=False, command="hwprof study depthwise --test")
    assert list(tmp_path.iterdir()) == [] and r.paths == {} and r.summary_md == ""
    assert len(r.points) == 4 and r.headline is not None
    saved = D.save_study(r, tmp_path / "s", plots=False)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["depthwise.csv", "manifest.json", "summary.md"]
    assert saved.paths["summary"].read_text() == saved.summary_md and r.paths == {}      # r itself unchanged
    assert pd.read_csv(saved.paths["csv"])["name"].tolist() == r.points["name"].tolist()
    again = D.run_study(tmp_path / "s", device="cpu", config=cfg, ceilings=CEILINGS, time_fn=fake_time_fn,
                        fasternet=False, models=False, plots=False)
    assert again.paths["csv"] == tmp_path / "s" / "depthwise.csv" and again.paths["csv"].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]                 # no temporary folder left


def test_cli_default_dtypes_skip_bf16_without_units(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    from hwprof.cli import main

    monkeypatch.setattr(hwprof, "measure_ceilings", lambda device, quick=False, cache_dir=None: CEILINGS, raising=False)
    monkeypatch.setattr(D.plan, "cpu_flags", lambda path="/proc/cpuinfo": frozenset({"avx2", "fma"}))
    rc = main(["study", "depthwise", "--device", "cpu", "--channels-last", "no", "--channels", "32", "--spatial",
               "8", "--batch", "1", "--budget-s", "0.001", "--no-fasternet", "--no-models", "--no-plots",
               "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 0
    points = pd.read_csv(tmp_path / "run" / "depthwise.csv")
    assert set(points["dtype"]) == {"fp32"} and len(points) == 18      # 9 operators x 2 passes, no bf16
    assert "hwprof study depthwise: bf16 skipped: this CPU has no bf16 units" in err
    notes = json.loads((tmp_path / "run" / "manifest.json").read_text())["notes"]
    assert any(n.startswith("bf16 skipped: this CPU has no bf16 units") for n in notes)
