"""The whole study: the sweep, the FasterNet table, the model level and the counters, written
to one output directory with plots, a Markdown summary and a manifest."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from hwprof.device import describe_device, resolve_device
from hwprof.errors import HwprofError
from hwprof.files import write_atomic, write_json_atomic
from hwprof.hardware.ceilings import Ceilings
from hwprof.report.manifest import versions
from hwprof.report.tables import render
from hwprof.roofline import roof_key
from hwprof.studies.depthwise.counters import ncu_path, run_counters
from hwprof.studies.depthwise.fasternet import FASTERNET_OPS, FASTERNET_SHAPES, fasternet_table
from hwprof.studies.depthwise.measure import CountFn, Progress, TimeFn, _public
from hwprof.studies.depthwise.metrics import derive, math_modes
from hwprof.studies.depthwise.models import _profile_fn, model_comparison
from hwprof.studies.depthwise.operators import operator_supported
from hwprof.studies.depthwise.summary import compare_to_dense, headline_shape, summary_markdown
from hwprof.studies.depthwise.sweep import (
    Point,
    SweepConfig,
    default_config,
    quick_config,
    run_sweep,
    sweep_points,
)


@dataclass
class StudyResult:
    """What :func:`run_study` produced; ``paths`` maps an output's role to its file."""

    points: pd.DataFrame
    ceilings: Ceilings
    manifest: dict[str, Any]
    summary_md: str
    paths: dict[str, Path]
    fasternet: pd.DataFrame | None = None
    models: pd.DataFrame | None = None
    counters: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    headline: pd.DataFrame | None = None


def _load_average() -> float | None:
    """The 1-minute load average (other processes competing for the CPU skew timings), or None."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _plot_points(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The ok rows for the plots, and the rows to label on the roofline: dense 3x3 and depthwise
    3x3 forward at the headline shape in fp32 NCHW and the last variant (e.g. bf16
    channels_last), renamed to a short label ("dw 3x3 fp32 NCHW")."""
    ok = df[df["status"] == "ok"].copy()
    shape = headline_shape(df)
    if shape is None:
        return ok, []
    c, s, n = shape
    variants = list(dict.fromkeys(ok["variant"]))
    chosen = {v for v in ("fp32 NCHW", variants[-1] if variants else "") if v}
    short = {"dense_3x3": "dense 3x3", "depthwise_3x3": "dw 3x3"}
    sel = ((ok["channels"] == c) & (ok["spatial"] == s) & (ok["batch"] == n) & ok["op"].isin(list(short))
           & (ok["pass"] == "fwd") & ok["variant"].isin(chosen))
    ok.loc[sel, "name"] = [f"{short[o]} {v.replace('channels_last', 'CL')}"
                           for o, v in zip(ok.loc[sel, "op"], ok.loc[sel, "variant"], strict=True)]
    return ok, list(ok.loc[sel, "name"])


def _write_csv(path: Path, df: pd.DataFrame) -> Path:
    return write_atomic(path, render(df, "csv", index=False))


