"""The CPU allocator probe (hwprof.measuring.alloc_trace): event replay, real allocations, and the
simulated memory predictor checked against it on real CPU runs."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

import hwprof
from hwprof.measuring.alloc_trace import (
    alloc_trace_peak,
    memory_timeline,
    op_transients,
    storage_bytes,
    summarize,
    window_peak_bytes,
    workspace_at,
    workspace_peak_bytes,
)

MiB = 2**20


def test_window_peak_replays_allocations_and_frees() -> None:
    events = [(3, 0xC, 50), (0, 0xA, 100), (1, 0xB, 200), (2, 0xA, -100), (4, 0xD, -999)]   # unsorted
    peak, net, count = window_peak_bytes(events)
    # t0 +100 (A) -> 100; t1 +200 (B) -> 300 = peak; t2 free A -> 200; t3 +50 (C) -> 250;
    # t4 frees D, allocated before the window: ignored
    assert (peak, net, count) == (300, 250, 3)


def test_window_peak_a_reused_pointer_without_free_replaces_the_block() -> None:
    # the block at 0xA is re-reported with a new size (a free the profiler missed): 100 -> 40
    assert window_peak_bytes([(0, 0xA, 100), (1, 0xA, 40)]) == (100, 40, 2)


def test_storage_bytes_counts_each_storage_once() -> None:
    base = torch.zeros(1000)                       # 4000 B
    other = torch.zeros(10, dtype=torch.float64)   # 80 B
    assert storage_bytes([base, base[10:], base.view(10, 100), other, "not a tensor", None]) == 4000 + 80


def test_real_allocations_are_seen_exactly() -> None:
    kept: list[torch.Tensor] = []

    def run() -> None:
        a = torch.empty(1 * MiB, dtype=torch.uint8)
        b = torch.empty(2 * MiB, dtype=torch.uint8)   # 1 + 2 MiB live: the peak
        del a
        c = torch.empty(MiB // 2, dtype=torch.uint8)  # 2.5 MiB live
        kept.append(c)
        del b

    r = alloc_trace_peak(run, live_before_bytes=123)
    assert r.window_peak_bytes == 3 * MiB
    assert r.net_bytes == MiB // 2                    # c is still live (held by `kept`)
    assert r.peak_bytes == 123 + 3 * MiB
    assert r.allocations == 3
    assert r.to_dict()["peak_bytes"] == r.peak_bytes


class _ExtraFields_Allocation:   # noqa: N801 - named like torch's profiler class, which op_transients matches by name
    def __init__(self, ptr: int, size: int) -> None:
        self.ptr, self.alloc_size, self.device = ptr, size, torch.device("cpu")


def _ev(name: str, t: int, children: list[Any] | None = None, alloc: tuple[int, int] | None = None) -> Any:
    extra = _ExtraFields_Allocation(*alloc) if alloc else object()
    return SimpleNamespace(name=name, start_time_ns=t, children=children or [], extra_fields=extra)


def _fake_prof(roots: list[Any]) -> Any:
    return SimpleNamespace(profiler=SimpleNamespace(kineto_results=SimpleNamespace(
        experimental_event_tree=lambda: roots)))


def _conv_and_relu() -> list[Any]:
    conv = _ev("aten::conv2d", 0, [                  # CompositeImplicitAutograd: descended through
        _ev("aten::mkldnn_convolution", 1, [
            _ev("[memory]", 2, alloc=(0x1, 4096)),    # reordered weights
            _ev("[memory]", 3, alloc=(0x4, 512)),     # a second scratch buffer
            _ev("[memory]", 4, alloc=(0x1, -4096)),   # both freed before the op returns
            _ev("[memory]", 5, alloc=(0x4, -512)),
            _ev("[memory]", 6, alloc=(0x2, 1000)),    # the output, allocated after the scratch is gone
        ])])
    conv.children[0].end_time_ns = 7
    relu = _ev("aten::relu", 8, [_ev("[memory]", 9, alloc=(0x3, 1000))])
    relu.end_time_ns = 10
    return [_ev("ProfilerStep", 0, [conv, relu])]


def test_op_transients_are_the_bytes_an_op_frees_itself() -> None:
    got = dict(op_transients(_fake_prof(_conv_and_relu())))
    # mkldnn_convolution held 4096 + 512 B of scratch at once; its 1000 B output is not scratch
    # (in-op peak minus output would say 4608 - 1000 = 3608); relu allocated only its output
    assert got == {"aten::mkldnn_convolution": 4096 + 512, "aten::relu": 0}


def test_workspace_at_a_moment() -> None:
    events = [(2, 0x1, 4096), (3, 0x4, 512), (4, 0x1, -4096), (5, 0x4, -512), (6, 0x2, 1000)]
    assert workspace_at(events, 3) == 4096 + 512
    assert workspace_at(events, 4) == 512
    assert workspace_at(events, 6) == 0                 # only the output is held
    assert workspace_peak_bytes(events) == 4096 + 512


def test_summary_splits_the_peak_into_tensors_and_workspace() -> None:
    r = summarize(_fake_prof(_conv_and_relu()), live_before_bytes=100)
    # all events: 4096, +512 -> 4608 (the peak, at t=3 inside mkldnn_convolution), -4096, -512,
    # +1000 (conv output), +1000 (relu output) -> 2000 live at the end
    assert (r.window_peak_bytes, r.net_bytes, r.allocations) == (4608, 2000, 4)
    assert r.peak_op == "aten::mkldnn_convolution" and r.workspace_at_peak_bytes == 4608
    # without the scratch buffers only the two outputs remain: 2000 B at most
    assert r.peak_without_workspace_bytes == 100 + 2000
    assert (r.max_op_transient_op, r.max_op_transient_bytes) == ("aten::mkldnn_convolution", 4608)


def test_timeline_is_the_replay_with_the_op_of_each_event() -> None:
    r = summarize(_fake_prof(_conv_and_relu()), live_before_bytes=100)
    tl = r.timeline
    assert tl is not None and tl.events == 6
    # live before 100 B, then +4096, +512, -4096, -512 (scratch), +1000 (conv output), +1000 (relu output)
    assert tl.live_bytes == (4196, 4708, 612, 100, 1100, 2100)
    assert tl.time_s == (0.0, 1e-9, 2e-9, 3e-9, 4e-9, 7e-9)   # events at t = 2..6 and 9 ns, from the first
    assert tl.op == ("aten::mkldnn_convolution",) * 5 + ("aten::relu",)
    assert tl.peak_index == 1 and tl.live_bytes[tl.peak_index] == r.peak_bytes   # the summary's peak


def test_a_long_timeline_is_thinned_to_its_envelope() -> None:
    # 10,002 events, one every 10 ns: 1000 B allocated and freed 5000 times (live 7 + 1000, then 7), and a
    # 50,000 B block allocated at t = 60,005 ns, during the 3001st allocation, and freed 1 ns later
    events = [e for i in range(5000) for e in ((20 * i, i, 1000), (20 * i + 10, i, -1000))]
    events += [(60_005, 10**6, 50_000), (60_006, 10**6, -50_000)]
    full = memory_timeline(events, 7, max_points=10**6)
    tl = memory_timeline(events, 7, max_points=100)
    assert full.events == tl.events == 10_002 and len(full.live_bytes) == 10_002
    assert len(tl.live_bytes) <= 100 and list(tl.time_s) == sorted(tl.time_s)
    assert (max(tl.live_bytes), min(tl.live_bytes)) == (max(full.live_bytes), min(full.live_bytes)) == (51_007, 7)
    assert tl.time_s[tl.peak_index] == full.time_s[full.peak_index] == 60_005e-9   # the same peak, same time


def _models() -> dict[str, tuple[nn.Module, str]]:
    torch.manual_seed(0)
    return {
        "linear": (nn.Linear(64, 64), "64"),
        "mlp_gelu_dropout": (nn.Sequential(nn.Linear(32, 128), nn.GELU(), nn.Dropout(0.1), nn.Linear(128, 10)), "32"),
        "conv_bn_relu_linear": (nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                              nn.Flatten(), nn.Linear(8 * 16 * 16, 10)), "3x16x16"),
    }


QUICK = dict(budget_s=0.01, warmup=1, min_reps=2, max_reps=2)


def test_measure_reports_the_cpu_allocator_peak() -> None:
    model = nn.Linear(64, 64)
    m = hwprof.measure(model, "64", batch=8, device="cpu", **QUICK)
    mem = m.memory
    # live before: weight 64*64*4 + bias 64*4 = 16640 B, input 8*64*4 = 2048 B
    assert mem["alloc_trace_live_before_bytes"] == 16640 + 2048
    # two no-grad forwards, one addmm output of 8*64*4 = 2048 B live at a time
    assert mem["alloc_trace_window_peak_bytes"] == 2048
    assert mem["alloc_trace_peak_bytes"] == 16640 + 2048 + 2048
    assert mem["alloc_trace_net_bytes"] == 0
    assert any("alloc_trace_peak_bytes" in n for n in m.notes)
    off = hwprof.measure(model, "64", batch=8, device="cpu", alloc_trace=False, **QUICK)
    assert "alloc_trace_peak_bytes" not in off.memory


@pytest.mark.parametrize("name", ["linear", "mlp_gelu_dropout", "conv_bn_relu_linear"])
def test_simulated_predictor_matches_the_cpu_allocator_in_training(name: str) -> None:
    """The fake-tensor replay (no real memory) against torch's CPU allocator on a real Adam step."""
    model, spec = _models()[name]
    est = hwprof.estimate_memory(model, spec, batch=8, mode="train", optimizer="adam", device="cpu")
    m = hwprof.measure(model, spec, batch=8, device="cpu", mode="train", optimizer="adam", **QUICK)
    predicted = int(est.predictors.loc["simulated", "peak_predicted_bytes"])
    measured = m.memory["alloc_trace_peak_bytes"]
    # within 0.1%: Adam's 0-dim step counters and kernel scratch buffers are the only slack seen
    assert abs(predicted - measured) <= 0.001 * measured, (predicted, measured)


