"""Predicted per-rank memory for 2, 8, 64 and 512 ranks beside the measured 2-rank run, and the predicted
collective bytes per step beside the measured ones.

Usage (after the two torchrun runs of results/distributed/README.md wrote their folders):

    python bench/dist_memory_vs_ranks.py --model gpt_tiny --batch 8 \\
        --measured ddp=results/distributed/ddp-gpt_tiny-bs8 --measured fsdp=results/distributed/fsdp-gpt_tiny-bs8 \\
        --out results/distributed/memory-vs-ranks

writes ``<out>.csv`` (one row per parallel mode and world size: predicted peak per rank and its
parts; for 2 ranks the measured peaks of both ranks and the errors) and ``<out>.md`` (the same as
a table, with the collective check). Predictions run in this process on torch's fake process
group (a few seconds each); measured = the allocator trace of each rank (the peak of the tensors
ops return, i.e. without in-op workspaces, which the prediction does not model, and the full
peak beside it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from hwprof import zoo
from hwprof.distributed.predict import predict
from hwprof.distributed.records import DistributedMeasurement
from hwprof.files import write_atomic
from hwprof.report.tables import render

WORLD_SIZES = (2, 8, 64, 512)


def _measured(folder: Path) -> DistributedMeasurement:
    return DistributedMeasurement.from_dict(json.loads((folder / "distributed.json").read_text()))


def _calls(calls: object) -> list[tuple[str, str, int]]:
    return sorted((c.phase, c.kind, c.bytes) for c in calls)  # type: ignore[attr-defined]


def rows_for(model_name: str, batch: int, parallel: str, measured: DistributedMeasurement | None) -> tuple[
        list[dict[str, object]], list[str]]:
    """One row per world size; lines saying whether the 2-rank prediction's collectives equal the measured ones."""
    model, spec = zoo.build(model_name, device="meta")
    rows, checks = [], []
    for n in WORLD_SIZES:
        p = predict(model, spec, parallel, n, batch=batch, optimizer="adam", count_flops=False)
        row: dict[str, object] = {"parallel": parallel, "world_size": n, "predicted_peak_bytes": p.peak_bytes,
                                  **{f"predicted_{k}_bytes": v for k, v in p.at_peak.items()},
                                  "collective_bytes_per_step": sum(c.bytes for c in p.collectives)}
        if n == 2 and measured is not None:
            for r in measured.ranks:
                t = r.measurement.memory_record.alloc_trace
                if t is None:
                    continue
                row[f"rank{r.rank}_measured_tensor_peak_bytes"] = t.peak_without_workspace_bytes
                row[f"rank{r.rank}_measured_peak_bytes"] = t.peak_bytes
                row[f"rank{r.rank}_error_pct"] = 100 * (p.peak_bytes / t.peak_without_workspace_bytes - 1)
                same = _calls(r.collectives) == _calls(p.collectives)
                checks.append(f"{parallel}, rank {r.rank}: {len(r.collectives)} collectives per step measured, "
                              f"{'equal call by call (kind, phase, bytes)' if same else 'DIFFERENT'} to the prediction")
        rows.append(row)
    return rows, checks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gpt_tiny")
    ap.add_argument("--batch", type=int, default=8, help="per rank")
    ap.add_argument("--measured", action="append", default=[], metavar="MODE=DIR",
                    help="a folder `torchrun ... -m hwprof measure --parallel MODE --out DIR` wrote")
    ap.add_argument("--out", required=True, help="output path without suffix (.csv and .md are written)")
    args = ap.parse_args()
    measured = {k: _measured(Path(v)) for k, v in (m.split("=", 1) for m in args.measured)}
    rows, checks = [], []
    for parallel in ("ddp", "fsdp"):
        r, c = rows_for(args.model, args.batch, parallel, measured.get(parallel))
        rows += r
        checks += c
    df = pd.DataFrame(rows)
    parts = [c for c in df.columns if c.startswith("predicted_") and c != "predicted_peak_bytes"]
    df[parts] = df[parts].fillna(0)            # a category absent at the peak holds 0 B there
    write_atomic(f"{args.out}.csv", render(df, "csv", index=False))
    shown = df.assign(**{c: (df[c] / 2**20).map(lambda v: "" if pd.isna(v) else f"{v:.2f}") for c in df.columns
                         if c.endswith("_bytes") and c != "collective_bytes_per_step"})
    shown = shown.rename(columns=lambda c: c.replace("_bytes", "_mib") if c != "collective_bytes_per_step" else c)
    for c in [c for c in shown.columns if c.endswith("_pct")]:
        shown[c] = df[c].map(lambda v: "" if pd.isna(v) else f"{v:+.2f}%")
    text = (f"# {args.model}, batch {args.batch} per rank, Adam, fp32: predicted per-rank memory (MiB)\n\n"
            + render(shown, "md", index=False) + "\n" + "\n".join(f"- {c}" for c in checks) + "\n")
    write_atomic(f"{args.out}.md", text)
    print(text)


if __name__ == "__main__":
    main()
