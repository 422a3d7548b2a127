"""The CLI commands whose whole output is pinned by a golden file (deterministic: counts and
memory predictions on fake tensors, no timing). Regenerate every file after an intended change:

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

# values that change with the installation, not with hwprof's behaviour
_VOLATILE = [(re.compile(r'("torch": )"[^"]*"'), r'\1"<torch>"')]


def run_cli(argv: list[str]) -> str:
    """stdout of ``hwprof argv`` run in this process (exit code 0 asserted), volatile fields masked."""
    from hwprof.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(list(argv))
    if rc != 0:
        raise AssertionError(f"hwprof {' '.join(argv)} exited {rc}")
    text = buf.getvalue()
    for pattern, repl in _VOLATILE:
        text = pattern.sub(repl, text)
    return text
