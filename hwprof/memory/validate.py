"""Check the predictors against a real step: ``hwprof.measuring.runner.measure``'s memory probes.

What is compared (``error_pct = 100 * (predicted - measured) / measured``):

* **CUDA**: every predictor's ``peak_predicted_bytes`` against ``alloc_peak_bytes``
  (``torch.cuda.max_memory_allocated`` over the run, which counts everything live: parameters,
  inputs, optimizer state...); the simulated ``reserved_predicted_bytes`` against
  ``reserved_peak_bytes``. NVML's ``used`` peak minus its pre-run baseline is reported beside
  them, and ``cuda_context_bytes = nvml_process_bytes - reserved_peak_bytes``: this process's
  device memory as NVML lists it at the end of the run (the allocator keeps its segments)
  minus what the caching allocator reserved, i.e. the CUDA context, loaded kernels and library
  handles (None where NVML does not list the process, e.g. in some containers). With the
  allocator trace (``measure``'s ``alloc_trace``), ``tensor_error_pct`` compares with the peak
  without in-op workspaces (cuDNN's convolution workspaces among them), as on the CPU.
* **CPU**: every predictor's ``peak_predicted_bytes`` against ``alloc_trace_peak_bytes``, the
  peak of bytes held by live CPU tensors from torch's CPU allocator events
  (:mod:`hwprof.measuring.alloc_trace`; parameters, buffers and inputs included, like
  ``max_memory_allocated``), and ``tensor_error_pct`` against the same peak with every op's
  in-op workspace left out (``alloc_trace_peak_without_workspace_bytes``: what a replay of op
  outputs can predict; the gap between the two is oneDNN's and other kernels' scratch
  memory). The resident-set growth is reported beside it
  (``rss_error_pct``): ``measure`` takes the RSS baseline after the model and the inputs
  exist, so each predictor's peak minus (params + buffers + inputs) is compared with the RSS
  peak minus its baseline. RSS also holds whatever the C allocator keeps and torch's own
  one-time allocations, so it is a coarse check; where no allocator pass ran (``measure``
  without ``alloc_trace``) it is the only one.

``measure`` is imported lazily (``hwprof.measuring.runner``); tests pass a fake one as ``measure_fn``.
An out-of-memory run (``MeasurementError`` with ``oom=True``) is recorded, not raised.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

from hwprof.device import free_device_memory
from hwprof.errors import MeasurementError
from hwprof.memory.estimate import MemoryEstimate, estimate_memory
from hwprof.spec import Inputs, TensorSpec, as_inputs, parse_dtype

__all__ = ["Validation", "validate", "run_measure", "error_pct", "real_inputs", "load_measure",
           "MEASURED_KEYS"]

logger = logging.getLogger(__name__)

MEASURED_KEYS = ("alloc_peak_bytes", "reserved_peak_bytes", "nvml_used_peak_bytes", "nvml_baseline_bytes",
                 "rss_peak_bytes", "rss_baseline_bytes", "alloc_trace_peak_bytes")

MeasureFn = Callable[..., Any]


def load_measure() -> MeasureFn:
    """``hwprof.measuring.runner.measure``, imported on first use."""
    from hwprof.measuring.runner import measure
    return measure


def error_pct(predicted: int | None, measured: int | None) -> float | None:
    """``100 * (predicted - measured) / measured``; None when either is missing or measured <= 0."""
    if predicted is None or measured is None or measured <= 0:
        return None
    if isinstance(predicted, float) and math.isnan(predicted):
        return None
    return 100.0 * (float(predicted) - float(measured)) / float(measured)


def real_inputs(inputs: Any, batch: int | None) -> Any:
    """What to hand to ``measure``: a spec string as is (it builds the batch on the device);
    tensors re-made with dimension 0 = ``batch`` (random floats, zero integers) when it differs."""
    if isinstance(inputs, str):
        return inputs
    if isinstance(inputs, Mapping) and any(isinstance(v, (str, TensorSpec)) for v in inputs.values()):
        items = Inputs((), dict(inputs))   # specs stay specs: measure builds them (token ids in the vocabulary)
    else:
        items = as_inputs(inputs)
    if batch is None:
        return items

    def rebatch(x: Any) -> Any:
        if isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] != batch:
            shape = (batch, *x.shape[1:])
            x = torch.randn(shape, dtype=x.dtype) if x.is_floating_point() else torch.zeros(shape, dtype=x.dtype)
        return x

    return Inputs(tuple(rebatch(v) for v in items.args), {k: rebatch(v) for k, v in items.kwargs.items()})


def run_measure(model: nn.Module, inputs: Any, *, device: str, mode: str, optimizer: str | None,
                batch: int | None, dtype: torch.dtype | str = torch.float32, budget_s: float = 0.5,
                measure_fn: MeasureFn | None = None, amp: torch.dtype | None = None) -> dict[str, Any]:
    """One real run; returns ``m.memory`` plus ``oom`` (bool) and ``error`` (str | None). With ``amp`` (an
    autocast dtype) the run autocasts its forward and keeps the parameters in ``dtype``, as the
    prediction assumes.

    Only the keyword arguments ``measure_fn`` accepts are passed (few repetitions: memory
    peaks need no statistics). On CUDA the caching allocator's free blocks and torch's cuBLAS
    workspaces are released first, so an earlier run's workspaces do not count in this one.
    """
    fn = measure_fn or load_measure()
    kwargs: dict[str, Any] = {"device": device, "mode": mode, "optimizer": optimizer if mode == "train" else None,
                              "budget_s": budget_s}
    extra = {"batch": batch, "dtype": parse_dtype(dtype), "per_layer": False, "warmup": 1, "min_reps": 2,
             "max_reps": 3, **({"amp": amp} if amp is not None else {})}
    try:
        params = inspect.signature(fn).parameters
        accepts_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        kwargs.update({k: v for k, v in extra.items() if accepts_all or k in params})
    except (TypeError, ValueError):
        pass
    if device == "cuda":
        # start from an empty cache and no cuBLAS workspaces, as the simulated step does
        free_device_memory(torch.device("cuda"), cublas_workspaces=True)
    try:
        m = fn(model, real_inputs(inputs, batch), **kwargs)
    except MeasurementError as e:
        if not e.oom:
            raise
        logger.info("out of memory at batch %s: %s", batch, e)
        return {**{k: None for k in MEASURED_KEYS}, "oom": True, "error": str(e),
                "allocated_bytes_at_oom": e.allocated_bytes, "reserved_bytes_at_oom": e.reserved_bytes}
    mem: dict[str, Any] = dict(getattr(m, "memory", None) or {})
    return {**{k: mem.get(k) for k in MEASURED_KEYS}, **mem, "oom": False, "error": None}


@dataclass
class Validation:
    """Predicted vs measured. ``table``: index = predictor; ``measured``: the run's memory dict
    plus derived values (bytes); ``compared``: which measured quantity the peaks were compared to."""

    device: str
    table: pd.DataFrame
    measured: dict[str, Any]
    compared: str
    oom: bool = False
    notes: list[str] = field(default_factory=list)


def _sub(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else int(a) - int(b)


def derived(measured: dict[str, Any]) -> dict[str, int | None]:
    """NVML used minus baseline, the CUDA context estimate, RSS peak minus baseline (see module docstring)."""
    nvml_delta = _sub(measured.get("nvml_used_peak_bytes"), measured.get("nvml_baseline_bytes"))
    return {"nvml_used_minus_baseline_bytes": nvml_delta,
            "cuda_context_bytes": _sub(measured.get("nvml_process_bytes"), measured.get("reserved_peak_bytes")),
            "rss_peak_minus_baseline_bytes": _sub(measured.get("rss_peak_bytes"), measured.get("rss_baseline_bytes"))}


def compare(estimate: MemoryEstimate, measured: dict[str, Any], device: str) -> Validation:
    """Build the predicted-vs-measured table for ``estimate`` and a run's ``measured`` memory."""
    extra = derived(measured)
    measured = {**measured, **extra}
    preds = estimate.predictors
    rows = []
    notes: list[str] = []
    if device == "cuda":
        compared = "alloc_peak_bytes"
        target = measured.get("alloc_peak_bytes")
        for name, r in preds.iterrows():
            pred = _int(r["peak_predicted_bytes"])
            res = _int(r["reserved_predicted_bytes"])
            rows.append({"predictor": name, "predicted_peak_bytes": pred, "measured_alloc_peak_bytes": target,
                         "error_pct": error_pct(pred, target), "predicted_reserved_bytes": res,
                         "measured_reserved_peak_bytes": measured.get("reserved_peak_bytes"),
                         "reserved_error_pct": error_pct(res, measured.get("reserved_peak_bytes")),
                         "nvml_used_minus_baseline_bytes": extra["nvml_used_minus_baseline_bytes"],
                         "measured_tensor_peak_bytes": measured.get("alloc_trace_peak_without_workspace_bytes"),
                         "tensor_error_pct": error_pct(pred, measured.get("alloc_trace_peak_without_workspace_bytes"))})
    else:
        traced = measured.get("alloc_trace_peak_bytes")
        rss_delta = extra["rss_peak_minus_baseline_bytes"]
        compared = "alloc_trace_peak_bytes" if traced is not None else "rss_peak_minus_baseline_bytes"
        c = estimate.components
        before = sum(int(c.get(k) or 0) for k in ("params", "buffers", "inputs"))
        if traced is not None:
            notes.append("CPU: predicted peak vs alloc_trace_peak_bytes (live CPU tensor bytes from torch's allocator "
                         "events); rss_error_pct: predicted peak minus params + buffers + inputs vs RSS growth")
        else:
            notes.append(f"CPU: predicted peak minus params + buffers + inputs ({before} B, allocated before the "
                         "RSS baseline) vs RSS peak minus baseline")
        for name, r in preds.iterrows():
            pred = _int(r["peak_predicted_bytes"])
            pred_delta = None if pred is None else pred - before
            row = {"predictor": name, "predicted_peak_bytes": pred}
            if traced is not None:
                tensors = measured.get("alloc_trace_peak_without_workspace_bytes")
                row.update({"measured_alloc_trace_peak_bytes": traced, "error_pct": error_pct(pred, traced),
                            "measured_tensor_peak_bytes": tensors, "tensor_error_pct": error_pct(pred, tensors)})
            row.update({"predicted_delta_bytes": pred_delta, "measured_rss_delta_bytes": rss_delta,
                        "rss_error_pct": error_pct(pred_delta, rss_delta)})
            if traced is None:
                row["error_pct"] = row["rss_error_pct"]
            rows.append(row)
    table = pd.DataFrame(rows).set_index("predictor")
    return Validation(device, table, measured, compared, bool(measured.get("oom")), notes)


