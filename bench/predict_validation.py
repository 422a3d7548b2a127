"""How well does the roofline predict time? Predicted (hwprof.predict: per op max(FLOPs / roof,
bytes / level bandwidth) + op overhead, from the counts and this machine's ceilings alone) against
measured (hwprof.measure), per model and per layer, on the CPU.

    python bench/predict_validation.py --out results/predict              # the full sweep (~30 min, 2 cores)
    python bench/predict_validation.py --out /tmp/p --points 3 --repeats 1  # a smoke run

The ceilings are measured once at the start (best of interleaved rounds, like `hwprof ceilings
--refresh`) and saved as ``ceilings-cpu.json``, so every prediction can be reproduced with
``hwprof predict MODEL --batch B --dtype D --on <out>/ceilings-cpu.json``. Then every point
(model, batch, dtype, mode) is measured ``--repeats`` times, the repeats interleaved (round r runs
every point once), so that load on the shared machine spreads over all points alike; the per-layer
times come from hwprof's hooked pass. Errors are (predicted - measured) / measured.

Beside the roofline prediction, a calibrated one (hwprof.predict.fit_efficiency: each layer kind's
measured efficiency against the model), validated leave-one-model-out: the efficiencies that
predict a point are fitted on the other models' profiles only, never on the model itself.

Measured time: the fastest repeat (load only slows a run down; the ceilings are the best of their
rounds likewise), with the median and slowest repeat beside it.

A machine other jobs share: by default the bench runs single-threaded (``--threads 1``) and times
every repetition, of the ceilings' trials and of the models alike, with the thread's CPU clock
(``--clock thread``: ``time.thread_time_ns``, which stops while the thread is preempted). With two
OpenMP threads on two cores that other processes also use, wall-clock times of a forward pass grew
10-40x in this project's runs (a thread descheduled at a barrier stalls the other); the thread's CPU
time of a single-threaded run does not count the time other jobs hold the core (what it still
counts: their effect on the caches and on memory bandwidth). ``--threads 2 --clock wall`` measures
as hwprof does by default, for a quiet machine; with ``--clock wall`` the bench waits (at most
``--wait`` seconds) for the 1-minute load average to fall to ``--max-load`` before each
measurement. Ceilings whose rounds disagree (flagged) are measured again, up to three times, and
the best kept; the load average at each measurement is recorded.

Writes (``cpu`` replaced by the device): ``validation-cpu.csv`` (one row per point: measured best/median/max over the repeats,
predicted, whole-model errors and their range, calibrated prediction and its error, per-layer error
quantiles), ``validation-cpu-layers.csv`` (every layer of every point, from the fastest repeat),
``validation-cpu-classes.csv`` (residual per layer type over all points),
``validation-cpu.png`` (predicted against measured) and ``validation-cpu.md`` (the tables).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

import hwprof
from hwprof import zoo
from hwprof.files import write_atomic, write_json_atomic
from hwprof.hardware.ceilings import Ceilings, measure_ceilings
from hwprof.joining import join
from hwprof.measuring.runner import measure
from hwprof.predict import calibrated, fit_efficiency, layer_kind, residuals, uncalibrated_kinds
from hwprof.report.tables import render


@dataclass(frozen=True)
class Point:
    model: str
    kind: str
    batch: int
    dtype: str = "fp32"
    mode: str = "inference"

    @property
    def name(self) -> str:
        return f"{self.model} bs{self.batch} {self.dtype}" + (" train" if self.mode == "train" else "")


POINTS = (
    Point("lenet5", "CNN", 64), Point("alexnet", "CNN", 8), Point("vgg16", "CNN", 2),
    Point("resnet18", "CNN", 1), Point("resnet18", "CNN", 8), Point("resnet18", "CNN", 8, "bf16"),
    Point("resnet18", "CNN", 8, mode="train"), Point("resnet50", "CNN", 4),
    Point("mobilenet_v1", "depthwise", 1), Point("mobilenet_v1", "depthwise", 8),
    Point("mobilenet_v1", "depthwise", 8, "bf16"), Point("mobilenet_v1_dense", "CNN (dense twin)", 8),
    Point("transformer_encoder", "transformer", 8), Point("transformer_encoder", "transformer", 8, "bf16"),
    Point("gpt_tiny", "transformer", 8), Point("gpt_tiny", "transformer", 32),
    Point("lstm", "LSTM", 32), Point("lstm", "LSTM", 32, "bf16"),
)


def _one(pt: Point, k: Ceilings, args: argparse.Namespace, counts: dict[Point, hwprof.counting.counter.CountResult],
         clock: ThreadClock | None) -> hwprof.Profile:
    """Measure one point (per-layer pass, no op or allocator pass) and join it with its count."""
    model, spec = zoo.build(pt.model)
    train = pt.mode == "train"
    device = args.device
    m = measure(model, spec, device=device, mode=pt.mode, per_layer=True, batch=pt.batch, dtype=pt.dtype,
                budget_s=args.budget, alloc_trace=False, clock=clock, threads=args.threads)
    if pt not in counts:
        counts[pt] = hwprof.count(model, spec, backward=train, batch=pt.batch, dtype=pt.dtype,
                                  mode="train" if train else "inference", device=torch.device(device))
    return join(counts[pt], m, k, name=pt.model)


class ThreadClock:
    """The calling thread's CPU time (``CLOCK_THREAD_CPUTIME_ID``), in ns: a hwprof ``Clock``."""

    def now_ns(self) -> int:
        return time.thread_time_ns()


