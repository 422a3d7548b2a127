"""Pieces of the profile's Markdown report."""

from __future__ import annotations

import math

from hwprof.report.profile_report import memory_line, memory_table


def test_memory_table_keeps_set_fields_with_mib_beside_bytes() -> None:
    t = memory_table({"alloc_peak_bytes": None, "rss_peak_bytes": 3 * 2**20, "alloc_trace_allocations": 384,
                      "alloc_trace_peak_op": "aten::convolution", "alloc_trace_max_op_transient_op": "",
                      "nvml_used_peak_bytes": math.nan})
    assert list(t.index) == ["rss_peak_bytes", "alloc_trace_allocations", "alloc_trace_peak_op"]
    assert t.loc["rss_peak_bytes", "value"] == 3 * 2**20 and t.loc["rss_peak_bytes", "MiB"] == "3.0"
    assert t.loc["alloc_trace_peak_op", "value"] == "aten::convolution" and t.loc["alloc_trace_peak_op", "MiB"] == ""


def test_memory_line_cuda_cpu_and_none() -> None:
    mib = 2**20
    cuda = memory_line({"alloc_peak_bytes": 300 * mib, "reserved_peak_bytes": 320 * mib,
                        "alloc_trace_peak_bytes": 301 * mib, "alloc_trace_peak_op": "aten::cudnn_convolution",
                        "alloc_trace_workspace_at_peak_bytes": 12 * mib})
    assert cuda == ("memory: max_memory_allocated 300.0 MiB, reserved 320.0 MiB; the allocator trace peaks in "
                    "aten::cudnn_convolution, 12.0 MiB of it that op's scratch")
    cpu = memory_line({"alloc_peak_bytes": None, "alloc_trace_peak_bytes": 94 * mib,
                       "alloc_trace_peak_op": "aten::native_batch_norm", "alloc_trace_workspace_at_peak_bytes": 0})
    assert cpu.startswith("memory: peak of live tensor bytes 94.0 MiB") and "0.0 MiB" in cpu
    assert memory_line({"rss_peak_bytes": 1}) == ""
