"""``measure()``: timed phases of a model (forward, backward, optimizer step), per-layer times, memory peaks.

Order of a run (each pass a function returning its record, :mod:`hwprof.measuring.passes`)::

    configuration: one MeasureConfig (the keyword arguments override its fields); resolve the device
    start the memory probes; copy the model only if device/dtype/memory format must change
    snapshot the model's state (in-place runs)
    untimed first forward            -> a failure names the innermost module (InputShapeError)
    timed phases                     -> fwd_nograd (inference) | fwd, bwd, step (train)
    allocator-trace pass             -> alloc_trace=True
    per-layer pass                   -> per_layer=True: hooked reps, each paired with an unhooked one
    per-op pass                      -> per_op=True
    stop the probes, restore the model's state, the thread count and the RNG
    combine the records              -> Measurement

Phase ``bwd`` times ``loss.backward()`` alone (its forward runs in the untimed setup); phase
``step`` times ``optimizer.step()`` alone (forward + backward in the setup). Gradients are set
to None before every repetition. ``budget_s`` is per phase (and for the per-layer pass).
Out of memory anywhere raises :class:`~hwprof.errors.MeasurementError` (``oom=True``, naming the
phase) after the run's tensors are dropped and the CUDA cache is emptied, so a caller can try
the next configuration. Anything else (a KeyboardInterrupt included) propagates unchanged, with
the model, the thread count and the RNG restored on the way out.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from hwprof.amp import amp_name, resolve_amp
from hwprof.device import MathModes, describe_device, free_device_memory, resolve_device, same_device
from hwprof.errors import InputShapeError, MeasurementError, is_oom
from hwprof.measuring.passes import (
    LayerPass,
    OpPass,
    PhaseOutOfMemory,
    PhaseTimes,
    RunContext,
    StepWork,
    TracePass,
    UnitOfWork,
    Work,
    alloc_trace_pass,
    layer_sum,
    oom_phase,
    per_layer_pass,
    per_op_pass,
    step_layer_sum,
    timed_phases,
)
from hwprof.measuring.probes import MemoryProbes, RunPeaks
from hwprof.measuring.records import (
    LAYER_COLUMNS,
    OP_COLUMNS,
    PHASE_COLUMNS,
    PHASES,
    MeasureConfig,
    Measurement,
    MemoryRecord,
    RunInfo,
)
from hwprof.measuring.timers import Clock, PerfCounterClock
from hwprof.modules import Frame, ModuleCalls
from hwprof.placement import model_float_dtype, model_placement
from hwprof.spec import Inputs, as_inputs, batch_of, parse_dtype, resize_batch, vocab_size
from hwprof.stepping.snapshot import OptimizerSnapshot, preserved_state
from hwprof.stepping.unit import Step
from hwprof.training import check_optimizer, make_optimizer, training_loss

__all__ = ["measure", "measure_step", "assemble", "Passes", "Measurement", "MeasureConfig", "PHASES", "LAYER_COLUMNS", "is_oom", "make_optimizer"]


def default_loss(output: Any) -> torch.Tensor:
    """:func:`hwprof.training.training_loss`; an output without a floating tensor requiring grad is an error."""
    loss = training_loss(output)
    if loss is None:
        raise ValueError("the model's output has no floating tensor that requires grad; pass loss_fn=")
    return loss


# --------------------------------------------------------------------------- measure
def measure(model: nn.Module, inputs: Any, config: MeasureConfig | None = None, *, clock: Clock | None = None,
            loss_fn: Callable[[Any], torch.Tensor] | None = None, resident_bytes: int = 0, restore: bool = True,
            **overrides: Any) -> Measurement:
    """Time ``model`` on ``inputs`` and probe its memory; the model is left exactly as it was.

    ``config``: what to measure (:class:`MeasureConfig`, default ``MeasureConfig()``); keyword
    arguments named like its fields override them (``measure(m, "3x224x224", mode="train")``).
    ``clock`` (CPU timing, default ``time.perf_counter_ns``) and ``loss_fn`` (train mode; default
    the sum of the floating outputs) are code, so they are arguments, not configuration.
    ``resident_bytes``: bytes that a wrapper of ``model`` holds outside its parameters, buffers and
    inputs for the whole run (a DDP reducer's gradient buckets), which the CPU allocator trace
    cannot see being allocated; they are counted as live before it. ``restore=False``: the caller
    owns ``model`` (a copy made for this measurement), so its state is neither snapshotted nor put
    back; a wrapper that swaps parameter objects itself (FSDP2 registers unsharded parameters after
    a forward and sharded ones again when it reshards) must not have them swapped behind its back.

    ``inputs``: a tensor, a tuple of tensors, or a spec string like ``"3x224x224"`` (batch
    default 1). ``mode="inference"`` times ``fwd_nograd`` in eval mode; ``mode="train"`` times
    ``fwd`` (grad enabled), ``bwd`` (``loss_fn(output).backward()``) and, with an ``optimizer``,
    ``step``, in train mode. ``per_layer=True`` adds a hooked pass giving every module's self and
    inclusive times (``depth`` limits it), each hooked repetition paired with an unhooked
    whole-model one (``layer_sum``'s ``*_paired_ratio``). ``threads`` sets torch's intra-op
    threads for the run. ``layer_reps`` fixes the number of per-layer pairs (default: by budget,
    3 to 100). ``per_op=True`` adds a ``torch.profiler`` pass giving each dispatched aten op's
    time (:mod:`hwprof.measuring.op_times`). ``alloc_trace=True`` adds one untimed pass (two
    iterations, a fresh optimizer) under ``torch.profiler(profile_memory=True)`` whose allocator
    events give ``memory["alloc_trace_peak_bytes"]`` (peak bytes of live tensors, parameters and
    inputs included: on the CPU the analogue of ``max_memory_allocated``), the op running at the
    peak, and the peak without the ops' in-op workspaces (:mod:`hwprof.measuring.alloc_trace`).
    Raises ``DeviceUnavailableError``, ``InputShapeError`` (first forward failed),
    ``MeasurementError``; a ``TypeError`` for an unknown keyword argument.
    """
    cfg = _configure(config, overrides)
    device_notes: list[str] = []
    dev = resolve_device(cfg.device, device_notes)
    ctx = RunContext(cfg, dev, clock or PerfCounterClock(), int(resident_bytes))
    try:
        with _environment(cfg.threads, dev):
            return _run(model, inputs, ctx, loss_fn or default_loss, tuple(device_notes), restore)
    except PhaseOutOfMemory as e:
        oom = e.oom   # plain data: leaving this block drops the failed run's frames and tensors
    free_device_memory(dev)
    batch = cfg.batch if cfg.batch is not None or isinstance(inputs, str) else batch_of(as_inputs(inputs), None)
    raise MeasurementError(oom.phase, batch or 1, oom.message, oom.allocated_bytes, oom.reserved_bytes, oom=True)


def measure_step(step: Step, config: MeasureConfig | None = None, *, clock: Clock | None = None,
                 **overrides: Any) -> Measurement:
    """Time a user's step (:class:`hwprof.stepping.unit.Step`, prepared by one untimed run) and probe its
    memory, through the same passes as :func:`measure`: the ``whole_step`` phase (warm-up, then
    repetitions by budget), the allocator-trace pass (two steps), the per-layer pass (pairs of an
    unhooked and a hooked step; every module the step ran, the hooked step split into forward,
    backward, optimizer and not owned: ``layer_sum["step_*"]``) and the per-op pass. The step really
    runs each time: the caller restores what it changed (:meth:`Step.restore`)."""
    train = any(p.grad is not None for p in step.root.parameters()) or bool(step.optimizers)
    cfg = _configure(config, {"device": str(step.device), "mode": "train" if train else "inference", "kind": "step",
                              "per_layer": True, "per_op": True, "amp": step.amp, **overrides})
    ctx = RunContext(cfg, step.device, clock or PerfCounterClock())
    try:
        with _environment(cfg.threads, step.device):
            return _run_step(step, ctx, train)
    except PhaseOutOfMemory as e:
        oom = e.oom
    free_device_memory(step.device)
    raise MeasurementError(oom.phase, None, oom.message, oom.allocated_bytes, oom.reserved_bytes, oom=True)


def _run_step(step: Step, ctx: RunContext, train: bool) -> Measurement:
    dev = ctx.device
    math_modes = MathModes.current(dev.type)
    with MemoryProbes(dev, ctx.config.nvml_interval_s, use_nvml=_use_nvml(dev)) as probes:
        xs = Inputs(tuple(t for t in tree_flatten((step.args, step.kwargs))[0] if isinstance(t, torch.Tensor)))
        run = RunInfo(model=step.label, device=str(dev), dtype=str(model_float_dtype(step.root)).removeprefix("torch."),
                      batch=batch_of(xs, None), input_shapes=tuple(_shapes(xs)), threads=torch.get_num_threads(),
                      amp=step.amp)
        passes = passes_after_first(StepWork(step, train), ctx)
    notes = ("a user's step: its time is the whole_step phase; the per-layer pass splits one hooked step into "
             "forward, backward, optimizer and not owned (layer_sum step_*)",)
    return assemble(ctx, run, passes, probes, notes, math_modes)


def _configure(config: MeasureConfig | None, overrides: dict[str, Any]) -> MeasureConfig:
    """``config`` (default ``MeasureConfig()``) with ``overrides`` replacing its fields; names checked first."""
    names = {f.name for f in dataclasses.fields(MeasureConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"measure() got an unexpected keyword argument {unknown[0]!r}")
    cfg = dataclasses.replace(config or MeasureConfig(), **overrides)
    check_optimizer(cfg.optimizer)
    _dtype(cfg)   # an unknown dtype name is refused here, before any work
    return cfg


@contextlib.contextmanager
def _environment(threads: int | None, dev: torch.device) -> Iterator[None]:
    """torch's intra-op threads set for the block, the RNG forked (dropout and random inputs draw from
    it) and, on CUDA, ``dev`` current (events and hooks on the right device); all restored on exit."""
    cuda = dev.type == "cuda"
    prev = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(int(threads))
        with (torch.random.fork_rng(devices=[dev.index] if cuda else []),
              torch.cuda.device(dev) if cuda else contextlib.nullcontext()):
            yield
    finally:
        torch.set_num_threads(prev)


@dataclass(frozen=True)
class Passes:
    """The records of the passes after the first forward (None: the pass was not asked for)."""

    phases: PhaseTimes
    trace: TracePass | None
    layers: LayerPass | None
    ops: OpPass | None

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(n for r in (self.phases, self.trace, self.layers, self.ops) if r is not None for n in r.notes)


def _run(model: nn.Module, inputs: Any, ctx: RunContext, loss_fn: Callable[[Any], torch.Tensor],
         device_notes: tuple[str, ...], restore: bool = True) -> Measurement:
    """Setup, the passes, the combination. Every tensor of the run lives in this frame or below it, so an
    out-of-memory error leaving it drops them all."""
    cfg, dev = ctx.config, ctx.device
    math_modes = MathModes.current(dev.type)
    amp = resolve_amp(cfg.amp, dev.type)
    # probes start first: their baselines precede the model copy / input creation on the device
    with MemoryProbes(dev, cfg.nvml_interval_s, use_nvml=_use_nvml(dev)) as probes:
        with oom_phase("setup", dev):
            model_run, copy_note = _work_model(model, cfg, dev)
            if copy_note is not None and _instances(cfg.optimizer):
                raise MeasurementError("setup", cfg.batch, "an optimizer instance steps the model's own parameters, "
                                       f"but the model must be copied to be measured ({copy_note}); pass an "
                                       "optimizer name or class instead, or the model already in place")
            run_dtype = _dtype(cfg) or model_float_dtype(model_run)
            xs = _prepare_inputs(inputs, cfg.batch, run_dtype, dev, cfg.channels_last, vocab_size(model_run))
        run = RunInfo(model=type(model).__name__, device=str(dev), dtype=str(run_dtype).removeprefix("torch."),
                      batch=batch_of(xs, cfg.batch), input_shapes=tuple(_shapes(xs)),
                      measured_copy=copy_note is not None, threads=torch.get_num_threads(), amp=amp_name(amp))
        work = Work(model_run, xs, cfg.train, loss_fn, amp, dev.type)
        with _kept(model_run, cfg.optimizer, restore and copy_note is None):
            work.zero_grads()   # a copy's grads (preserved_state sets the user's to None itself)
            work.model.train(cfg.train)
            with oom_phase("fwd" if cfg.train else "fwd_nograd", dev):
                _first_forward(work, cfg.train)
            passes = passes_after_first(work, ctx)
        del work, model_run, xs
    setup_notes = device_notes + (() if copy_note is None else (copy_note,))
    return assemble(ctx, run, passes, probes, setup_notes, math_modes)


def _instances(optimizer: Any) -> list[torch.optim.Optimizer]:
    """The caller's own optimizer instances among an optimizer spec (one, or a list)."""
    specs = optimizer if isinstance(optimizer, (list, tuple)) else [optimizer]
    return [o for o in specs if isinstance(o, torch.optim.Optimizer)]


@contextlib.contextmanager
def _kept(model: nn.Module, optimizer: Any, restore: bool) -> Iterator[None]:
    """The user's model (:func:`preserved_state`) and every optimizer instance among ``optimizer``
    (:class:`OptimizerSnapshot`) snapshotted and restored on exit; nothing when ``restore`` is False."""
    if not restore:
        yield
        return
    opts = [OptimizerSnapshot.take(o) for o in _instances(optimizer)]
    try:
        with preserved_state(model):
            yield
    finally:
        for o in opts:
            o.restore()


def passes_after_first(work: UnitOfWork, ctx: RunContext) -> Passes:
    """After the first (untimed) run: each pass the configuration asks for, in order."""
    cfg = ctx.config
    phases = timed_phases(work, ctx)
    trace = alloc_trace_pass(work, ctx) if cfg.alloc_trace and ctx.device.type in ("cpu", "cuda") else None
    layers = per_layer_pass(work, ctx) if cfg.per_layer else None
    ops = per_op_pass(work, ctx) if cfg.per_op else None
    return Passes(phases, trace, layers, ops)


def assemble(ctx: RunContext, run: RunInfo, passes: Passes, probes: MemoryProbes, setup_notes: tuple[str, ...],
             math_modes: MathModes) -> Measurement:
    """The Measurement from the records: setup notes, then each pass's, then the probes'. (``measure``,
    ``measure_step`` and ``hwprof.capture``, whose passes are steps of the user's own loop, all end here.)"""
    dev = ctx.device
    peaks: RunPeaks = probes.result()
    memory = MemoryRecord(run=peaks, phases=passes.phases.peaks,
                          l2_flush_buffer_bytes=passes.phases.l2_flush_buffer_bytes,
                          alloc_trace=passes.trace.trace if passes.trace is not None else None)
    notes = [*setup_notes, *passes.notes, *probes.notes]
    if dev.type != "cuda":
        notes.append("CPU run: the CUDA allocator and NVML fields are None; rss_* is this process's resident memory "
                     "(torch itself included), ru_maxrss_bytes its lifetime peak")
    timings = passes.phases.timings
    phases = pd.DataFrame([{"phase": k, **v.summary()} for k, v in timings.items()],
                          columns=["phase", *PHASE_COLUMNS]).set_index("phase")
    lp = passes.layers
    return Measurement(
        config=ctx.config, run=run, phases=phases, timings=timings, memory_record=memory,
        device={**describe_device(dev), **probes.nvml_info, "threads": run.threads}, math_modes=math_modes,
        layers=lp.layers if lp is not None else pd.DataFrame(columns=list(LAYER_COLUMNS)).rename_axis("module"),
        layer_sum=_layer_sum(lp, timings, ctx.config), notes=notes,
        ops=passes.ops.ops if passes.ops is not None else pd.DataFrame(columns=list(OP_COLUMNS)))


def _layer_sum(lp: LayerPass | None, timings: dict[str, Any], cfg: MeasureConfig) -> dict[str, float | None]:
    if lp is None:
        return {}
    return step_layer_sum(lp, timings) if cfg.kind == "step" else layer_sum(lp, timings, cfg.train)


def _use_nvml(dev: torch.device) -> bool:
    """NVML is queried for CUDA runs only (a CPU run has no GPU memory to report)."""
    return dev.type == "cuda"


def _dtype(cfg: MeasureConfig) -> torch.dtype | None:
    return parse_dtype(cfg.dtype) if cfg.dtype is not None else None


# --------------------------------------------------------------------------- setup
def _work_model(model: nn.Module, cfg: MeasureConfig, dev: torch.device) -> tuple[nn.Module, str | None]:
    """The model itself (and None) when it already sits on the target device/dtype/format, else a moved deep
    copy and the note that says why."""
    where = model_placement(model)
    dev0 = where["device"]
    if dev0 is not None and dev0.type == "meta":
        raise MeasurementError("setup", cfg.batch, "the model's tensors are on the meta device (no data); "
                               "build it on cpu or cuda to measure it")
    reasons = []
    if dev0 is not None and (where["multi_device"] or not same_device(dev0, dev)):
        reasons.append(f"device {dev0} -> {dev}")
    dtype = _dtype(cfg)
    if dtype is not None and any(d != str(dtype) for d in where["dtypes"]):
        reasons.append(f"dtype {','.join(where['dtypes'])} -> {dtype}")
    if cfg.channels_last and where["channels_last"] is False:
        reasons.append("memory format -> channels_last")
    if not reasons:
        return model, None
    work = copy.deepcopy(model)
    if dtype is not None:
        work.to(device=dev, dtype=dtype)
    else:
        work.to(device=dev)
    if cfg.channels_last:
        work.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # accepted at runtime, not in the stubs
    return work, f"measured a deep copy of the model ({'; '.join(reasons)}); the original was not touched"


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

    def locate(self, exc: BaseException, model: nn.Module, inputs: Inputs) -> tuple[str, str, list[Any]]:
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
                    channels_last: bool, vocab: int | None = None) -> Inputs:
    """Specs are built on ``dev`` (token ids within ``vocab``); user tensors are copied there (floats cast
    to ``dtype``, dimension 0 resized to ``batch`` when given: :func:`hwprof.spec.resize_batch`), never
    modified."""
    xs = as_inputs(inputs, batch=batch, dtype=dtype, device=dev, vocab=vocab)
    if not isinstance(inputs, str):
        xs = resize_batch(xs.map(lambda v: _copy_input(v, dtype, dev)), batch)
    if channels_last:
        xs = xs.map(lambda v: v.contiguous(memory_format=torch.channels_last)
                    if isinstance(v, torch.Tensor) and v.dim() == 4 and v.is_floating_point() else v)
    return xs


def _copy_input(v: Any, dtype: torch.dtype, dev: torch.device) -> Any:
    if not isinstance(v, torch.Tensor):
        return v
    out = v.detach().to(dev, dtype=dtype if v.is_floating_point() else v.dtype, copy=True)
    if v.requires_grad and out.is_floating_point():
        out.requires_grad_(True)
    return out


def _first_forward(work: Work, train: bool) -> None:
    """One untimed forward; a non-OOM failure becomes InputShapeError naming the innermost module."""
    tracker = _Innermost(work.model)
    try:
        with tracker, torch.set_grad_enabled(train):
            out = work.forward()
        del out
    except Exception as e:
        if is_oom(e):
            raise
        path, mtype, shapes = tracker.locate(e, work.model, work.inputs)
        raise InputShapeError(path, mtype, shapes, e) from e