def wait_quiet(max_load: float, wait_s: float) -> float:
    """Sleep until the 1-minute load average is at most ``max_load`` (or ``wait_s`` has passed);
    returns the load average when it returns."""
    end = time.monotonic() + wait_s
    load = os.getloadavg()[0]
    while load > max_load and time.monotonic() < end:
        time.sleep(5)
        load = os.getloadavg()[0]
    return load


def quiet_ceilings(rounds: int, max_load: float, wait_s: float, device: str = "cpu",
                   clock: ThreadClock | None = None) -> Ceilings:
    """The ceilings measured in a quiet window, again (up to three times) while they come out
    flagged; the attempt with the highest fp32 roof is kept."""
    tries = []
    for _ in range(3):
        wait_quiet(max_load, wait_s)
        tries.append(measure_ceilings(device, refresh=True, cache_dir=tempfile.mkdtemp(), rounds=rounds, clock=clock))
        if not tries[-1].flagged:
            break
    k = max(tries, key=lambda c: c.flop_per_s.get("fp32", 0.0))
    k.notes.append(f"bench: best of {len(tries)} measurement(s) of the ceilings")
    return k


def _keep(d: Path, p: hwprof.Profile) -> None:
    """The three records load_profile rebuilds a profile from (no plots, no report)."""
    from hwprof.profile_folder import count_to_dict

    write_json_atomic(d / "count.json", count_to_dict(p.counts))
    write_json_atomic(d / "measurement.json", p.measurement.to_dict())
    write_json_atomic(d / "ceilings.json", p.ceilings.to_dict())
    write_json_atomic(d / "profile.json", {"config": p.config})


def from_raw(raw: Path, points: tuple[Point, ...]) -> tuple[dict[Point, list[hwprof.Profile]], dict[Point, list[float]],
                                                             float]:
    """The profiles of an earlier run's ``--raw`` records, joined again (load_profile), with the
    load averages and duration that run recorded (``run.json``; NaN without it)."""
    runs = {pt: [hwprof.load_profile(d) for d in sorted((raw / pt.name.replace(" ", "_")).iterdir())] for pt in points}
    info = json.loads((raw / "run.json").read_text()) if (raw / "run.json").is_file() else {}
    loads = {pt: list((info.get("loads") or {}).get(pt.name) or [math.nan] * len(runs[pt])) for pt in points}
    return runs, loads, float(info.get("elapsed_s", math.nan))


def best(profiles: list[hwprof.Profile]) -> hwprof.Profile:
    """The repeat with the lowest whole-model time: load on the shared machine only ever slows a
    run down, so the fastest repeat is the closest to the machine the ceilings describe (the
    ceilings are maxima of their rounds in the same way)."""
    return min(profiles, key=lambda p: p.summary["whole_model_time_s"])


def _calibrated(pt: Point, runs: dict[Point, list[hwprof.Profile]]) -> dict[str, object]:
    """Leave-one-model-out: ``pt`` predicted with the efficiencies of the other models' layers
    (their fastest repeats): the whole model, the median per-layer |error|, the kinds left bare."""
    eff = fit_efficiency(best(runs[q]).layers for q in runs if q.model != pt.model)
    lay = best(runs[pt]).layers
    cal = calibrated(lay, eff)
    timed = lay["time_s"] > 0
    return {"calibrated_ms": 1e3 * float(cal.sum()),
            "layer_abs_error_calibrated_median_pct": 100 * float((cal[timed] / lay.loc[timed, "time_s"] - 1).abs().median()),
            "uncalibrated_kinds": ", ".join(uncalibrated_kinds(lay[lay["predicted_s"] > 0], eff))}


