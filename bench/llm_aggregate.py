"""Median and spread of repeated generation sweeps (the run*/phases.csv that bench/llm_cpu_run.sh writes).

    python bench/llm_aggregate.py results/llm/cpu-xeon-2core-2026-11-30 \
        [--ceilings results/ceilings/Intel_R_Xeon_R_Processor__torch-2.13.0+cpu__2threads.json]

writes ``sweep_median.csv`` (per phase and batch: the median over the repeats of tokens/s, time, MFU, MBU,
achieved FLOP/s, with min and max beside each; MFU and MBU of each repeat are against the ceilings that
repeat measured) and prints it as a Markdown table. With ``--ceilings`` (a saved ``Ceilings`` JSON, e.g.
measured on a quiet machine) it adds the best repeat's MFU and MBU against those roofs
(``best_mfu = max tokens/s x FLOPs per token / fp32 roof``, ``best_mbu = max tokens/s x bytes per token /
bandwidth``): load only slows a run down, so the fastest repeat is the least disturbed one.
"""

from __future__ import annotations

import argparse
import json
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


def with_best(t: pd.DataFrame, ceilings_file: Path) -> pd.DataFrame:
    """The best repeat's MFU and MBU against the roofs of ``ceilings_file`` (module docstring)."""
    from hwprof.hardware.ceilings import Ceilings

    k = Ceilings.from_dict(json.loads(ceilings_file.read_text()))
    best = t["tokens_per_s_max"]
    return t.assign(best_mfu=best * t["flops_per_token"] / k.roof("fp32"),
                    best_mbu=best * t["bytes_per_token"] / float(k.bytes_per_s or "nan"))


def markdown(t: pd.DataFrame) -> str:
    best = "best_mfu" in t
    head = "| phase | batch | tokens/s median (min–max) | FLOPs/token | bytes/token | FLOP/byte | MFU | MBU | bound |"
    lines = [head + (" best MFU | best MBU |" if best else ""), "|" + " --- |" * (11 if best else 9)]
    for _, r in t.iterrows():
        lines.append(
            f"| {r['phase']} | {r['batch']} | {r['tokens_per_s_median']:.4g} ({r['tokens_per_s_min']:.4g}–"
            f"{r['tokens_per_s_max']:.4g}) | {r['flops_per_token']:.3g} | {r['bytes_per_token']:.3g} | "
            f"{r['intensity']:.3g} | {100 * r['mfu_median']:.1f}% | {100 * r['mbu_median']:.1f}% | {r['bound']} |"
            + (f" {100 * r['best_mfu']:.1f}% | {100 * r['best_mbu']:.1f}% |" if best else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--ceilings", type=Path, default=None, help="a saved Ceilings JSON for best_mfu / best_mbu")
    args = ap.parse_args(argv)
    t = aggregate(args.folder)
    if args.ceilings is not None:
        t = with_best(t, args.ceilings)
    t.to_csv(args.folder / "sweep_median.csv", index=False)
    print(markdown(t))
    return 0


if __name__ == "__main__":
    sys.exit(main())
