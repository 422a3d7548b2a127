"""The whole study in two steps: :func:`compute_study` measures (the sweep, the FasterNet table,
the model level, the counters) and returns a :class:`StudyResult`, writing nothing;
:func:`save_study` writes a result into a folder (CSVs, plots, Markdown summary, manifest).
:func:`run_study` does both, the folder complete or absent (:func:`hwprof.files.atomic_dir`)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from hwprof.device import describe_device, resolve_device
from hwprof.errors import HwprofError
from hwprof.files import atomic_dir, write_atomic, write_json_atomic
from hwprof.hardware.ceilings import Ceilings
from hwprof.measuring.paired import load_average
from hwprof.report.manifest import versions
from hwprof.report.tables import render
from hwprof.roofline import MathModes, roof_key
from hwprof.studies.depthwise.counters import ncu_path, run_counters
from hwprof.studies.depthwise.fasternet import FASTERNET_OPS, FASTERNET_SHAPES, fasternet_table
from hwprof.studies.depthwise.measure import CountFn, Progress, TimeFn, _public
from hwprof.studies.depthwise.metrics import derive, math_modes
from hwprof.studies.depthwise.models import _profile_fn, model_comparison
from hwprof.studies.depthwise.operators import operator_supported
from hwprof.studies.depthwise.plan import Deadline
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
    """What :func:`compute_study` measured; :func:`save_study` fills ``paths`` (an output's role ->
    its file) and ``summary_md``."""

    points: pd.DataFrame
    ceilings: Ceilings
    manifest: dict[str, Any]
    summary_md: str = ""
    paths: dict[str, Path] = field(default_factory=dict)
    fasternet: pd.DataFrame | None = None
    models: pd.DataFrame | None = None
    counters: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    headline: pd.DataFrame | None = None
    counter_kernels: pd.DataFrame | None = None


class _Tracker:
    """Counts finished measurements for ``progress(done, total, label)``; ``total`` grows with
    OOM retries and ncu runs."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.done, self.total = progress, 0, total

    def step(self, label: str, grow: int = 0) -> None:
        self.done += 1
        self.total += grow
        if self.progress is not None:
            self.progress(self.done, self.total, label)

    def sweep(self, after: int) -> Progress:
        """The sweep's progress callback: its own (done, total) offset by what ran before it,
        ``after`` measurements still to come behind it."""
        base = self.done

        def report(done: int, total: int, label: str) -> None:
            self.done, self.total = base + done, base + total + after
            if self.progress is not None:
                self.progress(self.done, self.total, label)
        return report


def compute_study(
    *,
    device: str | torch.device = "auto",
    dtypes: Sequence[str] = ("fp32", "bf16"),
    channels_last: Sequence[bool] = (False, True),
    quick: bool = False,
    counters: bool = False,
    config: SweepConfig | None = None,
    fasternet: bool = True,
    models: bool = True,
    use_profile: bool = True,
    quick_ceilings: bool = False,
    ceilings_cache: str | Path | None = None,
    ncu_clock_control: str = "base",
    command: str | None = None,
    count_fn: CountFn | None = None,
    time_fn: TimeFn | None = None,
    ceilings: Ceilings | None = None,
    progress: Progress | None = None,
    notes: Sequence[str] = (),
    clock: Callable[[], float] = time.monotonic,
) -> StudyResult:
    """Measure the study; nothing is written (see :func:`save_study`).

    ``config`` (default :func:`quick_config` with ``quick``, else :func:`default_config`, of
    ``dtypes`` x ``channels_last``) is the grid; its ``time_budget_s`` bounds the whole
    measurement (``clock``: seconds, monotonic): the rest is skipped, with a note.
    ``ceilings``: a ``measure_ceilings`` result; None measures them here (cached by
    hwprof.hardware.ceilings). ``quick`` shortens the sweep, not the ceilings: quick ceilings are
    a smoke check with small GEMMs and would understate the roofs every point is divided by; ask
    for them with ``quick_ceilings=True``; ``ceilings_cache`` is their cache folder (None: the user cache).
    ``ncu_clock_control``: ncu's ``--clock-control`` for ``counters`` ("base" or "none").
    ``count_fn`` / ``time_fn`` default to hwprof's own. ``use_profile``: per-layer time shares of
    MobileNetV1 through ``hwprof.profile``. ``progress(done, total, label)`` is called after
    every measurement. ``notes`` start the result's notes (e.g. the dtypes left out)."""
    started, load_start, t0 = _dt.datetime.now(_dt.timezone.utc), load_average(), clock()
    notes = list(notes)
    dev = resolve_device(device, notes)
    cfg = config or (quick_config if quick else default_config)(dtypes, channels_last)
    deadline = Deadline.after(cfg.time_budget_s, clock)
    points = sweep_points(cfg)
    n_fast = len(FASTERNET_OPS) * (1 if quick else len(FASTERNET_SHAPES)) if fasternet else 0
    track = _Tracker(progress, len(points) + n_fast + (1 if models else 0) + 1)
    ceil = _ceilings(ceilings, dev, quick_ceilings, ceilings_cache)
    track.step("ceilings")
    modes = math_modes(dev.type)
    raw = run_sweep(points, device=dev, count_fn=count_fn, time_fn=time_fn, budget_s=cfg.budget_s,
                    warmup=cfg.warmup, min_reps=cfg.min_reps, oom_fallback=cfg.oom_fallback,
                    progress=track.sweep(n_fast + (1 if models else 0)), stop=deadline.expired)
    df = derive(raw, ceil, modes)
    skipped = int((df["status"] == "skipped").sum())
    if skipped:
        notes.append(f"time budget of {cfg.time_budget_s:g} s spent: {skipped} of {len(df)} points not measured "
                     "(status skipped)")
    timing: dict[str, Any] = dict(count_fn=count_fn, time_fn=time_fn, budget_s=cfg.budget_s, warmup=cfg.warmup,
                                  min_reps=cfg.min_reps)
    fn_df = models_df = None
    if fasternet and not _spent(deadline, "FasterNet table", notes):
        fn_df = fasternet_table(device=dev, batch=1 if dev.type == "cpu" else max(cfg.batches),
                                shapes=FASTERNET_SHAPES[:1] if quick else FASTERNET_SHAPES, progress=track.step,
                                **timing)
    if models and not _spent(deadline, "model level", notes):
        models_df, model_notes = _models_stage(dev, ceil, use_profile, timing)
        track.step("MobileNetV1 vs dense twin")
        notes += model_notes
    counters_df, kernels_df = (None, None)
    if counters:
        counters_df, kernels_df, counter_notes = _counters_stage(df, cfg, dev, ncu_clock_control, track)
        notes += counter_notes
    manifest = _manifest(command, dev, ceil, modes, cfg, quick, quick_ceilings, df, notes)
    manifest.update(date_utc=started.isoformat(timespec="seconds"), wall_s=clock() - t0,
                    load_average_1min={"start": load_start, "end": load_average()})
    shape = headline_shape(df)
    return StudyResult(points=df, ceilings=ceil, manifest=manifest, fasternet=fn_df, models=models_df,
                       counters=counters_df, counter_kernels=kernels_df, notes=notes,
                       headline=compare_to_dense(df, shape) if shape is not None else None)


