"""hwprof's CUDA measurement paths, run on the CPU against the fake device (fake_cuda.py).

These check the **code path, not the numbers**: that every CUDA branch of the runner, the timers,
the paired timing, the probes and the allocator trace runs; that times come out of CUDA events
in seconds (the fake's events are 1 ms apart, so a wrong unit shows); that memory comes from the
allocator's counters under the right keys, NVML's facts under theirs. What a GPU would measure,
only the GPU session (bench/gpu_session.sh) says."""

from __future__ import annotations

import math
import os

import pytest
import torch
from fake_cuda import FakeGpu
from measure_helpers import FakeClock, TinyNet

from hwprof.device import describe_device, free_device_memory, resolve_device, same_device
from hwprof.errors import DeviceUnavailableError, MeasurementError
from hwprof.measuring.paired import time_paired
from hwprof.measuring.probes import MemoryProbes, Nvml
from hwprof.measuring.runner import measure
from hwprof.measuring.timers import Stopwatch, l2_flush_bytes, time_fn

QUICK = dict(budget_s=0.01, warmup=1, min_reps=2, max_reps=3)
STEP_S = 1e-3   # the fake's events are FakeGpu.event_step_ns = 1 ms apart


def _bytes(*tensors: torch.Tensor) -> int:
    return sum(t.untyped_storage().nbytes() for t in tensors)


def test_devices_resolve_to_the_fake_gpu(fake_gpu: FakeGpu) -> None:
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    with pytest.raises(DeviceUnavailableError, match="only 1 CUDA device"):
        resolve_device("cuda:1")
    assert same_device(torch.device("cuda"), torch.device("cuda", 0))
    info = describe_device(torch.device("cuda", 0))
    assert (info["name"], info["capability"], info["sm_count"]) == ("NVIDIA H200", "9.0", 132)
    assert info["total_memory_bytes"] == fake_gpu.total_memory_bytes and info["l2_cache_bytes"] == 4 * 2**20


def test_inference_times_come_from_events_in_seconds(fake_gpu: FakeGpu) -> None:
    model = TinyNet()
    m = measure(model, "3x8x8", batch=4, device="cuda", clock=FakeClock(1000), **QUICK)
    st = m.timings["fwd_nograd"]
    # each rep is one event pair, recorded 1 ms apart on the fake clock: 1e-3 s, not 1 (ms) or 1e-6
    assert st.times_s == [pytest.approx(STEP_S)] * st.reps and st.device == "cuda:0"
    assert m.run.measured_copy and next(model.parameters()).device.type == "cpu"
    # the allocator held the model's copy and the input; op outputs are not the fake's to count
    state = _bytes(*model.parameters(), *model.buffers())
    assert m.memory["alloc_peak_bytes"] == state + 4 * 3 * 8 * 8 * 4
    assert m.memory["reserved_peak_bytes"] == 2 * 2**20
    assert fake_gpu.calls["reset_peak_memory_stats"] >= 1 and fake_gpu.calls["device.__enter__"] >= 1


def test_nvml_facts_and_peaks_under_their_keys(fake_gpu: FakeGpu) -> None:
    m = measure(TinyNet(), "3x8x8", batch=2, device="cuda", alloc_trace=False, **QUICK)
    mem, dev = m.memory, m.device
    assert mem["nvml_baseline_bytes"] == fake_gpu.context_bytes                 # before the model was copied
    assert mem["nvml_used_peak_bytes"] == fake_gpu.context_bytes + 2 * 2**20     # + the reserved segment
    assert mem["nvml_process_bytes"] == mem["nvml_used_peak_bytes"]
    assert dev["nvml_name"] == "NVIDIA H200" and dev["driver"] == fake_gpu.driver
    assert dev["power_limit_w"] == 700.0                                       # NVML gives milliwatts
    assert (dev["sm_clock_max_mhz"], dev["mem_clock_mhz"], dev["temperature_c"]) == (1980, 2619, 40)
    assert not any("CPU run" in n for n in m.notes)


