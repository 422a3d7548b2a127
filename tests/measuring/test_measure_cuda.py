"""CUDA-only checks (skipped cleanly without a GPU): events timing, NVML sampling, allocator peaks, ceilings."""

from __future__ import annotations

import pytest
import torch
from measure_helpers import TinyNet

from hwprof.hardware.ceilings import measure_ceilings
from hwprof.measuring.probes import MemoryProbes
from hwprof.measuring.runner import measure
from hwprof.measuring.timers import time_fn

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_events_time_a_matmul() -> None:
    a = torch.randn(2048, 2048, device="cuda")
    stats = time_fn(lambda: a @ a, device="cuda", budget_s=0.2, min_reps=5)
    assert stats.reps >= 5 and 0 < stats.min_s <= stats.median_s < 0.1
    assert stats.device.startswith("cuda")


def test_cuda_train_measure_with_memory_and_layers() -> None:
    model = TinyNet().cuda()
    m = measure(model, "3x32x32", batch=8, device="cuda", mode="train", optimizer="adam", per_layer=True,
                budget_s=0.1, layer_reps=1)
    mem = m.memory
    assert 0 < mem["alloc_peak_bytes"] <= mem["reserved_peak_bytes"]
    if mem["nvml_used_peak_bytes"] is not None:
        assert mem["reserved_peak_bytes"] < mem["nvml_used_peak_bytes"]
        assert m.device.get("driver")
    assert mem["alloc_peak_bytes_step"] is not None
    assert mem["alloc_peak_bytes"] == max(p.alloc_bytes for p in m.memory_record.phases)
    # self and inclusive times against a hand derivation: tests/measuring/test_measure_layers.py (scripted
    # clock) and tests/gpu/test_fake_cuda_measure.py (CUDA events); here, that the pass runs on real events
    assert (m.layers["bwd_s"] >= 0).all() and (m.layers["fwd_s"] >= 0).all()
    # one pair: its unhooked whole-model times come from CUDA events read after the pair's sync
    s = m.layer_sum
    for ph in ("fwd", "bwd"):
        assert s[f"{ph}_pairs"] == 1 and 0 < s[f"{ph}_paired_whole_s"] < 1
        assert s[f"{ph}_paired_ratio"] == pytest.approx(s[f"{ph}_layer_sum_s"] / s[f"{ph}_paired_whole_s"])


def test_cpu_model_is_copied_to_cuda_untouched() -> None:
    model = TinyNet()
    m = measure(model, "3x16x16", batch=4, device="cuda", budget_s=0.05)
    assert m.run.measured_copy and next(model.parameters()).device.type == "cpu"


def test_nvml_sampling() -> None:
    dev = torch.device("cuda", torch.cuda.current_device())
    with MemoryProbes(dev, interval_s=0.002) as p:
        x = torch.empty(256 * 2**20, dtype=torch.uint8, device=dev)
        torch.cuda.synchronize()
        del x
    out = p.result()
    if out.nvml_baseline_bytes is None:
        pytest.skip(f"NVML unusable here: {p.notes}")
    assert out.nvml_used_peak_bytes is not None and out.nvml_used_peak_bytes >= out.nvml_baseline_bytes


def test_cuda_ceilings_quick(tmp_path) -> None:  # type: ignore[no-untyped-def]
    k = measure_ceilings(device="cuda", quick=True, cache_dir=tmp_path)
    assert k.roof("fp32") > 0 and k.bytes_per_s > 0
    if "bf16" in k.flop_per_s and torch.cuda.get_device_capability() >= (8, 0):
        assert k.roof("bf16") > k.roof("fp32")


def test_cuda_allocator_trace_agrees_with_max_memory_allocated() -> None:
    """The profiler's CUDA allocator events, replayed, against the allocator's own peak counter."""
    model = TinyNet().cuda()
    m = measure(model, "3x32x32", batch=64, device="cuda", mode="train", optimizer="adam", budget_s=0.05)
    mem = m.memory
    trace, peak = mem["alloc_trace_peak_bytes"], mem["alloc_peak_bytes"]
    assert 0 < mem["alloc_trace_peak_without_workspace_bytes"] <= trace
    # the same training step (forward, backward, Adam with its state live) seen two ways
    assert abs(trace - peak) <= 0.1 * peak, (trace, peak)
