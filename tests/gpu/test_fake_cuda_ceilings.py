"""The ceilings' CUDA paths and the hand-written probes, on the fake device (fake_cuda.py).

These check the **code path, not the numbers**: the GPU plan (sizes kept by free memory), a GEMM
trial with TF32 switched for the block, the copy trial, the datasheet ratios and the cache, and
bench/test_ceiling_probe.py's CUDA probes, with event times of the fake (1 ms per event pair), so
that each rate is exactly work / 1 ms and a unit slip shows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from bench_scripts import bench_module
from fake_cuda import FakeGpu

from hwprof.hardware import ceilings as C
from hwprof.hardware.ceilings import TrialResult, measure_ceilings

STEP_S = 1e-3


def test_gpu_plan_keeps_the_sizes_free_memory_allows(fake_gpu: FakeGpu) -> None:
    fake_gpu.total_memory_bytes, fake_gpu.context_bytes = 64 * 2**20, 0
    plan, budget_s = C._plan(torch.device("cuda", 0), quick=True)
    # 3 n^2 itemsize < half of the 64 MiB free: fp32 n=1024 (12 MiB) fits, 2048 (48 MiB) does not
    assert plan["fp32"] == (1024,) and plan["bf16"] == (1024, 2048) and plan["fp64"] == (1024,)
    assert plan["copy"] == () and budget_s == 0.05              # 2 x 64 MiB > 32 MiB
    fake_gpu.total_memory_bytes = 80 * 2**30
    full, budget_s = C._plan(torch.device("cuda", 0), quick=False)
    assert full["fp32"] == (4096, 8192, 16384) and full["copy"] == (256 * 2**20, 2**30) and budget_s == 0.2


def test_gemm_trial_switches_tf32_for_its_block(fake_gpu: FakeGpu, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    real_mm = torch.mm

    def mm(*args: Any, **kwargs: Any) -> torch.Tensor:
        seen.append(torch.backends.cuda.matmul.allow_tf32)
        return real_mm(*args, **kwargs)
    monkeypatch.setattr(torch, "mm", mm)
    before = torch.backends.cuda.matmul.allow_tf32
    r = C.gemm_flop_per_s("tf32", 16, torch.device("cuda", 0), budget_s=0.0)
    assert set(seen) == {True} and torch.backends.cuda.matmul.allow_tf32 == before
    assert r.time_s == pytest.approx(STEP_S) and r.rate_per_s == pytest.approx(2 * 16**3 / STEP_S)
    seen.clear()
    C.gemm_flop_per_s("fp32", 16, torch.device("cuda", 0), budget_s=0.0)
    assert set(seen) == {False}


def test_copy_trial_counts_read_and_write(fake_gpu: FakeGpu) -> None:
    r = C.device_trial(torch.device("cuda", 0), 0.0)("copy", 4096)
    assert r.rate_per_s == pytest.approx(2 * 4096 / STEP_S) and r.reps >= 5


def test_ceilings_on_a_gpu_with_its_datasheet(fake_gpu: FakeGpu, tmp_path: Path) -> None:
    rates = {"fp32": 60e12, "tf32": 400e12, "bf16": 800e12, "fp16": 800e12, "fp64": 60e12, "copy": 4.4e12,
             "sweep": 4.4e12, "overhead": 2e5}     # overhead: launches per second (5 us each)

    def trial(mode: str, size: int) -> TrialResult:
        if mode == "sweep":            # the sweep's time is what counts: working set / rate
            return TrialResult(rates[mode], size / rates[mode])
        return TrialResult(rates[mode], 1 / rates[mode] if mode == "overhead" else 1e-3)
    k = measure_ceilings(device="cuda", refresh=True, cache_dir=tmp_path, trial=trial)
    assert k.device_type == "cuda" and k.datasheet is not None and k.datasheet["key"] == "H200"
    # the H200 datasheet: bf16 989.4 TFLOP/s dense, 4.8 TB/s
    assert k.ratio_to_datasheet["bf16"] == pytest.approx(800 / 989.4)
    assert k.ratio_to_datasheet["bytes_per_s"] == pytest.approx(4.4 / 4.8)
    assert Path(k.cache_file or "").exists() and "NVIDIA_H200" in Path(k.cache_file or "").name
    again = measure_ceilings(device="cuda", cache_dir=tmp_path)
    assert again.source == "cache" and again.roof("bf16") == 800e12


def test_hand_probes_time_with_events(fake_gpu: FakeGpu) -> None:
    probe = bench_module("test_ceiling_probe")
    assert probe.hand_bf16_gemm_flop_per_s(32) == pytest.approx(2 * 32**3 / STEP_S)
    assert probe.hand_copy_bytes_per_s(2**16) == pytest.approx(2 * 2**16 / STEP_S)


def test_probe_script_compares_with_the_runs_ceilings(fake_gpu: FakeGpu, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    probe = bench_module("test_ceiling_probe")
    monkeypatch.setattr(probe, "hand_bf16_gemm_flop_per_s", lambda n: 1000.0)
    monkeypatch.setattr(probe, "hand_copy_bytes_per_s", lambda nbytes: 100.0)
    k = C.Ceilings("cuda", "NVIDIA H200", "2.11", "2026-12-01", "measured", {"bf16": 980.0}, 90.0)
    (tmp_path / "c.json").write_text(json.dumps(k.to_dict()))
    out = tmp_path / "probe.json"
    args = ["--ceilings", str(tmp_path / "c.json"), "--out", str(out), "--device", "cuda", "--check"]
    assert probe.main(args) == 1                                 # the copy: 90 < 97% of 100
    result = json.loads(out.read_text())
    assert [(r["roof"], r["size"], r["reaches"]) for r in result["probes"]] == [
        ("bf16", 8192, True), ("bytes_per_s", 2**30, False)]
    assert result["probes"][0]["ratio"] == pytest.approx(0.98) and not result["all_reach"]
    assert probe.main(args[:-1]) == 0                            # without --check: recorded, not failed