def test_nvml_missing_or_silent_is_a_note(fake_gpu: FakeGpu, monkeypatch: pytest.MonkeyPatch) -> None:
    import pynvml

    monkeypatch.setattr(pynvml, "nvmlDeviceGetComputeRunningProcesses", lambda handle: [])
    dev = torch.device("cuda", 0)
    with MemoryProbes(dev) as p:
        pass
    assert p.result().nvml_process_bytes is None and any("does not list this process" in n for n in p.notes)

    def broken() -> None:
        raise pynvml.NVMLError("NVML_ERROR_DRIVER_NOT_LOADED")
    monkeypatch.setattr(pynvml, "nvmlInit", broken)
    with MemoryProbes(dev) as p:
        pass
    assert p.result().nvml_used_peak_bytes is None and "nvmlInit failed" in p.notes[0]


def test_nvml_handle_by_uuid_then_by_index(fake_gpu: FakeGpu) -> None:
    nv = Nvml(torch.device("cuda", 0))
    assert nv.ok and nv.used_bytes() == fake_gpu.context_bytes
    nv.close()
    fake_gpu.uuid = "GPU-another"      # the UUID torch reports is unknown to NVML: the index is used
    nv = Nvml(torch.device("cuda", 0))
    assert nv.ok
    nv.close()


def test_nvml_failures_leave_its_fields_none(fake_gpu: FakeGpu, monkeypatch: pytest.MonkeyPatch) -> None:
    import pynvml

    def fails(*args: object) -> None:
        raise pynvml.NVMLError("NVML_ERROR_NOT_SUPPORTED")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetTemperature", fails)      # one query unsupported: left out
    nv = Nvml(torch.device("cuda", 0))
    info = nv.info()
    assert "temperature_c" not in info and info["power_limit_w"] == 700.0
    monkeypatch.setattr(pynvml, "nvmlDeviceGetComputeRunningProcesses", fails)
    assert nv.process_bytes() == (None, "NVML per-process memory unavailable (NVMLError: NVML_ERROR_NOT_SUPPORTED)")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetComputeRunningProcesses",
                        lambda handle: [type("P", (), {"pid": os.getpid(), "usedGpuMemory": None})()])
    assert nv.process_bytes()[1] == "NVML lists this process without its memory (not permitted by the driver)"
    nv.close()
    fake_gpu.uuid = "GPU-another"
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", fails)     # no handle at all
    nv = Nvml(torch.device("cuda", 0))
    assert not nv.ok and nv.reason is not None and "no handle for cuda:0" in nv.reason
    assert nv.used_bytes() is None and nv.process_bytes() == (None, None) and nv.info() == {}


