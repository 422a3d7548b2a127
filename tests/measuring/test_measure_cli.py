"""`hwprof measure` through hwprof.cli.main."""

from __future__ import annotations

import json
import re

import pytest
import torch

from hwprof.cli import main


def test_measure_train_per_layer_prints_tables(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["measure", "lenet5", "--device", "cpu", "--budget", "0.2", "--per-layer", "--mode", "train",
               "--optimizer", "adam"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "phases" in out and "per layer" in out
    for phase in ("fwd", "bwd", "step"):
        assert f"\n{phase} " in out
    assert "conv1" in out and "sum of per-layer self" in out
    # the per-layer sum / whole ratio measured in pairs, with its spread, for both phases
    for phase in ("fwd", "bwd"):
        assert re.search(rf"\n{phase}: whole model .* measured in pairs: \d+% \(q25-q75 \d+-\d+%, \d+ pairs\)", out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks behaviour without CUDA")
def test_measure_cuda_without_cuda_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["measure", "lenet5", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and len(err.strip().splitlines()) == 1


def test_measure_json_and_csv_outputs(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "m.json"
    assert main(["measure", "lenet5", "--device", "cpu", "--budget", "0.05", "--format", "json",
                 "--out", str(out)]) == 0
    data = json.loads((out / "measure.json").read_text())   # --out is a folder
    assert data["phases"][0]["phase"] == "fwd_nograd"
    assert data["timings"]["fwd_nograd"]["times_s"]
    assert data["memory"]["rss_peak_bytes"] > 0
    capsys.readouterr()
    csv = tmp_path / "m.csv"
    assert main(["measure", "lenet5", "--device", "cpu", "--budget", "0.05", "--per-layer", "--format", "csv",
                 "--out", str(csv)]) == 0
    head = (csv / "measure.csv").read_text().splitlines()[0]
    assert head.startswith("module,type,is_leaf")


def test_measure_bad_input_spec_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["measure", "lenet5", "--device", "cpu", "--input", "3x32x32", "--budget", "0.05"]) == 2
    assert "conv1" in capsys.readouterr().err


def test_memory_lines_one_per_probe() -> None:
    from hwprof.report.profile_report import memory_lines

    mib = 2**20
    cuda = memory_lines({"alloc_peak_bytes": 300 * mib, "reserved_peak_bytes": 320 * mib,
                         "l2_flush_buffer_bytes": 100 * mib, "nvml_used_peak_bytes": 2048 * mib,
                         "nvml_baseline_bytes": 1024 * mib, "nvml_process_bytes": 900 * mib,
                         "alloc_trace_peak_bytes": 301 * mib, "alloc_trace_live_before_bytes": 50 * mib,
                         "alloc_trace_peak_op": "aten::cudnn_convolution",
                         "alloc_trace_workspace_at_peak_bytes": 12 * mib,
                         "alloc_trace_peak_without_workspace_bytes": 289 * mib,
                         "alloc_trace_max_op_transient_bytes": 12 * mib,
                         "alloc_trace_max_op_transient_op": "aten::cudnn_convolution", "rss_peak_bytes": None})
    assert len(cuda) == 3
    assert cuda[0] == "  CUDA allocator: max allocated 300.00MiB, max reserved 320.00MiB (incl. the 100.00MiB L2 flush buffer)"
    assert "reached in aten::cudnn_convolution with 12.00MiB of in-op workspace" in cuda[2]
    cpu = memory_lines({"rss_peak_bytes": 900 * mib, "rss_baseline_bytes": 300 * mib, "ru_maxrss_bytes": 901 * mib})
    assert cpu == ["  process RSS: peak 900.00MiB over a 300.00MiB baseline (lifetime peak 901.00MiB)"]
