"""Nsight Compute counters: the ``ncu`` command line, its CSV parsed into one row per kernel,
one run per point, and the single-point runner ncu profiles
(``python -m hwprof.studies.depthwise --point JSON``)."""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from hwprof.studies.depthwise.measure import _first_line, point_callable
from hwprof.studies.depthwise.sweep import Point, build_point

NCU_METRICS: dict[str, str] = {
    "dram__bytes_read.sum": "dram_bytes_read",
    "dram__bytes_write.sum": "dram_bytes_written",
    "lts__t_bytes.sum": "l2_bytes",
    "dram__throughput.avg.pct_of_peak_sustained_elapsed": "dram_pct_of_peak",
    "sm__throughput.avg.pct_of_peak_sustained_elapsed": "sm_pct_of_peak",
    "gpu__time_duration.sum": "kernel_time_s",
}
"""ncu metric -> column. Bytes in bytes, time in seconds, throughputs in % of peak."""

NVTX_RANGE = "hwprof_point"

_UNIT_SCALE: dict[str, float] = {
    "byte": 1.0, "kbyte": 1e3, "mbyte": 1e6, "gbyte": 1e9, "tbyte": 1e12,
    "kibyte": 2.0**10, "mibyte": 2.0**20, "gibyte": 2.0**30,
    "nsecond": 1e-9, "usecond": 1e-6, "msecond": 1e-3, "second": 1.0, "ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0,
    "%": 1.0, "": 1.0,
}
_GROUPED_NUMBER = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$")


NCU_INSTALL_GLOB = "/opt/nvidia/nsight-compute/*/ncu"
"""Where Nsight Compute installs itself when it is not on PATH (the newest version is taken)."""


def ncu_path() -> str | None:
    """The ``ncu`` executable: ``$NCU`` if set, else ``ncu`` on PATH, else the newest
    :data:`NCU_INSTALL_GLOB`; None when there is none."""
    import glob

    env = os.environ.get("NCU")
    if env:
        return shutil.which(env) or (env if os.access(env, os.X_OK) else None)
    found = shutil.which("ncu")
    if found:
        return found
    installed = sorted(glob.glob(NCU_INSTALL_GLOB))
    return installed[-1] if installed else None


def _number(text: str) -> float:
    """'1,234,567.5' -> 1234567.5 (thousands separators as ncu prints them); 'n/a' -> NaN."""
    t = text.strip().strip('"')
    if _GROUPED_NUMBER.match(t):
        t = t.replace(",", "")
    try:
        return float(t)
    except ValueError:
        return math.nan


def parse_ncu_csv(text: str) -> pd.DataFrame:
    """Parse ``ncu --csv --metrics ...`` output (the "details" page, one row per kernel and metric;
    header fields include "ID", "Kernel Name", "Metric Name", "Metric Unit", "Metric Value") into
    one row per kernel: ``kernel_id``, ``kernel_name`` and a column per :data:`NCU_METRICS` entry,
    converted to bytes / seconds / % by the unit column.

    Lines before the header (``==PROF==`` messages, the program's own output) and lines that do
    not parse as a row of the header's width are skipped.
    """
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith('"ID"') and '"Metric Name"' in ln), None)
    cols = ["kernel_id", "kernel_name", *NCU_METRICS.values()]
    if start is None:
        return pd.DataFrame(columns=cols)
    reader = csv.reader(lines[start:])
    header = next(reader)
    idx = {h: i for i, h in enumerate(header)}
    kernels: dict[str, dict[str, Any]] = {}
    for rec in reader:
        if len(rec) != len(header):
            continue
        metric = rec[idx["Metric Name"]]
        if metric not in NCU_METRICS:
            continue
        kid = rec[idx["ID"]]
        k = kernels.setdefault(kid, {"kernel_id": int(kid) if kid.isdigit() else kid,
                                     "kernel_name": rec[idx["Kernel Name"]] if "Kernel Name" in idx else ""})
        unit = rec[idx["Metric Unit"]].strip().lower() if "Metric Unit" in idx else ""
        k[NCU_METRICS[metric]] = _number(rec[idx["Metric Value"]]) * _UNIT_SCALE.get(unit, math.nan)
    return pd.DataFrame(list(kernels.values())).reindex(columns=cols)


