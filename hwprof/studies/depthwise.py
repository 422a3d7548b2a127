"""The depthwise-convolution study: why ~C x fewer FLOPs is nowhere near C x faster.

Operators at a matched shape, input and output both ``N x C x H x W`` (stride 1, padding k//2,
no bias): dense 3x3, grouped 3x3 (g = 2, 8, 32), depthwise 3x3 / 5x5 / 7x7, pointwise 1x1 and
the depthwise-separable block (depthwise 3x3 then pointwise 1x1); fp32 / bf16, NCHW /
channels_last, forward / forward+backward, over a grid of (C, H=W, N).

Every number comes from hwprof's own stages, never a re-implementation:

* FLOPs, MACs, bytes: :func:`hwprof.count` (aten-level, fake tensors);
  bytes = bytes read of tensor inputs + bytes written of outputs per aten op.
* time: :func:`hwprof.measuring.timers.time_fn` (median of repetitions).
* roofs: :func:`hwprof.measure_ceilings` (measured on this machine).
* roofline columns: :func:`hwprof.roofline.derive` (intensity, achieved FLOP/s and bytes/s,
  attainable = min(roof, bandwidth x intensity), % of each roof, bound, above_roof), with the
  roof of the math mode in force, :func:`hwprof.roofline.roof_key` for a convolution: fp32 ->
  "tf32" on CUDA while ``torch.backends.cudnn.allow_tf32`` is on (the default), bf16 -> "bf16".
  A point above its roof (Winograd/FFT, caches) is flagged, never clipped.

Analytic anchor (what the counter must give, tested in tests/studies): depthwise k x k, fp32,
FLOPs = 2 k^2 N C H W and bytes = 4 (2 N C H W + k^2 C), so intensity -> k^2 / 4 = 2.25 FLOP/byte
for k = 3 at large N H W; a dense k x k conv has FLOPs = 2 k^2 C^2 N H W and intensity -> C k^2 / 4.

Also here: the FasterNet-style table (Chen et al., "Run, Don't Walk", CVPR 2023, Table 1),
MobileNetV1 against its dense twin, and Nsight Compute counters (``ncu``) per operator.
Nothing here prints: the CLI (:mod:`hwprof.cli.study`) does, through the ``progress`` callback
and the returned :class:`StudyResult`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as _dt
import gc
import json
import logging
import math
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from hwprof import roofline
from hwprof.errors import HwprofError, MeasurementError
from hwprof.report.tables import render, write_atomic, write_json_atomic
from hwprof.roofline import MathModes, roof_key
from hwprof.spec import parse_dtype

__all__ = [
    "OperatorDef", "OPERATORS", "build_operator", "operator_supported",
    "Point", "SweepConfig", "default_config", "quick_config", "sweep_points", "MOBILENET_SHAPES", "REFERENCE_SHAPE",
    "build_point", "point_callable", "measure_point", "run_sweep", "is_oom",
    "math_modes", "normalise_ceilings", "derive",
    "headline_shape", "compare_to_dense", "summary_markdown", "fmt_ratio", "fmt_time", "fmt_pct", "fmt_rate",
    "REFERENCE_H100", "FASTERNET_PAPER", "FASTERNET_SHAPES", "PartialConv", "build_fasternet_stack",
    "fasternet_table", "depthwise_paths", "depthwise_shares", "model_comparison", "CeilingsView",
    "NCU_METRICS", "ncu_path", "ncu_command", "parse_ncu_csv", "summarise_kernels", "run_counters",
    "StudyResult", "run_study", "POINT_COLUMNS",
]

log = logging.getLogger(__name__)

CountFn = Callable[..., Any]
TimeFn = Callable[..., Any]
Progress = Callable[[int, int, str], None]


# =========================================================================== operators
@dataclass(frozen=True)
class OperatorDef:
    """One operator of the sweep. ``groups=None`` means depthwise (groups = C)."""

    name: str
    label: str
    family: str        # dense | grouped | depthwise | pointwise | separable
    kernel: int
    groups: int | None


OPERATORS: dict[str, OperatorDef] = {d.name: d for d in (
    OperatorDef("dense_3x3", "dense 3x3", "dense", 3, 1),
    OperatorDef("grouped_3x3_g2", "grouped 3x3 g=2", "grouped", 3, 2),
    OperatorDef("grouped_3x3_g8", "grouped 3x3 g=8", "grouped", 3, 8),
    OperatorDef("grouped_3x3_g32", "grouped 3x3 g=32", "grouped", 3, 32),
    OperatorDef("depthwise_3x3", "depthwise 3x3", "depthwise", 3, None),
    OperatorDef("depthwise_5x5", "depthwise 5x5", "depthwise", 5, None),
    OperatorDef("depthwise_7x7", "depthwise 7x7", "depthwise", 7, None),
    OperatorDef("pointwise_1x1", "pointwise 1x1", "pointwise", 1, 1),
    OperatorDef("dw_separable_3x3", "depthwise-separable 3x3 (dw 3x3 + pw 1x1)", "separable", 3, None),
)}


def _conv(c: int, k: int, groups: int) -> nn.Conv2d:
    return nn.Conv2d(c, c, k, stride=1, padding=k // 2, groups=groups, bias=False)


def operator_supported(op: str, channels: int) -> bool:
    """A grouped conv needs ``groups`` to divide C."""
    d = OPERATORS[op]
    g = channels if d.groups is None else d.groups
    return 0 < g <= channels and channels % g == 0


def build_operator(op: str, channels: int) -> nn.Module:
    """The module of ``op`` mapping ``N x C x H x W`` to the same shape (fp32, CPU)."""
    d = OPERATORS[op]
    if not operator_supported(op, channels):
        raise ValueError(f"{op} needs groups={d.groups} to divide channels={channels}")
    if d.family == "separable":
        return nn.Sequential(_conv(channels, d.kernel, channels), _conv(channels, 1, 1))
    return _conv(channels, d.kernel, channels if d.groups is None else d.groups)


# =========================================================================== sweep points
MOBILENET_SHAPES: tuple[tuple[int, int], ...] = ((32, 112), (64, 112), (128, 56), (256, 28), (512, 14), (1024, 7))
"""(C, H=W) of MobileNetV1's stages at 224x224 input (seed 000's _CONV_DEFS)."""
REFERENCE_SHAPE: tuple[int, int] = (256, 56)
"""The shape of DESIGN.md's reference figures (N64 C256 56x56)."""


@dataclass(frozen=True)
class Point:
    """One measurement: an operator at ``N x C x spatial x spatial`` in a dtype, format and pass."""

    op: str
    channels: int
    spatial: int
    batch: int
    dtype: str = "fp32"
    channels_last: bool = False
    backward: bool = False

    @property
    def pass_name(self) -> str:
        return "fwd+bwd" if self.backward else "fwd"

    @property
    def fmt(self) -> str:
        return "channels_last" if self.channels_last else "NCHW"

    @property
    def variant(self) -> str:
        return f"{self.dtype} {self.fmt}"

    @property
    def name(self) -> str:
        return (f"{self.op} C{self.channels} {self.spatial}x{self.spatial} bs{self.batch} "
                f"{self.variant} {self.pass_name}")

    def with_batch(self, batch: int) -> Point:
        return dataclasses.replace(self, batch=batch)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Point:
        return cls(**json.loads(text))

    def identity(self) -> dict[str, Any]:
        """The identity columns of this point's CSV row."""
        d = OPERATORS[self.op]
        return {"name": self.name, "op": self.op, "op_label": d.label, "family": d.family, "kernel": d.kernel,
                "groups": self.channels if d.groups is None else d.groups, "channels": self.channels,
                "spatial": self.spatial, "batch": self.batch, "dtype": self.dtype, "format": self.fmt,
                "variant": self.variant, "pass": self.pass_name}


