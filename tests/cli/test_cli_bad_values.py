"""Every command, driven with a table of bad values (the issue's list and what a fuzz of the CLI
found): exactly one line on stderr, ``hwprof <command>: error: ...``, exit code 2, no traceback,
within 2 s each. In-process through ``hwprof.cli.main``, with the heavy work replaced by a function
that fails the test: a value refused at parse time must not start anything."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from hwprof.cli import main

# (argv, what the line says); {tmp} is the test's folder (see _files)
PARSE_TIME: list[tuple[list[str], str]] = [
    (["count", "lenet5", "--batch", "-3"], "argument --batch: expected a whole number from 1"),
    (["count", "lenet5", "--batch", "0"], "argument --batch"),
    (["measure", "lenet5", "--batch", "-3"], "argument --batch"),
    (["memory", "lenet5", "--batch", "-3"], "argument --batch"),
    (["count", "lenet5", "--batch", "3_0"], "digits 0-9"),                  # int() reads it as 30
    (["count", "lenet5", "--batch", "１"], "digits 0-9"),                    # full-width digits
    (["count", "lenet5", "--batch", "99999999999999999999"], "argument --batch"),
    (["measure", "lenet5", "--threads", "0"], "argument --threads"),
    (["measure", "lenet5", "--threads", "-4"], "argument --threads"),
    (["memory", "lenet5", "--fit", "abc"], "bad memory size 'abc'"),
    (["memory", "lenet5", "--fit", "1PB"], "bad memory size '1PB'"),
    (["memory", "lenet5", "--fit", "nanGB"], "bad memory size 'nanGB'"),
    (["memory", "lenet5", "--fit", "1e30GB"], "beyond 1 EiB"),
    (["memory", "lenet5", "--fit", "0GB"], "below one byte"),
    (["ceilings", "--rounds", "1", "--refresh"], "argument --rounds: expected a whole number from 2"),
    (["profile", "lenet5", "--optimizer", "bogus", "--mode", "train"], "argument --optimizer: invalid choice"),
    (["measure", "lenet5", "--budget", "-1"], "argument --budget: expected a positive number of seconds"),
    (["measure", "lenet5", "--budget", "0"], "argument --budget"),
    (["measure", "lenet5", "--budget", "nan"], "argument --budget"),
    (["profile", "lenet5", "--budget", "inf"], "argument --budget"),
    (["memory", "lenet5", "--validate", "--budget", "1_0"], "argument --budget"),
    (["measure", "lenet5", "--per-layer", "--depth", "-1"], "argument --depth"),
    (["measure", "lenet5", "--warmup", "-1"], "argument --warmup"),
    (["measure", "lenet5", "--warmup", "99999999999999999999"], "argument --warmup"),
    (["profile", "lenet5", "--top", "-5"], "argument --top"),
    (["predict", "lenet5", "--on", "H100", "--top", "-5"], "argument --top"),
    (["compare", "{tmp}/A", "{tmp}/B", "--top", "0"], "argument --top"),
    (["count", "lenet5", "--input", "１x28x28"], "digits 0-9 joined by x"),
    (["count", "lenet5", "--input", "1x2_8x28"], "digits 0-9 joined by x"),
    (["count", "lenet5", "--input", "3x99999999999x99999999999"], "larger than any input"),
    (["count", "lenet5", "--out", "{tmp}/" + "a" * 300], "--out"),
    (["count", "lenet5", "--out", "{tmp}/" + "a" * 240], "leave room for the temporary folder"),
    (["count", "hf:llama", "--seq", "0"], "argument --seq"),
    (["profile", "hf:llama", "--generate", "--prompt", "0"], "argument --prompt"),
    (["profile", "hf:llama", "--generate", "--batch", "1,0"], "argument --batch"),
    (["count", "lenet5", "--dtype", "bogus"], "argument --dtype: unknown dtype 'bogus'"),
    (["count", "lenet5", "--parallel", "ddp", "--world-size", "0"], "argument --world-size"),
    (["count", "lenet5", "--parallel", "ddp", "--world-size", "2_0"], "argument --world-size"),
    (["measure", "lenet5", "--parallel", "ddp", "--dist-timeout", "1e30"], "argument --dist-timeout"),
    (["study", "depthwise", "--budget-s", "-1"], "argument --budget-s"),
    (["study", "depthwise", "--batch", "3_0"], "--batch expects comma-separated integers"),
    (["predict", "lenet5", "--on", "x" * 300], "argument --on"),
    (["predict", "lenet5", "--derate-from", ""], "argument --derate-from: expected a path"),
    (["ceilings", "--cache-dir", ""], "argument --cache-dir"),
    (["count", "lenet5", "--bogus"], "unrecognized arguments: --bogus"),
    (["count", "lenet5", "--input"], "argument --input: expected one argument"),
    (["bogus"], "invalid choice: 'bogus'"),
    (["study"], "the following arguments are required"),
    (["measure", "lenet5", "--optimizer", "adam"], "--optimizer adam needs --mode train"),
    (["profile", "lenet5", "--optimizer", "adam"], "--optimizer adam needs --mode train"),
]
if not __import__("torch").cuda.is_available():   # the fake tensors' CUDA kernels need a GPU (it said "on cpu")
    PARSE_TIME.append((["memory", "lenet5", "--fake-device", "cuda"], "--fake-device cuda needs a CUDA device"))

# values that are only wrong once a file is read: the work up to that point is light (a model on
# meta, a JSON file), the line comes before anything is measured
AT_READ_TIME: list[tuple[list[str], str]] = [
    (["predict", "lenet5", "--on", "{tmp}/list.json"], "not a readable ceilings file (a JSON list, not an object)"),
    (["predict", "lenet5", "--on", "{tmp}/fast.json"], "not a readable ceilings file"),
    (["predict", "lenet5", "--on", "{tmp}/negative.json"], "not a positive rate"),
    (["compare", "{tmp}/A", "{tmp}/null"], "cannot compare: a damaged saved profile"),
    (["compare", "{tmp}/A", "{tmp}/A", "--labels", "one"], "--labels names 1 runs"),
]


def _files(tmp: Path) -> None:
    """The files the table names: ceilings JSONs of the wrong shape, a saved profile, and a copy of
    it whose profile.json is ``null``."""
    import shutil

    (tmp / "list.json").write_text("[1, 2, 3]")
    (tmp / "fast.json").write_text('{"flop_per_s": "fast"}')
    (tmp / "negative.json").write_text(json.dumps({"device_type": "cpu", "device_name": "x",
                                                   "flop_per_s": {"fp32": -3.2778e11}}))
    saved = Path(__file__).parents[1] / "data" / "saved_profile"   # what `profile --out` writes
    for name in ("A", "B", "null"):
        shutil.copytree(saved, tmp / name)
    (tmp / "null" / "profile.json").write_text("null")


def _no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    from hwprof.cli import build_parser

    def no_work(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("work started before the bad value was refused")
    build_parser()   # the command modules imported first, so that none binds a patched function for good
    for target in ("hwprof.cli.count.count", "hwprof.cli.profile.measure_ceilings", "hwprof.cli.predict.count",
                   "hwprof.memory.estimate.estimate_memory", "hwprof.measuring.runner.measure",
                   "hwprof.hardware.ceilings.measure_ceilings", "hwprof.studies.depthwise.compute_study",
                   "hwprof.cli.compare.compare"):
        monkeypatch.setattr(target, no_work)


def _one_line(argv: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    t0 = time.perf_counter()
    rc = main(argv)
    elapsed = time.perf_counter() - t0
    out, err = capsys.readouterr()
    lines = err.splitlines()
    command = argv[0] if argv[0] != "bogus" else ""
    assert rc == 2 and len(lines) == 1, (rc, err)
    assert lines[0].startswith(f"hwprof{' ' + command if command else ''}: error: ") and says in lines[0], lines[0]
    assert "Traceback" not in err and "Traceback" not in out
    assert elapsed < 2.0, elapsed


@pytest.mark.parametrize("argv, says", PARSE_TIME, ids=[" ".join(a)[:60] for a, _ in PARSE_TIME])
def test_a_bad_value_is_one_line_exit_2_before_any_work(argv: list[str], says: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    _files(tmp_path)
    _no_work(monkeypatch)
    _one_line(argv, says, tmp_path, capsys)


@pytest.mark.parametrize("argv, says", AT_READ_TIME, ids=[" ".join(a)[:60] for a, _ in AT_READ_TIME])
def test_a_bad_file_is_one_line_exit_2(argv: list[str], says: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    _files(tmp_path)
    _one_line(argv, says, tmp_path, capsys)


def test_hf_sequences_beyond_the_configs_positions_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    # measured before this, hf:gpt2 --seq 100000 counted, then `measure` failed deep in the
    # position embedding ("index out of range"); now the configuration's maximum is checked
    pytest.importorskip("transformers")
    for argv, says in ((["count", "hf:gpt2", "--config", "n_layer=1", "--seq", "100000"],
                        "input_ids sequence length 100000 is beyond the model's n_positions = 1024"),
                       (["count", "hf:gpt2", "--config", "n_layer=1", "--input", "input_ids=long:2048"],
                        "--config n_positions=2048"),
                       (["memory", "hf:llama", "--config", "num_hidden_layers=1", "--generate", "--prompt", "2000",
                         "--new-tokens", "100"], "2100 positions, beyond the model's max_position_embeddings = 2048")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"hwprof {argv[0]}: error: hf:") and says in err, err
    assert main(["count", "hf:gpt2", "--config", "n_layer=1,n_positions=2048", "--seq", "2048"]) == 0  # as it says


def test_fit_says_when_the_answer_is_the_search_cap(capsys: pytest.CaptureFixture[str]) -> None:
    # 100 TB holds more LeNet-5 than the search goes: the answer is "at least" the cap, not "largest"
    from hwprof.memory.fit import MAX_BATCH

    assert main(["memory", "lenet5", "--fit", "100TB", "--format", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["batch"] == MAX_BATCH and body["at_search_cap"] is True
    assert main(["memory", "lenet5", "--fit", "100TB"]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert f"at least {MAX_BATCH:,}, the largest batch hwprof tries (the search cap" in head
    assert main(["memory", "lenet5", "--fit", "1GB", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["at_search_cap"] is False
