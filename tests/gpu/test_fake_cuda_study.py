"""The depthwise study's CUDA paths, and the other whole-stage paths of the GPU session, on the
fake device (fake_cuda.py): the dtypes a GPU has units for, the sweep timed with events, an
out-of-memory point retried at half the batch, the Nsight Compute stage (a fake ``ncu`` printing
ncu's CSV), the point runner ncu profiles (NVTX range), the model level with ``hwprof.profile``
on CUDA, and bench/gpu_verify_measure.py.

These check the **code path, not the numbers** (the fake's event pairs are 1 ms apart, its ncu
prints fixed counters)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from bench_scripts import bench_module
from fake_cuda import FakeGpu, write_fake_ncu

import hwprof
from hwprof.hardware.ceilings import Ceilings, cache_path
from hwprof.hardware.levels import MemoryLevel
from hwprof.studies import depthwise as D
from hwprof.studies.depthwise import counters, study

H200 = Ceilings("cuda", "NVIDIA H200", torch.__version__, "2026-12-01", "measured",
                {"fp32": 6e13, "tf32": 4e14, "bf16": 8e14}, 4.4e12,
                levels=(MemoryLevel("L2", 50 * 2**20, 12e12, 60 * 2**20, "sweep"),   # a cache without levels is
                        MemoryLevel("HBM3e", None, 4.4e12, None, "copy")))         # measured again, not read


def _tiny(**overrides: Any) -> D.SweepConfig:
    base: dict[str, Any] = dict(shapes=((8, 8),), batches=(2,), dtypes=("fp32",), channels_last=(False,),
                                passes=(False,), ops=("dense_3x3", "depthwise_3x3"), budget_s=0.0, warmup=0,
                                min_reps=2)
    base.update(overrides)
    return D.SweepConfig(**base)


def test_dtypes_by_compute_capability(fake_gpu: FakeGpu) -> None:
    dev = torch.device("cuda", 0)
    assert D.native_units("bf16", dev) and D.plan_dtypes(None, dev) == (("fp32", "bf16"), [])
    fake_gpu.capability = (7, 5)                                  # Turing: fp16 units, no bf16
    keep, notes = D.plan_dtypes(None, dev)
    assert keep == ("fp32",) and "compute capability 7.5" in notes[0] and "needs 8.0" in notes[0]
    assert D.native_units("fp16", dev)


def test_sweep_times_with_events_and_retries_out_of_memory(fake_gpu: FakeGpu) -> None:
    df = D.run_sweep(D.sweep_points(_tiny()), device="cuda", budget_s=0.0, warmup=0, min_reps=2)
    assert list(df["status"]) == ["ok", "ok"] and list(df["time_s"]) == [pytest.approx(1e-3)] * 2   # 1 ms pairs
    # a batch of 64 at 8x8x8 float32 (128 KiB) does not fit beside the weights; 32 (64 KiB) does
    fake_gpu.total_memory_bytes = 100 * 2**10
    df = D.run_sweep([D.Point("depthwise_3x3", 8, 8, 64)], device="cuda", budget_s=0.0, warmup=0, min_reps=2)
    assert list(zip(df["batch"], df["status"], strict=True)) == [(64, "oom"), (32, "ok")]
    assert fake_gpu.calls["empty_cache"] >= 1


def test_counters_stage_runs_ncu_and_puts_the_analytic_bytes_beside(fake_gpu: FakeGpu, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NCU", write_fake_ncu(tmp_path))
    r = D.compute_study(device="cuda", config=_tiny(), counters=True, fasternet=False, models=False,
                        ceilings=H200, ncu_clock_control="none")
    c = r.counters
    assert c is not None and list(c["status"]) == ["ok", "ok"]
    assert list(c["dram_bytes"]) == [1500, 1500] and list(c["kernel_time_s"]) == [pytest.approx(2e-6)] * 2
    fwd = r.points.set_index("name")["bytes"]
    assert list(c["bytes"]) == [fwd[n] for n in c["name"]]         # hwprof's analytic bytes, per point
    assert "--counters: ncu --clock-control none" in r.notes
    assert r.manifest["math_mode"]["fp32_conv_roof"] == "tf32"     # cuDNN convolutions may use TF32
    assert set(r.points["roof_key"]) == {"tf32"}


def test_counters_need_a_dense_and_depthwise_pair(fake_gpu: FakeGpu, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NCU", write_fake_ncu(tmp_path))
    r = D.compute_study(device="cuda", config=_tiny(ops=("pointwise_1x1",)), counters=True, fasternet=False,
                        models=False, ceilings=H200)
    assert r.counters is None and r.headline is None


def test_ncu_command_profiles_the_point_runner(fake_gpu: FakeGpu) -> None:
    p = D.Point("depthwise_3x3", 8, 8, 2)
    cmd = D.ncu_command(p, "ncu", "cuda", clock_control="none")
    assert cmd[cmd.index("--clock-control") + 1] == "none" and cmd[-4:] == ["--point", p.to_json(), "--device", "cuda"]
    assert counters._main(["--point", p.to_json(), "--device", "cuda"]) == 0
    # one NVTX range around the one profiled call, after a synchronisation
    assert fake_gpu.calls["nvtx.range_push"] == 1 == fake_gpu.calls["nvtx.range_pop"]
    assert fake_gpu.calls["synchronize"] == 2


def test_model_level_profiles_on_cuda(fake_gpu: FakeGpu, monkeypatch: pytest.MonkeyPatch) -> None:
    real = D.model_comparison

    def small(**kwargs: Any) -> pd.DataFrame:     # 32x32, a ResNet-18 for the twin: the path, not the numbers
        return real(**{**kwargs, "input_size": 32, "budget_s": 0.0, "min_reps": 2, "warmup": 0,
                       "names": ("mobilenet_v1", "resnet18")})
    monkeypatch.setattr(study, "model_comparison", small)
    r = D.compute_study(device="cuda", config=_tiny(), fasternet=False, models=True, ceilings=H200)
    m = r.models.set_index("model")
    assert list(m["status"]) == ["ok", "ok"] and m.loc["mobilenet_v1", "time_s"] == pytest.approx(1e-3)
    assert 0 < m.loc["mobilenet_v1", "depthwise_time_share"] < 1 and "profile_error" not in m
    assert m.loc["resnet18", "depthwise_time_share"] == 0.0      # no depthwise layer: nothing to time


class _Attention(torch.nn.Module):
    """A Linear, then SDPA on (batch, 2 heads, 4 tokens, 8): the CPU counts SDPA as one
    ``_scaled_dot_product_flash_attention_for_cpu``; fake CUDA tensors dispatch it to CUDA's kernels
    (on a CPU build of torch its math path: mul, mul, bmm, _safe_softmax, bmm)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.proj(x)
        return torch.nn.functional.scaled_dot_product_attention(q, q, q)