def summarise_kernels(kernels: pd.DataFrame) -> dict[str, float]:
    """One point's kernels summed: bytes and time add up; DRAM/SM % of peak are averaged with
    kernel time as the weight (sum(pct_i * t_i) / sum(t_i))."""
    out: dict[str, float] = {"kernels": float(len(kernels))}
    for c in ("dram_bytes_read", "dram_bytes_written", "l2_bytes", "kernel_time_s"):
        out[c] = float(pd.to_numeric(kernels[c], errors="coerce").sum(min_count=1)) if c in kernels else math.nan
    out["dram_bytes"] = out["dram_bytes_read"] + out["dram_bytes_written"]
    t = pd.to_numeric(kernels.get("kernel_time_s", pd.Series(dtype=float)), errors="coerce")
    for c in ("dram_pct_of_peak", "sm_pct_of_peak"):
        v = pd.to_numeric(kernels.get(c, pd.Series(dtype=float)), errors="coerce")
        w = t.where(v.notna())
        out[c] = float((v * w).sum() / w.sum()) if len(v) and w.sum() > 0 else math.nan
    return out


def ncu_command(point: Point, ncu: str, device: str = "cuda", clock_control: str = "base") -> list[str]:
    """``ncu`` re-running this module's single-point runner, limited to the NVTX range around
    the timed call (warm-up and cuDNN's algorithm search stay outside it).

    ``clock_control``: ncu's ``--clock-control``: "base" (ncu's default: clocks locked to base,
    as in the H100 reference counters (docs/REFERENCES.md); kernel times then run slower than the event-timed
    sweep) or "none" (the clocks as the GPU sets them)."""
    if clock_control not in ("base", "none"):
        raise ValueError(f"clock_control must be 'base' or 'none', got {clock_control!r}")
    return [ncu, "--csv", "--print-units", "base", "--target-processes", "all", "--clock-control", clock_control,
            "--nvtx", "--nvtx-include", f"{NVTX_RANGE}/", "--metrics", ",".join(NCU_METRICS),
            sys.executable, "-m", "hwprof.studies.depthwise", "--point", point.to_json(), "--device", device]


def run_counters(points: Sequence[Point], *, ncu: str, device: str = "cuda", timeout_s: float = 300.0,
                 clock_control: str = "base",
                 runner: Callable[..., Any] = subprocess.run,
                 progress: Callable[[str], None] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run each point under ``ncu`` in a subprocess; returns (one row per point with the kernel
    sums of :func:`summarise_kernels`, one row per kernel). A failed run gives status "error"."""
    rows, kernel_rows = [], []
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for p in points:
        row: dict[str, Any] = {"name": p.name, "op": p.op, "variant": p.variant, "pass": p.pass_name}
        try:
            proc = runner(ncu_command(p, ncu, device, clock_control), capture_output=True, text=True, timeout=timeout_s, env=env)
            kernels = parse_ncu_csv(proc.stdout)
            if proc.returncode != 0 or kernels.empty:
                tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or [""]
                row.update(status="error", error=f"ncu exit {proc.returncode}, {len(kernels)} kernels: {tail[0][:200]}")
            else:
                row.update(status="ok", error="", **summarise_kernels(kernels))
                kernel_rows.append(kernels.assign(name=p.name))
        except (OSError, subprocess.SubprocessError) as e:
            row.update(status="error", error=_first_line(e))
        rows.append(row)
        if progress is not None:
            progress(f"ncu {p.name}")
    kernels_df = pd.concat(kernel_rows, ignore_index=True) if kernel_rows else pd.DataFrame()
    return pd.DataFrame(rows), kernels_df


def _run_point_for_profiler(point: Point, device: str) -> None:
    """The body ncu profiles: build, warm up (outside the NVTX range), then one call inside it."""
    dev = torch.device(device)
    module, x = build_point(point, dev)
    fn = point_callable(module, x, point.backward)
    for _ in range(3):
        fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.nvtx.range_push(NVTX_RANGE)
    fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.nvtx.range_pop()


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m hwprof.studies.depthwise --point JSON --device cuda``: run one point once
    inside an NVTX range, for Nsight Compute. Prints nothing."""
    p = argparse.ArgumentParser(prog="python -m hwprof.studies.depthwise")
    p.add_argument("--point", required=True, help="a Point as JSON")
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    _run_point_for_profiler(Point.from_json(args.point), args.device)
    return 0
