"""Sweep: every memory predictor against measured peaks, over models, batch sizes and modes.

    python bench/memory_validation.py --out results/memory --device cuda      # the GPU run
    python bench/memory_validation.py --out /tmp/mem --quick                 # CPU smoke check (~1 min)
    python bench/memory_validation.py --out D --device cuda --time-budget 90 --point-timeout 60

For each model x batch x mode (train with Adam, inference): ``hwprof.estimate_memory`` on a
meta-device build (fake tensors), then one real measured step (``hwprof.measure``, few
repetitions) of a real build. Writes ``memory-validation-<device>.csv`` (one row per predictor:
predicted and measured bytes, error in %) and ``memory-validation-<device>.png``
(predicted vs measured, log-log; needs matplotlib). An out-of-memory point is recorded as such
(``oom=True``) and the sweep goes on.

Bounded in time (``bench/gpu_session.sh``): the points run batch size first (every model and
mode at its first batch size, then at its second), so a sweep cut short still covers every
model; ``--time-budget S`` starts no point after S seconds (the rest are recorded as skipped);
``--point-timeout S`` interrupts a point after S seconds (SIGALRM in the main thread: a point
stuck inside one long C call ends when that call returns) and records it as timed out. The CSV
is rewritten after every point, so a sweep that is killed keeps the points it finished.

What is compared: on CUDA each predictor's peak against ``max_memory_allocated`` and the
simulated reserved bytes against ``max_memory_reserved``; on CPU each predictor's peak against
the peak of live CPU tensor bytes from torch's CPU allocator events (``alloc_trace_peak_bytes``,
see hwprof/measuring/alloc_trace.py) and against the same peak without the ops' in-op workspaces
(``tensor_error_pct``: what a replay of op outputs can predict), with the op running at the peak,
and the coarse RSS growth beside it (``rss_error_pct``:
all points run in one process, and memory the C allocator kept from an earlier point can
serve a later one without raising RSS). The CPU sweep uses smaller batches (``FULL``'s last
column).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from hwprof import zoo
from hwprof.device import free_device_memory
from hwprof.errors import HwprofError
from hwprof.files import write_atomic
from hwprof.memory.estimate import estimate_memory
from hwprof.memory.validate import compare, run_measure

log = logging.getLogger("memory_validation")

#: (model, input spec or None for the zoo default, two batch sizes on CUDA, two on CPU) for the full sweep
FULL: list[tuple[str, str | None, tuple[int, int], tuple[int, int]]] = [
    ("mobilenet_v1", None, (64, 128), (16, 32)),
    ("mobilenet_v1_dense", None, (32, 64), (8, 16)),
    ("vgg16", None, (16, 32), (4, 8)),
    ("resnet18", None, (64, 128), (16, 32)),
    ("resnet50", None, (32, 64), (8, 16)),
    ("transformer_encoder", None, (16, 64), (8, 32)),
    ("lstm", None, (32, 128), (32, 128)),
    ("torchvision:resnet50", "3x224x224", (32, 64), (8, 16)),
    ("torchvision:mobilenet_v2", "3x224x224", (64, 128), (16, 32)),
]
#: tiny models for the smoke check
QUICK: list[tuple[str, str | None, tuple[int, int], tuple[int, int]]] = [
    ("lenet5", None, (8, 32), (8, 32)),
    ("mobilenet_v1", "3x64x64", (2, 4), (2, 4)),
    ("gpt_tiny", None, (2, 4), (2, 4)),
    ("lstm", "16x128", (4, 8), (4, 8)),
]
COLUMNS = ["model", "input", "batch", "mode", "predictor", "predicted_bytes", "predicted_reserved_bytes",
           "measured_alloc_bytes", "measured_reserved_bytes", "measured_nvml_bytes", "measured_alloc_trace_bytes",
           "measured_tensor_peak_bytes", "tensor_error_pct", "peak_op", "workspace_at_peak_bytes",
           "max_op_workspace_bytes", "max_op_workspace_op", "measured_rss_delta_bytes", "predicted_compared_bytes", "compared_bytes", "error_pct", "reserved_error_pct",
           "rss_error_pct", "oom", "fake_device", "predict_s", "measure_s", "notes"]


def _have_torchvision() -> bool:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return False
    return True


def sweep_points(quick: bool, device: str = "cuda") -> list[tuple[str, str | None, tuple[int, ...]]]:
    """(model, input spec or None, the batch sizes for ``device``) of the sweep."""
    points: list[tuple[str, str | None, tuple[int, ...]]] = [
        (n, spec, gpu if device == "cuda" else cpu) for n, spec, gpu, cpu in (QUICK if quick else FULL)]
    if not _have_torchvision():
        skipped = [n for n, _, _ in points if n.startswith("torchvision:")]
        if skipped:
            log.warning("torchvision is not installed: skipping %s", ", ".join(skipped))
        points = [p for p in points if not p[0].startswith("torchvision:")]
    return points


def one_point(name: str, spec: str, real_model: torch.nn.Module, batch: int, mode: str, device: str,
              budget_s: float, fake_device: str = "cpu") -> list[dict[str, Any]]:
    """Predict and measure one configuration; one row per predictor."""
    optimizer = "adam" if mode == "train" else None
    meta_model, _ = zoo.build(name, device="meta")
    t0 = time.perf_counter()
    est = estimate_memory(meta_model, spec, mode=mode, optimizer=optimizer, batch=batch, device=device,
                          fake_device=fake_device)
    t1 = time.perf_counter()
    measured = run_measure(real_model, spec, device=device, mode=mode, optimizer=optimizer, batch=batch,
                           budget_s=budget_s)
    t2 = time.perf_counter()
    v = compare(est, measured, device)
    rows = []
    for predictor, r in v.table.iterrows():
        pred = est.predictors.loc[predictor]
        rss_err = r.get("rss_error_pct")
        if device == "cuda":
            pred_c, compared = r["predicted_peak_bytes"], r["measured_alloc_peak_bytes"]
            err, res_err = r["error_pct"], r["reserved_error_pct"]
        elif v.compared == "alloc_trace_peak_bytes":
            pred_c, compared, err, res_err = r["predicted_peak_bytes"], r["measured_alloc_trace_peak_bytes"], r["error_pct"], None
        else:
            pred_c, compared, err, res_err = r["predicted_delta_bytes"], r["measured_rss_delta_bytes"], r["error_pct"], None
        rows.append({
            "model": name, "input": spec, "batch": batch, "mode": mode, "predictor": predictor,
            "predicted_bytes": _int(pred["peak_predicted_bytes"]),
            "predicted_reserved_bytes": _int(pred["reserved_predicted_bytes"]),
            "measured_alloc_bytes": measured.get("alloc_peak_bytes"),
            "measured_reserved_bytes": measured.get("reserved_peak_bytes"),
            "measured_nvml_bytes": v.measured.get("nvml_used_minus_baseline_bytes"),
            "measured_alloc_trace_bytes": measured.get("alloc_trace_peak_bytes"),
            "measured_tensor_peak_bytes": measured.get("alloc_trace_peak_without_workspace_bytes"),
            "tensor_error_pct": _float(r.get("tensor_error_pct")),
            "peak_op": measured.get("alloc_trace_peak_op"),
            "workspace_at_peak_bytes": measured.get("alloc_trace_workspace_at_peak_bytes"),
            "max_op_workspace_bytes": measured.get("alloc_trace_max_op_transient_bytes"),
            "max_op_workspace_op": measured.get("alloc_trace_max_op_transient_op"),
            "measured_rss_delta_bytes": v.measured.get("rss_peak_minus_baseline_bytes"),
            "predicted_compared_bytes": _int(pred_c), "compared_bytes": _int(compared), "error_pct": _float(err),
            "reserved_error_pct": _float(res_err), "rss_error_pct": _float(rss_err),
            "oom": bool(measured.get("oom")), "fake_device": est.config["fake_device"],
            "predict_s": round(t1 - t0, 3), "measure_s": round(t2 - t1, 3),
            "notes": measured.get("error") or "",
        })
    return rows


def _int(v: Any) -> int | None:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    return int(v)


def _float(v: Any) -> float | None:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    return round(float(v), 2)


def plot(df: pd.DataFrame, path: Path, device: str) -> Path | None:
    """Predicted vs measured, log-log, one series per predictor; None (and a log line) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no plot (pip install matplotlib)")
        return None
    ok = df[(~df["oom"].fillna(False).astype(bool)) & (df["compared_bytes"].fillna(0) > 0)
            & df["predicted_compared_bytes"].notna()]
    fig, ax = plt.subplots(figsize=(6.5, 6))
    markers = {"seed": "s", "seed_per_layer": "D", "formula": "^", "simulated": "o"}
    for predictor, g in ok.groupby("predictor", sort=False):
        hollow = predictor == "simulated"          # drawn last and hollow: the formula's marks stay visible
        ax.scatter(g["compared_bytes"].astype(float) / 2**20, g["predicted_compared_bytes"].astype(float) / 2**20,
                   label=predictor, s=34 if hollow else 18, marker=markers.get(str(predictor), "o"),
                   facecolors="none" if hollow else None, edgecolors="C3" if hollow else None,
                   color=None if hollow else f"C{list(markers).index(predictor) if predictor in markers else 4}",
                   linewidths=1.0, zorder=4 if hollow else 3)
    values = pd.concat([ok["compared_bytes"], ok["predicted_compared_bytes"]]).astype(float) / 2**20
    values = values[values > 0]
    lim = [float(values.min()) / 2, float(values.max()) * 2] if len(values) else [1.0, 10.0]
    ax.plot(lim, lim, color="gray", lw=0.8, ls="--", label="predicted = measured")
    ax.set_xscale("log")
    ax.set_yscale("log")
    what = ("max_memory_allocated" if device == "cuda" else
            "peak of live CPU tensor bytes (torch allocator events)")
    ax.set_xlabel(f"measured {what} (MiB)")
    ax.set_ylabel("predicted peak (MiB)")
    ax.set_title(f"hwprof memory predictors vs measured ({device}, torch {torch.__version__})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


class PointTimeout(BaseException):
    """A point ran past ``--point-timeout`` (a BaseException, so that no ``except Exception`` on the
    way swallows it)."""


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`PointTimeout` in the main thread once ``seconds`` have passed (SIGALRM; None or
    <= 0: no limit)."""
    if not seconds or seconds <= 0:
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise PointTimeout(f"timed out after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def ordered(points: list[tuple[str, str | None, tuple[int, ...]]], modes: list[str],
            batches_per_model: int = 2) -> list[tuple[str, str | None, int, str]]:
    """(model, spec override, batch, mode) in the order they run: the first batch size of every
    model and mode, then the second, so that a sweep cut short covers every model."""
    return [(name, spec, batches[k], mode) for k in range(batches_per_model)
            for name, spec, batches in points if k < len(batches) for mode in modes]


def _failed(name: str, spec: str, batch: int, mode: str, note: str) -> list[dict[str, Any]]:
    return [{"model": name, "input": spec, "batch": batch, "mode": mode, "predictor": "", "oom": False, "notes": note}]


def run_point(name: str, spec_override: str | None, batch: int, mode: str, args: argparse.Namespace,
              models: dict[str, tuple[torch.nn.Module, str]]) -> list[dict[str, Any]]:
    """One point, bounded by ``--point-timeout``; a failure or a timeout is a row, never the end of the sweep.
    ``models`` caches each built model (name -> (model, default spec)) for the model's other points."""
    spec = spec_override or "?"
    try:
        with time_limit(args.point_timeout):
            if name not in models:
                models[name] = zoo.build(name)
            real_model, default_spec = models[name]
            spec = spec_override or default_spec
            log.info("%s %s batch %d %s ...", name, spec, batch, mode)
            return one_point(name, spec, real_model, batch, mode, args.device, args.budget, args.fake_device)
    except PointTimeout as e:
        log.warning("%s batch %d %s: %s", name, batch, mode, e)
        note = f"timed out: {e}"
    except (HwprofError, RuntimeError, ValueError) as e:   # a failing point must not end the sweep
        log.warning("%s batch %d %s failed: %s", name, batch, mode, e)
        note = f"failed: {type(e).__name__}: {e}"
    if args.device == "cuda":
        free_device_memory(torch.device("cuda"))
    return _failed(name, spec, batch, mode, note)


def _log_simulated(new: list[dict[str, Any]]) -> None:
    sim = [r for r in new if r.get("predictor") == "simulated"]
    if sim:
        r = sim[0]
        tensors = (f"; vs the tensors alone {r['tensor_error_pct']}% (peak in {r['peak_op']})"
                   if r.get("tensor_error_pct") is not None else "")
        log.info("  simulated %s MiB vs measured %s MiB: %s%%%s %s",
                 _mib(r["predicted_compared_bytes"]), _mib(r["compared_bytes"]), r["error_pct"],
                 tensors, "(OOM)" if r["oom"] else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the CSV and the plot")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="tiny models at small batches (CPU smoke check)")
    p.add_argument("--modes", default="train,inference", help="comma-separated: train,inference")
    p.add_argument("--models", default=None, help="comma-separated subset of the sweep's model names")
    p.add_argument("--batches-per-model", type=int, choices=(1, 2), default=2,
                   help="how many of each model's two batch sizes to run (default 2)")
    p.add_argument("--budget", type=float, default=0.2, metavar="S", help="measured seconds per phase")
    p.add_argument("--time-budget", type=float, default=None, metavar="S",
                   help="start no point after S seconds; the rest are recorded as skipped")
    p.add_argument("--point-timeout", type=float, default=None, metavar="S",
                   help="interrupt a point (prediction + measurement) after S seconds")
    p.add_argument("--fake-device", choices=("cpu", "cuda"), default="cpu",
                   help="where the predictions' fake tensors live (compare cpu and cuda on a GPU)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.device == "cuda" and not torch.cuda.is_available():
        log.error("--device cuda: CUDA is not available here")
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    points = sweep_points(args.quick, args.device)
    if args.models:
        wanted = set(args.models.split(","))
        points = [pt for pt in points if pt[0] in wanted]
    todo = ordered(points, [m for m in args.modes.split(",") if m], args.batches_per_model)
    suffix = args.device if args.fake_device == "cpu" else f"{args.device}-fake-{args.fake_device}"
    csv_path = out / f"memory-validation-{suffix}.csv"
    rows: list[dict[str, Any]] = []
    models: dict[str, tuple[torch.nn.Module, str]] = {}
    start = time.monotonic()
    for i, (name, spec_override, batch, mode) in enumerate(todo):
        if args.time_budget is not None and time.monotonic() - start >= args.time_budget:
            log.warning("time budget of %g s spent: %d of %d points not run", args.time_budget, len(todo) - i, len(todo))
            rows += [r for n, sp, b, m in todo[i:]
                     for r in _failed(n, sp or "", b, m, f"skipped: the time budget of {args.time_budget:g} s was spent")]
            break
        new = run_point(name, spec_override, batch, mode, args, models)
        rows.extend(new)
        _log_simulated(new)
        write_atomic(csv_path, pd.DataFrame(rows, columns=COLUMNS).to_csv(index=False))
    df = pd.DataFrame(rows, columns=COLUMNS)
    write_atomic(csv_path, df.to_csv(index=False))
    png = plot(df, out / f"memory-validation-{suffix}.png", args.device)
    ok = df[(~df["oom"].fillna(False).astype(bool)) & df["error_pct"].notna()]
    summary = ok.groupby("predictor")["error_pct"].agg(
        median_abs_error_pct=lambda s: s.abs().median(), max_abs_error_pct=lambda s: s.abs().max(), points="count")
    sys.stdout.write(f"wrote {csv_path}" + (f" and {png}" if png else "") + "\n")
    sys.stdout.write(summary.round(1).to_string() + "\n")
    return 0


def _mib(v: Any) -> str:
    return "-" if v is None else f"{v / 2**20:.1f}"


if __name__ == "__main__":
    sys.exit(main())
