"""The CLI commands whose whole output is pinned by a golden file: counts and memory predictions on
fake tensors (deterministic as they are), and the JSON of ``measure``, ``profile`` and ``ceilings`` on
a scripted machine (``fake_machine.py``: fake clock, profiler times, probes and ceiling trials, the
machine-specific fields masked). README.md says which numbers of each file are derived elsewhere and
where. Regenerate every file after an intended change:

    .venv/bin/python tests/golden/regenerate.py      (or: make golden)

and read the diff (``git diff tests/golden``) before committing it.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

HERE = Path(__file__).parent
FILES = HERE / "files"

# name -> argv of `hwprof ...`
CASES: dict[str, list[str]] = {
    "count-lenet5.txt": ["count", "lenet5"],
    "count-lenet5-backward.csv": ["count", "lenet5", "--backward", "--format", "csv"],
    "count-alexnet.csv": ["count", "alexnet", "--format", "csv"],
    "count-vgg16.md": ["count", "vgg16", "--format", "md"],
    "count-vgg16_1024_notop.txt": ["count", "vgg16_1024_notop"],
    "count-mobilenet_v1-train-backward.json": ["count", "mobilenet_v1", "--mode", "train", "--backward", "--format",
                                               "json"],
    "count-mobilenet_v1_dense.txt": ["count", "mobilenet_v1_dense", "--all"],
    "count-resnet18-bs4.csv": ["count", "resnet18", "--batch", "4", "--format", "csv"],
    "count-transformer_encoder-train-backward.csv": ["count", "transformer_encoder", "--mode", "train", "--backward",
                                                     "--format", "csv"],
    "count-lstm-backward.txt": ["count", "lstm", "--backward", "--batch", "8"],
    "memory-lenet5-train-adam.txt": ["memory", "lenet5", "--batch", "8", "--mode", "train", "--optimizer", "adam"],
    "memory-lenet5-train-adam.json": ["memory", "lenet5", "--batch", "8", "--mode", "train", "--optimizer", "adam",
                                      "--format", "json"],
    "memory-mobilenet_v1-bs8.json": ["memory", "mobilenet_v1", "--batch", "8", "--format", "json"],
    "memory-resnet18-train-adam.csv": ["memory", "resnet18", "--batch", "4", "--mode", "train", "--optimizer", "adam",
                                       "--format", "csv"],
}

_MLP = ["golden_models:mlp", "--input", "64", "--batch", "8", "--device", "cpu"]
# name -> argv, run on the scripted machine of fake_machine.py and masked there
FAKE_MACHINE_CASES: dict[str, list[str]] = {
    "measure-mlp-train.json": ["measure", *_MLP, "--mode", "train", "--optimizer", "sgd", "--per-layer", "--per-op",
                               "--threads", "1", "--budget", "0.01", "--format", "json"],
    "profile-mlp.json": ["profile", *_MLP, "--budget", "0.01", "--quick", "--no-html", "--format", "json"],
    "ceilings-cpu-quick.json": ["ceilings", "--device", "cpu", "--quick", "--refresh", "--format", "json"],
}
CASES.update(FAKE_MACHINE_CASES)

# values that change with the installation, not with hwprof's behaviour
_VOLATILE = [(re.compile(r'("torch": )"[^"]*"'), r'\1"<torch>"')]


def run_cli(argv: list[str]) -> str:
    """stdout of ``hwprof argv`` run in this process (exit code 0 asserted), volatile fields masked."""
    from fake_machine import fake_machine, mask

    from hwprof.cli import main

    scripted = argv in FAKE_MACHINE_CASES.values()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), fake_machine() if scripted else contextlib.nullcontext():
        rc = main(list(argv))
    if rc != 0:
        raise AssertionError(f"hwprof {' '.join(argv)} exited {rc}")
    text = mask(buf.getvalue()) if scripted else buf.getvalue()
    for pattern, repl in _VOLATILE:
        text = pattern.sub(repl, text)
    return text
