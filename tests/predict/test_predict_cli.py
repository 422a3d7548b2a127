"""`hwprof predict MODEL --on CEILINGS`: a named device (derated where a measured one is known), a
ceilings file, this machine's cached ceilings; one-line errors."""

from __future__ import annotations

import dataclasses
import json
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest
import torch

from hwprof.cli import main
from hwprof.files import to_jsonable
from hwprof.hardware.ceilings import Ceilings
from hwprof.hardware.levels import MemoryLevel
from hwprof.hardware.targets import measured_efficiency, target_ceilings

MiB = 2**20
LEVELS = (MemoryLevel("L2", MiB, 200e9, MiB, "sweep"), MemoryLevel("DRAM", None, 20e9, None, "copy"))
CPU = Ceilings("cpu", "test cpu", torch.__version__, "2026-11-30", "measured", {"fp32": 1e11, "bf16": 4e11}, 20e9,
               levels=LEVELS, op_overhead_s=1e-6)
# ceilings measured on an H100 (what `hwprof ceilings` would write there): bf16 at 75% of the datasheet
H100_MEASURED = Ceilings("cuda", "NVIDIA H100 80GB HBM3", "2.11", "2026-11-20", "measured", {"bf16": 742e12}, 3.0e12,
                         datasheet={"key": "H100 SXM"}, ratio_to_datasheet={"bf16": 0.75, "bytes_per_s": 0.9},
                         op_overhead_s=4e-6)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HWPROF_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "ceilings"


def _write(k: Ceilings, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(k.to_dict())))
    return path


def test_predict_on_a_ceilings_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(CPU, tmp_path / "k.json")
    assert main(["predict", "lenet5", "--on", str(f), "--batch", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("== lenet5 (input 1x28x28, batch 4, inference, the model's dtype) predicted on test cpu (measured)")
    assert "predicted whole model: " in out and "by memory level: L2 " in out
    assert main(["predict", "lenet5", "--on", str(f), "--batch", "4", "--format", "csv"]) == 0
    table = pd.read_csv(StringIO(capsys.readouterr().out), index_col=0)
    assert {"compute_s", "memory_s", "overhead_s", "predicted_s", "level", "bound"} <= set(table.columns)
    # By hand, batch 4, fp32 roof 100 GFLOP/s, L2 200 GB/s up to 1 MiB, DRAM 20 GB/s, 1 us per op; one op
    # per layer: predicted = max(FLOPs / roof, bytes / bandwidth of the level the bytes fit in) + 1 us.
    #   conv2 (20->50, 5x5, 8x8 out): 2 x 4*50*8*8*20*25 = 12.8 MFLOPs -> 128 us; bytes 46,080 in + 100,000
    #         weight + 200 bias + 51,200 out = 197,480 (L2) -> 0.99 us; 129 us
    #   fc1 (800->500): 3.2 MFLOPs -> 32 us; 12,800 + 1,600,000 + 2,000 + 8,000 = 1,622,800 B > 1 MiB: DRAM
    #         -> 81.14 us; 82.14 us
    #   conv1 (1->20, 5x5, 24x24 out): 2.304 MFLOPs -> 23.04 us; 198,944 B -> 0.99 us; 24.04 us
    #   pool1: 46,080 FLOPs; 184,320 in + 46,080 out + 92,160 int64 indices = 322,560 B -> 1.6128 us; 2.6128 us
    #   pool2: 12,800 FLOPs; 51,200 + 12,800 + 25,600 = 89,600 B -> 0.448 us; 1.448 us
    #   fc2 (500->10): 40,000 FLOPs -> 0.4 us; 28,200 B -> 0.141 us; 1.4 us
    #   relu (2,000 elements): 2,000 FLOPs -> 0.02 us; 16,000 B -> 0.08 us; 1.08 us
    #   total 241.7208 us; conv2's share 129 / 241.7208
    us = {"conv2": 129.0, "fc1": 82.14, "conv1": 24.04, "pool1": 2.6128, "pool2": 1.448, "fc2": 1.4, "relu": 1.08}
    assert list(table.index) == list(us)                                  # slowest first
    assert table["predicted_s"].to_dict() == {k: pytest.approx(v * 1e-6) for k, v in us.items()}
    assert table.loc["fc1", "level"] == "DRAM" and table.loc["fc1", "bound"] == "memory"
    assert table.loc["conv2", "bound"] == "compute" and table.loc["relu", "bound"] == "overhead"
    assert table.loc["conv2", "share"] == pytest.approx(129.0 / 241.7208)


def test_predict_on_a_named_device_is_derated_by_a_measured_one(tmp_path: Path, _cache_dir: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "lenet5", "--on", "H100"]) == 0
    bare = capsys.readouterr().out
    assert "predicted on H100 SXM (datasheet)" in bare and "not derated (no measured efficiency known)" in bare
    assert "counted with the CPU's kernels (no CUDA here)" in bare or torch.cuda.is_available()
    f = _write(H100_MEASURED, tmp_path / "h100.json")
    assert main(["predict", "lenet5", "--on", "h100", "--derate-from", str(f)]) == 0
    derated = capsys.readouterr().out
    assert "derated by measured efficiencies (ceilings of NVIDIA H100 80GB HBM3 measured 2026-11-20" in derated
    assert "bf16 x 0.75, bytes_per_s x 0.90" in derated and "per-op overhead 4.00 us" in derated
    _write(H100_MEASURED, _cache_dir / "h100.json")          # found in the cache without --derate-from
    k = target_ceilings("H100")
    assert k.roof("bf16") == pytest.approx(0.75 * 989.4e12) and k.op_overhead_s == 4e-6
    assert target_ceilings("A100").roof("bf16") == pytest.approx(312e12)   # another device: not derated
    assert measured_efficiency("H100 SXM", [tmp_path / "missing.json"]) is None


def test_predict_on_this_machine_reads_its_cached_ceilings(_cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hwprof.device import device_name
    from hwprof.hardware.ceilings import cache_path

    _write(dataclasses.replace(CPU, device_name=device_name(torch.device("cpu"))),
           cache_path(None, device_name(torch.device("cpu")), quick=False))
    assert main(["predict", "lenet5", "--device", "cpu"]) == 0
    assert "(cache)" in capsys.readouterr().out


def test_bad_targets_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "lenet5", "--on", "B9000"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hwprof predict: error: --on 'B9000' is neither a ceilings file nor a device of the "
                          "datasheet table (H100 SXM, ") and "\n" not in err
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert main(["predict", "lenet5", "--on", str(bad)]) == 2
    assert "not a readable ceilings file" in capsys.readouterr().err
    assert main(["predict", "lenet5", "--on", "H100", "--derate-from", str(tmp_path / "none.json")]) == 2
    assert "--derate-from" in capsys.readouterr().err
    other = _write(dataclasses.replace(H100_MEASURED, datasheet={"key": "A100 SXM 80GB"}), tmp_path / "a100.json")
    assert main(["predict", "lenet5", "--on", "H100", "--derate-from", str(other)]) == 2
    assert "not measured, unflagged ceilings of a H100 SXM" in capsys.readouterr().err
