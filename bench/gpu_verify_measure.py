"""Cross-check hwprof's timer against triton's do_bench and torch.utils.benchmark, on a GPU (or CPU, --quick).

For zoo resnet50 and mobilenet_v1 (batch 64 at 3x224x224; --quick: batch 2 at 3x64x64):

* whole-model forward (no grad) median: hwprof ``measure`` vs ``triton.testing.do_bench``
  (median mode) vs ``torch.utils.benchmark.Timer.blocked_autorange``; ratios and IQR/median;
* per-layer: sum of per-layer self times vs the whole-model median, forward (inference) and
  forward + backward (train);
* the ceilings of the device (``measure_ceilings``: from ``--ceilings-cache`` when they are
  cached there, as after the ceilings stage of ``bench/gpu_session.sh``; ``--refresh-ceilings``
  re-measures them).

Writes ``timers.csv``, ``layer_sums.csv``, ``ceilings.json`` and ``summary.json`` under ``--out``;
the CSVs after each model, so a run cut short keeps the models it finished. Usage::

    python bench/gpu_verify_measure.py --out results/verify-h200            # on the GPU machine
    python bench/gpu_verify_measure.py --out /tmp/verify --quick --device cpu   # smoke check
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from hwprof.device import describe_device, resolve_device
from hwprof.files import write_atomic, write_json_atomic
from hwprof.hardware.ceilings import measure_ceilings
from hwprof.measuring.runner import measure
from hwprof.zoo import build

log = logging.getLogger("gpu_verify_measure")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def do_bench_median_s(fn: Any, dev: torch.device) -> tuple[float | None, str | None]:
    """triton.testing.do_bench in median mode (ms -> s), or (None, why)."""
    if dev.type != "cuda":
        return None, "do_bench needs CUDA"
    try:
        from triton.testing import do_bench
    except ImportError as e:
        return None, f"triton not importable ({e})"
    return float(do_bench(fn, warmup=100, rep=1000, return_mode="median")) * 1e-3, None


def torch_timer(fn: Any, dev: torch.device, min_run_time: float) -> tuple[float, float]:
    """torch.utils.benchmark.Timer.blocked_autorange: (median_s, iqr_s); it synchronises CUDA itself."""
    from torch.utils.benchmark import Timer
    m = Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time)
    return float(m.median), float(m.iqr)


def verify_model(name: str, batch: int, spec: str, dev: torch.device, budget_s: float) -> tuple[list[dict], list[dict]]:
    model, _ = build(name)
    model = model.to(dev).eval()
    x = torch.randn(batch, *(int(d) for d in spec.split("x")), device=dev)   # float inputs: image models

    def fwd() -> None:
        with torch.no_grad():
            model(x)

    m = measure(model, x, device=dev, mode="inference", budget_s=budget_s)
    st = m.timings["fwd_nograd"]
    rows: list[dict[str, Any]] = [{"model": name, "batch": batch, "method": "hwprof.measure (CUDA events / perf_counter)",
             "median_s": st.median_s, "iqr_s": st.iqr_s, "iqr_over_median": st.iqr_over_median, "reps": st.reps}]
    fwd()
    _sync(dev)
    db, why = do_bench_median_s(fwd, dev)
    rows.append({"model": name, "batch": batch, "method": "triton.testing.do_bench (median)", "median_s": db,
                 "iqr_s": None, "iqr_over_median": None, "reps": None, "note": why})
    med, iqr = torch_timer(fwd, dev, max(0.5, budget_s))
    rows.append({"model": name, "batch": batch, "method": "torch.utils.benchmark.Timer.blocked_autorange",
                 "median_s": med, "iqr_s": iqr, "iqr_over_median": iqr / med, "reps": None})
    for r in rows:
        r["hwprof_over_this"] = None if not r["median_s"] else st.median_s / r["median_s"]

    sums = []
    for mode in ("inference", "train"):
        model.train(mode == "train")
        lm = measure(model, x, device=dev, mode=mode, per_layer=True, budget_s=budget_s)
        for phase in ("fwd", "bwd"):
            s = lm.layer_sum
            if s.get(f"{phase}_whole_s") is None:
                continue
            sums.append({"model": name, "batch": batch, "mode": mode, "phase": phase,
                         "whole_median_s": s[f"{phase}_whole_s"], "layer_self_sum_s": s[f"{phase}_layer_sum_s"],
                         "ratio": s[f"{phase}_ratio"], "hooked_root_s": s[f"{phase}_hooked_root_s"],
                         "leaf_self_sum_s": float(lm.layers.loc[lm.layers["is_leaf"], f"{phase}_s"].sum())})
        if mode == "train":
            sums[-1]["alloc_peak_bytes"] = lm.memory["alloc_peak_bytes"]
            sums[-1]["nvml_used_peak_bytes"] = lm.memory["nvml_used_peak_bytes"]
    model.eval()
    return rows, sums


def _write_tables(out: Path, timers: list[dict], sums: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    timers_df, sums_df = pd.DataFrame(timers), pd.DataFrame(sums)
    write_atomic(out / "timers.csv", timers_df.to_csv(index=False))
    write_atomic(out / "layer_sums.csv", sums_df.to_csv(index=False))
    return timers_df, sums_df


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="directory for the CSV/JSON results")
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="small batch and images, quick ceilings (CPU smoke check)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 64; --quick: 2)")
    p.add_argument("--budget", type=float, default=None, help="seconds per timed phase (default 2; --quick: 0.2)")
    p.add_argument("--models", default="resnet50,mobilenet_v1", help="comma-separated zoo models")
    p.add_argument("--ceilings-cache", default=None, metavar="DIR", help="where ceilings are cached")
    p.add_argument("--refresh-ceilings", action="store_true", help="re-measure the ceilings")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    dev = resolve_device(args.device)
    batch = args.batch or (2 if args.quick else 64)
    spec = "3x64x64" if args.quick else "3x224x224"
    budget = args.budget or (0.2 if args.quick else 2.0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    timers: list[dict] = []
    sums: list[dict] = []
    for name in (m for m in args.models.split(",") if m):
        log.info("%s batch %d on %s", name, batch, dev)
        rows, s = verify_model(name, batch, zoo_spec(name, spec), dev, budget)
        timers += rows
        sums += s
        timers_df, sums_df = _write_tables(out, timers, sums)
    k = measure_ceilings(device=dev, refresh=args.refresh_ceilings, cache_dir=args.ceilings_cache, quick=args.quick)
    timers_df, sums_df = _write_tables(out, timers, sums)
    write_json_atomic(out / "ceilings.json", k.to_dict())
    write_json_atomic(out / "summary.json", {
        "command": " ".join([sys.executable, *sys.argv]), "date": dt.datetime.now(dt.timezone.utc).isoformat(),
        "device": describe_device(dev), "batch": batch, "input": spec, "budget_s": budget,
        "timers": timers, "layer_sums": sums, "ceilings": {"flop_per_s": k.flop_per_s, "bytes_per_s": k.bytes_per_s,
                                                            "ratio_to_datasheet": k.ratio_to_datasheet,
                                                            "source": k.source}})
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(timers_df.to_string(index=False))
        print(sums_df.to_string(index=False))
        print({"flop_per_s": k.flop_per_s, "bytes_per_s": k.bytes_per_s, "ratio_to_datasheet": k.ratio_to_datasheet})
    print(f"wrote {out}/timers.csv, layer_sums.csv, ceilings.json, summary.json")
    return 0


def zoo_spec(name: str, spec: str) -> str:
    """``spec`` for an image model (3 x H x W), else the zoo model's own input."""
    default = build(name, device="meta")[1]
    return spec if default.startswith("3x") else default


if __name__ == "__main__":
    sys.exit(main())
