"""``measure()``: timed phases of a model (forward, backward, optimizer step), per-layer times, memory peaks.

Order of a run::

    resolve device; copy the model only if device/dtype/memory format must change
    snapshot the model's state (in-place runs), start memory probes
    untimed first forward           -> a failure names the innermost module (InputShapeError)
    phases, each with time_fn       -> fwd_nograd (inference) | fwd, bwd, step (train)
    per-layer pass (per_layer=True) -> global hooks, a separate run after the whole-model timing
    stop probes, restore state, restore thread count

Phase ``bwd`` times ``loss.backward()`` alone (its forward runs in the untimed setup); phase
``step`` times ``optimizer.step()`` alone (forward + backward in the setup). Gradients are set
to None before every repetition. ``budget_s`` is per phase (and for the per-layer pass).
Out of memory anywhere raises :class:`~hwprof.errors.MeasurementError` (``oom=True``) after
the run's tensors are dropped and the CUDA cache is emptied, so a caller can try the next
configuration.
"""

from __future__ import annotations

import contextlib
import copy
import math
import statistics
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn

from hwprof.device import MathModes, describe_device, free_device_memory, resolve_device, same_device
from hwprof.errors import InputShapeError, MeasurementError, is_oom
from hwprof.measuring.alloc_trace import AllocTrace, alloc_trace_peak, storage_bytes
from hwprof.measuring.op_times import profile_ops
from hwprof.measuring.probes import MemoryProbes, cuda_current
from hwprof.measuring.records import (
    LAYER_COLUMNS,
    PHASE_COLUMNS,
    PHASES,
    MeasureConfig,
    Measurement,
    RunInfo,
)
from hwprof.measuring.state import preserved_state
from hwprof.measuring.timers import Clock, LayerTimer, PerfCounterClock, TimingStats, l2_flush_bytes, time_fn
from hwprof.modules import Frame, ModuleCalls
from hwprof.placement import model_float_dtype, model_placement
from hwprof.spec import as_input_tuple, parse_dtype
from hwprof.training import OPTIMIZERS, make_optimizer, training_loss

__all__ = ["measure", "Measurement", "MeasureConfig", "PHASES", "LAYER_COLUMNS", "is_oom", "make_optimizer"]



def default_loss(output: Any) -> torch.Tensor:
    """:func:`hwprof.training.training_loss`; an output without a floating tensor requiring grad is an error."""
    loss = training_loss(output)
    if loss is None:
        raise ValueError("the model's output has no floating tensor that requires grad; pass loss_fn=")
    return loss


# --------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _num_threads(threads: int | None) -> Iterator[int]:
    """Set torch's intra-op threads for the block; the previous count is restored in ``finally``."""
    prev = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(int(threads))
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(prev)


