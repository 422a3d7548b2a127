"""`hwprof predict MODEL --on CEILINGS`: per-layer and whole-model time predicted from the counts
and a ceilings record, nothing run (hwprof.predict).

``--on``: a ceilings JSON (``hwprof ceilings --format json --out F``, a cache file, a saved
profile's ``ceilings.json`` or its folder), or a device of the datasheet table (H100, H200, A100,
L4, L40S, MI300X, ...: peaks derated by measured efficiencies where known, and said so); without
``--on``, this machine's measured ceilings.
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch

from hwprof.cli.common import (
    add_model_options,
    add_output_options,
    build_model,
    dtype_arg,
    emit_all,
    path_arg,
    whole_number,
)
from hwprof.compare import load_run
from hwprof.counting.counter import count
from hwprof.device import MathModes
from hwprof.hardware.datasheet import DATASHEET
from hwprof.hardware.targets import target_ceilings
from hwprof.predict import Prediction, fit_efficiency, predict
from hwprof.report.tables import human, render


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_options(p)
    p.add_argument("--on", metavar="CEILINGS", default=None, type=path_arg,
                   help=f"a ceilings JSON file (or saved profile folder) or a device: {', '.join(DATASHEET)} "
                        "(default: this machine's measured ceilings)")
    p.add_argument("--derate-from", metavar="JSON", default=None, type=path_arg,
                   help="with a named device: ceilings measured on such a device, whose measured/datasheet ratios "
                        "and op overhead derate the datasheet (default: the newest found in the ceilings cache)")
    p.add_argument("--dtype", type=dtype_arg, default=None, help="fp32|bf16|fp16 (default: the model's)")
    p.add_argument("--mode", choices=("inference", "train"), default="inference",
                   help="inference: forward; train: forward + backward (the optimizer step is not predicted)")
    p.add_argument("--tf32", action="store_true", help="on a GPU: fp32 matmuls in TF32 too (convolutions are by default)")
    p.add_argument("--device", default="auto", help="without --on: whose ceilings to measure (default auto)")
    p.add_argument("--calibrate", nargs="+", metavar="DIR", default=None, type=path_arg,
                   help="saved profiles (`hwprof profile --out`) measured on the target: each layer kind's measured "
                        "efficiency against the roofline model derates its prediction (hwprof.predict.fit_efficiency)")
    p.add_argument("--top", type=whole_number(1), default=25, help="rows of the table, by predicted time (default 25)")
    add_output_options(p)


def layer_table(pred: Prediction, top: int | None = None) -> pd.DataFrame:
    """The layers by predicted time: kind, FLOPs, bytes, level, the three terms, prediction, share, bound."""
    lay = pred.layers.sort_values("predicted_s", ascending=False)
    lay = lay.head(top) if top else lay
    terms = lay[["compute_s", "memory_s"]]
    bound = terms.idxmax(axis=1).str.removesuffix("_s").where(terms.max(axis=1) >= lay["overhead_s"], "overhead")
    df = pd.DataFrame({
        "kind": lay["kind"], "flops": lay["flops"], "bytes": lay["bytes"], "level": lay["memory_level"],
        "compute_s": lay["compute_s"], "memory_s": lay["memory_s"], "overhead_s": lay["overhead_s"],
        "predicted_s": lay["predicted_s"], "share": lay["predicted_s"] / pred.total_s, "bound": bound,
    }, index=lay.index.map(lambda s: s or "(root)"))
    if "calibrated_s" in lay:
        df.insert(df.columns.get_loc("share"), "calibrated_s", lay["calibrated_s"].to_numpy())
    df.index.name = "layer"
    return df


def _time(s: float) -> str:
    """Seconds with a readable unit: 7.7e-06 -> '7.70 us', 0.0123 -> '12.300 ms'."""
    if s != s:
        return "-"
    return f"{s * 1e6:.2f} us" if abs(s) < 1e-3 else f"{s * 1e3:.3f} ms" if abs(s) < 1 else f"{s:.3f} s"


def _shown(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for col in ("compute_s", "memory_s", "overhead_s", "predicted_s", "calibrated_s"):
        if col in df:
            out[col] = df[col].map(_time)
    out["flops"], out["bytes"] = df["flops"].map(human), df["bytes"].map(lambda b: human(b, "B", 1024))
    out["share"] = df["share"].map(lambda x: f"{100 * x:.1f}%")
    return out.rename(columns=lambda c: c.removesuffix("_s"))


def summary_lines(pred: Prediction) -> list[str]:
    """Whole-model prediction, where the time goes (bound, type, level), the ceilings used, notes."""
    ops, k = pred.ops, pred.ceilings
    share = ops.groupby("predicted_bound")["predicted_s"].sum() / pred.total_s
    lines = [f"predicted whole model: {_time(pred.total_s)} over {len(ops)} ops "
             f"({'forward + backward' if pred.train else 'forward'}; per op max(FLOPs / roof, bytes / level "
             "bandwidth) + op overhead); time by the term that sets it: "
             + ", ".join(f"{b} {100 * v:.1f}%" for b, v in share.sort_values(ascending=False).items()),
             "by layer type: " + "; ".join(f"{kind} {_time(r.predicted_s)} ({100 * r.share:.1f}%)"
                                           for kind, r in pred.by("kind").head(6).iterrows()),
             "by memory level: " + "; ".join(f"{lvl} {_time(r.predicted_s)} ({100 * r.share:.1f}%)"
                                             for lvl, r in pred.by("memory_level").iterrows())]
    if pred.calibrated_total_s is not None:
        lines.insert(1, f"calibrated by the measured efficiency of each layer kind: {_time(pred.calibrated_total_s)}")
    roofs = ", ".join(f"{key} {human(v)}FLOP/s" for key, v in k.flop_per_s.items())
    levels = ", ".join(f"{lv.name} {human(lv.bytes_per_s)}B/s" if lv.bytes_per_s else f"{lv.name} (no bandwidth)"
                       for lv in k.memory_levels())
    lines.append(f"ceilings of {k.device_name} ({k.source}, {k.date}): {roofs}; {levels}")
    return lines + [f"note: {n}" for n in pred.notes]


def run(args: argparse.Namespace) -> int:
    model, spec = build_model(args, device="meta")
    k = target_ceilings(args.on, derate_from=args.derate_from, device=args.device)
    train = args.mode == "train"
    here = "cuda" if k.device_type == "cuda" and torch.cuda.is_available() else "cpu"
    c = count(model, spec, backward=train, batch=args.batch, dtype=args.dtype,
              device=torch.device(here), mode=args.mode)
    modes = MathModes(k.device_type, cudnn_tf32=k.device_type == "cuda", matmul_tf32=args.tf32)
    efficiency = None
    if args.calibrate:
        runs = [load_run(d) for d in args.calibrate]
        efficiency = fit_efficiency(r.layers for r in runs)
    pred = predict(c, k, train=train, modes=modes, efficiency=efficiency)
    if efficiency is not None:
        pred.notes.append("efficiencies (predicted / measured per layer kind, from " + ", ".join(args.calibrate) + "): "
                          + ", ".join(f"{kind} {e:.2f}" for kind, e in sorted(efficiency.items())))
    if k.device_type == "cuda" and here == "cpu":
        pred.notes.append("counted with the CPU's kernels (no CUDA here): the op list follows them (attention, RNN "
                          "kernels); convolution and matmul FLOPs and bytes are the same on a GPU")
    table = layer_table(pred)
    dtype = args.dtype or "the model's dtype"
    head = (f"== {args.model} (input {spec}, batch {args.batch}, {args.mode}, {dtype}) predicted on "
            f"{k.device_name} ({k.source})")
    text = "\n".join([head, render(_shown(layer_table(pred, args.top)), "table"), "", *summary_lines(pred)])
    emit_all(args, {"table": text, **{fmt: render(table, fmt).rstrip("\n") for fmt in ("csv", "json", "md")}})
    return 0
