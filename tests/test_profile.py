"""The join of counts, measured times and ceilings: a pure function of saved records (hwprof.join,
hwprof.load_profile), rates above roofs flagged, ceilings read from the cache re-measured once,
folders saved complete or absent; and profile() end to end on the CPU (ceilings injected).

The saved-profile fixture ``tests/data/saved_profile/`` and the golden ``tests/data/saved_profile.layers.csv``
are made by ``.venv/bin/python tests/data/make_saved_profile.py`` (see its docstring)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

import hwprof
from hwprof.counting.counter import layer_variant
from hwprof.errors import HwprofError
from hwprof.hardware.ceilings import Ceilings
from hwprof.joining import (
    _with_classes,
    join_layers,
    join_ops,
    roof_violations,
    whole_model_time_s,
)
from hwprof.profiler import trusted_join
from hwprof.roofline import MathModes

DATA = Path(__file__).parent / "data"
FIXTURE = DATA / "saved_profile"
GOLDEN = DATA / "saved_profile.layers.csv"
FAKE_CEILINGS = Ceilings("cpu", "test-cpu", torch.__version__, "2026-11-24", "measured",
                         {"fp32": 100e9, "bf16": 400e9}, 20e9)


@pytest.fixture(scope="module")
def saved() -> hwprof.Profile:
    """The committed fixture, rebuilt with no model."""
    return hwprof.load_profile(FIXTURE)


def test_layer_variant() -> None:
    assert layer_variant(nn.Conv2d(8, 8, 3, groups=8)) == "depthwise"
    assert layer_variant(nn.Conv2d(8, 16, 3, groups=2)) == "grouped"
    assert layer_variant(nn.Conv2d(8, 16, 1)) == "pointwise"
    assert layer_variant(nn.Conv2d(8, 16, 3)) == "dense"
    assert layer_variant(nn.Linear(3, 3)) == ""


def test_join_uses_self_counts_and_self_times() -> None:
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.ReLU())
    c = hwprof.count(model, "4x8x8", backward=False)
    times = pd.DataFrame({"fwd_s": [1e-3, 2e-3, 0.0], "bwd_s": [0.0, 0.0, 0.0]}, index=["0", "1", ""])
    rows = join_layers(c, times, train=False, modes=MathModes("cpu"))
    assert list(rows.index) == ["0", "1"]  # the root does no work of its own here
    # depthwise 3x3 on 1x4x8x8: MACs = 8*8*4*9 = 2304 -> 4608 FLOPs in 1 ms
    assert rows.loc["0", "flops"] == 4608 and rows.loc["0", "time_s"] == 1e-3
    assert rows.loc["0", "time_share"] == pytest.approx(1 / 3)
    assert rows.loc["0", "op_class"] == "conv" and rows.loc["1", "op_class"] == "elementwise"
    assert rows.loc["0", "roof_key"] == "fp32" and rows.loc["0", "variant"] == "depthwise"


def test_count_saved_without_class_columns_gets_them_from_the_registry() -> None:
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Flatten(), nn.Linear(4 * 8 * 8, 2))
    c = hwprof.count(model, "4x8x8", backward=False)
    c = dataclasses.replace(c, layers=c.layers.drop(columns=["op_class", "variant"], errors="ignore"),
                            ops=c.ops.drop(columns=["op_class"], errors="ignore"))
    no_model = _with_classes(c)
    assert list(no_model.ops["op_class"]) == ["conv", "matmul"]           # aten.convolution, aten.addmm
    assert no_model.layers.loc["0", "op_class"] == "conv" and no_model.layers.loc["2", "op_class"] == "matmul"
    assert (no_model.layers["variant"] == "").all() and any("variants" in n for n in no_model.notes)
    assert _with_classes(hwprof.count(model, "4x8x8")).layers.loc["0", "variant"] == "depthwise"


def test_whole_model_time_excludes_step() -> None:
    ph = pd.DataFrame({"median_s": [0.5, 1.0, 2.0, 4.0]}, index=["fwd_nograd", "fwd", "bwd", "step"])
    assert whole_model_time_s(ph, train=False) == 0.5
    assert whole_model_time_s(ph, train=True) == 3.0


def test_join_ops_aligns_around_extra_measured_ops() -> None:
    counted = pd.DataFrame({"phase": ["fwd", "fwd", "bwd", "bwd"], "op": ["aten.addmm", "aten.relu", "aten.mm", "aten.mm"],
                            "dtype": ["float32"] * 4, "op_class": ["matmul", "elementwise", "matmul", "matmul"]})
    # the measured pass also ran the loss (sum, ones_like), and one op the count decomposed differently
    measured = pd.DataFrame({"phase": ["fwd", "fwd", "fwd", "fwd", "bwd", "bwd"],
                             "op": ["aten.addmm", "aten.relu", "aten.sum", "aten.ones_like", "aten.mm", "aten.bmm"],
                             "time_s": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    out = join_ops(counted, measured, MathModes("cpu"))
    assert list(out["time_s"].fillna(-1)) == [1.0, 2.0, 5.0, -1]  # the unmatched op keeps NaN, never a guess
    assert list(out["roof_key"]) == ["fp32"] * 4
    # matmuls follow cuBLAS's TF32 switch, an elementwise op never leaves the fp32 roof
    tf32 = join_ops(counted, measured, MathModes("cuda", matmul_tf32=True))
    assert list(tf32["roof_key"]) == ["tf32", "fp32", "tf32", "tf32"]


# ----------------------------------------------------------------------------- saved data
def test_golden_saved_profile(saved: hwprof.Profile) -> None:
    """The committed records, loaded and joined with no model, give the committed layers CSV."""
    assert saved.layers.to_csv() == GOLDEN.read_text()
    assert saved.config["model"] == "tiny" and saved.config["mode"] == "train" and saved.config["batch"] == 2
    assert saved.layers.loc["3", "variant"] == "depthwise" and saved.layers.loc["4", "variant"] == "pointwise"


def test_join_takes_the_math_modes_the_measurement_recorded(saved: hwprof.Profile) -> None:
    """The roofs follow ``measurement.math_modes``, never the switches in force when joining."""
    m = saved.measurement
    legacy = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True    # live switch says TF32 matmuls ...
        cuda = dataclasses.replace(m, math_modes=MathModes("cuda", cudnn_tf32=True, matmul_tf32=False))
        lay = hwprof.join(saved.counts, cuda, FAKE_CEILINGS).layers   # ... the recorded run did not use them
    finally:
        torch.backends.cuda.matmul.allow_tf32 = legacy
    assert lay.loc["0", "roof_key"] == "tf32" and lay.loc["6", "roof_key"] == "fp32"   # conv TF32, Linear fp32
    assert lay.loc["1", "roof_key"] == "fp32"                                         # batch norm: CUDA cores
    cpu = hwprof.join(saved.counts, dataclasses.replace(m, math_modes=MathModes("cpu")), FAKE_CEILINGS).layers
    assert set(cpu["roof_key"]) == {"fp32"}


def test_load_profile_needs_every_record(tmp_path: Path) -> None:
    (tmp_path / "count.json").write_text("{}")
    with pytest.raises(HwprofError, match="not a saved profile: measurement.json, ceilings.json, profile.json missing"):
        hwprof.load_profile(tmp_path)
    for name in ("measurement.json", "ceilings.json", "profile.json"):
        (tmp_path / name).write_text("{}")
    with pytest.raises(HwprofError, match="unreadable saved profile"):
        hwprof.load_profile(tmp_path)


# ----------------------------------------------------------------------------- rates above roofs
def _layers(flop_per_s: list[float], bytes_per_s: list[float] | None = None, roof: float = 100e9) -> pd.DataFrame:
    return pd.DataFrame({"achieved_flop_per_s": flop_per_s, "compute_roof_flop_per_s": roof, "roof_key": "fp32",
                         "achieved_bytes_per_s": bytes_per_s or [0.0] * len(flop_per_s)},
                        index=[f"l{i}" for i in range(len(flop_per_s))])


def test_roof_violations_margin_for_layers_none_for_the_whole_model() -> None:
    summary = {"achieved_flop_per_s": 100.1e9, "peak_flop_per_s": 100e9, "peak_key": "fp32", "bytes_per_s_roof": 20e9}
    # compute roof 100 GFLOP/s, margin 10%: 105 (1.05x) and 110 (exactly 1.10x) pass, 120 and 163 do not;
    # memory roof 20 GB/s: 21 GB/s (1.05x) passes, 30 GB/s (1.5x) does not
    layers = _layers([105e9, 110e9, 120e9, 163e9, float("nan")], [21e9, 0.0, 0.0, 0.0, 30e9])
    found = roof_violations(layers, summary)
    assert [(v.what, v.roof_key, v.unit) for v in found] == [
        ("layer l3", "fp32", "FLOP/s"), ("layer l4", "memory", "B/s"), ("layer l2", "fp32", "FLOP/s"),
        ("whole model", "fp32", "FLOP/s")]                  # largest excess first: 1.63x, 1.5x, 1.2x
    assert found[1].roof_per_s == 20e9 and found[1].achieved_per_s == 30e9
    assert found[-1].achieved_per_s == 100.1e9             # the whole model: above its peak at all
    assert roof_violations(_layers([99e9]), {**summary, "achieved_flop_per_s": 99e9}) == []


def test_rates_above_roofs_warn_and_flag(saved: hwprof.Profile, caplog: pytest.LogCaptureFixture) -> None:
    low = dataclasses.replace(FAKE_CEILINGS, flop_per_s={"fp32": 1e3, "bf16": 1e3}, source="cache", date="2026-11-01")
    with caplog.at_level(logging.WARNING, logger="hwprof"):
        p = hwprof.join(saved.counts, saved.measurement, low)
    assert not p.summary["roofs_trusted"] and p.summary["ceilings_flagged"] == []
    what = [v["what"] for v in p.summary["roof_violations"]]
    assert "whole model" in what and "layer 0" in what
    assert len(p.warnings) == 2 and all(w in p.notes for w in p.warnings)
    layer_warning, whole_warning = p.warnings
    assert layer_warning.startswith(f"{len(what) - 1} layer(s) ran above 1.10x the fp32 roof of 1.0 kFLOP/s "
                                    "(ceilings: cache, 2026-11-01), up to ")
    assert whole_warning.startswith("the whole model ran at ")
    assert all("`hwprof ceilings --refresh --device cpu`" in w for w in p.warnings)
    assert caplog.text.count("hwprof ceilings --refresh --device cpu") == 2
    ok = hwprof.join(saved.counts, saved.measurement, FAKE_CEILINGS)
    assert ok.summary["roofs_trusted"] and ok.summary["roof_violations"] == [] and ok.warnings == []


def test_layers_above_the_memory_roof_warn_without_a_remeasure(saved: hwprof.Profile) -> None:
    slow_memory = dataclasses.replace(FAKE_CEILINGS, bytes_per_s=1e3, source="cache")   # 1 kB/s: every layer is above
    calls: list[str] = []
    p = trusted_join(saved.counts, saved.measurement, slow_memory, remeasure=lambda k, d: calls.append(d) or k)
    assert calls == [] and not p.summary["roofs_trusted"]   # cache residency is no reason to re-measure each run
    assert {v["unit"] for v in p.summary["roof_violations"]} == {"B/s"}
    # the fixture's ceilings have no sweep: one level, main memory ("DRAM"), at their copy bandwidth
    assert len(p.warnings) == 1 and "moved data faster than 1.10x the DRAM roof of 1.0 kB/s" in p.warnings[0]
    assert "data served from cache" in p.warnings[0] and "hwprof ceilings --refresh --device cpu" in p.warnings[0]


def test_flagged_ceilings_are_not_trusted(saved: hwprof.Profile) -> None:
    busy = dataclasses.replace(FAKE_CEILINGS, flagged=("fp32",), notes=["fp32 ceiling not trusted: ..."])
    p = hwprof.join(saved.counts, saved.measurement, busy)
    assert p.summary["ceilings_flagged"] == ["fp32"] and not p.summary["roofs_trusted"]
    assert "fp32 ceiling not trusted: ..." in p.notes


def test_cached_ceilings_contradicted_are_remeasured_once(saved: hwprof.Profile) -> None:
    stale = dataclasses.replace(FAKE_CEILINGS, flop_per_s={"fp32": 1e3}, source="cache", date="2026-11-01")
    calls: list[str] = []

    def remeasure(k: Ceilings, device: str) -> Ceilings:
        calls.append(device)
        return FAKE_CEILINGS

    p = trusted_join(saved.counts, saved.measurement, stale, remeasure=remeasure)
    assert calls == ["cpu"] and p.ceilings.roof("fp32") == FAKE_CEILINGS.roof("fp32")
    assert p.summary["roofs_trusted"] and any(n.startswith("re-measured: the cached ceilings of 2026-11-01")
                                              for n in p.notes)
    calls.clear()
    still = trusted_join(saved.counts, saved.measurement, stale, remeasure=lambda k, d: calls.append(d) or stale)
    assert calls == ["cpu"] and not still.summary["roofs_trusted"] and still.warnings   # once, then flagged
    calls.clear()
    measured_now = dataclasses.replace(stale, source="measured")
    assert not trusted_join(saved.counts, saved.measurement, measured_now, remeasure=remeasure).summary["roofs_trusted"]
    assert calls == []   # only a cache is re-measured


# ----------------------------------------------------------------------------- profile() and the saved folder
@pytest.fixture(scope="module")
def tiny_profile() -> hwprof.Profile:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Flatten(), nn.Linear(8 * 16 * 16, 10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    p = hwprof.profile(model, "3x16x16", device="cpu", batch=2, mode="train", optimizer="sgd",
                       budget_s=0.05, ceilings=FAKE_CEILINGS, name="tiny")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # model untouched
    return p


def test_profile_end_to_end_cpu(tiny_profile: hwprof.Profile) -> None:
    lay = tiny_profile.layers
    assert {"achieved_flop_per_s", "intensity", "attainable_flop_per_s", "efficiency", "bound",
            "time_share", "above_roof"} <= set(lay.columns)
    # train: headline FLOPs = fwd + bwd
    assert (lay["flops"] == lay["flops_fwd"] + lay["flops_bwd"]).all()
    assert lay.loc["3", "variant"] == "depthwise"
    assert (lay["time_s"] > 0).all()
    # FLOPs of the training step by hand (batch 2, 16x16: 4096 outputs per 8-channel map; docs/CONVENTIONS.md):
    #   conv 3->8 3x3: 2 x 4096 x 27 = 221,184 forward; backward grad_weight 221,184 + bias 4096 (no
    #     grad_input: the model's input needs none) = 225,280
    #   batch norm (train): 8 x 4096 = 32,768 + 1 (num_batches_tracked += 1); backward 10 x 4096 = 40,960
    #   ReLU 4096; backward 4096
    #   depthwise 3x3: 2 x 4096 x 9 = 73,728; backward grad_input + grad_weight 2 x 73,728 + bias 4096 = 151,552
    #   Linear 2048 -> 10: 2 x 2 x 2048 x 10 = 81,920; backward 2 x 81,920 + bias 2 x 10 = 163,860
    # forward 413,697 + backward 585,748 = 999,445
    expected = {"0": 221_184 + 225_280, "1": 32_769 + 40_960, "2": 4096 + 4096, "3": 73_728 + 151_552,
                "4": 0, "5": 81_920 + 163_860}
    assert {k: int(v) for k, v in lay["flops"].items() if k} == expected
    s = tiny_profile.summary
    assert s["flops"] == 999_445
    # the whole model's time is the measured forward + backward (the optimizer step left out), held to the
    # fp32 roof of FAKE_CEILINGS (100 GFLOP/s)
    m = tiny_profile.measurement.phases["median_s"]
    assert s["whole_model_time_s"] == pytest.approx(m["fwd"] + m["bwd"]) and "step" in m
    assert s["peak_key"] == "fp32" and s["peak_flop_per_s"] == 100e9
    assert s["fraction_of_peak"] == pytest.approx(999_445 / (m["fwd"] + m["bwd"]) / 100e9)
    assert isinstance(tiny_profile.measurement, hwprof.measuring.records.Measurement)
    assert tiny_profile.config["optimizer"] == "sgd" and tiny_profile.config["dtype"] == "float32"


def test_save_then_load_gives_the_same_profile(tiny_profile: hwprof.Profile, tmp_path: Path) -> None:
    files = {f.name for f in tiny_profile.save(tmp_path / "p")}
    assert {"layers.csv", "ops.csv", "profile.json", "report.md", "manifest.json", "roofline.png", "roofline.svg",
            "layer_time.png", "count.json", "measurement.json", "ceilings.json"} <= files
    assert {f.name for f in (tmp_path / "p").iterdir()} == files
    back = hwprof.load_profile(tmp_path / "p")
    pd.testing.assert_frame_equal(back.layers, tiny_profile.layers)
    pd.testing.assert_frame_equal(back.ops, tiny_profile.ops)
    pd.testing.assert_frame_equal(back.summary.pop("by_type"), tiny_profile.summary["by_type"])
    assert back.summary == {k: v for k, v in tiny_profile.summary.items() if k != "by_type"}
    assert back.config == tiny_profile.config and back.notes == tiny_profile.notes


def test_save_is_complete_or_absent(tiny_profile: hwprof.Profile, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from hwprof.report import plots

    old = tmp_path / "p"
    tiny_profile.save(old)
    before = sorted(f.name for f in old.iterdir())

    def broken(*args: object, **kwargs: object) -> list[Path]:
        raise RuntimeError("plot failed")

    monkeypatch.setattr(plots, "time_bar_plot", broken)
    with pytest.raises(RuntimeError, match="plot failed"):
        tiny_profile.save(old)                        # over an earlier save: that one stays as it was
    with pytest.raises(RuntimeError, match="plot failed"):
        tiny_profile.save(tmp_path / "new")           # a new folder: absent
    assert sorted(f.name for f in old.iterdir()) == before
    assert sorted(f.name for f in tmp_path.iterdir()) == ["p"]   # no temporary folder left


def test_save_without_matplotlib_notes_it(tiny_profile: hwprof.Profile, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from hwprof.report import plots

    def unavailable(*args: object, **kwargs: object) -> list[Path]:
        raise plots.PlotUnavailable("matplotlib is not installed: pip install 'hwprof[plots]'")

    monkeypatch.setattr(plots, "roofline_plot", unavailable)
    names = {f.name for f in tiny_profile.save(tmp_path / "p")}
    assert "roofline.png" not in names and "report.md" in names
    report = (tmp_path / "p" / "report.md").read_text()
    assert "note: plots skipped: matplotlib is not installed" in report and "roofline.png" not in report


def test_profile_ops_have_measured_times() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    p = hwprof.profile(model, "3x8x8", device="cpu", batch=2, budget_s=0.05, ceilings=FAKE_CEILINGS)
    assert p.summary["ops_matched_share"] == 1.0
    assert (p.ops["time_s"] > 0).all() and "achieved_flop_per_s" in p.ops.columns


def test_paired_layer_ratios_come_from_the_measurement_pairs() -> None:
    """The profile's per-layer/whole ratio is the paired one (each hooked rep beside an unhooked one)."""
    from hwprof.joining import paired_layer_ratios

    ls = {"fwd_ratio": 8.4, "fwd_paired_ratio": 0.97, "fwd_paired_ratio_q25": 0.95, "fwd_paired_ratio_q75": 0.99,
          "fwd_pairs": 10, "bwd_paired_ratio": 1.02, "bwd_paired_ratio_q25": 1.0, "bwd_paired_ratio_q75": 1.05,
          "bwd_pairs": 10}
    assert paired_layer_ratios(ls, train=False) == {"fwd": {"ratio": 0.97, "q25": 0.95, "q75": 0.99, "pairs": 10}}
    assert set(paired_layer_ratios(ls, train=True)) == {"fwd", "bwd"}
    assert paired_layer_ratios({"fwd_ratio": 0.9}, train=False) == {}   # saved before pairing: nothing made up
