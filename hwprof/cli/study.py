"""`hwprof study depthwise [--device auto|cpu|cuda] [--dtype fp32,bf16] [--channels-last no|yes|both]
[--quick] [--counters] [--out DIR]`: dense / grouped / depthwise / pointwise convolutions at matched
shapes, on the measured roofline (see :mod:`hwprof.studies.depthwise`).

Writes CSV, plots, a Markdown summary and a manifest into the folder ``--out`` (default
``out/depthwise-<device>-<UTC time>``), complete or not at all (see :mod:`hwprof.cli.common`);
prints the headline shape's table (``--format``) and, when stderr is a terminal, a progress bar.
Without ``--dtype``, dtypes the device has no arithmetic units for are left out, with a note
(:mod:`hwprof.studies.depthwise.plan`); ``--quick`` measures for at most
:data:`~hwprof.studies.depthwise.plan.QUICK_TIME_BUDGET_S` seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from hwprof.cli.common import (
    MAX_DIM,
    add_force_option,
    check_out_dir,
    command_line,
    emit,
    out_folder,
    path_arg,
    positive_seconds,
    progress_enabled,
    strict_int,
)
from hwprof.report.tables import FORMATS, render
from hwprof.spec import InputSpecError, parse_dtype

__all__ = ["add_arguments", "run"]

_DTYPE_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="study", metavar="STUDY", required=True)
    d = sub.add_parser(
        "depthwise", help="dense vs grouped vs depthwise vs pointwise convolutions: FLOPs vs time, on the roofline",
        description="Operators at matched input/output shape (dense 3x3, grouped 3x3 g=2/8/32, depthwise "
                    "3x3/5x5/7x7, pointwise 1x1, depthwise-separable), fp32/bf16, NCHW/channels_last, "
                    "forward and forward+backward; FLOPs and bytes from hwprof's counter, median times, "
                    "the measured roofs of this machine.")
    d.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    d.add_argument("--dtype", default=None,
                   help="comma-separated: fp32, bf16, fp16 (default fp32,bf16 without the dtypes the device has "
                        "no arithmetic units for, e.g. bf16 on a CPU without AVX512-BF16/AMX)")
    d.add_argument("--channels-last", choices=("no", "yes", "both"), default="both",
                   help="memory format: NCHW (no), channels_last (yes) or both (default)")
    d.add_argument("--quick", action="store_true",
                   help="C=256 56x56 at batch 1 only, short timing budgets, at most 40 s of measurement "
                        "(points left are listed as skipped): under a minute on a 2-core CPU")
    d.add_argument("--counters", action="store_true",
                   help="also measure each operator's kernels with Nsight Compute (ncu), where available")
    d.add_argument("--channels", metavar="LIST", help="comma-separated C values; with --spatial, sweep their "
                   "cross product instead of MobileNetV1's stage shapes + C=256 56x56")
    d.add_argument("--spatial", metavar="LIST", help="comma-separated H=W values (see --channels)")
    d.add_argument("--batch", metavar="LIST", help="comma-separated batch sizes (default 1,64; --quick: 1)")
    d.add_argument("--budget-s", type=positive_seconds, help="timing budget per point in seconds")
    d.add_argument("--quick-ceilings", action="store_true",
                   help="measure the roofs with small GEMMs too (a smoke check: understates the roofs)")
    d.add_argument("--ncu-clock-control", choices=("base", "none"), default="base",
                   help="ncu --clock-control with --counters: base (ncu's default, clocks locked to base, "
                   "as the H100 reference in docs/REFERENCES.md) or none (clocks as the GPU sets them)")
    d.add_argument("--ceilings-cache", metavar="DIR", default=None, type=path_arg,
                   help="where measured ceilings are cached (default $HWPROF_CACHE_DIR/ceilings or the user cache)")
    d.add_argument("--no-fasternet", action="store_true", help="skip the FasterNet-style table")
    d.add_argument("--no-models", action="store_true", help="skip MobileNetV1 vs its dense twin")
    d.add_argument("--no-plots", action="store_true", help="skip the plots")
    d.add_argument("--format", choices=FORMATS, default="table", help="format of the printed table (default table)")
    d.add_argument("--out", metavar="DIR", help="output directory (default out/depthwise-<device>-<UTC time>)")
    add_force_option(d)


def _ints(text: str | None, what: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(strict_int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputSpecError(f"--{what} expects comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 or v > MAX_DIM for v in values):
        raise InputSpecError(f"--{what} expects positive integers, got {text!r}")
    return values


def _dtypes(text: str) -> tuple[str, ...]:
    out = []
    for name in (t for t in text.split(",") if t.strip()):
        dt = parse_dtype(name)
        short = _DTYPE_NAMES.get(str(dt).removeprefix("torch."))
        if short is None:
            raise InputSpecError(f"--dtype {name!r}: the study runs fp32, bf16 or fp16")
        out.append(short)
    if not out:
        raise InputSpecError("--dtype is empty; expected e.g. fp32,bf16")
    return tuple(dict.fromkeys(out))


def _config(args: argparse.Namespace, dtypes: tuple[str, ...], cl: tuple[bool, ...]) -> Any:
    from hwprof.studies import depthwise as dw

    overrides: dict[str, Any] = {}
    channels, spatial = _ints(args.channels, "channels"), _ints(args.spatial, "spatial")
    if (channels is None) != (spatial is None):
        raise InputSpecError("--channels and --spatial go together (their cross product is swept)")
    if channels is not None and spatial is not None:
        overrides["shapes"] = tuple((c, s) for c in channels for s in spatial)
    batches = _ints(args.batch, "batch")
    if batches is not None:
        overrides["batches"] = batches
    if args.budget_s is not None:
        overrides["budget_s"] = args.budget_s
    make = dw.quick_config if args.quick else dw.default_config
    return make(dtypes, cl, **overrides)


class _Bar:
    """A tqdm bar on stderr, opened at the first measurement, whose total can grow (OOM retries,
    ncu runs); nothing when ``enabled`` is False (stderr is not a terminal)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def __call__(self, done: int, total: int, label: str) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="pt", desc="depthwise", file=sys.stderr, dynamic_ncols=True,
                            leave=False)
        self.bar.total = max(total, done)
        self.bar.n = done
        self.bar.set_postfix_str(label[:60], refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def logging(self) -> contextlib.AbstractContextManager[Any]:
        """Log lines (e.g. noisy-timing warnings) printed above the bar while it runs."""
        if not self.enabled:
            return contextlib.nullcontext()
        from tqdm.contrib.logging import logging_redirect_tqdm

        return logging_redirect_tqdm()


def _headline_table(headline: pd.DataFrame | None, fmt: str) -> pd.DataFrame:
    if headline is None or headline.empty:
        return pd.DataFrame()
    cols = ["op", "variant", "pass", "flops", "bytes", "intensity", "time_s", "achieved_flop_per_s",
            "pct_of_compute_roof", "pct_of_memory_roof", "bound", "flops_ratio", "speedup"]
    t = headline.sort_values(["pass", "variant", "flops"], ascending=[True, True, False])[cols].reset_index(drop=True)
    if fmt in ("table", "md"):
        from hwprof.studies.depthwise import fmt_pct, fmt_rate, fmt_ratio, fmt_time

        t = t.assign(
            flops=[f"{v:.3g}" for v in t["flops"]], bytes=[f"{v:.3g}" for v in t["bytes"]],
            intensity=[f"{v:.3g}" for v in t["intensity"]], time_s=[fmt_time(v) for v in t["time_s"]],
            achieved_flop_per_s=[fmt_rate(v) for v in t["achieved_flop_per_s"]],
            pct_of_compute_roof=[fmt_pct(v) for v in t["pct_of_compute_roof"]],
            pct_of_memory_roof=[fmt_pct(v) for v in t["pct_of_memory_roof"]],
            flops_ratio=[fmt_ratio(v) if math.isfinite(v) else "-" for v in t["flops_ratio"]],
            speedup=[fmt_ratio(v) if math.isfinite(v) else "-" for v in t["speedup"]],
        ).rename(columns={"time_s": "time", "achieved_flop_per_s": "achieved", "flops_ratio": "fewer FLOPs vs dense",
                          "speedup": "faster vs dense"})
    return t


def run(args: argparse.Namespace) -> int:
    from hwprof.device import resolve_device
    from hwprof.studies import depthwise as dw

    notes: list[str] = []
    dev = resolve_device(args.device, notes)
    dtypes, dtype_notes = dw.plan_dtypes(_dtypes(args.dtype) if args.dtype else None, dev)
    if not dtypes:
        raise InputSpecError(f"no dtype to run: {'; '.join(dtype_notes)}")
    cl = {"no": (False,), "yes": (True,), "both": (False, True)}[args.channels_last]
    config = _config(args, dtypes, cl)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path("out") / f"depthwise-{args.device.replace(':', '')}-{stamp}"
    check_out_dir(out)   # before any work
    bar = _Bar(progress_enabled())
    try:
        with bar.logging():
            result = dw.compute_study(device=dev, quick=args.quick, counters=args.counters, config=config,
                                      fasternet=not args.no_fasternet, models=not args.no_models,
                                      quick_ceilings=args.quick_ceilings, ceilings_cache=args.ceilings_cache,
                                      ncu_clock_control=args.ncu_clock_control, command=command_line(),
                                      progress=bar, notes=notes + dtype_notes)
    finally:
        bar.close()
    with out_folder(out) as d:
        assert d is not None
        result = dw.save_study(result, d, plots=not args.no_plots)
    for note in result.notes:
        print(f"hwprof study depthwise: {note}", file=sys.stderr)
    _print_table(result, args)
    counts = result.points["status"].value_counts().to_dict()
    print(f"{len(result.points)} points: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())),
          file=sys.stderr)
    return 0 if counts.get("ok", 0) else 1


def _print_table(result: Any, args: argparse.Namespace) -> None:
    from hwprof.studies import depthwise as dw

    table = _headline_table(result.headline, args.format)
    if args.format == "table":
        shape = dw.headline_shape(result.points)
        head = (f"C={shape[0]}, {shape[1]}x{shape[1]}, bs {shape[2]}" if shape else "no dense/depthwise pair ran")
        text = f"depthwise study on {result.ceilings.device_name or args.device}: {head}\n"
        text += render(table, "table", index=False) if len(table) else ""
    else:
        text = render(table, args.format, index=False)
    emit(text.rstrip("\n"), None)
