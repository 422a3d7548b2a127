"""Predicted CUDA training-step peaks (fake tensors, no GPU needed) beside the H100 reference
measurements in docs/REFERENCES.md, for the models the zoo reproduces exactly (and torchvision's
mobilenet_v2 where torchvision is installed).

Usage: python bench/memory_vs_reference.py --out results/memory/predicted-vs-h100-reference.csv

The *measured* column is the reference "train step peak allocated (Adam, fp32)" on one H100 80GB
(torch 2.11, 2026-11), not a measurement of this script; the predictions are this script's.
"""

from __future__ import annotations

import argparse
import datetime
import time

import pandas as pd

from hwprof import zoo
from hwprof.errors import HwprofError
from hwprof.files import write_atomic
from hwprof.memory.estimate import estimate_memory

# (zoo model, batch, the reference's measured max_memory_allocated in bytes (GB = 1e9))
REFERENCE = [
    ("resnet50", 32, 3.35e9),
    ("resnet50", 64, 5.962e9),
    ("vgg16", 16, 3.422e9),
    ("torchvision:mobilenet_v2", 64, 5.106e9),   # only where torchvision is installed
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rows = []
    for name, batch, measured in REFERENCE:
        try:
            model, spec = zoo.build(name, device="meta")
        except (HwprofError, zoo.UnknownModelError) as e:
            print(f"{name}: skipped ({e})")
            continue
        t0 = time.perf_counter()
        e = estimate_memory(model, spec, batch=batch, mode="train", optimizer="adam", device="cuda")
        elapsed = time.perf_counter() - t0
        for predictor, r in e.predictors.iterrows():
            pred = r["peak_predicted_bytes"]
            rows.append({"model": name, "batch": batch, "predictor": predictor, "predicted_peak_bytes": pred,
                         "reference_measured_alloc_peak_bytes": measured,
                         "error_pct": 100 * (pred - measured) / measured if pd.notna(pred) else None,
                         "predict_time_s": round(elapsed, 2)})
    df = pd.DataFrame(rows)
    header = (f"# predicted on CPU (fake tensors, CUDA target) {datetime.date.today().isoformat()}; "
              "measured = H100 reference, docs/REFERENCES.md (torch 2.11)\n")
    write_atomic(args.out, header + df.to_csv(index=False))
    print(df.to_string(index=False))


if __name__ == "__main__":
    main()
