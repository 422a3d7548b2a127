"""Memory validation's CUDA paths, on the fake device (fake_cuda.py): the comparison with
``max_memory_allocated`` / ``max_memory_reserved`` and NVML, ``--fit``'s device budget and capped
allocator, and bench/memory_validation.py's CUDA sweep with its per-point time bound.

These check the **code path, not the numbers**: which measured key each predictor is compared
with, that the CUDA context is NVML's process bytes minus the reserved bytes, that an allocator
capped at the fit's limit runs out of memory one batch later. The fake allocator counts only the
tensors made for the device (the model's copy, the inputs), so the errors printed are no
verdict on a predictor."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from bench_scripts import bench_module
from fake_cuda import FakeGpu

from hwprof.cli import main as cli_main
from hwprof.memory.estimate import estimate_memory
from hwprof.memory.fake_model import fake_device_for
from hwprof.memory.fit import FitResult, capped_cuda_memory, check_fit, device_total_bytes
from hwprof.memory.validate import error_pct, validate

LINEAR_STATE = 1024 * 4 * 4 + 4 * 4   # nn.Linear(1024, 4): weight and bias, float32


def test_validation_compares_with_the_allocator_peaks(fake_gpu: FakeGpu) -> None:
    model = torch.nn.Linear(1024, 4)
    est = estimate_memory(model, "1024", mode="inference", batch=8, device="cuda")
    v = validate(model, "1024", device="cuda", mode="inference", batch=8, estimate=est, budget_s=0.01)
    assert v.compared == "alloc_peak_bytes" and not v.oom
    measured = LINEAR_STATE + 8 * 1024 * 4                    # the fake holds the copy and the input
    assert v.measured["alloc_peak_bytes"] == measured and v.measured["reserved_peak_bytes"] == 2 * 2**20
    row = v.table.loc["simulated"]
    assert row["measured_alloc_peak_bytes"] == measured
    assert row["error_pct"] == pytest.approx(error_pct(int(row["predicted_peak_bytes"]), measured))
    assert row["reserved_error_pct"] == pytest.approx(error_pct(int(row["predicted_reserved_bytes"]), 2 * 2**20))
    assert v.measured["cuda_context_bytes"] == fake_gpu.context_bytes   # NVML process bytes - reserved
    assert fake_gpu.calls["clearCublasWorkspaces"] == 1                # the run started without workspaces


def test_fake_tensors_on_cuda_where_cuda_exists(fake_gpu: FakeGpu) -> None:
    assert fake_device_for("cuda", "cuda") == torch.device("cuda", 0)
    assert fake_device_for("cpu", "cuda") == torch.device("cpu")


def test_fit_budget_and_capped_allocator(fake_gpu: FakeGpu) -> None:
    free, _ = torch.cuda.mem_get_info()
    assert device_total_bytes("cuda") == free + torch.cuda.memory_reserved()
    with capped_cuda_memory(fake_gpu.total_memory_bytes // 4, "cuda"):
        assert fake_gpu.fraction == pytest.approx(0.25)
    assert fake_gpu.fraction == 1.0
    # room for the copy and a batch of 4 (16 KiB of input), not 5: the check agrees with the fit
    limit = LINEAR_STATE + 4 * 1024 * 4 + 100
    fit = FitResult(limit, 4, "reserved_predicted_bytes", pd.DataFrame())
    df = check_fit(torch.nn.Linear(1024, 4), "1024", fit, device="cuda", mode="inference", budget_s=0.01)
    assert df[["batch", "measured_fit", "oom", "agrees"]].values.tolist() == [[4, True, False, True],
                                                                                [5, False, True, True]]
    assert df.loc[0, "alloc_peak_bytes"] == limit - 100 and fake_gpu.fraction == 1.0


def test_sweep_on_cuda_compares_with_max_memory_allocated(fake_gpu: FakeGpu, tmp_path: Path) -> None:
    bench = bench_module("memory_validation")
    assert bench.main(["--out", str(tmp_path), "--device", "cuda", "--quick", "--models", "lenet5", "--modes",
                       "inference", "--batches-per-model", "1", "--budget", "0.01", "--point-timeout", "120"]) == 0
    df = pd.read_csv(tmp_path / "memory-validation-cuda.csv")
    assert list(df["predictor"]) == ["seed", "seed_per_layer", "formula", "simulated"]
    assert (df["compared_bytes"] == df["measured_alloc_bytes"]).all()
    assert df["measured_reserved_bytes"].notna().all() and df["reserved_error_pct"].notna().any()
    assert (tmp_path / "memory-validation-cuda.png").exists()


def test_a_point_past_its_time_is_recorded_and_the_sweep_goes_on(fake_gpu: FakeGpu, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    bench = bench_module("memory_validation")
    ran: list[tuple[str, int]] = []

    def one_point(name: str, spec: str, model: Any, batch: int, mode: str, *args: Any) -> list[dict[str, Any]]:
        ran.append((name, batch))
        if name == "lenet5":
            time.sleep(5)
        return [{"model": name, "input": spec, "batch": batch, "mode": mode, "predictor": "simulated",
                 "oom": False, "error_pct": 0.0, "compared_bytes": 1, "predicted_compared_bytes": 1}]
    monkeypatch.setattr(bench, "one_point", one_point)
    t0 = time.monotonic()
    assert bench.main(["--out", str(tmp_path), "--device", "cuda", "--quick", "--models", "lenet5,gpt_tiny",
                       "--modes", "train", "--point-timeout", "0.3"]) == 0
    assert time.monotonic() - t0 < 30
    # batch size first: both models at their first batch, then at their second
    assert ran == [("lenet5", 8), ("gpt_tiny", 2), ("lenet5", 32), ("gpt_tiny", 4)]
    df = pd.read_csv(tmp_path / "memory-validation-cuda.csv")
    timed_out = df[df["notes"].fillna("").str.startswith("timed out")]
    assert list(timed_out["batch"]) == [8, 32] and (df["model"] == "gpt_tiny").sum() == 2
    assert fake_gpu.calls["empty_cache"] >= 2                     # memory freed after each timed-out point


def test_time_budget_records_the_points_left(tmp_path: Path) -> None:
    bench = bench_module("memory_validation")
    assert bench.main(["--out", str(tmp_path), "--device", "cpu", "--quick", "--models", "lenet5",
                       "--time-budget", "0"]) == 0
    df = pd.read_csv(tmp_path / "memory-validation-cpu.csv")
    assert len(df) == 4 and df["notes"].str.startswith("skipped: the time budget").all()


def test_cli_validates_on_cuda(fake_gpu: FakeGpu, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["memory", "lenet5", "--device", "cuda", "--validate", "--batch", "2", "--mode", "inference",
                     "--budget", "0.01", "--format", "csv"]) == 0
    df = pd.read_csv(io.StringIO(capsys.readouterr().out), index_col="predictor")
    # the fake allocator holds LeNet-5's copy, 431,080 x 4 = 1,724,320 B, and the input, 2 x 28 x 28 x 4
    # = 6,272 B: 1,730,592 B, in one 2 MiB segment; NVML's used memory above its baseline is that segment
    measured = 431_080 * 4 + 2 * 28 * 28 * 4
    assert (df["measured_alloc_peak_bytes"] == measured).all() and measured == 1_730_592
    assert (df["measured_reserved_peak_bytes"] == 2 * 2**20).all()
    assert (df["nvml_used_minus_baseline_bytes"] == 2 * 2**20).all()
    # seed 000 in inference: params + input + the 7 leaf outputs at batch 2 (conv1 92,160, pool1 23,040,
    # conv2 25,600, pool2 6,400, fc1 4,000, its in-place relu 4,000 again, fc2 80 = 155,280 B)
    seed = 1_724_320 + 6_272 + 155_280
    assert df.loc["seed", "peak_predicted_bytes"] == seed
    assert df.loc["seed", "error_pct"] == pytest.approx(100 * 155_280 / measured)     # +8.97%