def _int(v: Any) -> int | None:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    return int(v)


def validate(model: nn.Module, inputs: Any, *, device: str = "cpu", mode: str = "train",
             optimizer: str | None = None, dtype: torch.dtype | str = torch.float32, amp: bool | str = False,
             batch: int | None = None, estimate: MemoryEstimate | None = None, budget_s: float = 0.5,
             measure_fn: MeasureFn | None = None) -> Validation:
    """Predict (unless ``estimate`` is given) and measure one configuration; compare them.

    ``model`` must hold real tensors (``measure`` cannot run a meta model); it is not modified. ``amp``
    (True: autocast to ``dtype``, parameters kept fp32; or the autocast dtype, "bf16" / "fp16"): the
    measured step autocasts as the predicted one does, with the parameters in fp32.
    """
    param_dtype, amp_dtype = amp_dtypes(dtype, amp)
    est = estimate or estimate_memory(model, inputs, mode=mode, optimizer=optimizer, dtype=amp_dtype or param_dtype,
                                      amp=amp_dtype is not None, batch=batch, device=device)
    measured = run_measure(model, inputs, device=device, mode=mode, optimizer=optimizer, batch=batch,
                           dtype=param_dtype, budget_s=budget_s, measure_fn=measure_fn, amp=amp_dtype)
    v = compare(est, measured, device)
    if v.oom:
        v.notes.append(f"out of memory: {measured.get('error')}")
    return v


def amp_dtypes(dtype: torch.dtype | str, amp: bool | str | torch.dtype | None) -> tuple[torch.dtype, torch.dtype | None]:
    """(parameter dtype, autocast dtype) of a memory configuration: without ``amp`` (dtype, None); with
    ``amp=True`` the autocast dtype is ``dtype`` (fp16 when that is fp32) and the parameters fp32; with
    ``amp="bf16" | "fp16"`` that dtype, the parameters fp32 unless ``dtype`` says otherwise."""
    from hwprof.amp import parse_amp

    d = parse_dtype(dtype)
    if amp is None or amp is False:
        return d, None
    if amp is True:
        return torch.float32, (torch.float16 if d == torch.float32 else d)
    return (d if d not in (torch.bfloat16, torch.float16) else torch.float32), parse_amp(amp)