def test_train_per_layer_pairs_and_allocator_trace(fake_gpu: FakeGpu) -> None:
    model = TinyNet()
    m = measure(model, "3x8x8", batch=4, device="cuda", mode="train", optimizer="adam", per_layer=True,
                layer_reps=2, clock=FakeClock(1000), **QUICK)
    for phase in ("fwd", "bwd", "step"):
        assert m.timings[phase].median_s == pytest.approx(STEP_S)
        assert m.memory[f"alloc_peak_bytes_{phase}"] is not None
    # Every event the hooks record is one 1 ms step after the previous one. Forward: TinyNet's 16 module
    # calls record a start and an end event each, nested as the calls are, so a leaf spans 1 step and a
    # parent with k children 2k + 1 steps of which k + 1 are its own. Backward: each autograd node is
    # bracketed by a pre- and a post-hook event, 1 step, and a module's backward self time is its nodes:
    # Conv2d with bias 3 (ConvolutionBackward0, 2 AccumulateGrad), BatchNorm2d 3, ReLU 1, the blocks'
    # bias-free conv 2, each Block's residual add 1, the pool 1, Linear 4 (AddmmBackward0, TBackward0,
    # 2 AccumulateGrad), the root's flatten 1; a Sequential creates none.
    #               fwd_s  fwd_incl  bwd_s  bwd_incl   (ms)
    expected = {"": (5, 31, 1, 27), "stem": (4, 7, 0, 7), "stem.0": (1, 1, 3, 3), "stem.1": (1, 1, 3, 3),
                "stem.2": (1, 1, 1, 1), "blocks": (3, 17, 0, 14), "pool": (1, 1, 1, 1), "fc": (1, 1, 4, 4)}
    for b in ("blocks.0", "blocks.1"):
        expected |= {b: (4, 7, 1, 7), f"{b}.conv": (1, 1, 2, 2), f"{b}.bn": (1, 1, 3, 3), f"{b}.relu": (1, 1, 1, 1)}
    lay = m.layers
    got = {p: tuple(round(v * 1e3, 9) for v in row) for p, row in
           zip(lay.index, lay[["fwd_s", "fwd_incl_s", "bwd_s", "bwd_incl_s"]].itertuples(index=False), strict=True)}
    assert got == expected
    s = m.layer_sum
    # the unhooked rep is one event pair: 1 ms; the hooked one's self times sum to 31 ms forward (16 calls:
    # 32 events, 31 steps) and 27 ms backward (27 hooked nodes)
    for ph, layer_sum_ms in (("fwd", 31), ("bwd", 27)):
        assert s[f"{ph}_pairs"] == 2 and s[f"{ph}_paired_whole_s"] == pytest.approx(STEP_S)
        assert s[f"{ph}_layer_sum_s"] == pytest.approx(layer_sum_ms * STEP_S)
        assert s[f"{ph}_paired_ratio"] == pytest.approx(layer_sum_ms)
    # the trace pass starts from what the allocator holds (memory_allocated: the copy and the input,
    # not the 2 MiB reserved, nor a sum of storages)
    assert m.memory["alloc_trace_live_before_bytes"] == _bytes(*model.parameters(), *model.buffers()) + 4 * 3 * 8 * 8 * 4
    assert fake_gpu.calls["profiler.CUDA"] >= 1


def test_l2_flush_buffer_is_counted_and_noted(fake_gpu: FakeGpu) -> None:
    assert l2_flush_bytes("cuda") == 64 * 2**20                  # max(2 x 4 MiB L2, 64 MiB)
    m = measure(torch.nn.Linear(4, 4), "4", device="cuda", l2_flush=True, alloc_trace=False, **QUICK)
    assert m.memory_record.l2_flush_buffer_bytes == 64 * 2**20
    assert m.memory["alloc_peak_bytes_fwd_nograd"] >= 64 * 2**20
    assert any(n.startswith("l2_flush:") for n in m.notes)


