"""Typed memory probes: MemoryRecord (whole-run peaks, per-phase peaks, allocator trace) and the flat dict
``Measurement.memory`` that the public API, the CLI and the JSON outputs show."""

from __future__ import annotations

import json

from torch import nn

from hwprof.measuring.alloc_trace import AllocTrace
from hwprof.measuring.probes import PhasePeak, RunPeaks
from hwprof.measuring.records import Measurement, MemoryRecord
from hwprof.measuring.runner import measure

MiB = 2**20

# a CUDA-like record: three training phases, an L2 flush buffer, an allocator trace
CUDA = MemoryRecord(
    run=RunPeaks(nvml_used_peak_bytes=900 * MiB, nvml_baseline_bytes=500 * MiB, nvml_process_bytes=600 * MiB,
                 rss_peak_bytes=2000 * MiB, rss_baseline_bytes=1900 * MiB, ru_maxrss_bytes=2100 * MiB),
    phases=(PhasePeak("fwd", 30 * MiB, 40 * MiB), PhasePeak("bwd", 50 * MiB, 64 * MiB), PhasePeak("step", 45 * MiB, 80 * MiB)),
    l2_flush_buffer_bytes=100 * MiB,
    alloc_trace=AllocTrace(live_before_bytes=10 * MiB, window_peak_bytes=41 * MiB, net_bytes=0, allocations=12,
                           max_op_transient_bytes=MiB, max_op_transient_op="aten::mm", peak_op="aten::mm",
                           workspace_at_peak_bytes=MiB, peak_without_workspace_bytes=50 * MiB))


def test_flat_dict_keys_values_and_order() -> None:
    d = CUDA.to_dict()
    assert list(d) == [
        "alloc_peak_bytes", "reserved_peak_bytes", "nvml_used_peak_bytes", "nvml_baseline_bytes", "nvml_process_bytes",
        "rss_peak_bytes", "rss_baseline_bytes", "ru_maxrss_bytes", "l2_flush_buffer_bytes",
        "alloc_peak_bytes_fwd", "reserved_peak_bytes_fwd", "alloc_peak_bytes_bwd", "reserved_peak_bytes_bwd",
        "alloc_peak_bytes_step", "reserved_peak_bytes_step",
        "alloc_trace_live_before_bytes", "alloc_trace_window_peak_bytes", "alloc_trace_net_bytes",
        "alloc_trace_allocations", "alloc_trace_max_op_transient_bytes", "alloc_trace_max_op_transient_op",
        "alloc_trace_peak_op", "alloc_trace_workspace_at_peak_bytes", "alloc_trace_peak_without_workspace_bytes",
        "alloc_trace_peak_excess_bytes", "alloc_trace_unfreed_at_peak_bytes", "alloc_trace_peak_bytes"]
    # whole-run allocator peaks = the largest phase peak: bwd's 50 MiB allocated, step's 80 MiB reserved
    assert (d["alloc_peak_bytes"], d["reserved_peak_bytes"]) == (50 * MiB, 80 * MiB)
    assert d["alloc_peak_bytes_step"] == 45 * MiB and d["nvml_baseline_bytes"] == 500 * MiB
    assert d["alloc_trace_peak_bytes"] == 10 * MiB + 41 * MiB   # live before + window peak


def test_from_dict_inverts_to_dict_and_keeps_unknown_fields() -> None:
    d = json.loads(json.dumps(CUDA.to_dict()))
    assert MemoryRecord.from_dict(d) == CUDA
    newer = {**d, "some_future_probe_bytes": 7}
    back = MemoryRecord.from_dict(newer)
    assert back.extra == {"some_future_probe_bytes": 7} and back.to_dict() == newer


def test_cpu_record_has_no_allocator_peaks() -> None:
    r = MemoryRecord(RunPeaks(rss_peak_bytes=5, rss_baseline_bytes=4), (PhasePeak("fwd_nograd"),))
    assert r.alloc_peak_bytes is None and r.to_dict()["alloc_peak_bytes_fwd_nograd"] is None
    assert "l2_flush_buffer_bytes" not in r.to_dict() and "alloc_trace_peak_bytes" not in r.to_dict()


def test_measurement_memory_is_the_record_as_a_dict() -> None:
    m = measure(nn.Sequential(nn.Linear(8, 8), nn.ReLU()), "8", batch=4, device="cpu", mode="train", optimizer="adam",
                budget_s=0.01, warmup=1, min_reps=2, max_reps=2)
    rec = m.memory_record
    assert [p.phase for p in rec.phases] == list(m.phases.index) == ["fwd", "bwd", "step"]
    assert rec.alloc_trace is not None and m.memory["alloc_trace_peak_bytes"] == rec.alloc_trace.peak_bytes
    assert m.memory["rss_peak_bytes"] == rec.run.rss_peak_bytes
    back = Measurement.from_dict(json.loads(json.dumps(m.to_dict())))
    assert back.memory_record == rec and list(back.memory) == list(m.memory)
    # the allocator trace's timeline is kept beside the flat dict, and comes back with the record
    tl = rec.alloc_trace.timeline
    assert tl is not None and len(tl.live_bytes) == tl.events >= rec.alloc_trace.allocations   # frees are events too
    assert back.memory_record.alloc_trace.timeline == tl and "memory_timeline" not in json.dumps(m.memory)
    assert max(tl.live_bytes) == rec.alloc_trace.peak_bytes
