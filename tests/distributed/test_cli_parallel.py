"""The prediction side of the CLI (one process): count and memory with --parallel --world-size."""

from __future__ import annotations

import pytest

from hwprof.cli import main


def test_memory_predicts_per_rank_for_several_world_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["memory", "dist_models:tiny_mlp", "--input", "16", "--batch", "4", "--parallel", "fsdp", "--world-size",
            "2,8", "--optimizer", "adam"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("dist_models:tiny_mlp (input 16, batch 4 per rank, fp32, train, adam): fsdp")
    assert "reduce_scatter_tensor" in out and "all_gather_into_tensor" in out
    assert main([*args, "--format", "csv"]) == 0
    rows = [ln.split(",") for ln in capsys.readouterr().out.strip().splitlines()]
    peak = {r[0]: int(float(r[rows[0].index("peak_bytes")])) for r in rows[1:]}
    params = {r[0]: int(float(r[rows[0].index("params_bytes")])) for r in rows[1:]}
    # 8 ranks hold a quarter of the parameters (and of Adam's state) of 2 ranks: 7456/2 and 7456/8 B
    assert params == {"2": 3728, "8": 932} and peak["8"] < peak["2"]


def test_count_adds_the_collectives_per_step(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["count", "dist_models:tiny_mlp", "--input", "16", "--batch", "4", "--backward", "--parallel", "ddp",
                 "--world-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "per rank: the counts above" in out
    row = next(ln for ln in out.splitlines() if "all_reduce" in ln).split()
    assert row[:4] == ["bwd", "all_reduce", "1", "7,456"]      # every gradient (7456 B) in one bucket


@pytest.mark.parametrize(("args", "message"), [
    (["memory", "lenet5", "--parallel", "ddp"], "--parallel needs --world-size N"),
    (["memory", "lenet5", "--parallel", "ddp", "--world-size", "two"],
     "argument --world-size: expected a whole number (or a comma list), got 'two'"),      # at parse time
    (["count", "lenet5", "--parallel", "fsdp", "--world-size", "0"], "argument --world-size: expected ranks >= 1"),
    (["ceilings", "--collectives"], "a distributed run needs torchrun's environment"),
])
def test_bad_distributed_options_are_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
