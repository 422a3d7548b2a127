"""`hwprof count` end to end through the CLI entry point and a subprocess."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pandas as pd
import pytest

import hwprof
from hwprof import zoo
from hwprof.cli import main


def _run(capsys, *argv: str) -> str:  # type: ignore[no-untyped-def]
    assert main(["count", *argv]) == 0
    return str(capsys.readouterr().out)


def test_count_table_and_totals(capsys) -> None:  # type: ignore[no-untyped-def]
    out = _run(capsys, "lenet5", "--input", "1x28x28", "--batch", "1")
    assert out.startswith("lenet5 (input 1x28x28, batch 1, float32, inference mode, forward) counted with cpu")
    assert "conv1" in out and "params: 431,080" in out and "feature maps" in out
    # 431,080 fp32 parameters = 1,724,320 B = 1.64 MiB (2**20 B), labelled as such, never "MB"
    assert "(431,080 trainable), 1.64 MiB" in out and " MB" not in out


def test_count_csv_json_md_to_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for fmt in ("csv", "json", "md"):
        path = tmp_path / f"lenet.{fmt}"   # --out is a folder: count.txt/.csv/.json/.md + manifest.json
        assert main(["count", "lenet5", "--backward", "--format", fmt, "--out", str(path)]) == 0
        assert (path / f"count.{fmt}").stat().st_size > 0
    df = pd.read_csv(tmp_path / "lenet.csv" / "count.csv", index_col=0)
    # conv1: 24*24*20*25 = 288,000 MACs
    assert df.loc["conv1", "macs"] == 288_000 and "flops_bwd" in df.columns
    body = json.loads((tmp_path / "lenet.json" / "count.json").read_text())
    assert {r["layer"] for r in body["layers"]} >= {"conv1", "conv2", "fc1", "fc2"}
    assert (tmp_path / "lenet.md" / "count.md").read_text().startswith("**lenet5 (input 1x28x28, batch 1,")


def test_structured_outputs_carry_what_the_table_shows(capsys) -> None:  # type: ignore[no-untyped-def]
    c = hwprof.count(zoo.build("lenet5")[0], "1x28x28", backward=True)
    body = json.loads(_run(capsys, "lenet5", "--backward", "--format", "json"))
    assert {k: body[k] for k in ("model", "input", "batch", "mode", "backward", "dtype", "device")} == {
        "model": "lenet5", "input": "1x28x28", "batch": 1, "mode": "inference", "backward": True,
        "dtype": "float32", "device": "cpu"}
    assert body["totals"]["flops_fwd"] == c.totals["flops_fwd"] and body["totals"]["flops_bwd"] == c.totals["flops_bwd"]
    assert body["uncounted"] == {} and isinstance(body["notes"], list)
    assert all("index" not in row for row in body["layers"]) and body["layers"][0]["layer"] == "conv1"
    # CSV: the per-layer table, then one "(total)" row with the model totals (not column sums)
    csv = pd.read_csv(io.StringIO(_run(capsys, "lenet5", "--backward", "--format", "csv")), index_col=0)
    assert csv.index[-1] == "(total)" and csv.loc["(total)", "params"] == 431_080
    assert csv.loc["(total)", "flops"] == c.totals["flops_fwd"] and csv.loc["(total)", "flops_bwd"] == c.totals[
        "flops_bwd"]
    # Markdown: the header, the table, the totals (backward ones included)
    md = _run(capsys, "lenet5", "--backward", "--format", "md")
    assert "inference mode, forward + backward" in md and "| conv1 | Conv2d |" in md
    assert "- params: 431,080" in md and "- backward: " in md and "- feature maps" in md


def test_structured_outputs_list_uncounted_ops_and_notes() -> None:
    from torch import nn

    from hwprof.report.count_table import count_outputs

    class FFT(nn.Module):
        def forward(self, x):  # type: ignore[no-untyped-def]
            import torch
            return torch.fft.rfft(x).abs()

    c = hwprof.count(FFT(), "64")
    out = count_outputs(c, "fft", "64")
    assert json.loads(out["json"])["uncounted"] == {"aten._fft_r2c": 1}
    assert "UNCOUNTED ops" in out["md"] and "aten._fft_r2c x1" in out["md"] and "aten._fft_r2c x1" in out["table"]


def test_backward_does_not_change_the_forward_count(capsys) -> None:  # type: ignore[no-untyped-def]
    """`--backward` used to switch to train mode (BN batch statistics: 8 FLOPs per element instead
    of 4), changing the forward count. Mode is its own option now, stated in the header."""
    def bn_flops(*extra: str) -> int:
        csv = _run(capsys, "mobilenet_v1", "--input", "3x64x64", "--format", "csv", *extra)
        return int(pd.read_csv(io.StringIO(csv), index_col=0).loc["features.0.1", "flops"])

    # first BatchNorm2d on 1x32x32x32 = 32,768 elements; inference: normalise 2 + affine 2 = 4 per
    # element = 131,072 FLOPs, with or without --backward; train: + mean 1 + variance 3 per element
    # = 262,144, + 1 for the num_batches_tracked increment = 262,145
    assert bn_flops() == bn_flops("--backward") == 131_072
    assert bn_flops("--mode", "train") == bn_flops("--mode", "train", "--backward") == 262_145
    assert "train mode, forward + backward" in _run(capsys, "lenet5", "--mode", "train", "--backward")
    assert "inference mode, forward + backward" in _run(capsys, "lenet5", "--backward")


def test_cli_and_api_defaults_agree(capsys) -> None:  # type: ignore[no-untyped-def]
    model = zoo.build("mobilenet_v1")[0]  # a fresh module is in train mode: the default must not follow it
    c = hwprof.count(model, "3x64x64")
    assert (c.config["mode"], c.config["backward"]) == ("inference", False)
    body = json.loads(_run(capsys, "mobilenet_v1", "--input", "3x64x64", "--format", "json"))
    assert body["totals"]["flops_fwd"] == c.totals["flops_fwd"] and (body["mode"], body["backward"]) == (
        "inference", False)
    # the old keyword still works, deprecated
    with pytest.deprecated_call():
        old = hwprof.count(model, "3x64x64", training=True)
    assert old.totals == hwprof.count(model, "3x64x64", mode="train").totals


@pytest.mark.parametrize("argv", [
    ["count", "lenet5", "--dtype", "long"], ["count", "lenet5", "--dtype", "bool"],
    ["memory", "lenet5", "--dtype", "int"], ["measure", "lenet5", "--device", "cpu", "--dtype", "long"],
])
def test_integer_dtype_is_a_one_line_error(argv: list[str], capsys) -> None:  # type: ignore[no-untyped-def]
    """Every command parses --dtype with spec.parse_dtype, which takes floating dtypes only (this
    was a RuntimeError traceback, exit 1)."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a floating dtype" in err[0] and "--input long:" in err[0]


def test_bad_model_and_bad_input_exit_2() -> None:
    for argv in (["count", "no_such_model"], ["count", "lenet5", "--input", "3xx"],
                 ["count", "lenet5", "--input", "3x28x28"]):
        r = subprocess.run([sys.executable, "-m", "hwprof.cli", *argv], capture_output=True, text=True)
        assert r.returncode == 2, argv
        assert len(r.stderr.strip().splitlines()) == 1 and "error" in r.stderr
