"""Pieces of the profile's Markdown report."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from hwprof.profile_folder import load_profile
from hwprof.report.profile_report import markdown_report, memory_line, memory_table, phase_table


def test_memory_table_formats_bytes_as_mib_and_keeps_set_fields() -> None:
    t = memory_table({"alloc_peak_bytes": None, "rss_peak_bytes": 3 * 2**20 + 2**19, "alloc_trace_allocations": 38400,
                      "alloc_trace_peak_op": "aten::convolution", "alloc_trace_max_op_transient_op": "",
                      "nvml_used_peak_bytes": math.nan})
    assert list(t.index) == ["rss_peak_bytes", "alloc_trace_allocations", "alloc_trace_peak_op"]
    assert list(t["value"]) == ["3.5 MiB", "38,400", "aten::convolution"]   # 3.5 x 2^20 bytes = 3.5 MiB


def test_phase_table_times_in_ms_and_iqr_in_percent() -> None:
    ph = pd.DataFrame({"median_s": [0.0123456789], "iqr_s": [0.000942], "min_s": [0.0119], "mean_s": [0.0125],
                       "reps": [37.0], "iqr_over_median": [0.9419424190000001]}, index=pd.Index(["fwd"], name="phase"))
    t = phase_table(ph)
    assert t.loc["fwd"].tolist() == ["12.346 ms", "0.942 ms", "11.900 ms", "12.500 ms", "37", "94.2%"]


def test_report_shows_no_raw_floats() -> None:
    """Every number of report.md carries its unit and a few digits (the saved fixture profile)."""
    p = load_profile(Path(__file__).parents[1] / "data" / "saved_profile")
    report = markdown_report(p)
    assert not re.findall(r"\d\.\d{5,}", report), re.findall(r".{30}\d\.\d{5,}.{10}", report)
    assert "| fwd | " in report and " ms | " in report and " MiB |" in report
    assert "Figures: `roofline.png`, `layer_time.png`" in report
    assert "Figures:" not in markdown_report(p, figures=())


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
