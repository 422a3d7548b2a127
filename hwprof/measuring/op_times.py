"""Per-aten-op times from ``torch.profiler``, in the order the ops were dispatched.

The profiler records every aten call as a tree (``aten::conv2d`` > ``aten::convolution`` >
``aten::_convolution`` > ``aten::mkldnn_convolution`` ...). hwprof's counter sees the ops a
``TorchDispatchMode`` sees: CompositeImplicitAutograd ops (``conv2d``, ``linear``,
``batch_norm``...) are already decomposed there, and an op's internal calls are hidden. So the
tree is walked from the top, descending *through* CompositeImplicitAutograd ops and stopping at
the first op that has a kernel of its own: that op is what the counter counted. Views and
metadata ops (no kernel) are left out, as in the counter's op table. Ops under an
``autograd::engine::evaluate_function`` event are backward (``bwd``), ops under an ``Optimizer.step#``
event an optimizer's (``opt``).

Time of an op: on CUDA the summed time of the kernels it launched (``device_time_total``), on
CPU its wall time including its children (``cpu_time_total``), which includes the profiler's
own per-op overhead (a few microseconds; it matters only for tiny ops).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd
import torch

from hwprof.counting import is_view

__all__ = ["dispatched_ops", "profile_ops", "is_composite_implicit"]

_BACKWARD_MARK = "autograd::engine::evaluate_function"
_OPTIMIZER_MARK = "Optimizer.step#"       # torch.optim's record_function around every step(): phase "opt"
_composite_cache: dict[str, bool] = {}


def is_composite_implicit(name: str) -> bool:
    """True for an op decomposed above the dispatcher's backends (``aten::linear``, ``aten::conv2d``):
    a CompositeImplicitAutograd kernel and no CPU, CUDA or CompositeExplicit kernel of its own."""
    if name not in _composite_cache:
        # profiler names carry no overload: judge by the default overload when there is one
        # (most calls), else by any overload ("aten::flatten", "aten::to" have no default)
        packet = getattr(torch.ops.aten, name.removeprefix("aten::"), None)
        key = torch._C.DispatchKey.CompositeImplicitAutograd
        names = [] if packet is None else (["default"] if "default" in packet.overloads() else packet.overloads())
        overloads = [getattr(packet, o) for o in names]
        backends = [getattr(torch._C.DispatchKey, k) for k in ("CPU", "CUDA", "CompositeExplicitAutograd")]
        _composite_cache[name] = any(
            _has_kernel(op, key) and not any(_has_kernel(op, b) for b in backends) for op in overloads)
    return _composite_cache[name]


def _has_kernel(op: Any, key: Any) -> bool:
    try:
        return bool(op.has_kernel_for_dispatch_key(key))
    except RuntimeError:  # an overload known to TorchScript only (e.g. aten::sum.int)
        return False


def dispatched_ops(roots: Iterable[Any], use_device_time: bool) -> list[tuple[str, str, float]]:
    """(phase, "aten.op", time_s) for every op the counter would see, in start order.

    ``roots``: profiler events without a CPU parent (``FunctionEvent`` or anything with ``name``,
    ``cpu_children``, ``cpu_time_total``, ``device_time_total``, ``time_range.start``)."""
    out: list[tuple[str, str, float]] = []

    def time_s(e: Any) -> float:
        us = getattr(e, "device_time_total", 0) if use_device_time else e.cpu_time_total
        return float(us) * 1e-6

    def walk(e: Any, phase: str) -> None:
        name = e.name
        if name.startswith(_BACKWARD_MARK):
            phase = "bwd"
        elif name.startswith(_OPTIMIZER_MARK):
            phase = "opt"
        if name.startswith("aten::") and not is_composite_implicit(name):
            if not is_view(name):
                out.append((phase, "aten." + name.removeprefix("aten::"), time_s(e)))
            return
        for child in sorted(e.cpu_children, key=lambda c: c.time_range.start):
            walk(child, phase)

    for root in sorted(roots, key=lambda r: r.time_range.start):
        walk(root, "fwd")
    return out


def profile_ops(run_once: Callable[[], None], device: torch.device, reps: int = 3) -> pd.DataFrame:
    """Run ``run_once`` (one forward, or forward + backward) once to warm up, then ``reps`` times
    under ``torch.profiler``; the median time of each op position over the repetitions.

    Returns a DataFrame with columns phase, op, time_s (one row per dispatched op, in order)."""
    from torch.profiler import ProfilerActivity

    from hwprof.measuring.sessions import quiet_profile

    activities = [ProfilerActivity.CPU]
    cuda = device.type == "cuda"
    if cuda:
        activities.append(ProfilerActivity.CUDA)
    run_once()
    runs: list[list[tuple[str, str, float]]] = []
    for _ in range(max(1, reps)):
        with quiet_profile(activities=activities) as prof:
            run_once()
            if cuda:
                torch.cuda.synchronize(device)
        events = prof.events()
        runs.append(dispatched_ops([e for e in events if e.cpu_parent is None], use_device_time=cuda))
    first = runs[0]
    same = [r for r in runs if [(p, o) for p, o, _ in r] == [(p, o) for p, o, _ in first]]
    rows = [{"phase": p, "op": o, "time_s": statistics.median(r[i][2] for r in same)}
            for i, (p, o, _) in enumerate(first)]
    return pd.DataFrame(rows, columns=["phase", "op", "time_s"])