@dataclass(frozen=True)
class SweepConfig:
    """The grid: every op x (C, spatial) shape x batch x dtype x format x pass, plus timing settings.

    ``budget_s``, ``warmup`` and ``min_reps`` go to ``time_fn``. With ``oom_fallback`` a point
    that runs out of memory at batch N > 1 is recorded (status "oom") and retried at N // 2,
    down to 1: "batch 64 or the largest that fits".
    """

    shapes: tuple[tuple[int, int], ...] = (*MOBILENET_SHAPES, REFERENCE_SHAPE)
    batches: tuple[int, ...] = (1, 64)
    dtypes: tuple[str, ...] = ("fp32", "bf16")
    channels_last: tuple[bool, ...] = (False, True)
    passes: tuple[bool, ...] = (False, True)   # backward flag: fwd, fwd+bwd
    ops: tuple[str, ...] = tuple(OPERATORS)
    budget_s: float = 0.25
    warmup: int = 3
    min_reps: int = 10
    oom_fallback: bool = True


def default_config(dtypes: Sequence[str] = ("fp32", "bf16"), channels_last: Sequence[bool] = (False, True),
                   **overrides: Any) -> SweepConfig:
    """The full grid: MobileNetV1's stage shapes + the reference shape, batch 1 and 64."""
    return SweepConfig(dtypes=tuple(dtypes), channels_last=tuple(channels_last), **overrides)


def quick_config(dtypes: Sequence[str] = ("fp32", "bf16"), channels_last: Sequence[bool] = (False, True),
                 **overrides: Any) -> SweepConfig:
    """``--quick``: the reference shape C=256 56x56 at batch 1, short timing budgets
    (all 9 operators x dtypes x formats x 2 passes; well under a minute on a 2-core CPU)."""
    base: dict[str, Any] = dict(shapes=(REFERENCE_SHAPE,), batches=(1,), budget_s=0.1, warmup=2, min_reps=5)
    base.update(overrides)
    return SweepConfig(dtypes=tuple(dtypes), channels_last=tuple(channels_last), **base)


def sweep_points(config: SweepConfig) -> list[Point]:
    """Every supported point of the grid, ordered so that the operators of one
    (shape, batch, dtype, format, pass) are adjacent."""
    points = []
    for c, s in config.shapes:
        for n in config.batches:
            for dt in config.dtypes:
                for cl in config.channels_last:
                    for bw in config.passes:
                        for op in config.ops:
                            if operator_supported(op, c):
                                points.append(Point(op, c, s, n, dt, cl, bw))
    return points


