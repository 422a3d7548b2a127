"""Ceilings (quick, on CPU), their cache, the datasheet table and device resolution."""

from __future__ import annotations

import json

import pytest
import torch

from hwprof.cli import main
from hwprof.device import describe_device, resolve_device
from hwprof.hardware.ceilings import Ceilings, cache_path, measure_ceilings
from hwprof.hardware.datasheet import DATASHEET, lookup


def test_quick_cpu_ceilings_measure_then_cache_then_refresh(tmp_path) -> None:  # type: ignore[no-untyped-def]
    k = measure_ceilings(device="cpu", quick=True, cache_dir=tmp_path)
    assert k.source == "measured"
    assert k["fp32"] > 1e8 and k.flop_per_s["fp32"] == k["fp32"]
    assert k.bytes_per_s is not None and k.bytes_per_s > 1e8
    assert k["device_type"] == "cpu" and k.datasheet is None
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and files[0] == cache_path(tmp_path, k.device_name, "cpu", True)
    assert json.loads(files[0].read_text())["flop_per_s"]["fp32"] == k["fp32"]
    again = measure_ceilings(device="cpu", quick=True, cache_dir=tmp_path)
    assert again.source == "cache" and again["fp32"] == k["fp32"] and again.date == k.date
    fresh = measure_ceilings(device="cpu", quick=True, cache_dir=tmp_path, refresh=True)
    assert fresh.source == "measured"
    assert {d["kind"] for d in fresh.details} == {"gemm", "copy"}


def test_unreadable_cache_is_remeasured(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from hwprof.device import device_name
    path = cache_path(tmp_path, device_name(torch.device("cpu")), "cpu", True)
    path.write_text("{not json")
    assert measure_ceilings(device="cpu", quick=True, cache_dir=tmp_path).source == "measured"


def test_cache_file_name_is_safe(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = cache_path(tmp_path, "NVIDIA H100 80GB HBM3 / (x)", "cuda", False)
    assert p.parent == tmp_path and "/" not in p.name and " " not in p.name


def test_ceilings_round_trip_and_dict_access() -> None:
    k = Ceilings("cuda", "NVIDIA H100 80GB HBM3", "2.11", "2026-11-01", "measured", {"bf16": 7.5e14}, 3e12)
    assert k["bf16"] == 7.5e14 and k["bytes_per_s"] == 3e12 and "bf16" in k
    assert Ceilings.from_dict(k.to_dict()) == k
    with pytest.raises(KeyError):
        k["int4"]


def test_datasheet_lookup() -> None:
    h100 = lookup("NVIDIA H100 80GB HBM3")
    assert h100 is not None and h100["key"] == "H100 SXM"
    assert h100["bf16"] == pytest.approx(989e12, rel=1e-3)     # dense, not the 1979 sparse figure
    assert h100["tf32"] == pytest.approx(495e12, rel=1e-3)
    assert h100["bytes_per_s"] == pytest.approx(3.35e12)
    assert lookup("NVIDIA H100 PCIe")["key"] == "H100 PCIe"
    assert lookup("NVIDIA H200")["key"] == "H200"
    assert lookup("NVIDIA A100-SXM4-80GB")["key"] == "A100 SXM 80GB"
    assert lookup("NVIDIA A100-SXM4-40GB")["key"] == "A100 SXM 40GB"
    assert lookup("NVIDIA A100-PCIE-40GB")["key"] == "A100 PCIe 40GB"
    assert lookup("NVIDIA A100 80GB PCIe")["key"] == "A100 PCIe 80GB"
    assert lookup("NVIDIA L4")["key"] == "L4"
    assert lookup("NVIDIA L40S")["key"] == "L40S"
    assert lookup("NVIDIA GeForce RTX 4090")["key"] == "RTX 4090"
    assert lookup("Tesla V100-SXM2-16GB")["key"] == "V100 SXM2"
    assert lookup("NVIDIA GeForce RTX 2080 Ti")["key"] == "RTX 2080 Ti"
    assert lookup("Intel(R) Xeon(R) Processor") is None
    for entry in DATASHEET.values():
        assert entry["fp32"] > 0 and entry["bytes_per_s"] > 0
        assert entry["bf16"] is None or entry["bf16"] >= entry["fp32"]


def test_from_datasheet() -> None:
    k = Ceilings.from_datasheet("NVIDIA H100 80GB HBM3")
    assert k is not None and k.source == "datasheet" and k["bf16"] == pytest.approx(989.4e12)


def test_resolve_device_and_description() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    info = describe_device(torch.device("cpu"))
    assert info["type"] == "cpu" and info["threads"] == torch.get_num_threads()
    assert not torch.cuda.is_initialized()


def test_ceilings_cli_quick(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    assert main(["ceilings", "--device", "cpu", "--quick", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "fp32_flop_per_s" in out and "bytes_per_s" in out and "source measured" in out
    assert main(["ceilings", "--device", "cpu", "--quick", "--cache-dir", str(tmp_path), "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("ceiling,measured,datasheet,ratio")
