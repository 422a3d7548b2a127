"""`hwprof count` end to end through the CLI entry point and a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd

from hwprof.cli import main


def test_count_table_and_totals(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["count", "lenet5", "--input", "1x28x28", "--batch", "1"]) == 0
    out = capsys.readouterr().out
    assert "conv1" in out and "params: 431,080" in out and "feature maps" in out


def test_count_csv_json_md_to_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for fmt in ("csv", "json", "md"):
        path = tmp_path / f"lenet.{fmt}"   # --out is a folder: count.txt/.csv/.json/.md + manifest.json
        assert main(["count", "lenet5", "--backward", "--format", fmt, "--out", str(path)]) == 0
        assert (path / f"count.{fmt}").stat().st_size > 0
    df = pd.read_csv(tmp_path / "lenet.csv" / "count.csv", index_col=0)
    # conv1: 24*24*20*25 = 288,000 MACs
    assert df.loc["conv1", "macs"] == 288_000 and "flops_bwd" in df.columns
    rows = json.loads((tmp_path / "lenet.json" / "count.json").read_text())
    assert {r["layer"] for r in rows} >= {"conv1", "conv2", "fc1", "fc2"}
    assert (tmp_path / "lenet.md" / "count.md").read_text().startswith("| layer |")


def test_bad_model_and_bad_input_exit_2() -> None:
    for argv in (["count", "no_such_model"], ["count", "lenet5", "--input", "3xx"],
                 ["count", "lenet5", "--input", "3x28x28"]):
        r = subprocess.run([sys.executable, "-m", "hwprof.cli", *argv], capture_output=True, text=True)
        assert r.returncode == 2, argv
        assert len(r.stderr.strip().splitlines()) == 1 and "error" in r.stderr