# =========================================================================== one measurement
def _rng_devices(device: torch.device) -> list[int]:
    return [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []


def build_point(point: Point, device: torch.device | str) -> tuple[nn.Module, torch.Tensor]:
    """The operator's module and a random input on ``device`` in the point's dtype and memory
    format (the input requires grad for fwd+bwd, as a layer inside a network does).
    The global RNG state is left as it was (``fork_rng``)."""
    dev = torch.device(device)
    dtype = parse_dtype(point.dtype)
    fmt = torch.channels_last if point.channels_last else torch.contiguous_format
    with torch.random.fork_rng(devices=_rng_devices(dev)):
        torch.manual_seed(0)
        module = build_operator(point.op, point.channels).to(device=dev, dtype=dtype)
        module = module.to(memory_format=fmt)  # type: ignore[call-overload]  # Module.to's stub lacks it
        x = torch.randn(point.batch, point.channels, point.spatial, point.spatial, device=dev, dtype=dtype)
    x = x.contiguous(memory_format=fmt).requires_grad_(point.backward)
    return module, x


def point_callable(module: nn.Module, x: torch.Tensor, backward: bool) -> Callable[[], None]:
    """What is timed. Forward: ``module(x)`` under ``no_grad``. Forward+backward:
    ``module(x)`` then ``torch.autograd.grad`` of it w.r.t. the input and every parameter with a
    fixed random output gradient: the grads are returned, not accumulated, so nothing grows
    or needs zeroing between repetitions."""
    if not backward:
        def fwd() -> None:
            with torch.no_grad():
                module(x)
        return fwd
    wrt = [x, *(p for p in module.parameters() if p.requires_grad)]
    with torch.no_grad():
        grad_out = torch.randn_like(module(x))

    def fwd_bwd() -> None:
        with torch.enable_grad():
            out = module(x)
            torch.autograd.grad(out, wrt, grad_outputs=grad_out)
    return fwd_bwd


def is_oom(e: BaseException) -> bool:
    """Out of memory: ``torch.OutOfMemoryError`` (CUDA), ``MeasurementError(oom=True)``, or a CPU
    allocator failure, also when it is the cause of another exception."""
    seen = 0
    cur: BaseException | None = e
    while cur is not None and seen < 8:
        if isinstance(cur, torch.OutOfMemoryError) or (isinstance(cur, MeasurementError) and cur.oom):
            return True
        text = str(cur).lower()
        if isinstance(cur, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text):
            return True
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return False


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _totals_row(result: Any, backward: bool) -> dict[str, Any]:
    """FLOPs/MACs/bytes of one call from a count result's ``.totals`` (fwd, + bwd for fwd+bwd)."""
    t = result.totals
    row = {k: float(t.get(k, 0) or 0) for k in
           ("flops_fwd", "flops_bwd", "macs_fwd", "macs_bwd", "bytes_fwd", "bytes_bwd")}
    for k in ("flops", "macs", "bytes"):
        row[k] = row[f"{k}_fwd"] + (row[f"{k}_bwd"] if backward else 0.0)
    uncounted = getattr(result, "uncounted", None) or {}
    row["uncounted_calls"] = int(sum(uncounted.values()))
    return row


def _measure(build: Callable[[], tuple[nn.Module, torch.Tensor]], backward: bool, *, device: torch.device,
             count_fn: CountFn, time_fn: TimeFn, budget_s: float, warmup: int, min_reps: int) -> dict[str, Any]:
    """Count then time one (module, input) built by ``build``; failures become a status row."""
    row: dict[str, Any] = {}
    failure: tuple[str, str] | None = None
    module = x = fn = None
    try:
        module, x = build()
        row.update(_totals_row(count_fn(module, (x,), backward=backward), backward))
        fn = point_callable(module, x, backward)
        stats = time_fn(fn, device=device, budget_s=budget_s, warmup=warmup, min_reps=min_reps)
        row.update(time_s=float(stats.median_s), iqr_s=float(stats.iqr_s), min_s=float(stats.min_s),
                   reps=int(stats.reps), status="ok", error="")
    except (RuntimeError, NotImplementedError, HwprofError, MemoryError) as e:
        failure = ("oom" if is_oom(e) or isinstance(e, MemoryError) else "error", _first_line(e))
    finally:
        del module, x, fn
    if failure is not None:   # outside the except block, so the traceback's frames are gone
        _free_memory(device)
        row.update(status=failure[0], error=failure[1])
        if failure[0] == "error":
            log.warning("measurement failed: %s", failure[1])
    return row


def _public(name: str) -> Any:
    """``hwprof.<name>`` from the public, lazily imported API; None when the module behind it
    is not in this build (an import error from inside it is raised)."""
    import hwprof

    try:
        return getattr(hwprof, name)
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("hwprof"):
            return None
        raise


def _resolve_count(count_fn: CountFn | None) -> CountFn:
    """``count_fn`` or hwprof's counter (``hwprof.count``)."""
    if count_fn is not None:
        return count_fn
    count = _public("count")
    if count is None:
        raise HwprofError("hwprof.count is not available in this build")
    return count


def _resolve_time(time_fn: TimeFn | None) -> TimeFn:
    if time_fn is not None:
        return time_fn
    from hwprof.measuring.timers import time_fn as real_time_fn
    return real_time_fn


def measure_point(point: Point, *, device: torch.device | str, count_fn: CountFn | None = None,
                  time_fn: TimeFn | None = None, budget_s: float = 0.25, warmup: int = 3,
                  min_reps: int = 10) -> dict[str, Any]:
    """One CSV row for ``point``: identity, counts (``count_fn``), timing (``time_fn``), status.

    status: "ok"; "oom" (out of memory while building, counting or timing); "error" (any other
    runtime failure, message in ``error``). Derived columns are added later by :func:`derive`.
    """
    dev = torch.device(device)
    row = point.identity()
    row.update(_measure(lambda: build_point(point, dev), point.backward, device=dev,
                        count_fn=_resolve_count(count_fn), time_fn=_resolve_time(time_fn),
                        budget_s=budget_s, warmup=warmup, min_reps=min_reps))
    return row


POINT_COLUMNS: tuple[str, ...] = (
    "name", "op", "op_label", "family", "kernel", "groups", "channels", "spatial", "batch", "batch_requested",
    "dtype", "format", "variant", "pass", "status", "error",
    "flops", "macs", "bytes", "flops_fwd", "flops_bwd", "macs_fwd", "macs_bwd", "bytes_fwd", "bytes_bwd",
    "uncounted_calls", "time_s", "iqr_s", "min_s", "reps",
)
"""Columns of the sweep's rows before :func:`derive` adds the roofline columns."""


def run_sweep(points: Sequence[Point], *, device: torch.device | str, count_fn: CountFn | None = None,
              time_fn: TimeFn | None = None, budget_s: float = 0.25, warmup: int = 3, min_reps: int = 10,
              oom_fallback: bool = True, progress: Progress | None = None) -> pd.DataFrame:
    """Measure every point; one row per attempt (an OOM retried at half the batch leaves its
    "oom" row and adds the retry's). The sweep always completes. ``progress(done, total, name)``
    is called after each attempt (``total`` grows when a retry is queued)."""
    count = _resolve_count(count_fn)
    timer = _resolve_time(time_fn)
    queue: list[tuple[Point, int]] = [(p, p.batch) for p in points]
    rows = []
    i = 0
    while i < len(queue):
        p, requested = queue[i]
        i += 1
        row = measure_point(p, device=device, count_fn=count, time_fn=timer, budget_s=budget_s,
                            warmup=warmup, min_reps=min_reps)
        row["batch_requested"] = requested
        rows.append(row)
        if row["status"] == "oom" and oom_fallback and p.batch > 1:
            queue.insert(i, (p.with_batch(p.batch // 2), requested))
        if progress is not None:
            progress(i, len(queue), p.name)
    return pd.DataFrame(rows).reindex(columns=list(POINT_COLUMNS))


# =========================================================================== roofs and derived metrics
def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def normalise_ceilings(ceilings: Any) -> dict[str, Any]:
    """A plain dict from a ``measure_ceilings`` result (object or dict): ``flop_per_s`` (dict),
    ``bytes_per_s``, ``device_name``, ``datasheet`` (dict or None), ``source``, plus any
    other scalar fields it has (for the manifest)."""
    out: dict[str, Any] = {
        "flop_per_s": {str(k): (float(v) if v is not None else None)
                       for k, v in dict(_get(ceilings, "flop_per_s") or {}).items()},
        "bytes_per_s": (float(_get(ceilings, "bytes_per_s")) if _get(ceilings, "bytes_per_s") is not None else None),
        "device_name": _get(ceilings, "device_name") or _get(ceilings, "device") or "",
        "datasheet": _get(ceilings, "datasheet"),
        "source": _get(ceilings, "source", "measured"),
    }
    extra: Iterable[tuple[str, Any]] = ()
    if isinstance(ceilings, Mapping):
        extra = ceilings.items()
    elif dataclasses.is_dataclass(ceilings) and not isinstance(ceilings, type):
        extra = dataclasses.asdict(ceilings).items()
    for k, v in extra:
        if k not in out and isinstance(v, (str, int, float, bool, type(None))):
            out[k] = v
    if isinstance(out["datasheet"], Mapping):
        out["datasheet"] = dict(out["datasheet"])
    return out


def math_modes(device_type: str) -> MathModes:
    """The math-mode switches in force (:meth:`hwprof.roofline.MathModes.current`)."""
    return MathModes.current(device_type)


def derive(df: pd.DataFrame, ceilings: Mapping[str, Any], modes: MathModes) -> pd.DataFrame:
    """Add the roofline columns to the sweep's rows with :func:`hwprof.roofline.derive`.

    Every point is a convolution, so its roof is ``roof_key(dtype, "conv", modes)``: "tf32" for
    fp32 on CUDA while cuDNN may use TF32 (the default), else the dtype's roof. Added here:
    ``memory_roof_bytes_per_s`` (the bandwidth used) and ``above_compute_roof`` (achieved FLOP/s
    above the compute roof itself: fewer multiplies than the direct-convolution count, e.g.
    Winograd/FFT), beside roofline's ``above_roof`` (above ``min(compute roof, bandwidth x
    intensity)``, which caches can also cause). ``ceilings`` is :func:`normalise_ceilings`' dict.
    """
    out = df.copy()
    for c in ("flops", "bytes", "time_s"):
        out[c] = pd.to_numeric(out[c], errors="coerce").astype(float)
    out["roof_key"] = [roof_key(_TORCH_DTYPE_NAME.get(str(d), str(d)), "conv", modes) for d in out["dtype"]]
    roofs = {k: float(v) for k, v in (ceilings.get("flop_per_s") or {}).items() if v}
    bw = float(ceilings.get("bytes_per_s") or math.nan)
    out = roofline.derive(out, roofs, bw)
    out["memory_roof_bytes_per_s"] = bw
    out["above_compute_roof"] = (out["achieved_flop_per_s"] > out["compute_roof_flop_per_s"]).fillna(False).astype(bool)
    out["above_roof"] = out["above_roof"].astype(bool)
    return out


_TORCH_DTYPE_NAME = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "fp64": "float64"}


# =========================================================================== headline and summary
REFERENCE_H100: dict[str, Any] = {
    "source": "DESIGN.md reference figures (one H100 80GB HBM3, torch 2.11, measured 2026-11)",
    "shape": "N64 C256 56x56",
    "depthwise_fp32_nchw_fwd_ms": 0.53,
    "dense_fp32_nchw_fwd_ms": 0.90,
    "speedup_fp32_nchw_fwd": 1.7,
    "depthwise_fp32_nchw_fwd_tflop_per_s": 1.75,
    "depthwise_intensity_fp32": 2.25,
    "depthwise_fp32_channels_last_fwd_tflop_per_s": 4.85,
    "depthwise_bf16_channels_last_fwd_tflop_per_s": 7.0,
    "dense_bf16_channels_last_fwd_tflop_per_s": 703.0,
}
"""Not measured by this run: cited in the summary as the reference, labelled as such."""


def fmt_ratio(x: float) -> str:
    """2.345 -> '2.3x'; 256.0 -> '256x' (no decimals from 100 up)."""
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:.0f}x" if abs(x) >= 100 else f"{x:.1f}x"


def fmt_time(t_s: float) -> str:
    """Seconds -> '0.531 ms' / '52.1 us' / '1.23 s' (3 significant digits)."""
    if t_s is None or not math.isfinite(t_s):
        return "-"
    if t_s >= 1:
        return f"{t_s:.3g} s"
    if t_s >= 1e-3:
        return f"{t_s * 1e3:.3g} ms"
    return f"{t_s * 1e6:.3g} us"


def fmt_pct(p: float) -> str:
    """12.345 -> '12.3%' (3 significant digits)."""
    if p is None or not math.isfinite(p):
        return "-"
    return f"{p:.3g}%"


def fmt_rate(x: float, unit: str = "FLOP/s") -> str:
    """3.1e12 -> '3.1 TFLOP/s' (decimal prefixes, 3 significant digits)."""
    if x is None or not math.isfinite(x):
        return "-"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def _fmt_count(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= factor:
            return f"{x / factor:.3g}{prefix}"
    return f"{x:.3g}"


def headline_shape(df: pd.DataFrame, dense: str = "dense_3x3", op: str = "depthwise_3x3") -> tuple[int, int, int] | None:
    """(C, spatial, batch) for the headline: the reference shape C=256 56x56 when the run has
    ``op`` and ``dense`` measured there, else the largest C*H*W shape that has both; the
    largest batch at which both ran."""
    ok = df[df["status"] == "ok"]
    have = ok[ok["op"].isin([dense, op])]
    pairs = have.groupby(["channels", "spatial", "batch"])["op"].nunique()
    pairs = pairs[pairs == 2]
    if pairs.empty:
        return None
    keys = list(pairs.index)
    ref = [k for k in keys if (k[0], k[1]) == REFERENCE_SHAPE]
    pool = ref or keys
    return max(pool, key=lambda k: (k[0] * k[1] * k[1], k[2]))


def compare_to_dense(df: pd.DataFrame, shape: tuple[int, int, int], dense: str = "dense_3x3") -> pd.DataFrame:
    """Every ok row at ``shape`` = (C, spatial, batch) with its dense twin's numbers beside it:
    flops_ratio = dense FLOPs / FLOPs ("x fewer FLOPs"), speedup = dense time / time ("x faster")."""
    c, s, n = shape
    ok = df[(df["status"] == "ok") & (df["channels"] == c) & (df["spatial"] == s) & (df["batch"] == n)]
    base = ok[ok["op"] == dense].set_index(["dtype", "format", "pass"])
    rows = []
    for _, r in ok.iterrows():
        key = (r["dtype"], r["format"], r["pass"])
        d = base.loc[key] if key in base.index else None
        rows.append({**r.to_dict(),
                     "dense_flops": float(d["flops"]) if d is not None else math.nan,
                     "dense_time_s": float(d["time_s"]) if d is not None else math.nan,
                     "dense_intensity": float(d["intensity"]) if d is not None else math.nan,
                     "flops_ratio": float(d["flops"]) / float(r["flops"]) if d is not None else math.nan,
                     "speedup": float(d["time_s"]) / float(r["time_s"]) if d is not None else math.nan})
    return pd.DataFrame(rows)


def _headline_sentence(r: Mapping[str, Any], c: int, s: int, n: int) -> str:
    speed = r["speedup"]
    faster = (f"only {fmt_ratio(speed)} faster" if speed >= 1
              else f"{fmt_ratio(1 / speed)} slower")
    return (f"**{r['op_label']} at C={c}, {s}x{s}, bs {n} ({r['variant']}, {r['pass']})**: "
            f"{fmt_ratio(r['flops_ratio'])} fewer FLOPs than dense 3x3, {faster} "
            f"({fmt_time(r['time_s'])} vs {fmt_time(r['dense_time_s'])}); "
            f"{fmt_pct(r['pct_of_compute_roof'])} of the {r['roof_key']} compute roof "
            f"({fmt_rate(r['achieved_flop_per_s'])} of {fmt_rate(r['compute_roof_flop_per_s'])}); "
            f"{fmt_pct(r['pct_of_memory_roof'])} of the memory roof "
            f"({fmt_rate(r['achieved_bytes_per_s'], 'B/s')} of {fmt_rate(r['memory_roof_bytes_per_s'], 'B/s')}); "
            f"intensity {r['intensity']:.3g} FLOP/byte vs {r['dense_intensity']:.3g} for dense.")


def _variant_order(df: pd.DataFrame, then: str | None = None) -> pd.DataFrame:
    """fwd before fwd+bwd, fp32 NCHW first, then the other variants; within, ``then`` descending."""
    if df.empty:
        return df
    key = [({"fwd": 0, "fwd+bwd": 1}.get(p, 9), v != "fp32 NCHW", v) for p, v in zip(df["pass"], df["variant"], strict=True)]
    out = df.assign(_k=key, _t=-df[then] if then else 0).sort_values(["_k", "_t"], kind="stable")
    return out.drop(columns=["_k", "_t"])


def _vs_dense(ratio: float, more: str, less: str) -> str:
    if ratio is None or not math.isfinite(ratio):
        return "-"
    return f"{fmt_ratio(ratio)} {more}" if ratio >= 1 else f"{fmt_ratio(1 / ratio)} {less}"


def _operator_table(t: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "operator": t["op_label"], "dtype/format": t["variant"],
        "FLOPs": [_fmt_count(v) for v in t["flops"]], "bytes": [_fmt_count(v) for v in t["bytes"]],
        "FLOP/byte": [f"{v:.3g}" for v in t["intensity"]], "time": [fmt_time(v) for v in t["time_s"]],
        "achieved": [fmt_rate(v) for v in t["achieved_flop_per_s"]],
        "% compute roof": [fmt_pct(v) for v in t["pct_of_compute_roof"]],
        "% memory roof": [fmt_pct(v) for v in t["pct_of_memory_roof"]], "bound": t["bound"],
        "above roof": ["yes" if v else "" for v in t["above_roof"]],
        "FLOPs vs dense": [_vs_dense(v, "fewer", "more") for v in t["flops_ratio"]],
        "time vs dense": [_vs_dense(v, "faster", "slower") for v in t["speedup"]],
    })


def _md_table(df: pd.DataFrame) -> str:
    return render(df, "md", index=False)


def summary_markdown(points: pd.DataFrame, *, ceilings: Mapping[str, Any], manifest: Mapping[str, Any],
                     fasternet: pd.DataFrame | None = None, models: pd.DataFrame | None = None,
                     counters: pd.DataFrame | None = None, files: Sequence[str] = ()) -> str:
    """The study's Markdown summary; every number is read from the frames passed in (the ones
    written to CSV), except the block explicitly labelled *reference*."""
    device = manifest.get("device", {}).get("name") or ceilings.get("device_name") or ""
    lines = [f"# Depthwise convolution study — {device}", "",
             f"`{manifest.get('command', 'hwprof study depthwise')}` on {manifest.get('date_utc', '')} "
             f"(torch {manifest.get('versions', {}).get('torch', '')}, "
             f"{manifest.get('device', {}).get('threads', '?')} torch CPU threads). "
             "Every number below is this run's (from `depthwise.csv` and the other CSVs beside it), "
             "except the lines marked *reference*. FLOP = one add or multiply; MAC = one multiply-accumulate "
             "(FLOPs = 2 x MACs for convolutions). Bytes = tensor bytes read + written per aten op (unfused).", ""]
    shape = headline_shape(points)
    lines += ["## Headline", ""]
    if shape is None:
        lines += ["No (dense 3x3, depthwise 3x3) pair ran successfully: no headline.", ""]
        cmp_df = pd.DataFrame()
    else:
        c, s, n = shape
        cmp_df = compare_to_dense(points, shape)
        dw = _variant_order(cmp_df[cmp_df["op"] == "depthwise_3x3"]) if len(cmp_df) else cmp_df
        for _, r in dw.iterrows():
            lines.append("- " + _headline_sentence(r, c, s, n))
        ref = REFERENCE_H100
        lines += ["- *Reference, not this run* "
                  f"({ref['source']}, {ref['shape']}): depthwise 3x3 fp32 NCHW forward "
                  f"{ref['depthwise_fp32_nchw_fwd_ms']:.2f} ms vs dense {ref['dense_fp32_nchw_fwd_ms']:.2f} ms "
                  f"({ref['speedup_fp32_nchw_fwd']}x); depthwise {ref['depthwise_fp32_nchw_fwd_tflop_per_s']} TFLOP/s "
                  f"at {ref['depthwise_intensity_fp32']} FLOP/byte, {ref['depthwise_fp32_channels_last_fwd_tflop_per_s']} "
                  f"TFLOP/s channels_last, {ref['depthwise_bf16_channels_last_fwd_tflop_per_s']} TFLOP/s bf16 "
                  f"channels_last vs {ref['dense_bf16_channels_last_fwd_tflop_per_s']:.0f} TFLOP/s for the dense conv.", ""]
        for pass_name in ("fwd", "fwd+bwd"):
            t = cmp_df[cmp_df["pass"] == pass_name] if len(cmp_df) else cmp_df
            if len(t):
                lines += [f"## Every operator at C={c}, {s}x{s}, bs {n}: {pass_name}", "",
                          _md_table(_operator_table(_variant_order(t, "flops")))]
    lines += _roofs_section(ceilings, manifest)
    if fasternet is not None and len(fasternet):
        lines += _fasternet_section(fasternet)
    if models is not None and len(models):
        lines += _models_section(models)
    if counters is not None and len(counters):
        lines += _counters_section(counters)
    lines += _status_section(points)
    if files:
        lines += ["## Files", ""] + [f"- `{f}`" for f in files] + [""]
    return "\n".join(lines).rstrip() + "\n"


def _roofs_section(ceilings: Mapping[str, Any], manifest: Mapping[str, Any]) -> list[str]:
    rows = [{"roof": k, "FLOP/s": fmt_rate(v)} for k, v in (ceilings.get("flop_per_s") or {}).items() if v]
    rows.append({"roof": "memory", "FLOP/s": fmt_rate(ceilings.get("bytes_per_s") or math.nan, "B/s")})
    mm = manifest.get("math_mode", {})
    return ["## Roofs used (measured on this machine)", "",
            f"Source: {ceilings.get('source', 'measured')}. Convolution roof by math mode: fp32 -> "
            f"'{mm.get('fp32_conv_roof', 'fp32')}' (cuDNN TF32 for fp32 convolutions: {mm.get('cudnn_conv_tf32')}), "
            "bf16 -> 'bf16'. A point above its roof is flagged (`above_roof`), never clipped.", "",
            _md_table(pd.DataFrame(rows))]


def _fasternet_section(fn: pd.DataFrame) -> list[str]:
    agg = fn[fn["shape"] == "all"]
    table = pd.DataFrame({
        "operator (10 layers)": agg["operator"], "batch": agg["batch"], "dtype": agg["dtype"],
        "FLOPs": [_fmt_count(v) for v in agg["flops"]], "time": [fmt_time(v) for v in agg["time_s"]],
        "this device FLOP/s": [fmt_rate(v) for v in agg["achieved_flop_per_s"]],
        "this device MAC/s (paper's 'FLOPS')": [fmt_rate(v, "MAC/s") for v in agg["achieved_mac_per_s"]],
        "paper, RTX 2080Ti, as printed (MAC/s)": [fmt_rate(v, "MAC/s") for v in agg["paper_2080ti_mac_per_s"]],
        "paper, RTX 2080Ti, in FLOP/s (x2)": [fmt_rate(v) for v in agg["paper_2080ti_flop_per_s"]],
    })
    return ["## FasterNet-style table", "",
            "FasterNet (Chen et al., CVPR 2023, Table 1) stacks 10 layers of each operator and reports "
            "on-device 'FLOPS' that count MACs as FLOPs. hwprof counts FLOP = 2 x MAC, so the paper's "
            "figures are shown as printed (MAC/s) and converted (x2). Only the paper's RTX 2080Ti figures "
            "for DWConv (313) and the dense Conv (10,151 G) are given, as quoted in DESIGN.md; the paper's "
            "CPU/ARM columns are not reproduced. This device's rows: total FLOPs / total time over the "
            f"shapes {', '.join(sorted(set(fn.loc[fn['shape'] != 'all', 'shape'])))} (FasterNet-T2's stage "
            "shapes; per-shape rows in `fasternet.csv`), forward, NCHW. PConv = 3x3 conv on C/4 channels, the "
            "rest passed through (split + cat).", "",
            _md_table(table)]


def _models_section(models: pd.DataFrame) -> list[str]:
    cols = [c for c in ("model", "input", "batch", "dtype", "depthwise_layers", "flops", "time_s", "achieved_flop_per_s",
                        "depthwise_flop_share", "depthwise_time_share") if c in models]
    m = models[cols].copy()
    for c in ("flops",):
        m[c] = [_fmt_count(v) for v in m[c]]
    m["time_s"] = [fmt_time(v) for v in m["time_s"]]
    m["achieved_flop_per_s"] = [fmt_rate(v) for v in m["achieved_flop_per_s"]]
    for c in ("depthwise_flop_share", "depthwise_time_share"):
        if c in m:
            m[c] = [fmt_pct(100 * v) if v is not None and math.isfinite(v) else "-" for v in m[c]]
    lines = ["## Model level: MobileNetV1 vs its dense twin (forward)", ""]
    if len(models) == 2:
        a, b = models.iloc[0], models.iloc[1]
        lines += [f"{b['model']} does {fmt_ratio(b['flops'] / a['flops'])} the FLOPs of {a['model']} and takes "
                  f"{fmt_ratio(b['time_s'] / a['time_s'])} its time.", ""]
    if "depthwise_time_share" in models and not models["depthwise_time_share"].notna().any():
        lines += ["Per-layer time shares were not measured in this run (`hwprof.profile` unavailable or "
                  "failed: see `manifest.json` notes); FLOP shares come from the counter.", ""]
    else:
        lines += ["Depthwise time share: the depthwise layers' forward self-time (per-layer pass of "
                  "`hwprof.profile`) over all layers' forward self-time.", ""]
    return lines + [_md_table(m)]


def _counters_section(counters: pd.DataFrame) -> list[str]:
    cols = [c for c in ("name", "status", "kernels", "bytes", "dram_bytes", "dram_bytes_read", "dram_bytes_written",
                        "l2_bytes", "dram_pct_of_peak", "sm_pct_of_peak", "kernel_time_s") if c in counters]
    return ["## Hardware counters (Nsight Compute)", "",
            "`bytes` is hwprof's analytic count; `dram_bytes` what the kernels moved from/to DRAM; "
            "percentages are time-weighted over the point's kernels.", "", _md_table(counters[cols])]


def _status_section(points: pd.DataFrame) -> list[str]:
    counts = points["status"].value_counts().to_dict()
    lines = ["## Sweep", "",
             f"{len(points)} rows: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + "."]
    bad = points[points["status"] != "ok"]
    for _, r in bad.head(20).iterrows():
        lines.append(f"- {r['status']}: {r['name']} — {r['error']}")
    if len(bad) > 20:
        lines.append(f"- ... {len(bad) - 20} more in `depthwise.csv`")
    noisy = points[(points["iqr_s"] / points["time_s"]) > 0.10]
    if len(noisy):
        lines.append(f"- {len(noisy)} point(s) with IQR/median above 10% (noisy timing; `iqr_s` in the CSV).")
    above = points[points.get("above_roof", pd.Series(False, index=points.index)).astype(bool)]
    if len(above):
        lines.append(f"- {len(above)} point(s) above their roof (flagged, not clipped): "
                     + ", ".join(above["name"].head(10)))
    return lines + [""]


# =========================================================================== FasterNet-style table
FASTERNET_PAPER: dict[str, dict[str, float]] = {
    "DWConv": {"gpu_2080ti_gmac_per_s": 313.0},
    "Conv": {"gpu_2080ti_gmac_per_s": 10151.0},
}
"""FasterNet (Chen et al., CVPR 2023), Table 1, RTX 2080Ti column, as quoted in DESIGN.md. The
paper's "FLOPS" counts multiply-accumulates: 313 G = 313e9 MAC/s = 626e9 FLOP/s in hwprof's
convention. Other cells of the table are left out (not verified here)."""

FASTERNET_SHAPES: tuple[tuple[int, int], ...] = ((96, 56), (192, 28), (384, 14), (768, 7))
"""(C, H=W) of the four stages of FasterNet-T2 (embed_dim 96, patch stride 4, 224x224 input; the
repository's cfg/fasternet_t2.yaml). Whether the paper's Table 1 used these shapes is not claimed."""

FASTERNET_OPS: tuple[str, ...] = ("Conv", "GConv", "DWConv", "PConv")


class PartialConv(nn.Module):
    """FasterNet's PConv (``split_cat`` form): a 3x3 conv on the first C / ``n_div`` channels,
    the other channels passed through, then concatenated."""

    def __init__(self, channels: int, n_div: int = 4) -> None:
        super().__init__()
        self.dim_conv = channels // n_div
        self.dim_untouched = channels - self.dim_conv
        self.conv = nn.Conv2d(self.dim_conv, self.dim_conv, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = torch.split(x, [self.dim_conv, self.dim_untouched], dim=1)
        return torch.cat((self.conv(x1), x2), 1)


def build_fasternet_stack(op: str, channels: int, layers: int = 10) -> nn.Sequential:
    """``layers`` stacked layers of ``op``: Conv (dense 3x3), GConv (3x3, groups 16), DWConv (3x3,
    groups C), PConv (3x3 on C/4 channels)."""
    def one() -> nn.Module:
        if op == "Conv":
            return _conv(channels, 3, 1)
        if op == "GConv":
            return _conv(channels, 3, 16)
        if op == "DWConv":
            return _conv(channels, 3, channels)
        if op == "PConv":
            return PartialConv(channels)
        raise ValueError(f"unknown FasterNet operator {op!r}; expected one of {FASTERNET_OPS}")
    return nn.Sequential(*(one() for _ in range(layers)))


def fasternet_table(*, device: torch.device | str, batch: int = 1, dtype: str = "fp32",
                    shapes: Sequence[tuple[int, int]] = FASTERNET_SHAPES, ops: Sequence[str] = FASTERNET_OPS,
                    layers: int = 10, count_fn: CountFn | None = None, time_fn: TimeFn | None = None,
                    budget_s: float = 0.25, warmup: int = 3, min_reps: int = 10,
                    progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Forward of each operator's 10-layer stack (NCHW) at each shape, plus one row per operator
    over all shapes (shape "all": total FLOPs / total time).

    achieved_mac_per_s = macs / time_s is the paper's "FLOPS"; the paper columns hold its
    RTX 2080Ti figure as printed (MAC/s) and x2 (FLOP/s) where :data:`FASTERNET_PAPER` has one.
    """
    dev = torch.device(device)
    count, timer = _resolve_count(count_fn), _resolve_time(time_fn)
    dt = parse_dtype(dtype)
    rows = []
    for op in ops:
        for c, s in shapes:
            def build(op: str = op, c: int = c, s: int = s) -> tuple[nn.Module, torch.Tensor]:
                with torch.random.fork_rng(devices=_rng_devices(dev)):
                    torch.manual_seed(0)
                    m = build_fasternet_stack(op, c, layers).to(device=dev, dtype=dt)
                    x = torch.randn(batch, c, s, s, device=dev, dtype=dt)
                return m, x
            r = _measure(build, False, device=dev, count_fn=count, time_fn=timer, budget_s=budget_s,
                         warmup=warmup, min_reps=min_reps)
            rows.append({"operator": op, "shape": f"{c}x{s}x{s}", "channels": c, "spatial": s, "batch": batch,
                         "dtype": dtype, "layers": layers, **r})
            if progress is not None:
                progress(f"FasterNet {op} {c}x{s}x{s}")
    df = pd.DataFrame(rows)
    agg_rows = []
    for op in ops:
        g = df[(df["operator"] == op) & (df["status"] == "ok")]
        if g.empty:
            continue
        agg_rows.append({"operator": op, "shape": "all", "batch": batch, "dtype": dtype, "layers": layers,
                         "status": "ok", "flops": g["flops"].sum(), "macs": g["macs"].sum(),
                         "bytes": g["bytes"].sum(), "time_s": g["time_s"].sum()})
    df = pd.concat([df, pd.DataFrame(agg_rows)], ignore_index=True)
    df["intensity"] = df["flops"] / df["bytes"]
    df["achieved_flop_per_s"] = df["flops"] / df["time_s"]
    df["achieved_mac_per_s"] = df["macs"] / df["time_s"]
    paper = [FASTERNET_PAPER.get(op, {}).get("gpu_2080ti_gmac_per_s", math.nan) * 1e9 for op in df["operator"]]
    df["paper_2080ti_mac_per_s"] = paper
    df["paper_2080ti_flop_per_s"] = [2.0 * v for v in paper]
    return df


# =========================================================================== model level
def depthwise_paths(model: nn.Module) -> set[str]:
    """Module paths of depthwise convolutions: ``nn.Conv*`` with groups == in_channels > 1."""
    return {path for path, m in model.named_modules()
            if isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and m.groups == m.in_channels}


def _leaf_mask(layers: pd.DataFrame) -> pd.Series:
    """Leaf rows: the ``is_leaf`` column when present, else rows whose index path is no other
    row's prefix (``"a.b"`` is a parent of ``"a.b.c"``; the root ``""`` is everyone's parent)."""
    if "is_leaf" in layers:
        return layers["is_leaf"].astype(bool)
    paths = [str(p) for p in layers.index]
    return pd.Series([not any(q != p and (p == "" or q.startswith(p + ".")) for q in paths) for p in paths],
                     index=layers.index)


def depthwise_shares(layers: pd.DataFrame, depthwise: Iterable[str] | None = None, *,
                     flops_col: str = "flops_fwd", time_col: str = "fwd_s") -> dict[str, float]:
    """Share of FLOPs vs share of time spent in depthwise layers, over the *leaf* layers of a
    Profile-like ``layers`` frame (index = module path; columns ``type``, ``flops_col``,
    ``time_col``, and one way to tell depthwise layers):

    * ``depthwise``: the paths of depthwise layers (e.g. :func:`depthwise_paths` of the model); or
    * a boolean column ``depthwise``; or
    * ``groups`` (+ ``in_channels`` when present): depthwise iff groups > 1 (and == in_channels).

    depthwise_flop_share = sum(flops of depthwise leaves) / sum(flops of all leaves), the same
    for time. A missing time column gives NaN time shares.
    """
    leaves = layers[_leaf_mask(layers)]
    if depthwise is not None:
        paths = set(depthwise)
        mask = pd.Series([str(p) in paths for p in leaves.index], index=leaves.index)
    elif "depthwise" in leaves:
        mask = leaves["depthwise"].astype(bool)
    elif "groups" in leaves:
        g = pd.to_numeric(leaves["groups"], errors="coerce").fillna(1)
        mask = g > 1
        if "in_channels" in leaves:
            mask &= g == pd.to_numeric(leaves["in_channels"], errors="coerce")
    else:
        raise ValueError("depthwise_shares needs depthwise paths, a 'depthwise' column or a 'groups' column")
    flops = pd.to_numeric(leaves[flops_col], errors="coerce").fillna(0.0)
    out = {"depthwise_layers": int(mask.sum()), "leaf_layers": len(leaves),
           "depthwise_flops": float(flops[mask].sum()), "total_flops": float(flops.sum())}
    out["depthwise_flop_share"] = out["depthwise_flops"] / out["total_flops"] if out["total_flops"] else math.nan
    if time_col and time_col in leaves:
        t = pd.to_numeric(leaves[time_col], errors="coerce").fillna(0.0)
        out["depthwise_time_s"] = float(t[mask].sum())
        out["total_time_s"] = float(t.sum())
        out["depthwise_time_share"] = out["depthwise_time_s"] / out["total_time_s"] if out["total_time_s"] else math.nan
    else:
        out["depthwise_time_s"] = out["total_time_s"] = out["depthwise_time_share"] = math.nan
    return out


def _profile_fn() -> Callable[..., Any] | None:
    """``hwprof.profile`` when the module behind it exists in this build, else None."""
    return _public("profile")


@dataclass(frozen=True)
class CeilingsView:
    """Attribute access to :func:`normalise_ceilings`' dict (what ``hwprof.profile`` reads)."""

    flop_per_s: dict[str, float]
    bytes_per_s: float
    device_name: str = ""
    datasheet: dict[str, Any] | None = None
    source: str = "measured"

    @classmethod
    def of(cls, ceilings: Mapping[str, Any]) -> CeilingsView:
        return cls({k: v for k, v in (ceilings.get("flop_per_s") or {}).items() if v is not None},
                   float(ceilings.get("bytes_per_s") or math.nan), str(ceilings.get("device_name") or ""),
                   ceilings.get("datasheet"), str(ceilings.get("source") or "measured"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def model_comparison(*, device: torch.device | str, dtype: str = "fp32", batch: int = 1, input_size: int = 224,
                     names: Sequence[str] = ("mobilenet_v1", "mobilenet_v1_dense"), count_fn: CountFn | None = None,
                     time_fn: TimeFn | None = None, budget_s: float = 0.25, warmup: int = 3, min_reps: int = 10,
                     ceilings: Mapping[str, Any] | None = None, use_profile: bool = True) -> pd.DataFrame:
    """MobileNetV1 vs its dense twin (zoo models), forward in eval mode.

    Whole model: FLOPs from the counter, median time from ``time_fn``. Depthwise layers' share
    of FLOPs from the counter's leaf layers; their share of time from ``hwprof.profile``'s
    per-layer forward times (``fwd_s``) when it is available and ``ceilings`` are given
    (:func:`depthwise_shares` either way). A failure of the per-layer pass is recorded in
    ``profile_error``; the whole-model numbers stand.
    """
    from hwprof import zoo

    dev = torch.device(device)
    count, timer = _resolve_count(count_fn), _resolve_time(time_fn)
    dt = parse_dtype(dtype)
    prof = _profile_fn() if use_profile and ceilings is not None else None
    rows = []
    for name in names:
        with torch.random.fork_rng(devices=_rng_devices(dev)):
            torch.manual_seed(0)
            model = zoo.build(name)[0].eval().to(device=dev, dtype=dt)
            x = torch.randn(batch, 3, input_size, input_size, device=dev, dtype=dt)
        dw = depthwise_paths(model)
        row: dict[str, Any] = {"model": name, "input": f"3x{input_size}x{input_size}", "batch": batch, "dtype": dtype,
                               "depthwise_layers": len(dw)}
        try:
            c = count(model, (x,), backward=False)
            row.update(_totals_row(c, False))
            layers = getattr(c, "layers", None)
            if layers is not None and "flops_fwd" in layers:
                row["depthwise_flop_share"] = depthwise_shares(layers, dw, time_col="")["depthwise_flop_share"]

            def fwd(model: nn.Module = model, x: torch.Tensor = x) -> None:
                with torch.no_grad():
                    model(x)
            stats = timer(fwd, device=dev, budget_s=budget_s, warmup=warmup, min_reps=min_reps)
            row.update(time_s=float(stats.median_s), iqr_s=float(stats.iqr_s), reps=int(stats.reps), status="ok")
        except (RuntimeError, HwprofError, MemoryError) as e:
            row.update(status="oom" if is_oom(e) else "error", error=_first_line(e))
        if prof is not None and ceilings is not None and row.get("status") == "ok" and dw:
            try:
                p = prof(model, (x,), device=str(dev), mode="inference", ceilings=CeilingsView.of(ceilings),
                         budget_s=budget_s, name=name)
                shares = depthwise_shares(p.layers, dw, flops_col="flops_fwd", time_col="fwd_s")
                row["depthwise_time_share"] = shares["depthwise_time_share"]
                row["depthwise_flop_share_profile"] = shares["depthwise_flop_share"]
            except (ImportError, RuntimeError, HwprofError, MemoryError) as e:
                row["profile_error"] = _first_line(e)
        elif prof is not None and row.get("status") == "ok":
            row["depthwise_time_share"] = 0.0   # no depthwise layer: nothing to time
        rows.append(row)
        del model, x
        _free_memory(dev)
    df = pd.DataFrame(rows)
    for col in ("depthwise_flop_share", "depthwise_time_share", "time_s", "flops"):
        if col not in df:
            df[col] = math.nan
    df["achieved_flop_per_s"] = df["flops"] / df["time_s"]
    return df


# =========================================================================== Nsight Compute counters
NCU_METRICS: dict[str, str] = {
    "dram__bytes_read.sum": "dram_bytes_read",
    "dram__bytes_write.sum": "dram_bytes_written",
    "lts__t_bytes.sum": "l2_bytes",
    "dram__throughput.avg.pct_of_peak_sustained_elapsed": "dram_pct_of_peak",
    "sm__throughput.avg.pct_of_peak_sustained_elapsed": "sm_pct_of_peak",
    "gpu__time_duration.sum": "kernel_time_s",
}
"""ncu metric -> column. Bytes in bytes, time in seconds, throughputs in % of peak."""

NVTX_RANGE = "hwprof_point"

_UNIT_SCALE: dict[str, float] = {
    "byte": 1.0, "kbyte": 1e3, "mbyte": 1e6, "gbyte": 1e9, "tbyte": 1e12,
    "kibyte": 2.0**10, "mibyte": 2.0**20, "gibyte": 2.0**30,
    "nsecond": 1e-9, "usecond": 1e-6, "msecond": 1e-3, "second": 1.0, "ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0,
    "%": 1.0, "": 1.0,
}
_GROUPED_NUMBER = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$")


def ncu_path() -> str | None:
    """The ``ncu`` executable on PATH, or None."""
    return shutil.which("ncu")


def _number(text: str) -> float:
    """'1,234,567.5' -> 1234567.5 (thousands separators as ncu prints them); 'n/a' -> NaN."""
    t = text.strip().strip('"')
    if _GROUPED_NUMBER.match(t):
        t = t.replace(",", "")
    try:
        return float(t)
    except ValueError:
        return math.nan


def parse_ncu_csv(text: str) -> pd.DataFrame:
    """Parse ``ncu --csv --metrics ...`` output (the "details" page, one row per kernel and metric;
    header fields include "ID", "Kernel Name", "Metric Name", "Metric Unit", "Metric Value") into
    one row per kernel: ``kernel_id``, ``kernel_name`` and a column per :data:`NCU_METRICS` entry,
    converted to bytes / seconds / % by the unit column.

    Lines before the header (``==PROF==`` messages, the program's own output) and lines that do
    not parse as a row of the header's width are skipped.
    """
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith('"ID"') and '"Metric Name"' in ln), None)
    cols = ["kernel_id", "kernel_name", *NCU_METRICS.values()]
    if start is None:
        return pd.DataFrame(columns=cols)
    reader = csv.reader(lines[start:])
    header = next(reader)
    idx = {h: i for i, h in enumerate(header)}
    kernels: dict[str, dict[str, Any]] = {}
    for rec in reader:
        if len(rec) != len(header):
            continue
        metric = rec[idx["Metric Name"]]
        if metric not in NCU_METRICS:
            continue
        kid = rec[idx["ID"]]
        k = kernels.setdefault(kid, {"kernel_id": int(kid) if kid.isdigit() else kid,
                                     "kernel_name": rec[idx["Kernel Name"]] if "Kernel Name" in idx else ""})
        unit = rec[idx["Metric Unit"]].strip().lower() if "Metric Unit" in idx else ""
        k[NCU_METRICS[metric]] = _number(rec[idx["Metric Value"]]) * _UNIT_SCALE.get(unit, math.nan)
    return pd.DataFrame(list(kernels.values())).reindex(columns=cols)


def summarise_kernels(kernels: pd.DataFrame) -> dict[str, float]:
    """One point's kernels summed: bytes and time add up; DRAM/SM % of peak are averaged with
    kernel time as the weight (sum(pct_i * t_i) / sum(t_i))."""
    out: dict[str, float] = {"kernels": float(len(kernels))}
    for c in ("dram_bytes_read", "dram_bytes_written", "l2_bytes", "kernel_time_s"):
        out[c] = float(pd.to_numeric(kernels[c], errors="coerce").sum(min_count=1)) if c in kernels else math.nan
    out["dram_bytes"] = out["dram_bytes_read"] + out["dram_bytes_written"]
    t = pd.to_numeric(kernels.get("kernel_time_s", pd.Series(dtype=float)), errors="coerce")
    for c in ("dram_pct_of_peak", "sm_pct_of_peak"):
        v = pd.to_numeric(kernels.get(c, pd.Series(dtype=float)), errors="coerce")
        w = t.where(v.notna())
        out[c] = float((v * w).sum() / w.sum()) if len(v) and w.sum() > 0 else math.nan
    return out


def ncu_command(point: Point, ncu: str, device: str = "cuda") -> list[str]:
    """``ncu`` re-running this module's single-point runner, limited to the NVTX range around
    the timed call (warm-up and cuDNN's algorithm search stay outside it)."""
    return [ncu, "--csv", "--print-units", "base", "--target-processes", "all",
            "--nvtx", "--nvtx-include", f"{NVTX_RANGE}/", "--metrics", ",".join(NCU_METRICS),
            sys.executable, "-m", "hwprof.studies.depthwise", "--point", point.to_json(), "--device", device]


def run_counters(points: Sequence[Point], *, ncu: str, device: str = "cuda", timeout_s: float = 300.0,
                 runner: Callable[..., Any] = subprocess.run,
                 progress: Callable[[str], None] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run each point under ``ncu`` in a subprocess; returns (one row per point with the kernel
    sums of :func:`summarise_kernels`, one row per kernel). A failed run gives status "error"."""
    rows, kernel_rows = [], []
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for p in points:
        row: dict[str, Any] = {"name": p.name, "op": p.op, "variant": p.variant, "pass": p.pass_name}
        try:
            proc = runner(ncu_command(p, ncu, device), capture_output=True, text=True, timeout=timeout_s, env=env)
            kernels = parse_ncu_csv(proc.stdout)
            if proc.returncode != 0 or kernels.empty:
                tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or [""]
                row.update(status="error", error=f"ncu exit {proc.returncode}, {len(kernels)} kernels: {tail[0][:200]}")
            else:
                row.update(status="ok", error="", **summarise_kernels(kernels))
                kernel_rows.append(kernels.assign(name=p.name))
        except (OSError, subprocess.SubprocessError) as e:
            row.update(status="error", error=_first_line(e))
        rows.append(row)
        if progress is not None:
            progress(f"ncu {p.name}")
    kernels_df = pd.concat(kernel_rows, ignore_index=True) if kernel_rows else pd.DataFrame()
    return pd.DataFrame(rows), kernels_df


def _run_point_for_profiler(point: Point, device: str) -> None:
    """The body ncu profiles: build, warm up (outside the NVTX range), then one call inside it."""
    dev = torch.device(device)
    module, x = build_point(point, dev)
    fn = point_callable(module, x, point.backward)
    for _ in range(3):
        fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.nvtx.range_push(NVTX_RANGE)
    fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.nvtx.range_pop()


# =========================================================================== the study
@dataclass
class StudyResult:
    """What :func:`run_study` produced; ``paths`` maps an output's role to its file."""

    points: pd.DataFrame
    ceilings: dict[str, Any]
    manifest: dict[str, Any]
    summary_md: str
    paths: dict[str, Path]
    fasternet: pd.DataFrame | None = None
    models: pd.DataFrame | None = None
    counters: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    headline: pd.DataFrame | None = None


def _versions() -> dict[str, Any]:
    import hwprof

    v: dict[str, Any] = {"hwprof": hwprof.__version__, "python": platform.python_version(), "torch": torch.__version__,
                         "cuda": torch.version.cuda, "pandas": pd.__version__}
    try:
        v["cudnn"] = torch.backends.cudnn.version()
    except RuntimeError:
        v["cudnn"] = None
    try:
        import matplotlib
        v["matplotlib"] = matplotlib.__version__
    except ImportError:
        v["matplotlib"] = None
    return v


def _describe(dev: torch.device) -> dict[str, Any]:
    try:
        from hwprof.hardware.device import describe_device
        return describe_device(dev)
    except ImportError:
        return {"type": dev.type, "name": str(dev), "threads": torch.get_num_threads()}


def _resolve_device(device: str | torch.device, notes: list[str]) -> torch.device:
    from hwprof.hardware.device import resolve_device
    return resolve_device(device, notes)


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
    command: str | None = None,
    count_fn: CountFn | None = None,
    time_fn: TimeFn | None = None,
    ceilings: Any = None,
    progress: Progress | None = None,
) -> StudyResult:
    """Run the whole study and write its outputs under ``out_dir`` (each file atomically):

    ``depthwise.csv`` (one row per point, roofline columns from :func:`derive`),
    ``roofline.png/.svg`` (every ok point; marker = operator, colour = dtype/format),
    ``flops_vs_time.png/.svg``, ``fasternet.csv``, ``models.csv``, ``counters.csv`` (with ncu),
    ``summary.md`` and ``manifest.json`` (command, versions, device, date, ceilings used).

    ``ceilings``: a ``measure_ceilings`` result or dict; None measures them here (cached by
    hwprof.hardware.ceilings). ``quick`` shortens the sweep, not the ceilings: quick ceilings are
    a smoke check with small GEMMs and would understate the roofs every point is divided by; ask
    for them with ``quick_ceilings=True``. ``count_fn`` / ``time_fn`` default to hwprof's own.
    ``use_profile``: per-layer time shares of MobileNetV1 through ``hwprof.profile``.
    ``progress(done, total, label)`` is called after every measurement.
    """
    t_start = _dt.datetime.now(_dt.timezone.utc)
    load_start = _load_average()
    out = Path(out_dir)
    notes: list[str] = []
    dev = _resolve_device(device, notes)
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
        ceilings = measure_ceilings(dev, quick=quick_ceilings)
    ceil = normalise_ceilings(ceilings)
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
            notes.append("--counters: ncu (Nsight Compute) is not on PATH; counters skipped")
        elif dev.type != "cuda":
            notes.append("--counters: Nsight Compute needs a CUDA device; counters skipped")
        else:
            shape = headline_shape(df)
            if shape is not None:
                c, s, n = shape
                cpoints = [Point(op, c, s, n, dt, cl, False) for dt in cfg.dtypes for cl in cfg.channels_last
                           for op in cfg.ops if operator_supported(op, c)]
                counters_df, kernels_df = run_counters(cpoints, ncu=ncu, device=str(dev),
                                                       progress=lambda label: step(label, grow=1))
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
                                           title=f"FLOPs vs time — {ceil.get('device_name') or dev.type}",
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
        "versions": _versions(),
        "device": _describe(dev),
        "ceilings": ceil,
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


# =========================================================================== single-point runner (for ncu)
def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m hwprof.studies.depthwise --point JSON --device cuda``: run one point once
    inside an NVTX range, for Nsight Compute. Prints nothing."""
    p = argparse.ArgumentParser(prog="python -m hwprof.studies.depthwise")
    p.add_argument("--point", required=True, help="a Point as JSON")
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    _run_point_for_profiler(Point.from_json(args.point), args.device)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main())