def _spent(deadline: Deadline, stage: str, notes: list[str]) -> bool:
    """Whether the time budget is spent before ``stage``; if so, a note says ``stage`` was skipped."""
    if not deadline.expired():
        return False
    notes.append(f"time budget spent: {stage} skipped")
    return True


def _ceilings(ceilings: Ceilings | None, dev: torch.device, quick: bool, cache_dir: str | Path | None) -> Ceilings:
    """``ceilings`` as given, else ``hwprof.measure_ceilings`` of ``dev`` (cached)."""
    if ceilings is not None:
        return ceilings
    measure_ceilings = _public("measure_ceilings")
    if measure_ceilings is None:
        raise HwprofError("hwprof.measure_ceilings is not available in this build; pass ceilings=")
    return measure_ceilings(dev, quick=quick, cache_dir=cache_dir)


def _models_stage(dev: torch.device, ceil: Ceilings, use_profile: bool,
                  timing: dict[str, Any]) -> tuple[pd.DataFrame, list[str]]:
    """MobileNetV1 vs its dense twin at batch 1, 224x224, and the notes on what was not measured."""
    df = model_comparison(device=dev, batch=1, input_size=224, ceilings=ceil, use_profile=use_profile, **timing)
    notes = []
    if not use_profile or _profile_fn() is None:
        notes.append("model level: per-layer time shares not measured (hwprof.profile "
                     + ("not in this build" if use_profile else "disabled") + "); FLOP shares from the counter")
    for err in df.get("profile_error", pd.Series(dtype=object)).dropna():
        notes.append(f"model level: hwprof.profile failed ({err}); per-layer time shares left empty")
    return df, notes


def _counters_stage(df: pd.DataFrame, cfg: SweepConfig, dev: torch.device, clock_control: str,
                    track: _Tracker) -> tuple[pd.DataFrame | None, pd.DataFrame | None, list[str]]:
    """Nsight Compute at the headline shape, every operator, dtype and format, forward: (one row
    per point with hwprof's analytic bytes beside the counters, one row per kernel, notes)."""
    ncu = ncu_path()
    if ncu is None:
        return None, None, ["--counters: ncu (Nsight Compute) is not on PATH, $NCU or "
                            "/opt/nvidia/nsight-compute; counters skipped"]
    if dev.type != "cuda":
        return None, None, ["--counters: Nsight Compute needs a CUDA device; counters skipped"]
    shape = headline_shape(df)
    if shape is None:
        return None, None, []
    c, s, n = shape
    cpoints = [Point(op, c, s, n, dt, cl, False) for dt in cfg.dtypes for cl in cfg.channels_last
               for op in cfg.ops if operator_supported(op, c)]
    counters_df, kernels_df = run_counters(cpoints, ncu=ncu, device=str(dev), clock_control=clock_control,
                                           progress=lambda label: track.step(label, grow=1))
    if len(counters_df):
        analytic = df[df["pass"] == "fwd"].set_index("name")["bytes"]
        counters_df.insert(4, "bytes", [analytic.get(nm, math.nan) for nm in counters_df["name"]])
    return counters_df, kernels_df if len(kernels_df) else None, [f"--counters: ncu --clock-control {clock_control}"]