def _row(pt: Point, profiles: list[hwprof.Profile]) -> dict[str, object]:
    """One point: measured over the repeats (best, median, range), predicted, the errors."""
    meas = [p.summary["whole_model_time_s"] for p in profiles]
    pred = profiles[0].summary["predicted_time_s"]
    errs = [pred / t - 1 for t in meas]
    mid = best(profiles)
    lay = mid.layers[mid.layers["time_s"] > 0]
    lerr = (lay["predicted_s"] / lay["time_s"] - 1).abs()
    return {"point": pt.name, "model": pt.model, "kind": pt.kind, "batch": pt.batch, "dtype": pt.dtype, "mode": pt.mode,
            "repeats": len(meas), "measured_ms": 1e3 * min(meas), "measured_median_ms": 1e3 * statistics.median(meas),
            "measured_max_ms": 1e3 * max(meas), "predicted_ms": 1e3 * pred,
            "error_pct": 100 * (pred / min(meas) - 1), "error_vs_median_pct": 100 * (pred / statistics.median(meas) - 1),
            "error_min_pct": 100 * min(errs), "error_max_pct": 100 * max(errs), "layers": len(lay),
            "layer_abs_error_median_pct": 100 * float(lerr.median()), "layer_abs_error_p90_pct": 100 * float(lerr.quantile(0.9)),
            "layers_within_25pct_time_share": float(lay.loc[lerr <= 0.25, "time_s"].sum() / lay["time_s"].sum()),
            "overhead_ms": 1e3 * mid.summary["op_overhead_time_s"],
            "layer_sum_over_whole": mid.summary["layer_sum_over_whole"]}


