"""`hwprof memory MODEL`: predicted training/inference memory, predictors side by side.

Prediction runs on fake tensors (the model is built on the meta device: nothing is
allocated), so ``--device cuda`` predicts a GPU run on a machine without one.
``--validate`` builds the real model and runs one measured step (``hwprof.measure``);
``--fit SIZE|auto`` searches the largest batch predicted to fit (and, with ``--validate``,
checks it and the next size up for real).

Output: ``--format table`` prints MiB (2**20 bytes, labelled; hwprof's unit convention,
:mod:`hwprof.report.tables`); csv/json/md give bytes. With ``--fit``, csv/json/md
hold the fit table (one row per evaluated batch, then the real checks); otherwise the
predictors table (with measured values and errors when validated). ``--out DIR`` writes all
four (``memory.txt``, ``.csv``, ``.json``, ``.md``) and a ``manifest.json`` into the folder DIR.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

import pandas as pd

from hwprof.cli.common import (
    add_generation_options,
    add_model_options,
    add_output_options,
    amp_choice,
    build_model,
    dtype_arg,
    emit_all,
    positive_seconds,
)
from hwprof.cli.parallel import add_predict_options
from hwprof.files import to_jsonable
from hwprof.report.tables import human_bytes, mib, render

OPTIMIZER_CHOICES = ("none", "sgd", "momentum", "adam", "adamw")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_options(p)
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="device to predict (and validate) for (default: cuda if available, else cpu)")
    p.add_argument("--mode", choices=("train", "inference"), default="train",
                   help="train: forward, backward and optimizer step; inference: forward without grad")
    p.add_argument("--optimizer", choices=OPTIMIZER_CHOICES, default="adam",
                   help="optimizer of the training step (default adam; none: no step)")
    p.add_argument("--dtype", type=dtype_arg, default="fp32", help="fp32 | bf16 | fp16 (parameters and activations)")
    p.add_argument("--amp", nargs="?", const=True, default=False, type=amp_choice, metavar="bf16|fp16",
                   help="autocast the forward, parameters stay fp32: --amp bf16 | --amp fp16 (a bare --amp: to "
                        "--dtype, fp16 if that is fp32); --validate runs the same autocast step")
    p.add_argument("--validate", action="store_true",
                   help="run the real step and compare measured peaks with every predictor")
    p.add_argument("--fit", metavar="SIZE", default=None, type=_fit_size,
                   help="largest batch predicted to fit in SIZE (80GB = 80e9 B, 80GiB = 80*2**30 B, or auto)")
    p.add_argument("--fake-device", choices=("cpu", "cuda"), default="cpu",
                   help="where the prediction's fake tensors live (cuda: real CUDA kernel choices; needs CUDA)")
    p.add_argument("--budget", type=positive_seconds, default=0.5, metavar="S",
                   help="seconds of repetitions per measured phase with --validate (default 0.5)")
    add_predict_options(p, several=True)
    add_generation_options(p)
    add_output_options(p)


def _fit_size(text: str) -> str:
    """``--fit`` as given, once it is ``auto`` or a size :func:`hwprof.memory.fit.parse_size` takes."""
    from hwprof.memory.fit import parse_size

    if text != "auto":
        try:
            parse_size(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return text


def run(args: argparse.Namespace) -> int:
    import torch

    from hwprof.memory.estimate import estimate_memory
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.fake_device == "cuda":
        _require_device("cuda", "--fake-device cuda")
    optimizer = None if args.optimizer == "none" or args.mode != "train" else args.optimizer
    if args.generate:
        from hwprof.cli.generation import run_memory
        return run_memory(args, device)
    meta_model, spec = build_model(args, device="meta")
    if args.parallel:
        from hwprof.cli.parallel import memory_command
        return memory_command(args, meta_model, spec, optimizer)
    real_model: Any = None
    if args.validate:
        _require_device(device)
        real_model, _ = build_model(args)
    if args.fit is not None:
        return _run_fit(args, meta_model, real_model, spec, device, optimizer)
    est = estimate_memory(meta_model, spec, mode=args.mode, optimizer=optimizer, dtype=args.dtype, amp=args.amp,
                          batch=args.batch, device=device, fake_device=args.fake_device)
    val = None
    if real_model is not None:
        from hwprof.memory.validate import validate
        val = validate(real_model, spec, device=device, mode=args.mode, optimizer=optimizer, dtype=args.dtype,
                       amp=args.amp, batch=args.batch, estimate=est, budget_s=args.budget)
    df = est.predictors.copy()
    if val is not None:
        df = df.join(val.table.drop(columns=["predicted_peak_bytes"], errors="ignore"))
    header = (f"{args.model} (input {spec}, batch {est.config['batch']}, "
              + (f"autocast {est.config['dtype']}, parameters fp32" if args.amp else est.config["dtype"])
              + f", {args.mode}{', ' + optimizer if optimizer else ''}) "
              f"predicted for {device}")
    body: dict[str, Any] = {"model": args.model, "input": spec, **est.to_dict()}
    if val is not None:
        body["validation"] = {"compared": val.compared, "measured": val.measured,
                              "table": val.table.reset_index().to_dict(orient="records"), "notes": val.notes}
    emit_all(args, {"table": _text(header, est, val), "json": json.dumps(to_jsonable(body), indent=1),
                    **{fmt: render(df, fmt).rstrip("\n") for fmt in ("csv", "md")}})
    return 0


def _require_device(device: str, what: str = "--validate --device cuda") -> None:
    import torch

    from hwprof.errors import DeviceUnavailableError
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"{what} needs a CUDA device")


def _pct(v: Any) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{float(v):+.1f}%"


def _text(header: str, est: Any, val: Any) -> str:
    df = est.predictors
    shown = pd.DataFrame(index=df.index)
    for col in df.columns:
        if col == "notes":
            continue
        if df[col].isna().all():
            continue
        shown[col.replace("_bytes", "")] = df[col].map(mib)
    lines = [header, "", "predicted memory (MiB):", render(shown, "table"), ""]
    lines += [f"{name}: {note}" for name, note in df["notes"].items() if note]
    if val is not None:
        t = val.table
        lines += ["", f"validation on {val.device}: compared with {val.compared.replace('_bytes', '')} (MiB)"]
        vt = pd.DataFrame(index=t.index)
        for col in t.columns:
            vt[col.replace("_bytes", "")] = t[col].map(_pct if col.endswith("_pct") else mib)
        lines += [render(vt, "table"), ""]
        m = val.measured
        lines.append("measured: " + ", ".join(
            f"{k.replace('_bytes', '')} {mib(m.get(k))} MiB" for k in (
                "alloc_peak_bytes", "reserved_peak_bytes", "nvml_used_minus_baseline_bytes",
                "cuda_context_bytes", "rss_peak_minus_baseline_bytes") if m.get(k) is not None))
        if m.get("alloc_trace_peak_op"):
            lines.append(f"measured peak reached in {m['alloc_trace_peak_op']}, "
                         f"{mib(m.get('alloc_trace_workspace_at_peak_bytes'))} MiB of it that op's own workspace; "
                         f"largest in-op workspace {mib(m.get('alloc_trace_max_op_transient_bytes'))} MiB "
                         f"({m.get('alloc_trace_max_op_transient_op') or '-'}); predictors see only the tensors ops "
                         "return (measured_tensor_peak)")
        lines += [f"note: {n}" for n in val.notes]
    lines += [f"note: {n}" for n in est.notes]
    return "\n".join(lines).rstrip()


def _run_fit(args: argparse.Namespace, meta_model: Any, real_model: Any, spec: str, device: str,
             optimizer: str | None) -> int:
    from hwprof.memory.fit import check_fit, device_total_bytes, fit_batch, parse_size
    limit = device_total_bytes(device) if args.fit == "auto" else parse_size(args.fit)
    fit = fit_batch(meta_model, spec, limit, mode=args.mode, optimizer=optimizer, dtype=args.dtype, amp=args.amp,
                    device=device)
    checks = None
    if args.validate:
        checks = check_fit(real_model, spec, fit, device=device, mode=args.mode, optimizer=optimizer,
                           dtype=args.dtype, budget_s=args.budget)
    table = fit.evaluations.copy()
    if checks is not None:
        table = pd.concat([table.assign(kind="predicted"), checks.assign(kind="measured")], ignore_index=True)
    answer = (f"at least {fit.batch:,}, the largest batch hwprof tries (the search cap: how much more fits is not "
              "known)" if fit.at_cap else f"= {fit.batch}")
    summary = (f"{args.model} (input {spec}, {args.mode}{', ' + optimizer if optimizer else ''}, {args.dtype}) on "
               f"{device}: largest batch predicted to fit in {limit:,} B ({human_bytes(limit)}) {answer} "
               f"(criterion: simulated {fit.criterion.replace('_bytes', '')})")
    body = {"model": args.model, "input": spec, "limit_bytes": limit, "batch": fit.batch, "at_search_cap": fit.at_cap,
            "criterion": fit.criterion,
            "evaluations": fit.evaluations, "checks": checks}
    emit_all(args, {"table": _fit_text(summary, fit, checks, device), "json": json.dumps(to_jsonable(body), indent=1),
                    **{fmt: render(table, fmt, index=False).rstrip("\n") for fmt in ("csv", "md")}})
    return 0


def _fit_text(summary: str, fit: Any, checks: pd.DataFrame | None, device: str) -> str:
    ev = fit.evaluations.copy()
    for col in ("peak_predicted_bytes", "reserved_predicted_bytes"):
        ev[col.replace("_bytes", "_mib")] = ev.pop(col).map(mib)
    lines = [summary, "", render(ev, "table", index=False)]
    if checks is not None:
        ck = checks.copy()
        for col in ("alloc_peak_bytes", "reserved_peak_bytes", "alloc_trace_peak_bytes", "rss_peak_minus_baseline_bytes"):
            ck[col.replace("_bytes", "_mib")] = ck.pop(col).map(mib)
        lines += ["", "real check:", render(ck, "table", index=False)]
        if device != "cuda":
            lines.append("note: on CPU measured_fit compares the peak of live tensor bytes from torch's allocator "
                         "events (tensors + kernels' in-op scratch, which the prediction does not model) with "
                         "the limit; the host does not fail at a budget")
    return "\n".join(lines)