def _manifest(command: str | None, dev: torch.device, ceil: Ceilings, modes: MathModes, cfg: SweepConfig,
              quick: bool, quick_ceilings: bool, df: pd.DataFrame, notes: list[str]) -> dict[str, Any]:
    """The run's record: command, versions, device, ceilings and math mode used, the grid, the outcome."""
    return {
        "study": "depthwise",
        "command": command or "hwprof study depthwise",
        "argv": list(sys.argv),
        "versions": versions(),
        "device": describe_device(dev),
        "ceilings": ceil.to_dict(),
        "math_mode": {"cudnn_conv_tf32": modes.cudnn_tf32, "fp32_conv_roof": roof_key("float32", "conv", modes),
                      "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)},
        "config": dataclasses.asdict(cfg),
        "quick": quick,
        "quick_ceilings": quick_ceilings,
        "rows": len(df),
        "status_counts": {str(k): int(v) for k, v in df["status"].value_counts().items()},
        "notes": notes,
    }


# ----------------------------------------------------------------------------- writing
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


def _write_plots(result: StudyResult, out: Path) -> tuple[dict[str, Path], list[str]]:
    """roofline.png/.svg (every ok point; marker = operator, colour = dtype/format) and
    flops_vs_time.png/.svg; (paths, notes)."""
    try:
        from hwprof.report.plots import PlotUnavailable, flops_vs_time_plot, roofline_plot
    except ImportError as e:  # pragma: no cover - plots.py ships with hwprof
        return {}, [f"plots skipped: {e}"]
    ok, labels = _plot_points(result.points)
    ceil = result.ceilings
    try:
        roof = roofline_plot(ok, ceil, out / "roofline.png", title="Depthwise study: every point",
                             color_by="variant", marker_by="op", size_by=None, labels=labels)
        fvt = flops_vs_time_plot(ok, out / "flops_vs_time.png", color_by="variant", marker_by="op",
                                 title=f"FLOPs vs time — {ceil.device_name or result.manifest['device']['type']}",
                                 labels=labels)
    except PlotUnavailable as e:
        return {}, [f"plots skipped: {e}"]
    return {"roofline_png": roof[0], "roofline_svg": roof[1], "flops_vs_time_png": fvt[0],
            "flops_vs_time_svg": fvt[1]}, []


def save_study(result: StudyResult, out_dir: str | Path, *, plots: bool = True) -> StudyResult:
    """Write ``result`` under ``out_dir`` (each file atomically) and return it with ``paths``,
    ``summary_md``, the manifest's ``outputs`` and any plot notes filled in:

    ``depthwise.csv`` (one row per point, roofline columns from :func:`derive`), ``roofline.png/.svg``
    and ``flops_vs_time.png/.svg`` (with ``plots``), ``fasternet.csv``, ``models.csv``,
    ``counters.csv`` and ``counters_kernels.csv`` (those measured), ``summary.md`` and
    ``manifest.json`` (command, versions, device, date, ceilings used)."""
    out = Path(out_dir)
    paths = {"csv": _write_csv(out / "depthwise.csv", result.points)}
    for role, frame in (("fasternet", result.fasternet), ("models", result.models), ("counters", result.counters),
                        ("counters_kernels", result.counter_kernels)):
        if frame is not None:
            paths[role] = _write_csv(out / f"{role}.csv", frame)
    notes = list(result.notes)
    if plots:
        plot_paths, plot_notes = _write_plots(result, out)
        paths.update(plot_paths)
        notes += plot_notes
    manifest = {**result.manifest, "notes": notes}
    files = sorted({p.name for p in paths.values()} | {"summary.md", "manifest.json"})
    summary = summary_markdown(result.points, ceilings=result.ceilings, manifest=manifest, fasternet=result.fasternet,
                               models=result.models, counters=result.counters, files=files)
    paths["summary"] = write_atomic(out / "summary.md", summary)
    manifest["outputs"] = {k: p.name for k, p in paths.items()} | {"manifest": "manifest.json"}
    paths["manifest"] = write_json_atomic(out / "manifest.json", manifest)
    return dataclasses.replace(result, manifest=manifest, summary_md=summary, paths=paths, notes=notes)


def run_study(out_dir: str | Path, *, plots: bool = True, **kwargs: Any) -> StudyResult:
    """:func:`compute_study` (``kwargs`` are its keyword arguments), then :func:`save_study` into
    ``out_dir``, which is written complete or not at all (:func:`hwprof.files.atomic_dir`: an
    earlier folder there is replaced only once the new one is complete)."""
    result = compute_study(**kwargs)
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        saved = save_study(result, tmp, plots=plots)
    return dataclasses.replace(saved, paths={k: out / p.relative_to(tmp) for k, p in saved.paths.items()})