class FourOps(torch.nn.Module):
    """mm, sin, exp, add: four aten ops with no aten op below them (each is its own innermost event)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(torch.sin(torch.mm(x, self.w))) + 1


def test_per_op_pass_asks_for_device_times(fake_gpu: FakeGpu) -> None:
    # the fake's kernels: 40, 7, 5 and 3 us, neither the ops' CPU times nor zero
    fake_gpu.kernel_us = {"aten::mm": 40.0, "aten::sin": 7.0, "aten::exp": 5.0, "aten::add": 3.0}
    m = measure(FourOps(), "8", batch=4, device="cuda", per_op=True, alloc_trace=False, **QUICK)
    assert list(m.ops.columns) == ["phase", "op", "time_s"]
    assert list(m.ops.itertuples(index=False, name=None)) == [
        ("fwd", "aten.mm", pytest.approx(40e-6)), ("fwd", "aten.sin", pytest.approx(7e-6)),
        ("fwd", "aten.exp", pytest.approx(5e-6)), ("fwd", "aten.add", pytest.approx(3e-6))]
    assert fake_gpu.calls["profiler.CUDA"] == 3                  # one profiler session per profiled iteration


def test_per_op_device_time_sums_the_kernels_below_each_op(fake_gpu: FakeGpu) -> None:
    # every innermost aten event gets a 2 us kernel: an op is 2 us per innermost event below it (itself
    # if it has none), never 0
    fake_gpu.default_kernel_us = 2.0
    m = measure(TinyNet(), "3x8x8", device="cuda", per_op=True, alloc_trace=False, **QUICK)
    assert len(m.ops) == 13 and list(m.ops["phase"]) == ["fwd"] * 13
    us = m.ops["time_s"] * 1e6
    assert (us >= 2 - 1e-9).all() and all(abs(v / 2 - round(v / 2)) < 1e-6 for v in us)


def test_out_of_memory_names_the_phase_and_the_allocator(fake_gpu: FakeGpu) -> None:
    fake_gpu.total_memory_bytes = 3 * 2**20                       # fits the model, not a 4 MiB input
    with pytest.raises(MeasurementError) as e:
        measure(torch.nn.Linear(1024, 4), "1024", batch=1024, device="cuda", **QUICK)
    assert e.value.oom and e.value.phase == "setup" and e.value.batch == 1024
    assert e.value.allocated_bytes == 4 * 1024 * 4 + 4 * 4        # the copy's weight and bias, held then
    assert fake_gpu.calls["empty_cache"] >= 1                     # free_device_memory ran


def test_free_device_memory_clears_cublas_workspaces(fake_gpu: FakeGpu) -> None:
    free_device_memory(torch.device("cuda", 0), cublas_workspaces=True)
    assert fake_gpu.calls["clearCublasWorkspaces"] == 1 and fake_gpu.calls["synchronize"] == 1


def test_paired_rounds_are_event_pairs(fake_gpu: FakeGpu) -> None:
    calls: list[str] = []
    p = time_paired({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, device="cuda",
                    warmup=1, min_rounds=3, max_rounds=4, budget_s=0.0, clock=FakeClock(1000))
    assert p.rounds == 3 and calls[:4] == ["a", "b", "a", "b"]
    assert p.times_s["a"] == [pytest.approx(STEP_S)] * 3 and p.ratio("b").median == pytest.approx(1.0)
    assert fake_gpu.calls["Event.synchronize"] == 1               # one host sync per batch of rounds


def test_time_fn_and_stopwatch_read_events_after_one_sync(fake_gpu: FakeGpu) -> None:
    stats = time_fn(lambda: None, device="cuda", warmup=0, min_reps=3, max_reps=3, clock=FakeClock(1000))
    assert stats.times_s == [pytest.approx(STEP_S)] * 3 and stats.stop_reason == "max_reps"
    # a budget left after the first batch: the next batch is sized by the time per rep (host clock)
    stats = time_fn(lambda: None, device="cuda", warmup=0, min_reps=2, max_reps=1000, budget_s=0.01, target_iqr=0,
                    clock=FakeClock(1_000_000))
    assert stats.stop_reason == "budget" and stats.reps > 2 and fake_gpu.calls["Event.synchronize"] >= 2
    w = Stopwatch("cuda", marks=3)
    w.reset()
    for _ in range(3):
        w.mark()
    assert w.elapsed_s(0, 2) == pytest.approx(2 * STEP_S) and not math.isnan(w.elapsed_s(0, 1))


def test_cuda_batches_are_sized_by_the_time_per_rep(fake_gpu: FakeGpu) -> None:
    """Host clock 1 ms per read, budget 10 ms, min_reps 2. Reads (from the start): start 0; batch 1 (2 reps) 1-2 ms: 0.5 ms
    per rep, 8 ms left -> 16 reps; batch 2 at 3-4 ms: 1/16 ms per rep, 6 ms left -> 96; batch 3 at 5-6 ms
    -> 384, capped at 100; batch 4 at 7-8 ms -> 200, capped at 100; batch 5 ends at 10 ms: the budget.
    2 + 16 + 96 + 100 + 100 = 314 reps in 5 batches, one host sync each."""
    clock = FakeClock(1_000_000)
    clock.t = 5_000_000_000                  # the host clock does not start at 0: only differences count
    stats = time_fn(lambda: None, device="cuda", warmup=0, min_reps=2, max_reps=1000, budget_s=0.01, target_iqr=0,
                    clock=clock)
    assert stats.reps == 314 and stats.stop_reason == "budget"
    assert fake_gpu.calls["Event.synchronize"] == 5


def test_cuda_l2_flush_is_twice_a_large_l2(monkeypatch: pytest.MonkeyPatch) -> None:
    from fake_cuda import installed

    with installed(monkeypatch, FakeGpu(l2_cache_bytes=50 * 2**20)):
        assert l2_flush_bytes("cuda") == 100 * 2**20             # 2 x 50 MiB, above the 64 MiB floor