def _plot(df: pd.DataFrame, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 6.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    lo = min(df["measured_ms"].min(), df["predicted_ms"].min(), df["calibrated_ms"].min()) / 2
    hi = max(df["measured_max_ms"].max(), df["predicted_ms"].max(), df["calibrated_ms"].max()) * 2
    ax.plot([lo, hi], [lo, hi], color="0.3", linewidth=1)
    ax.fill_between([lo, hi], [lo * 0.85, hi * 0.85], [lo * 1.15, hi * 1.15], color="0.85", label="within 15%")
    for i, (kind, g) in enumerate(df.groupby("kind", sort=False)):
        ax.errorbar(g["measured_ms"], g["predicted_ms"], xerr=[0 * g["measured_ms"], g["measured_max_ms"] - g["measured_ms"]],
                    fmt="os^Dv"[i % 5], color=f"C{i}", label=f"{kind}: roofline", capsize=2)
        ax.plot(g["measured_ms"], g["calibrated_ms"], "os^Dv"[i % 5], mfc="none", color=f"C{i}",
                label=f"{kind}: calibrated (leave-one-model-out)")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured whole-model time (ms): the fastest repeat; bar: up to the slowest")
    ax.set_ylabel("predicted time (ms)")
    ax.set_title(f"hwprof predict vs measured, {path.stem.removeprefix('validation-')}", fontsize=11)
    ax.grid(True, which="major", linewidth=0.4, alpha=0.5)
    ax.legend(fontsize=7)
    for fmt in ("png", "svg"):
        fig.savefig(path.with_suffix(f".{fmt}"), format=fmt, bbox_inches="tight", metadata={"Software": None} if fmt == "png" else {"Date": None})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda (then no wait for a quiet window)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget", type=float, default=1.0, help="timing budget per phase, seconds")
    ap.add_argument("--points", type=int, default=None, help="only the first N points (a smoke run)")
    ap.add_argument("--ceilings", type=Path, default=None, help="use this ceilings JSON instead of measuring")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the ceilings' trials (best of them)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--clock", choices=("thread", "wall"), default="thread",
                    help="thread: the thread's CPU time (default; needs --threads 1); wall: perf_counter")
    ap.add_argument("--max-load", type=float, default=2.5,
                    help="with --clock wall: wait for the 1-minute load average to fall to this before each measurement")
    ap.add_argument("--wait", type=float, default=120.0, help="with --clock wall: longest wait for a quiet window, s")
    ap.add_argument("--raw", type=Path, default=None,
                    help="also keep every repeat's records (count, measurement, ceilings) here, for hwprof.join")
    ap.add_argument("--from-raw", type=Path, default=None,
                    help="measure nothing: re-join the records a run kept with --raw (the same points, repeats)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.clock == "thread" and (args.threads != 1 or args.device != "cpu"):
        ap.error("--clock thread times one CPU thread: use it with --threads 1 on the CPU")
    torch.set_num_threads(args.threads)
    clock = ThreadClock() if args.clock == "thread" else None
    wait_s = args.wait if args.clock == "wall" and args.device == "cpu" else 0.0
    args.out.mkdir(parents=True, exist_ok=True)
    points = POINTS[: args.points] if args.points else POINTS
    if args.ceilings:
        k = Ceilings.from_dict(json.loads(args.ceilings.read_text()))
    else:
        k = quiet_ceilings(args.rounds, args.max_load, wait_s, args.device, clock)
        write_json_atomic(args.out / f"ceilings-{args.device}.json", k.to_dict())
    if args.from_raw:
        runs, loads, elapsed = from_raw(args.from_raw, points)
        k = next(iter(runs.values()))[0].ceilings
        write(args, k, points, runs, loads, elapsed)
        return
    counts: dict[Point, hwprof.counting.counter.CountResult] = {}
    runs: dict[Point, list[hwprof.Profile]] = {pt: [] for pt in points}
    loads: dict[Point, list[float]] = {pt: [] for pt in points}
    t0 = time.perf_counter()
    for r in range(args.repeats):
        for pt in points:
            loads[pt].append(wait_quiet(args.max_load, wait_s))
            runs[pt].append(_one(pt, k, args, counts, clock))
            if args.raw:
                _keep(args.raw / pt.name.replace(" ", "_") / f"r{r}", runs[pt][-1])
            print(f"round {r + 1}/{args.repeats} {pt.name}: measured {1e3 * runs[pt][-1].summary['whole_model_time_s']:.2f} ms, "
                  f"predicted {1e3 * runs[pt][-1].summary['predicted_time_s']:.2f} ms ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr)
    elapsed = time.perf_counter() - t0
    if args.raw:
        write_json_atomic(args.raw / "run.json", {"elapsed_s": elapsed, "loads": {pt.name: loads[pt] for pt in points}})
    write(args, k, points, runs, loads, elapsed)


def write(args: argparse.Namespace, k: Ceilings, points: tuple[Point, ...], runs: dict[Point, list[hwprof.Profile]],
          loads: dict[Point, list[float]], elapsed_s: float) -> None:
    """The CSVs, the plot and the Markdown summary."""
    df = pd.DataFrame([{**_row(pt, runs[pt]), **_calibrated(pt, runs)} for pt in points])
    df.insert(df.columns.get_loc("calibrated_ms") + 1, "calibrated_error_pct",
              100 * (df["calibrated_ms"] / df["measured_ms"] - 1))
    df["load_at_start"] = [" ".join(f"{x:.1f}" for x in loads[pt]) for pt in points]
    layer_rows = []
    for pt in points:
        mid = best(runs[pt])
        lay = mid.layers.assign(point=pt.name, kind=layer_kind(mid.layers))
        layer_rows.append(lay[["point", "type", "variant", "kind", "memory_level", "flops", "bytes", "time_s", "predicted_s"]])
    layers = pd.concat(layer_rows)
    layers["error_pct"] = 100 * (layers["predicted_s"] / layers["time_s"].where(layers["time_s"] > 0) - 1)
    classes = residuals(layers, "kind")
    classes["error_pct"] = 100 * classes.pop("error")
    write_atomic(args.out / f"validation-{args.device}.csv", df.to_csv(index=False))
    write_atomic(args.out / f"validation-{args.device}-layers.csv", layers.to_csv())
    write_atomic(args.out / f"validation-{args.device}-classes.csv", classes.to_csv())
    _plot(df, args.out / f"validation-{args.device}.png")
    med, cmed = float(df["error_pct"].abs().median()), float(df["calibrated_error_pct"].abs().median())
    head = (f"{datetime.date.today().isoformat()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
            f"{args.clock} clock, "
            f"{k.device_name}; {len(df)} points x {args.repeats} repeats in {elapsed_s / 60:.1f} min; "
            f"whole-model median |error| {med:.1f}% (roofline), {cmed:.1f}% (calibrated, leave-one-model-out)\n")
    write_atomic(args.out / f"validation-{args.device}.md", head + "\n" + render(df.round(2), "md", index=False) + "\n\n"
                 + render(classes.round(4), "md") + "\n")
    print(head + df[["point", "measured_ms", "measured_median_ms", "predicted_ms", "error_pct", "error_vs_median_pct",
                     "calibrated_ms", "calibrated_error_pct", "layer_abs_error_median_pct"]].round(1).to_string(index=False))


if __name__ == "__main__":
    main()
