"""The operator sweep: the grid of points (operator x shape x batch x dtype x format x pass),
measuring each point, and retrying at half the batch after running out of memory."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn

from hwprof.spec import parse_dtype
from hwprof.studies.depthwise.measure import (
    CountFn,
    Progress,
    TimeFn,
    _measure,
    _resolve_count,
    _resolve_time,
    _rng_devices,
)
from hwprof.studies.depthwise.operators import OPERATORS, build_operator, operator_supported
from hwprof.studies.depthwise.plan import QUICK_TIME_BUDGET_S

MOBILENET_SHAPES: tuple[tuple[int, int], ...] = ((32, 112), (64, 112), (128, 56), (256, 28), (512, 14), (1024, 7))
"""(C, H=W) of MobileNetV1's stages at 224x224 input (seed 000's _CONV_DEFS)."""
REFERENCE_SHAPE: tuple[int, int] = (256, 56)
"""The shape of the H100 reference figures (docs/REFERENCES.md) (N64 C256 56x56)."""


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
    down to 1: "batch 64 or the largest that fits". ``time_budget_s``: seconds of measurement
    for the whole study (None: no limit; see :mod:`.plan`): points not started by then are
    recorded with status "skipped".
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
    time_budget_s: float | None = None


def default_config(dtypes: Sequence[str] = ("fp32", "bf16"), channels_last: Sequence[bool] = (False, True),
                   **overrides: Any) -> SweepConfig:
    """The full grid: MobileNetV1's stage shapes + the reference shape, batch 1 and 64."""
    return SweepConfig(dtypes=tuple(dtypes), channels_last=tuple(channels_last), **overrides)


def quick_config(dtypes: Sequence[str] = ("fp32", "bf16"), channels_last: Sequence[bool] = (False, True),
                 **overrides: Any) -> SweepConfig:
    """``--quick``: the reference shape C=256 56x56 at batch 1, short timing budgets (all 9
    operators x dtypes x formats x 2 passes) and at most :data:`.plan.QUICK_TIME_BUDGET_S` seconds
    of measurement in all (``time_budget_s``): under a minute on a 2-core CPU."""
    base: dict[str, Any] = dict(shapes=(REFERENCE_SHAPE,), batches=(1,), budget_s=0.1, warmup=2, min_reps=5,
                                time_budget_s=QUICK_TIME_BUDGET_S)
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
              oom_fallback: bool = True, progress: Progress | None = None,
              stop: Callable[[], bool] | None = None) -> pd.DataFrame:
    """Measure every point; one row per attempt (an OOM retried at half the batch leaves its
    "oom" row and adds the retry's). The sweep always completes: once ``stop()`` is true (the
    study's time budget is spent) the points left are recorded with status "skipped" and not
    measured. ``progress(done, total, name)`` is called after each attempt (``total`` grows
    when a retry is queued)."""
    count = _resolve_count(count_fn)
    timer = _resolve_time(time_fn)
    queue: list[tuple[Point, int]] = [(p, p.batch) for p in points]
    rows = []
    i = 0
    while i < len(queue):
        p, requested = queue[i]
        i += 1
        if stop is not None and stop():
            row = {**p.identity(), "status": "skipped", "error": SKIPPED_BUDGET}
        else:
            row = measure_point(p, device=device, count_fn=count, time_fn=timer, budget_s=budget_s,
                                warmup=warmup, min_reps=min_reps)
        row["batch_requested"] = requested
        rows.append(row)
        if row["status"] == "oom" and oom_fallback and p.batch > 1:
            queue.insert(i, (p.with_batch(p.batch // 2), requested))
        if progress is not None:
            progress(i, len(queue), p.name)
    return pd.DataFrame(rows).reindex(columns=list(POINT_COLUMNS))


SKIPPED_BUDGET = "not measured: the study's time budget was spent"