@pytest.mark.parametrize("mode", ["train", "inference"])
@pytest.mark.parametrize("name", ["linear", "mlp_gelu_dropout", "conv_bn_relu_linear"])
def test_formula_predictor_against_the_cpu_allocator(name: str, mode: str) -> None:
    """The closed-form predictor against the tensors torch's CPU allocator held (scratch aside)."""
    model, spec = _models()[name]
    opt = "adam" if mode == "train" else None
    est = hwprof.estimate_memory(model, spec, batch=8, mode=mode, optimizer=opt, device="cpu")
    mem = hwprof.measure(model, spec, batch=8, device="cpu", mode=mode, optimizer=opt, **QUICK).memory
    predicted = int(est.predictors.loc["formula", "peak_predicted_bytes"])
    tensors = mem["alloc_trace_peak_without_workspace_bytes"]
    assert abs(predicted - tensors) <= 0.005 * tensors, (predicted, tensors)


@pytest.mark.parametrize("name", ["linear", "mlp_gelu_dropout"])
def test_simulated_predictor_matches_the_cpu_allocator_in_inference(name: str) -> None:
    model, spec = _models()[name]
    est = hwprof.estimate_memory(model, spec, batch=8, mode="inference", device="cpu")
    m = hwprof.measure(model, spec, batch=8, device="cpu", **QUICK)
    assert int(est.predictors.loc["simulated", "peak_predicted_bytes"]) == m.memory["alloc_trace_peak_bytes"]


@pytest.mark.parametrize("mode", ["inference", "train"])
def test_conv_workspace_is_measured_and_the_rest_is_predicted(mode: str) -> None:
    """oneDNN's convolution allocates and frees scratch buffers inside the op: the replay of op
    outputs cannot see them, the probe measures them, and without them the real peak is what
    the replay predicts."""
    model, spec = _models()["conv_bn_relu_linear"]
    opt = "adam" if mode == "train" else None
    est = hwprof.estimate_memory(model, spec, batch=8, mode=mode, optimizer=opt, device="cpu")
    mem = hwprof.measure(model, spec, batch=8, device="cpu", mode=mode, optimizer=opt, **QUICK).memory
    predicted = int(est.predictors.loc["simulated", "peak_predicted_bytes"])
    assert mem["alloc_trace_max_op_transient_op"] in ("aten::mkldnn_convolution", "aten::convolution",
                                                     "aten::convolution_backward")
    assert mem["alloc_trace_max_op_transient_bytes"] > 0
    tensors = mem["alloc_trace_peak_without_workspace_bytes"]
    assert abs(predicted - tensors) <= 64, (predicted, tensors)    # Adam's 0-dim step counters at most
    assert mem["alloc_trace_peak_bytes"] >= tensors
