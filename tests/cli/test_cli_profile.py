"""`hwprof profile` through the CLI in a subprocess: exit codes, files, CSV columns, valid PNG."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd


def _run(*argv: str, cwd=None) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return subprocess.run([sys.executable, "-m", "hwprof", "profile", *argv], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


def test_profile_model_writes_everything(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    r = _run("lenet5", "--device", "cpu", "--quick", "--ceilings-cache", str(tmp_path / "ceil"), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "conv1" in r.stdout and "whole model:" in r.stdout
    df = pd.read_csv(out / "layers.csv", index_col=0)
    for col in ("flops", "bytes", "time_s", "achieved_flop_per_s", "intensity", "attainable_flop_per_s",
                "efficiency", "bound", "roof_key"):
        assert col in df.columns, col
    png = (out / "roofline.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    import matplotlib.image as mpimg

    assert mpimg.imread(out / "roofline.png").shape[2] in (3, 4)
    man = json.loads((out / "manifest.json").read_text())
    assert man["command"].startswith("hwprof profile") and man["torch"]


def test_default_profiles_mobilenet_and_dense_twin(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = _run("--device", "cpu", "--quick", "--batch", "1", "--ceilings-cache", str(tmp_path / "c"),
             "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    assert "depthwise layers hold" in r.stdout and "Dense twin:" in r.stdout
    assert (tmp_path / "o" / "mobilenet_v1" / "layers.csv").exists()
    assert (tmp_path / "o" / "mobilenet_v1_dense" / "roofline.png").exists()
    assert "depthwise" in (tmp_path / "o" / "comparison.md").read_text()


def test_unknown_model_and_bad_input_exit_2(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for argv in (["no_such_model"], ["lenet5", "--input", "2xx"]):
        r = _run(*argv, "--device", "cpu", "--quick", "--ceilings-cache", str(tmp_path))
        assert r.returncode == 2, (argv, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