class _Innermost(ModuleCalls):
    """Global forward hooks that remember which of ``model``'s modules an exception left first
    (``always_call`` post-hooks, which also run for a raising forward)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model, always_call=True)
        self.failures: dict[int, tuple[str, str, list[Any]]] = {}

    def on_exit(self, frame: Frame, args: tuple[Any, ...], output: Any) -> None:
        exc = sys.exc_info()[1]   # set only while _call_impl runs always_call hooks for a raising forward
        if exc is None or id(exc) in self.failures:
            return
        self.failures[id(exc)] = (frame.path, type(frame.module).__name__, _shapes(args))

    def locate(self, exc: BaseException, model: nn.Module, inputs: tuple[Any, ...]) -> tuple[str, str, list[Any]]:
        e: BaseException | None = exc
        while e is not None:
            if id(e) in self.failures:
                return self.failures[id(e)]
            e = e.__cause__ or e.__context__
        return "", type(model).__name__, _shapes(inputs)


def _shapes(values: Any) -> list[Any]:
    from torch.utils._pytree import tree_flatten
    return [tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__ for v in tree_flatten(values)[0]]


def _prepare_inputs(inputs: Any, batch: int | None, dtype: torch.dtype, dev: torch.device,
                    channels_last: bool) -> tuple[Any, ...]:
    """Spec strings are built on ``dev``; user tensors are copied there (floats cast to ``dtype``), never modified."""
    if isinstance(inputs, str):
        xs = as_input_tuple(inputs, batch=batch, dtype=dtype, device=dev)
    else:
        xs = tuple(_copy_input(v, dtype, dev) for v in as_input_tuple(inputs, batch=batch, dtype=dtype, device=dev))
    if channels_last:
        xs = tuple(v.contiguous(memory_format=torch.channels_last)
                   if isinstance(v, torch.Tensor) and v.dim() == 4 and v.is_floating_point() else v for v in xs)
    return xs


def _copy_input(v: Any, dtype: torch.dtype, dev: torch.device) -> Any:
    if not isinstance(v, torch.Tensor):
        return v
    out = v.detach().to(dev, dtype=dtype if v.is_floating_point() else v.dtype, copy=True)
    if v.requires_grad and out.is_floating_point():
        out.requires_grad_(True)
    return out


def _batch_of(inputs: tuple[Any, ...], batch: int | None) -> int | None:
    if batch is not None:
        return batch
    for v in inputs:
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            return int(v.shape[0])
    return None


def _median(values: list[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return statistics.median(vals) if vals else math.nan


@dataclass
class _Oom:
    phase: str
    batch: int | None
    message: str
    allocated: int | None
    reserved: int | None


@dataclass
class _Config:
    dev: torch.device
    mode: str
    optimizer: Any
    per_layer: bool
    depth: int | None
    per_op: bool
    batch: int | None
    dtype: torch.dtype | None
    channels_last: bool
    budget_s: float
    warmup: int
    l2_flush: bool
    nvml_interval_s: float
    clock: Clock
    loss_fn: Callable[[Any], torch.Tensor]
    min_reps: int
    max_reps: int
    target_iqr: float
    layer_reps: int | None
    alloc_trace: bool = True


def _use_nvml(dev: torch.device) -> bool:
    """NVML is queried for CUDA runs only (a CPU run has no GPU memory to report)."""
    return dev.type == "cuda"


# --------------------------------------------------------------------------- measure
def measure(
    model: nn.Module,
    inputs: Any,
    *,
    device: str | torch.device = "auto",
    mode: str = "inference",
    optimizer: Any = None,
    per_layer: bool = False,
    depth: int | None = None,
    batch: int | None = None,
    dtype: str | torch.dtype | None = None,
    channels_last: bool = False,
    budget_s: float = 1.0,
    warmup: int = 3,
    l2_flush: bool = False,
    threads: int | None = None,
    nvml_interval_s: float = 0.005,
    clock: Clock | None = None,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    min_reps: int = 10,
    max_reps: int = 1000,
    target_iqr: float = 0.02,
    layer_reps: int | None = None,
    per_op: bool = False,
    alloc_trace: bool = True,
) -> Measurement:
    """Time ``model`` on ``inputs`` and probe its memory; the model is left exactly as it was.

    ``inputs``: a tensor, a tuple of tensors, or a spec string like ``"3x224x224"`` (batch
    default 1). ``mode="inference"`` times ``fwd_nograd`` in eval mode; ``mode="train"`` times
    ``fwd`` (grad enabled), ``bwd`` (``loss_fn(output).backward()``; default loss = sum of the
    floating outputs) and, with an ``optimizer``, ``step``, in train mode. ``per_layer=True``
    adds a separate hooked pass giving every module's self and inclusive times (``depth``
    limits it). ``threads`` sets torch's intra-op threads for the run. ``layer_reps`` fixes
    the number of per-layer repetitions (default: by budget, 3 to 100). ``per_op=True`` adds a
    ``torch.profiler`` pass giving each dispatched aten op's time (:mod:`hwprof.measuring.op_times`).
    ``alloc_trace=True`` adds one untimed pass (two iterations, a fresh optimizer) under
    ``torch.profiler(profile_memory=True)`` whose allocator events give
    ``memory["alloc_trace_peak_bytes"]`` (peak bytes of live tensors, parameters and inputs
    included: on the CPU the analogue of ``max_memory_allocated``), the op running at the peak,
    and the peak without the ops' in-op workspaces (:mod:`hwprof.measuring.alloc_trace`).
    Raises ``DeviceUnavailableError``, ``InputShapeError`` (first forward failed), ``MeasurementError``.
    """
    requested = MeasureConfig(
        device=str(device), mode=mode, optimizer=optimizer, per_layer=per_layer, depth=depth,  # type: ignore[arg-type]
        per_op=per_op, batch=batch, dtype=None if dtype is None else str(dtype).removeprefix("torch."),
        channels_last=channels_last, budget_s=budget_s, warmup=warmup, l2_flush=l2_flush, threads=threads,
        nvml_interval_s=nvml_interval_s, min_reps=min_reps, max_reps=max_reps, target_iqr=target_iqr,
        layer_reps=layer_reps, alloc_trace=alloc_trace)
    notes: list[str] = []
    dev = resolve_device(device, notes)
    cfg = _Config(dev=dev, mode=mode, optimizer=optimizer, per_layer=per_layer, depth=depth, per_op=per_op,
                  batch=batch,
                  dtype=parse_dtype(dtype) if dtype is not None else None, channels_last=channels_last,
                  budget_s=budget_s, warmup=warmup, l2_flush=l2_flush, nvml_interval_s=nvml_interval_s,
                  clock=clock or PerfCounterClock(), loss_fn=loss_fn or default_loss, min_reps=min_reps,
                  max_reps=max_reps, target_iqr=target_iqr, layer_reps=layer_reps, alloc_trace=alloc_trace)
    if isinstance(optimizer, str) and optimizer.strip().lower() not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {OPTIMIZERS} or an Optimizer class")
    cuda = dev.type == "cuda"
    with (_num_threads(threads),
          torch.random.fork_rng(devices=[dev.index] if cuda else []),   # dropout / random inputs draw from it
          torch.cuda.device(dev) if cuda else contextlib.nullcontext()):   # events and hooks on the right device
        outcome = _run(model, inputs, cfg, requested, notes)
    if isinstance(outcome, _Oom):
        free_device_memory(dev)
        raise MeasurementError(outcome.phase, outcome.batch, outcome.message, outcome.allocated,
                               outcome.reserved, oom=True)
    return outcome


def _run(model: nn.Module, inputs: Any, cfg: _Config, requested: MeasureConfig,
         notes: list[str]) -> Measurement | _Oom:
    """Everything that holds tensors lives in this frame, so an OOM can drop them all before raising."""
    math_modes = MathModes.current(cfg.dev.type)
    progress = {"phase": "setup"}
    batch = cfg.batch
    # probes start first: their baselines precede the model copy / input creation on the device
    probes = MemoryProbes(cfg.dev, cfg.nvml_interval_s, use_nvml=_use_nvml(cfg.dev))
    try:
        with probes:
            work, copied = _work_model(model, cfg, notes)
            run_dtype = cfg.dtype or model_float_dtype(work)
            xs = _prepare_inputs(inputs, cfg.batch, run_dtype, cfg.dev, cfg.channels_last)
            batch = _batch_of(xs, cfg.batch)
            input_shapes = _shapes(xs)
            with contextlib.nullcontext() if copied else preserved_state(work):
                if copied:
                    for p in work.parameters():
                        p.grad = None
                timings, layers, layer_sum, ops, threads = _timed(work, xs, cfg, probes, notes, progress)
            del work, xs
        notes.extend(probes.notes)
    except Exception as e:
        if not is_oom(e):
            raise
        alloc, reserved = cuda_current(cfg.dev)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return _Oom(progress["phase"], batch, first, alloc, reserved)
    memory = probes.result()
    if cfg.dev.type != "cuda":
        notes.append("CPU run: the CUDA allocator and NVML fields are None; rss_* is this process's resident memory "
                     "(torch itself included), ru_maxrss_bytes its lifetime peak")
    device_info = {**describe_device(cfg.dev), **probes.nvml_info, "threads": threads}
    phases = pd.DataFrame([{"phase": k, **v.summary()} for k, v in timings.items()],
                          columns=["phase", *PHASE_COLUMNS]).set_index("phase")
    run = RunInfo(model=type(model).__name__, device=str(cfg.dev), dtype=str(run_dtype).removeprefix("torch."),
                  batch=batch, input_shapes=tuple(input_shapes), measured_copy=copied, threads=threads)
    return Measurement(config=requested, run=run, phases=phases, timings=timings, memory=memory,
                       device=device_info, math_modes=math_modes, layers=layers, layer_sum=layer_sum,
                       notes=notes, ops=ops)


def _work_model(model: nn.Module, cfg: _Config, notes: list[str]) -> tuple[nn.Module, bool]:
    """The model itself when it already sits on the target device/dtype/format, else a moved deep copy."""
    where = model_placement(model)
    dev0 = where["device"]
    if dev0 is not None and dev0.type == "meta":
        raise MeasurementError("setup", cfg.batch, "the model's tensors are on the meta device (no data); "
                               "build it on cpu or cuda to measure it")
    reasons = []
    if dev0 is not None and (where["multi_device"] or not same_device(dev0, cfg.dev)):
        reasons.append(f"device {dev0} -> {cfg.dev}")
    if cfg.dtype is not None and any(d != str(cfg.dtype) for d in where["dtypes"]):
        reasons.append(f"dtype {','.join(where['dtypes'])} -> {cfg.dtype}")
    if cfg.channels_last and where["channels_last"] is False:
        reasons.append("memory format -> channels_last")
    if not reasons:
        return model, False
    work = copy.deepcopy(model)
    if cfg.dtype is not None:
        work.to(device=cfg.dev, dtype=cfg.dtype)
    else:
        work.to(device=cfg.dev)
    if cfg.channels_last:
        work.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # accepted at runtime, not in the stubs
    notes.append(f"measured a deep copy of the model ({'; '.join(reasons)}); the original was not touched")
    return work, True


def _timed(work: nn.Module, xs: tuple[Any, ...], cfg: _Config, probes: MemoryProbes, notes: list[str],
           progress: dict[str, str]
           ) -> tuple[dict[str, TimingStats], pd.DataFrame, dict[str, float | None], pd.DataFrame, int]:
    """First forward, timed phases and the per-layer pass, on ``work`` (already snapshot/copied)."""
    train = cfg.mode == "train"
    work.train(train)
    threads = torch.get_num_threads()
    params = list(work.parameters())

    def zero_grads() -> None:
        for p in params:
            p.grad = None

    def forward() -> Any:
        return work(*xs)

    progress["phase"] = "fwd" if train else "fwd_nograd"
    _first_forward(work, xs, train)

    def timed(phase: str, fn: Callable[[], Any], setup: Callable[[], Any] | None) -> TimingStats:
        progress["phase"] = phase
        with probes.phase(phase):
            stats = time_fn(fn, device=cfg.dev, warmup=cfg.warmup, min_reps=cfg.min_reps, max_reps=cfg.max_reps,
                            budget_s=cfg.budget_s, target_iqr=cfg.target_iqr, l2_flush=cfg.l2_flush,
                            setup=setup, clock=cfg.clock)
        if stats.noisy:
            notes.append(f"phase {phase}: IQR/median = {100 * stats.iqr_over_median:.1f}% > 10% "
                         f"over {stats.reps} reps; the median is less trustworthy")
        return stats

    if cfg.l2_flush and cfg.dev.type == "cuda":
        flush_bytes = l2_flush_bytes(cfg.dev)
        probes.record({"l2_flush_buffer_bytes": flush_bytes})
        notes.append(f"l2_flush: every phase's allocator peak includes the {flush_bytes} B flush buffer "
                     "(l2_flush_buffer_bytes), live while the phase is timed")

    timings: dict[str, TimingStats] = {}
    if not train:
        def fwd_nograd() -> None:
            with torch.no_grad():
                forward()
        timings["fwd_nograd"] = timed("fwd_nograd", fwd_nograd, None)
    else:
        def fwd() -> None:
            with torch.enable_grad():
                forward()
        timings["fwd"] = timed("fwd", fwd, zero_grads)

        pending: list[torch.Tensor] = []

        def bwd_setup() -> None:
            zero_grads()
            pending.clear()
            with torch.enable_grad():
                pending.append(cfg.loss_fn(forward()))

        def bwd() -> None:
            pending.pop().backward()
        timings["bwd"] = timed("bwd", bwd, bwd_setup)

        opt = make_optimizer(cfg.optimizer, [p for p in params if p.requires_grad])
        if opt is not None:
            def step_setup() -> None:
                zero_grads()
                with torch.enable_grad():
                    cfg.loss_fn(forward()).backward()
            try:
                timings["step"] = timed("step", opt.step, step_setup)
            finally:
                opt.state.clear()
                del opt
        zero_grads()

    if cfg.alloc_trace and cfg.dev.type in ("cpu", "cuda"):
        progress["phase"] = "alloc_trace"
        peak = _alloc_trace_pass(work, xs, cfg, zero_grads)
        probes.record({f"alloc_trace_{k}": v for k, v in peak.to_dict().items()})
        notes.append(f"alloc_trace_peak_bytes: peak bytes of live {cfg.dev.type} tensors (parameters, buffers and inputs "
                     "included) from torch's allocator events in a separate torch.profiler pass "
                     f"({'two training iterations with a fresh optimizer' if train else 'two forwards'})")

    layers = pd.DataFrame(columns=list(LAYER_COLUMNS)).rename_axis("module")
    layer_sum: dict[str, float | None] = {}
    if cfg.per_layer:
        progress["phase"] = "per_layer"
        layers = _per_layer(work, xs, cfg, zero_grads, notes)
        layer_sum = _layer_sum(layers, timings, train)
        zero_grads()
    ops = pd.DataFrame(columns=["phase", "op", "time_s"])
    if cfg.per_op:
        progress["phase"] = "per_op"

        def once() -> None:
            zero_grads()
            if train:
                with torch.enable_grad():
                    cfg.loss_fn(forward()).backward()
            else:
                with torch.no_grad():
                    forward()
        ops = profile_ops(once, cfg.dev)
        zero_grads()
        notes.append("per-op times come from a separate torch.profiler pass (median of 3); on CPU each op's "
                     "time includes the profiler's own per-op overhead")
    return timings, layers, layer_sum, ops, threads


def _alloc_trace_pass(work: nn.Module, xs: tuple[Any, ...], cfg: _Config,
                     zero_grads: Callable[[], None]) -> AllocTrace:
    """What the timed phases run, once more under the allocator profiler: two forwards (inference),
    or two iterations of forward, loss, backward and, with an optimizer, ``step()`` on a fresh
    optimizer (the second iteration has its state live, as in the ``step`` phase). Gradients are
    set to None before each iteration and at the end; the optimizer state is dropped."""
    params = list(work.parameters())
    zero_grads()
    if cfg.dev.type == "cuda":
        torch.cuda.synchronize(cfg.dev)
        before = int(torch.cuda.memory_allocated(cfg.dev))   # everything live, cuBLAS workspaces included
    else:
        before = storage_bytes([*params, *work.buffers(), *xs])

    def run() -> None:
        if cfg.mode != "train":
            with torch.no_grad():
                for _ in range(2):
                    work(*xs)
            return
        opt = make_optimizer(cfg.optimizer, [p for p in params if p.requires_grad])
        try:
            for _ in range(2):
                zero_grads()
                with torch.enable_grad():
                    cfg.loss_fn(work(*xs)).backward()
                if opt is not None:
                    opt.step()
        finally:
            zero_grads()
            if opt is not None:
                opt.state.clear()

    return alloc_trace_peak(run, before, cfg.dev.type)


def _first_forward(work: nn.Module, xs: tuple[Any, ...], train: bool) -> None:
    """One untimed forward; a non-OOM failure becomes InputShapeError naming the innermost module."""
    tracker = _Innermost(work)
    try:
        with tracker, torch.set_grad_enabled(train):
            out = work(*xs)
        del out
    except Exception as e:
        if is_oom(e):
            raise
        path, mtype, shapes = tracker.locate(e, work, xs)
        raise InputShapeError(path, mtype, shapes, e) from e


def _per_layer(work: nn.Module, xs: tuple[Any, ...], cfg: _Config, zero_grads: Callable[[], None],
               notes: list[str]) -> pd.DataFrame:
    """Median over repetitions of each module's times from a hooked run (see :class:`LayerTimer`)."""
    train = cfg.mode == "train"
    reps: list[dict[str, dict[str, float]]] = []
    with LayerTimer(work, device=cfg.dev, clock=cfg.clock, depth=cfg.depth, backward=train) as lt:
        start = cfg.clock.now_ns()
        i = -1   # rep -1 is a warm-up
        while True:
            lt.reset()
            zero_grads()
            if train:
                with torch.enable_grad():
                    loss = cfg.loss_fn(work(*xs))
                lt.prepare_backward(loss)
                loss.backward()
                del loss
            else:
                with torch.no_grad():
                    work(*xs)
            rec = lt.collect()
            if i >= 0:
                reps.append(rec)
            i += 1
            if cfg.layer_reps is not None:
                if len(reps) >= cfg.layer_reps:
                    break
            elif len(reps) >= 100 or (len(reps) >= 3 and cfg.clock.now_ns() - start >= cfg.budget_s * 1e9):
                break
    rows = []
    for path, m in work.named_modules():
        if path not in reps[0]:
            continue
        row: dict[str, Any] = {"module": path, "type": type(m).__name__, "is_leaf": not any(True for _ in m.children()),
                               "depth": 0 if path == "" else path.count(".") + 1, "calls": reps[0][path]["calls"]}
        for col in ("fwd_s", "bwd_s", "fwd_incl_s", "bwd_incl_s"):
            row[col] = _median([r[path][col] for r in reps])
        rows.append(row)
    df = pd.DataFrame(rows, columns=["module", *LAYER_COLUMNS]).set_index("module")
    containers = (nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict)   # never called themselves
    idle = [p or "<root>" for p, c in df["calls"].items()
            if c == 0 and not isinstance(work.get_submodule(p), containers)]
    if idle:
        shown = ", ".join(idle[:8]) + (f", ... ({len(idle)} in all)" if len(idle) > 8 else "")
        notes.append(f"per-layer: {len(idle)} module(s) never ran in the hooked pass (a fused fast path such as "
                     f"nn.TransformerEncoderLayer in inference, or unused): {shown}; their time is in their parent")
    notes.append(f"per-layer times come from a separate hooked pass ({len(reps)} reps, median per module); "
                 "compare m.layer_sum's hooked root time with the whole-model median for the hook overhead")
    return df


def _layer_sum(layers: pd.DataFrame, timings: dict[str, TimingStats], train: bool) -> dict[str, float | None]:
    """Whole-model medians beside sum(per-layer self medians) and their ratio, for fwd and bwd."""
    out: dict[str, float | None] = {}
    whole = {"fwd": timings["fwd" if train else "fwd_nograd"].median_s,
             "bwd": timings["bwd"].median_s if "bwd" in timings else None}
    for ph in ("fwd", "bwd"):
        col = layers[f"{ph}_s"].astype(float)
        total = float(col.sum(skipna=True)) if col.notna().any() else None
        root = float(layers.loc["", f"{ph}_incl_s"]) if "" in layers.index else None
        out[f"{ph}_whole_s"] = whole[ph]
        out[f"{ph}_layer_sum_s"] = total
        out[f"{ph}_hooked_root_s"] = None if root is None or math.isnan(root) else root
        w = whole[ph]
        out[f"{ph}_ratio"] = total / w if total is not None and w else None
    return out