def test_profile_counts_with_cuda_kernels(fake_gpu: FakeGpu) -> None:
    p = hwprof.profile(_Attention(), "2x4x8", device="cuda", ceilings=H200, budget_s=0.0)
    assert p.measurement.math_modes.device_type == "cuda" and p.measurement.run.device == "cuda:0"
    assert p.summary["peak_key"] == "fp32" and p.layers.loc["proj", "roof_key"] == "fp32"
    # the counted kernels are CUDA's: what hwprof.count gives for device="cuda", not for the CPU
    cpu = list(hwprof.count(_Attention(), "2x4x8", device="cpu").ops["op"])
    cuda = list(hwprof.count(_Attention(), "2x4x8", device="cuda").ops["op"])
    assert cpu == ["aten.addmm", "aten._scaled_dot_product_flash_attention_for_cpu"] and cuda != cpu
    assert list(p.counts.ops["op"]) == cuda and p.counts.config["device"] == "cuda"


def test_verify_script_on_cuda(fake_gpu: FakeGpu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    verify = bench_module("gpu_verify_measure")
    db, why = verify.do_bench_median_s(lambda: None, torch.device("cuda", 0))
    assert db is None and why is not None and "triton" in why
    cache = tmp_path / "cache"
    path = cache_path(cache, "NVIDIA H200", quick=True)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({**H200.to_dict(), "quick": True}))
    assert verify.main(["--out", str(tmp_path / "v"), "--device", "cuda", "--quick", "--models", "lenet5",
                        "--budget", "0.0", "--ceilings-cache", str(cache)]) == 0
    timers = pd.read_csv(tmp_path / "v" / "timers.csv")
    assert timers.loc[0, "median_s"] == pytest.approx(1e-3) and pd.isna(timers.loc[1, "median_s"])
    summary = json.loads((tmp_path / "v" / "summary.json").read_text())
    assert summary["ceilings"]["source"] == "cache" and summary["device"]["type"] == "cuda"
    sums = pd.read_csv(tmp_path / "v" / "layer_sums.csv")
    assert set(sums["phase"]) == {"fwd", "bwd"} and sums["alloc_peak_bytes"].notna().any()
    triton = types.ModuleType("triton")
    triton.testing = types.SimpleNamespace(do_bench=lambda fn, warmup, rep, return_mode: 2.5)   # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "triton", triton)
    monkeypatch.setitem(sys.modules, "triton.testing", triton.testing)
    assert verify.do_bench_median_s(lambda: None, torch.device("cuda", 0)) == (pytest.approx(2.5e-3), None)  # ms -> s
