"""Median and spread of repeated generation sweeps (the run*/phases.csv that bench/llm_cpu_run.sh writes).

    python bench/llm_aggregate.py results/llm/cpu-xeon-2core-2026-11-30

writes ``sweep_median.csv`` (per phase and batch: the median over the repeats of tokens/s, time, MFU, MBU,
achieved FLOP/s, with min and max beside each) and prints it as a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

METRICS = ("tokens_per_s", "time_s", "achieved_flop_per_s", "mfu", "mbu", "mbu_weights_cache")


def aggregate(folder: Path) -> pd.DataFrame:
    runs = sorted(folder.glob("run*/phases.csv"))
    if not runs:
        raise SystemExit(f"no run*/phases.csv under {folder}")
    df = pd.concat([pd.read_csv(p).assign(run=p.parent.name) for p in runs], ignore_index=True)
    keys = ["phase", "batch"]
    fixed = df.groupby(keys, sort=False)[["tokens", "flops_per_token", "bytes_per_token", "intensity", "bound"]].first()
    stats = df.groupby(keys, sort=False)[list(METRICS)].agg(["median", "min", "max"])
    stats.columns = [f"{m}_{s}" for m, s in stats.columns]
    out = fixed.join(stats).reset_index()
    out.insert(2, "repeats", df.groupby(keys, sort=False).size().to_numpy())
    return out


def markdown(t: pd.DataFrame) -> str:
    lines = ["| phase | batch | tokens/s median (min–max) | FLOPs/token | bytes/token | FLOP/byte | MFU | MBU | bound |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for _, r in t.iterrows():
        lines.append(
            f"| {r['phase']} | {r['batch']} | {r['tokens_per_s_median']:.4g} ({r['tokens_per_s_min']:.4g}–"
            f"{r['tokens_per_s_max']:.4g}) | {r['flops_per_token']:.3g} | {r['bytes_per_token']:.3g} | "
            f"{r['intensity']:.3g} | {100 * r['mfu_median']:.1f}% | {100 * r['mbu_median']:.1f}% | {r['bound']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    args = ap.parse_args(argv)
    t = aggregate(args.folder)
    t.to_csv(args.folder / "sweep_median.csv", index=False)
    print(markdown(t))
    return 0


if __name__ == "__main__":
    sys.exit(main())
