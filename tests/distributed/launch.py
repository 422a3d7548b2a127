"""Launch ``python -m torch.distributed.run ... -m hwprof ...`` in a subprocess and read each rank's output
(``--log-dir`` with ``--redirects 3`` gives every rank its own stdout.log / stderr.log)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent


@dataclass
class Launched:
    returncode: int
    wall_s: float
    stdout: dict[int, str]
    stderr: dict[int, str]
    agent: str


def torchrun(args: list[str], tmp_path: Path, nproc: int = 2, timeout_s: float = 180) -> Launched:
    """``torchrun --standalone --nproc_per_node nproc -m hwprof *args``; rank outputs by rank."""
    logs = tmp_path / "torchrun-logs"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "HWPROF_CACHE_DIR": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "--log-dir", str(logs), "--redirects", "3", "-m", "hwprof", *args]
    t0 = time.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    wall = time.monotonic() - t0
    out: dict[int, str] = {}
    err: dict[int, str] = {}
    for f in logs.rglob("std*.log"):
        rank = int(f.parent.name)
        (out if f.name == "stdout.log" else err)[rank] = f.read_text()
    return Launched(done.returncode, wall, out, err, done.stdout + done.stderr)


def hwprof_lines(text: str) -> list[str]:
    """The lines of a rank's output that are not torch's own warnings (C++ ``[W ...]`` lines, Python
    warnings, the launcher's log lines); a ``[rankN]:`` prefix is read through."""
    skip = ("W1", "I1", "USDT", "[W", "  warnings.warn", "  return func", "/")
    lines = [re.sub(r"^\[rank\d+\]:", "", ln) for ln in text.splitlines()]
    return [ln for ln in lines if ln.strip() and not ln.startswith(skip) and "Warning" not in ln]
