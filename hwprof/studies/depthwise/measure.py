"""One measurement: what is timed, counting then timing it (hwprof's counter and timer unless
others are passed), and turning a failure (out of memory or otherwise) into a status row."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from hwprof.device import free_device_memory
from hwprof.errors import HwprofError, is_oom

log = logging.getLogger("hwprof.studies.depthwise")   # the study's logger, one name for all its modules

CountFn = Callable[..., Any]
TimeFn = Callable[..., Any]
Progress = Callable[[int, int, str], None]


def _rng_devices(device: torch.device) -> list[int]:
    return [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []



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


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"[:300]


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
        failure = ("oom" if is_oom(e) else "error", _first_line(e))
    finally:
        del module, x, fn
    if failure is not None:   # outside the except block, so the traceback's frames are gone
        free_device_memory(device)
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