def run_study(
    out_dir: str | Path,
    *,
    device: str | torch.device = "auto",
    dtypes: Sequence[str] = ("fp32", "bf16"),
    channels_last: Sequence[bool] = (False, True),
    quick: bool = False,
    counters: bool = False,
    config: SweepConfig | None = None,
    fasternet: bool = True,
    models: bool = True,
    plots: bool = True,
    use_profile: bool = True,
    quick_ceilings: bool = False,
    ceilings_cache: str | Path | None = None,
    ncu_clock_control: str = "base",
    command: str | None = None,
    count_fn: CountFn | None = None,
    time_fn: TimeFn | None = None,
    ceilings: Ceilings | None = None,
    progress: Progress | None = None,
) -> StudyResult:
    """Run the whole study and write its outputs under ``out_dir`` (each file atomically):

    ``depthwise.csv`` (one row per point, roofline columns from :func:`derive`),
    ``roofline.png/.svg`` (every ok point; marker = operator, colour = dtype/format),
    ``flops_vs_time.png/.svg``, ``fasternet.csv``, ``models.csv``, ``counters.csv`` (with ncu),
    ``summary.md`` and ``manifest.json`` (command, versions, device, date, ceilings used).

    ``ceilings``: a ``measure_ceilings`` result; None measures them here (cached by
    hwprof.hardware.ceilings). ``quick`` shortens the sweep, not the ceilings: quick ceilings are
    a smoke check with small GEMMs and would understate the roofs every point is divided by; ask
    for them with ``quick_ceilings=True``; ``ceilings_cache`` is their cache folder (None: the user cache).
    ``ncu_clock_control``: ncu's ``--clock-control`` for ``counters`` ("base" or "none"). ``count_fn`` / ``time_fn`` default to hwprof's own.
    ``use_profile``: per-layer time shares of MobileNetV1 through ``hwprof.profile``.
    ``progress(done, total, label)`` is called after every measurement.
    """
    t_start = _dt.datetime.now(_dt.timezone.utc)
    load_start = _load_average()
    out = Path(out_dir)
    notes: list[str] = []
    dev = resolve_device(device, notes)
    cfg = config or (quick_config if quick else default_config)(dtypes, channels_last)
    points = sweep_points(cfg)
    n_fast = len(FASTERNET_OPS) * (1 if quick else len(FASTERNET_SHAPES)) if fasternet else 0
    n_models = 1 if models else 0
    state = {"done": 0, "total": len(points) + n_fast + n_models + 1}

    def step(label: str, grow: int = 0) -> None:
        state["done"] += 1
        state["total"] += grow
        if progress is not None:
            progress(state["done"], state["total"], label)

    if ceilings is None:
        measure_ceilings = _public("measure_ceilings")
        if measure_ceilings is None:
            raise HwprofError("hwprof.measure_ceilings is not available in this build; pass ceilings=")
        ceilings = measure_ceilings(dev, quick=quick_ceilings, cache_dir=ceilings_cache)
    ceil = ceilings
    step("ceilings")
    modes = math_modes(dev.type)

    base = state["done"]

    def sweep_progress(done: int, total: int, label: str) -> None:
        state["done"] = base + done
        state["total"] = base + total + n_fast + n_models
        if progress is not None:
            progress(state["done"], state["total"], label)

    raw = run_sweep(points, device=dev, count_fn=count_fn, time_fn=time_fn, budget_s=cfg.budget_s,
                    warmup=cfg.warmup, min_reps=cfg.min_reps, oom_fallback=cfg.oom_fallback, progress=sweep_progress)
    df = derive(raw, ceil, modes)
    paths: dict[str, Path] = {"csv": _write_csv(out / "depthwise.csv", df)}

    fn_df = None
    if fasternet:
        fn_batch = 1 if dev.type == "cpu" else max(cfg.batches)
        fn_df = fasternet_table(device=dev, batch=fn_batch, shapes=FASTERNET_SHAPES[:1] if quick else FASTERNET_SHAPES,
                                count_fn=count_fn, time_fn=time_fn, budget_s=cfg.budget_s, warmup=cfg.warmup,
                                min_reps=cfg.min_reps, progress=step)
        paths["fasternet"] = _write_csv(out / "fasternet.csv", fn_df)

    models_df = None
    if models:
        models_df = model_comparison(device=dev, batch=1, input_size=224, count_fn=count_fn, time_fn=time_fn,
                                     budget_s=cfg.budget_s, warmup=cfg.warmup, min_reps=cfg.min_reps, ceilings=ceil,
                                     use_profile=use_profile)
        step("MobileNetV1 vs dense twin")
        paths["models"] = _write_csv(out / "models.csv", models_df)
        if not use_profile or _profile_fn() is None:
            notes.append("model level: per-layer time shares not measured (hwprof.profile "
                         + ("not in this build" if use_profile else "disabled") + "); FLOP shares from the counter")
        for err in models_df.get("profile_error", pd.Series(dtype=object)).dropna():
            notes.append(f"model level: hwprof.profile failed ({err}); per-layer time shares left empty")

    counters_df = None
    if counters:
        ncu = ncu_path()
        if ncu is None:
            notes.append("--counters: ncu (Nsight Compute) is not on PATH, $NCU or /opt/nvidia/nsight-compute; "
                         "counters skipped")
        elif dev.type != "cuda":
            notes.append("--counters: Nsight Compute needs a CUDA device; counters skipped")
        else:
            shape = headline_shape(df)
            if shape is not None:
                c, s, n = shape
                cpoints = [Point(op, c, s, n, dt, cl, False) for dt in cfg.dtypes for cl in cfg.channels_last
                           for op in cfg.ops if operator_supported(op, c)]
                counters_df, kernels_df = run_counters(cpoints, ncu=ncu, device=str(dev),
                                                       clock_control=ncu_clock_control,
                                                       progress=lambda label: step(label, grow=1))
                notes.append(f"--counters: ncu --clock-control {ncu_clock_control}")
                if len(counters_df):
                    analytic = df[df["pass"] == "fwd"].set_index("name")["bytes"]
                    counters_df.insert(4, "bytes", [analytic.get(nm, math.nan) for nm in counters_df["name"]])
                paths["counters"] = _write_csv(out / "counters.csv", counters_df)
                if len(kernels_df):
                    paths["counters_kernels"] = _write_csv(out / "counters_kernels.csv", kernels_df)

    if plots:
        try:
            from hwprof.report.plots import PlotUnavailable, flops_vs_time_plot, roofline_plot
            ok, labels = _plot_points(df)
            roof_paths = roofline_plot(ok, ceil, out / "roofline.png", title="Depthwise study: every point",
                                       color_by="variant", marker_by="op", size_by=None, labels=labels)
            fvt_paths = flops_vs_time_plot(ok, out / "flops_vs_time.png", color_by="variant", marker_by="op",
                                           title=f"FLOPs vs time — {ceil.device_name or dev.type}",
                                           labels=labels)
            paths.update(roofline_png=roof_paths[0], roofline_svg=roof_paths[1],
                         flops_vs_time_png=fvt_paths[0], flops_vs_time_svg=fvt_paths[1])
        except PlotUnavailable as e:
            notes.append(f"plots skipped: {e}")

    manifest: dict[str, Any] = {
        "study": "depthwise",
        "command": command or "hwprof study depthwise",
        "argv": list(sys.argv),
        "date_utc": t_start.isoformat(timespec="seconds"),
        "wall_s": None,
        "versions": versions(),
        "device": describe_device(dev),
        "ceilings": ceil.to_dict(),
        "math_mode": {"cudnn_conv_tf32": modes.cudnn_tf32, "fp32_conv_roof": roof_key("float32", "conv", modes),
                      "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)},
        "config": dataclasses.asdict(cfg),
        "quick": quick,
        "quick_ceilings": quick_ceilings,
        "load_average_1min": {"start": load_start, "end": _load_average()},
        "rows": len(df),
        "status_counts": {str(k): int(v) for k, v in df["status"].value_counts().items()},
        "notes": notes,
    }
    files = sorted({p.name for p in paths.values()} | {"summary.md", "manifest.json"})
    summary = summary_markdown(df, ceilings=ceil, manifest=manifest, fasternet=fn_df, models=models_df,
                               counters=counters_df, files=files)
    paths["summary"] = write_atomic(out / "summary.md", summary)
    manifest["wall_s"] = (_dt.datetime.now(_dt.timezone.utc) - t_start).total_seconds()
    manifest["outputs"] = {k: p.name for k, p in paths.items()} | {"manifest": "manifest.json"}
    paths["manifest"] = write_json_atomic(out / "manifest.json", manifest)
    shape = headline_shape(df)
    return StudyResult(points=df, ceilings=ceil, manifest=manifest, summary_md=summary, paths=paths,
                       fasternet=fn_df, models=models_df, counters=counters_df, notes=notes,
                       headline=compare_to_dense(df, shape) if shape is not None else None)
