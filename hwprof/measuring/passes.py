"""The passes of one measurement: each a function of the model being measured that returns its own record.

::

    timed_phases(work, ctx)     -> PhaseTimes  fwd_nograd | fwd, bwd, step: time_fn, allocator peaks per phase
    alloc_trace_pass(work, ctx) -> TracePass   two iterations under torch.profiler(profile_memory=True)
    per_layer_pass(work, ctx)   -> LayerPass   hooked repetitions, each paired with an unhooked one
    per_op_pass(work, ctx)      -> OpPass      per-aten-op times from torch.profiler

(:func:`hwprof.measuring.runner.measure` runs the first forward before them and combines their
records into the :class:`~hwprof.measuring.records.Measurement`.) Each record carries the notes
its pass has for the user; progress goes to this module's logger (debug level).

**Per-layer and whole-model times at the same moments.** Under a load that drifts (other
processes on the machine), a whole-model median taken in one pass and per-layer times taken in a
later one are ratios of two different machines. So the per-layer pass runs *pairs*: an unhooked
whole-model repetition of the same phases (``fwd``, and in training ``bwd``), then the hooked
repetition right after it; per pair and phase::

    ratio = sum over modules of the hooked repetition's self times / the unhooked repetition's time

and :func:`layer_sum` reports the median, q25 and q75 of the ratios beside the unpaired ratio
(per-layer medians over the headline phase's median). On CUDA both repetitions of a pair record
events and nothing synchronises the host inside them: ``LayerTimer.collect`` synchronises once,
after the pair, and then the unhooked repetition's events are read.

**Out of memory.** An out-of-memory error inside a pass leaves it as :class:`PhaseOutOfMemory`,
which names the phase (:func:`oom_phase`), so ``measure()`` can drop the run's tensors before it
raises :class:`~hwprof.errors.MeasurementError`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from hwprof.amp import autocast, needs_grad_scaler
from hwprof.errors import is_oom
from hwprof.measuring.alloc_trace import AllocTrace, alloc_trace_peak, storage_bytes
from hwprof.measuring.op_times import profile_ops
from hwprof.measuring.probes import PhasePeak, allocator_peaks, cuda_current
from hwprof.measuring.records import LAYER_COLUMNS, MeasureConfig
from hwprof.measuring.timers import (
    Clock,
    LayerTimer,
    StepTimer,
    Stopwatch,
    TimingStats,
    l2_flush_bytes,
    time_fn,
)
from hwprof.spec import Inputs, as_inputs
from hwprof.stepping.targets import StepModels
from hwprof.stepping.unit import Step
from hwprof.training import make_optimizers

__all__ = ["RunContext", "Work", "StepWork", "UnitOfWork", "OutOfMemory", "PhaseOutOfMemory", "oom_phase", "PhaseTimes", "TracePass",
           "LayerPair", "LayerPass", "OpPass", "timed_phases", "alloc_trace_pass", "per_layer_pass", "per_op_pass",
           "layer_sum", "step_layer_sum", "STEP_SPLIT", "layer_table"]

log = logging.getLogger(__name__)

LayerRecord = dict[str, dict[str, float]]   # LayerTimer.collect(): module path -> calls, fwd_s, fwd_incl_s, ...


@dataclass(frozen=True)
class RunContext:
    """What every pass needs beside the model: the run's configuration, the resolved device, the clock, and
    the bytes a wrapper of the model holds for the whole run outside its parameters, buffers and inputs
    (``resident_bytes``: a DDP reducer's gradient buckets; counted as live before the allocator trace)."""

    config: MeasureConfig
    device: torch.device
    clock: Clock
    resident_bytes: int = 0


@dataclass
class Work:
    """The model being measured (the user's, or a moved copy), its inputs, and the steps the passes run.

    ``amp``: the autocast dtype of the forward (and the loss computed on its output), None without
    autocast; the backward and the optimizer step run outside autocast, as in PyTorch's AMP recipe.
    ``scaler``: a ``GradScaler`` (fp16 autocast on CUDA: :func:`hwprof.amp.needs_grad_scaler`) that
    scales the loss before backward and unscales inside the optimizer step."""

    model: nn.Module
    inputs: Inputs
    train: bool
    loss_fn: Callable[[Any], torch.Tensor]
    amp: torch.dtype | None = None
    device_type: str = "cpu"
    params: list[nn.Parameter] = field(init=False)
    scaler: Any = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.params = list(self.model.parameters())
        self.inputs = as_inputs(self.inputs)   # a tuple of tensors is positional inputs
        if self.train and needs_grad_scaler(self.device_type, self.amp):
            self.scaler = torch.amp.GradScaler(self.device_type)

    def zero_grads(self) -> None:
        for p in self.params:
            p.grad = None

    def forward(self) -> Any:
        with autocast(self.device_type, self.amp):
            return self.inputs.call(self.model)

    def forward_nograd(self) -> None:
        with torch.no_grad():
            self.forward()

    def forward_grad(self) -> None:
        with torch.enable_grad():
            self.forward()

    def loss(self) -> torch.Tensor:
        """``loss_fn(forward())`` with grad enabled (under the forward's autocast)."""
        with torch.enable_grad():
            out = self.forward()
            with autocast(self.device_type, self.amp):
                return self.loss_fn(out)

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, the loss scaled first when there is a ``GradScaler``."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def iteration(self) -> None:
        """Gradients to None, then a forward without grad (inference) or forward, loss and backward (train)."""
        self.zero_grads()
        if self.train:
            self.backward(self.loss())
        else:
            self.forward_nograd()

    def step(self, optimizers: list[torch.optim.Optimizer]) -> None:
        """Every optimizer's ``step()`` (through the ``GradScaler``, then its ``update()``, when there is one)."""
        for opt in optimizers:
            if self.scaler is not None:
                self.scaler.step(opt)
            else:
                opt.step()
        if self.scaler is not None:
            self.scaler.update()

    @contextlib.contextmanager
    def optimizers(self, spec: Any) -> Iterator[list[torch.optim.Optimizer]]:
        """The optimizers of ``spec`` (:func:`hwprof.training.make_optimizers`: fresh ones over the
        parameters that require grad, the caller's own instances as they are); on exit the fresh ones'
        state is dropped and the gradients set to None (the caller's instances are put back by the
        run's snapshot)."""
        opts = make_optimizers(spec, [p for p in self.params if p.requires_grad])
        try:
            yield opts
        finally:
            self.zero_grads()
            for opt in opts:
                if not _is_instance_in(opt, spec):
                    opt.state.clear()

    # ------------------------------------------------------------------ what the passes run
    @property
    def root(self) -> nn.Module:
        return self.model

    def trace_run(self, optimizer: Any) -> None:
        """What the allocator-trace pass records: two iterations, each followed in training by ``step()``
        of one fresh optimizer (the second iteration has its state live, as in the ``step`` phase)."""
        with self.optimizers(optimizer) as opts:
            for _ in range(2):
                self.iteration()
                self.step(opts)

    def live_tensors(self) -> list[torch.Tensor]:
        """Tensors alive before the allocator-trace pass (CPU): parameters, buffers, inputs."""
        return [*self.params, *self.model.buffers(), *self.inputs]

    def layer_timer(self, ctx: RunContext) -> LayerTimer:
        return LayerTimer(self.model, device=ctx.device, clock=ctx.clock, depth=ctx.config.depth, backward=self.train)

    def stopwatch(self, ctx: RunContext) -> Stopwatch:
        return Stopwatch(ctx.device, ctx.clock, marks=4 if self.train else 2)

    def unhooked(self, watch: Stopwatch) -> None:
        """One unhooked repetition, marked around the forward (marks 0, 1) and, in training, around
        ``loss.backward()`` (2, 3); the loss between them is not timed, as in the headline ``fwd`` and
        ``bwd`` phases. The marks are read later (:meth:`unhooked_s`), after the hooked repetition."""
        watch.reset()
        self.zero_grads()
        with torch.set_grad_enabled(self.train):
            watch.mark()
            out = self.forward()
            watch.mark()
            if self.train:
                with autocast(self.device_type, self.amp):
                    loss = self.loss_fn(out)
        del out
        if not self.train:
            return
        watch.mark()
        self.backward(loss)
        watch.mark()

    def unhooked_s(self, watch: Stopwatch) -> dict[str, float]:
        """Seconds of the last unhooked repetition per phase: ``fwd`` and, in training, ``bwd``."""
        out = {"fwd": watch.elapsed_s(0, 1)}
        if self.train:
            out["bwd"] = watch.elapsed_s(2, 3)
        return out

    def hooked(self, timer: LayerTimer) -> tuple[LayerRecord, dict[str, float] | None]:
        """One hooked repetition: per-module times (no split: the phases are timed apart)."""
        with timer:
            timer.reset()
            self.zero_grads()
            if self.train:
                loss = self.loss()
                timer.prepare_backward(loss)
                self.backward(loss)
                del loss
            else:
                self.forward_nograd()
            return timer.collect(), None


def _is_instance_in(opt: torch.optim.Optimizer, spec: Any) -> bool:
    """``opt`` is one of the caller's own optimizer instances in ``spec`` (not one hwprof made)."""
    return any(o is opt for o in (spec if isinstance(spec, (list, tuple)) else [spec]))


class StepWork:
    """A user's step (:class:`hwprof.stepping.unit.Step`) as the runner's unit of work: one timed phase,
    ``whole_step``, and one hooked repetition split into forward, backward, optimizer and not owned
    (:class:`~hwprof.measuring.timers.StepTimer`). The step owns its gradients: nothing is zeroed."""

    PHASE = "whole_step"

    def __init__(self, step: Step, train: bool) -> None:
        self.step = step
        self.train = train
        self.params = step.params

    @property
    def root(self) -> nn.Module:
        return self.step.root

    def zero_grads(self) -> None:
        """Nothing: the step zeroes (or accumulates into) its own gradients."""

    def iteration(self) -> None:
        self.step.run()

    def trace_run(self, optimizer: Any) -> None:
        """Two steps (the second with the first one's optimizer state live, as in a training loop)."""
        self.step.run()
        self.step.run()

    def live_tensors(self) -> list[torch.Tensor]:
        return self.step.live_tensors()

    def layer_timer(self, ctx: RunContext) -> StepTimer:
        return StepTimer(self.step.root, device=ctx.device, clock=ctx.clock)

    def stopwatch(self, ctx: RunContext) -> Stopwatch:
        return Stopwatch(ctx.device, ctx.clock, marks=2)

    def unhooked(self, watch: Stopwatch) -> None:
        watch.reset()
        watch.mark()
        self.step.run()
        watch.mark()

    def unhooked_s(self, watch: Stopwatch) -> dict[str, float]:
        return {self.PHASE: watch.elapsed_s(0, 1)}

    def hooked(self, timer: LayerTimer) -> tuple[LayerRecord, dict[str, float] | None]:
        assert isinstance(timer, StepTimer)
        with timer:
            timer.reset()
            start = timer.mark()
            self.step.run()
            end = timer.mark()
            layers = timer.collect()
            return layers, timer.split(start, end)


UnitOfWork = Work | StepWork
"""What the passes run: ``model(inputs)`` with hwprof's loss and optimizer, or a user's step."""


# --------------------------------------------------------------------------- out of memory
@dataclass(frozen=True)
class OutOfMemory:
    """An out-of-memory error: the phase it happened in, its first line, and what the CUDA allocator held then."""

    phase: str
    message: str
    allocated_bytes: int | None
    reserved_bytes: int | None


class PhaseOutOfMemory(Exception):
    """Out of memory inside a pass (:class:`OutOfMemory` in ``oom``; the original error is the cause)."""

    def __init__(self, oom: OutOfMemory) -> None:
        super().__init__(f"out of memory in phase {oom.phase!r}: {oom.message}")
        self.oom = oom


@contextlib.contextmanager
def oom_phase(phase: str, device: torch.device) -> Iterator[None]:
    """An out-of-memory error raised inside (:func:`hwprof.errors.is_oom`) leaves as :class:`PhaseOutOfMemory`
    naming ``phase`` (the innermost such block names it); every other exception passes unchanged."""
    log.debug("measure: %s", phase)
    try:
        yield
    except PhaseOutOfMemory:
        raise
    except Exception as e:
        if not is_oom(e):
            raise
        allocated, reserved = cuda_current(device)
        text = str(e).strip()
        raise PhaseOutOfMemory(OutOfMemory(phase, text.splitlines()[0] if text else type(e).__name__,
                                           allocated, reserved)) from e


# --------------------------------------------------------------------------- timed phases
@dataclass(frozen=True)
class PhaseTimes:
    """The headline phases: raw times per phase, the allocator's peaks per phase, the L2 flush buffer (CUDA,
    ``l2_flush=True``), notes."""

    timings: dict[str, TimingStats]
    peaks: tuple[PhasePeak, ...]
    l2_flush_buffer_bytes: int | None = None
    notes: tuple[str, ...] = ()


def timed_phases(work: UnitOfWork, ctx: RunContext) -> PhaseTimes:
    """``fwd_nograd`` (inference), or ``fwd``, ``bwd`` and, with an optimizer, ``step`` (train), or a user's
    ``whole_step``, each timed by :func:`time_fn` (warm-up, then repetitions until the budget or a
    stable IQR) with its allocator peaks.

    ``bwd`` times ``loss.backward()`` alone (forward and loss in the untimed setup); ``step`` times
    ``optimizer.step()`` alone (forward, loss and backward in the setup). Gradients are set to None
    before every repetition."""
    cfg = ctx.config
    flush = l2_flush_bytes(ctx.device) if cfg.l2_flush and ctx.device.type == "cuda" else None
    runs: dict[str, tuple[TimingStats, PhasePeak]] = {}
    if isinstance(work, StepWork):
        runs[work.PHASE] = _time_phase(work.PHASE, work.step.run, None, ctx)
    elif not work.train:
        runs["fwd_nograd"] = _time_phase("fwd_nograd", *_kept(work.forward, torch.no_grad, None), ctx)
    else:
        runs["fwd"] = _time_phase("fwd", *_kept(work.forward, torch.enable_grad, work.zero_grads), ctx)
        pending: list[torch.Tensor] = []

        def bwd_setup() -> None:
            work.zero_grads()
            pending[:] = [work.loss()]

        runs["bwd"] = _time_phase("bwd", lambda: work.backward(pending.pop()), bwd_setup, ctx)
        with work.optimizers(cfg.optimizer) as opts:
            if opts:
                runs["step"] = _time_phase("step", lambda: work.step(opts), work.iteration, ctx)
    notes = [] if flush is None else [
        f"l2_flush: every phase's allocator peak includes the {flush} B flush buffer (l2_flush_buffer_bytes), "
        "live while the phase is timed"]
    notes += [f"phase {name}: IQR/median = {100 * stats.iqr_over_median:.1f}% > 10% over {stats.reps} reps; "
              "the median is less trustworthy" for name, (stats, _) in runs.items() if stats.noisy]
    return PhaseTimes({k: s for k, (s, _) in runs.items()}, tuple(p for _, p in runs.values()), flush, tuple(notes))


def _kept(forward: Callable[[], Any], grad_mode: Callable[[], Any],
          setup: Callable[[], Any] | None) -> tuple[Callable[[], None], Callable[[], None]]:
    """A forward phase's repetition and its setup. The repetition keeps its output (and, with grad, the
    autograd graph and the activations it saved) alive past its end mark; the next repetition's
    untimed setup lets it go. Dropped at the end of the timed region, the graph was freed inside it,
    which is no part of a forward (a user's loop keeps ``out`` for its loss and backward). A training
    forward of 6 x (conv 3x3, ReLU) on 8x32x56x56, 2-core AMD EPYC, medians of 6 alternating
    measurements: 19.24 ms with the output dropped inside the timed region, 18.28 ms kept, 16.47 ms
    for ``out = net(x)`` in a plain forward-then-backward loop."""
    held: list[Any] = []

    def rep() -> None:
        with grad_mode():
            held.append(forward())

    def before() -> None:
        held.clear()
        if setup is not None:
            setup()

    return rep, before


def _time_phase(name: str, fn: Callable[[], Any], setup: Callable[[], Any] | None,
                ctx: RunContext) -> tuple[TimingStats, PhasePeak]:
    cfg = ctx.config
    with oom_phase(name, ctx.device):
        return allocator_peaks(ctx.device, name, lambda: time_fn(
            fn, device=ctx.device, warmup=cfg.warmup, min_reps=cfg.min_reps, max_reps=cfg.max_reps,
            budget_s=cfg.budget_s, target_iqr=cfg.target_iqr, l2_flush=cfg.l2_flush, setup=setup, clock=ctx.clock))


# --------------------------------------------------------------------------- allocator trace
@dataclass(frozen=True)
class TracePass:
    trace: AllocTrace
    notes: tuple[str, ...] = ()


def alloc_trace_pass(work: UnitOfWork, ctx: RunContext) -> TracePass:
    """What the timed phases run, once more under the allocator profiler (:func:`alloc_trace_peak`):
    :meth:`Work.trace_run` (two iterations, in training each followed by ``step()`` of a fresh
    optimizer) or two of a user's steps. Live before the pass: on CUDA ``memory_allocated()``
    (cuBLAS workspaces included), on the CPU :meth:`Work.live_tensors` (parameters, buffers and
    inputs; for a step also its gradients and optimizer state)."""
    dev = ctx.device
    with oom_phase("alloc_trace", dev):
        work.zero_grads()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            before = int(torch.cuda.memory_allocated(dev))
        else:
            before = storage_bytes(work.live_tensors()) + ctx.resident_bytes
        trace = alloc_trace_peak(lambda: work.trace_run(ctx.config.optimizer), before, dev.type)
    what = ("two of the step's runs" if isinstance(work, StepWork) else
            "two training iterations with a fresh optimizer" if work.train else "two forwards")
    held = (f"; {ctx.resident_bytes} B held by the model's wrapper counted as live before the pass"
            if ctx.resident_bytes and dev.type != "cuda" else "")
    return TracePass(trace, (f"alloc_trace_peak_bytes: peak bytes of live {dev.type} tensors (parameters, buffers "
                             f"and inputs included) from torch's allocator events in a separate torch.profiler pass "
                             f"({what}){held}",))


# --------------------------------------------------------------------------- per layer
@dataclass(frozen=True)
class LayerPair:
    """One pair of repetitions: the hooked one's per-module times (``LayerTimer.collect()``) and the unhooked
    one's whole-model seconds per phase (``fwd``, and ``bwd`` in training; ``whole_step`` for a user's
    step), measured right before it; for a step, the hooked repetition's split (:meth:`StepTimer.split`)."""

    layers: LayerRecord
    whole_s: dict[str, float]
    split: dict[str, float] | None = None

    def self_sum_s(self, phase: str) -> float | None:
        """Sum over modules of the self times in ``phase`` ("fwd" | "bwd"); None when no module was timed."""
        times = [r[f"{phase}_s"] for r in self.layers.values() if not math.isnan(r[f"{phase}_s"])]
        return sum(times) if times else None

    def ratio(self, phase: str) -> float | None:
        """:meth:`self_sum_s` / the unhooked whole-model time of the same phase; None when either is missing."""
        total, whole = self.self_sum_s(phase), self.whole_s.get(phase)
        return total / whole if total is not None and whole else None


@dataclass(frozen=True)
class LayerPass:
    """Per-module medians over the pairs' hooked repetitions (``LAYER_COLUMNS``), the pairs, notes."""

    layers: pd.DataFrame
    pairs: tuple[LayerPair, ...]
    notes: tuple[str, ...] = ()


def per_layer_pass(work: UnitOfWork, ctx: RunContext) -> LayerPass:
    """Pairs of repetitions (:func:`_pair`) after one warm-up pair: ``layer_reps`` pairs, or by budget (at
    least 3 pairs and ``budget_s`` spent, at most 100 pairs)."""
    timer = work.layer_timer(ctx)
    watch = work.stopwatch(ctx)
    with oom_phase("per_layer", ctx.device):
        start = ctx.clock.now_ns()
        _pair(work, timer, watch)   # warm-up
        pairs = [_pair(work, timer, watch)]
        while not _enough_pairs(len(pairs), ctx, start):
            pairs.append(_pair(work, timer, watch))
        work.zero_grads()
    layers, notes = layer_table(work.root, [p.layers for p in pairs])
    notes.append(f"per-layer times come from a hooked pass ({len(pairs)} reps, median per module), each rep "
                 "paired with an unhooked whole-model rep right before it; m.layer_sum's *_paired_ratio is "
                 "sum(per-layer self) / whole per pair (median, q25, q75), which load drifting between passes "
                 "does not move")
    return LayerPass(layers, tuple(pairs), tuple(notes))


def _enough_pairs(n: int, ctx: RunContext, start_ns: int) -> bool:
    cfg = ctx.config
    if cfg.layer_reps is not None:
        return n >= cfg.layer_reps
    return n >= 100 or (n >= 3 and ctx.clock.now_ns() - start_ns >= cfg.budget_s * 1e9)


def _pair(work: UnitOfWork, timer: LayerTimer, watch: Stopwatch) -> LayerPair:
    """An unhooked repetition, then a hooked one right after it; on CUDA the hooked repetition's
    ``collect()`` is the pair's one host synchronisation, and the unhooked events are read after it."""
    work.unhooked(watch)
    layers, split = work.hooked(timer)
    return LayerPair(layers, work.unhooked_s(watch), split)


def layer_table(model: nn.Module, reps: list[LayerRecord]) -> tuple[pd.DataFrame, list[str]]:
    """One row per tracked module: type, leaf, depth, calls, and the median of each time over ``reps``."""
    rows = []
    for path, m in model.named_modules():
        if path not in reps[0]:
            continue
        row: dict[str, Any] = {"module": path, "type": type(m).__name__, "is_leaf": not any(True for _ in m.children()),
                               "depth": 0 if path == "" else path.count(".") + 1, "calls": reps[0][path]["calls"]}
        for col in ("fwd_s", "bwd_s", "fwd_incl_s", "bwd_incl_s"):
            row[col] = _median([r[path][col] for r in reps])
        rows.append(row)
    df = pd.DataFrame(rows, columns=["module", *LAYER_COLUMNS]).set_index("module")
    containers = (nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict, StepModels)   # never called
    idle = [p or "<root>" for p, c in df["calls"].items()
            if c == 0 and not isinstance(model.get_submodule(p), containers)]
    if not idle:
        return df, []
    shown = ", ".join(idle[:8]) + (f", ... ({len(idle)} in all)" if len(idle) > 8 else "")
    return df, [f"per-layer: {len(idle)} module(s) never ran in the hooked pass (a fused fast path such as "
                f"nn.TransformerEncoderLayer in inference, or unused): {shown}; their time is in their parent"]


def _median(values: list[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return statistics.median(vals) if vals else math.nan


def layer_sum(lp: LayerPass, timings: dict[str, TimingStats], train: bool) -> dict[str, float | None]:
    """Per phase ("fwd", "bwd"): the headline phase's median (``*_whole_s``), the sum of the per-module self
    medians (``*_layer_sum_s``), the hooked root's inclusive median (``*_hooked_root_s``), their unpaired
    ratio (``*_ratio`` = layer sum / whole), and from the pairs (:meth:`LayerPair.ratio`) the median, q25
    and q75 of the paired ratios (``*_paired_ratio``, ``*_paired_ratio_q25``, ``*_paired_ratio_q75``;
    quantiles interpolated linearly, as numpy's default), the median unhooked time (``*_paired_whole_s``)
    and the number of pairs with a ratio (``*_pairs``)."""
    out: dict[str, float | None] = {}
    whole = {"fwd": timings["fwd" if train else "fwd_nograd"].median_s,
             "bwd": timings["bwd"].median_s if "bwd" in timings else None}
    for ph in ("fwd", "bwd"):
        col = lp.layers[f"{ph}_s"].astype(float)
        total = float(col.sum(skipna=True)) if col.notna().any() else None
        root = float(lp.layers.loc["", f"{ph}_incl_s"]) if "" in lp.layers.index else None
        w = whole[ph]
        out[f"{ph}_whole_s"] = w
        out[f"{ph}_layer_sum_s"] = total
        out[f"{ph}_hooked_root_s"] = None if root is None or math.isnan(root) else root
        out[f"{ph}_ratio"] = total / w if total is not None and w else None
        out.update(_paired(lp.pairs, ph))
    return out


def _paired(pairs: tuple[LayerPair, ...], ph: str) -> dict[str, float | None]:
    ratios = [r for r in (p.ratio(ph) for p in pairs) if r is not None]
    wholes = [p.whole_s[ph] for p in pairs if ph in p.whole_s]
    q25, q50, q75 = (float(q) for q in np.quantile(ratios, [0.25, 0.5, 0.75])) if ratios else (None, None, None)
    return {f"{ph}_paired_ratio": q50, f"{ph}_paired_ratio_q25": q25, f"{ph}_paired_ratio_q75": q75,
            f"{ph}_paired_whole_s": statistics.median(wholes) if wholes else None, f"{ph}_pairs": len(ratios)}


STEP_SPLIT = ("fwd_s", "bwd_s", "optimizer_s", "not_owned_s", "hooked_s")
"""The parts of a hooked repetition of a user's step (:meth:`hwprof.measuring.timers.StepTimer.split`)."""


def step_layer_sum(lp: LayerPass, timings: dict[str, TimingStats]) -> dict[str, float | None]:
    """A user's step: ``step_whole_s`` (the ``whole_step`` phase's median), ``step_layer_sum_s`` (the per-module
    self medians, forward + backward) and their ratio ``step_ratio``; per pair, sum(self) / the unhooked
    step (``step_paired_ratio`` median, ``_q25``, ``_q75``, ``step_paired_whole_s``, ``step_pairs``); the
    split ``step_<part>`` (each part of :data:`STEP_SPLIT`) of the median hooked step (the pair whose
    ``hooked_s`` is the median, lower one for an even count, so that the parts add up to its
    ``hooked_s``), and ``step_hooked_ratio``, the median hooked / unhooked time (what the hooks cost)."""
    whole = timings[StepWork.PHASE].median_s
    cols = [lp.layers[c].astype(float) for c in ("fwd_s", "bwd_s")]
    total = float(sum(c.sum(skipna=True) for c in cols)) if any(c.notna().any() for c in cols) else None
    out: dict[str, float | None] = {"step_whole_s": whole, "step_layer_sum_s": total,
                                    "step_ratio": total / whole if total is not None and whole else None}
    ratios, wholes, hooked = [], [], []
    for p in lp.pairs:
        w = p.whole_s.get(StepWork.PHASE)
        own = sum(v for v in (p.self_sum_s("fwd"), p.self_sum_s("bwd")) if v is not None)
        if w:
            ratios.append(own / w)
            wholes.append(w)
            if p.split is not None:
                hooked.append(p.split["hooked_s"] / w)
    q25, q50, q75 = (float(q) for q in np.quantile(ratios, [0.25, 0.5, 0.75])) if ratios else (None, None, None)
    out.update({"step_paired_ratio": q50, "step_paired_ratio_q25": q25, "step_paired_ratio_q75": q75,
                "step_paired_whole_s": statistics.median(wholes) if wholes else None, "step_pairs": len(ratios),
                "step_hooked_ratio": statistics.median(hooked) if hooked else None})
    splits = sorted((p.split for p in lp.pairs if p.split is not None), key=lambda sp: sp["hooked_s"])
    mid = splits[(len(splits) - 1) // 2] if splits else None     # the median hooked step, so its parts add up
    for part in STEP_SPLIT:
        out[f"step_{part}"] = mid[part] if mid is not None else None
    return out


# --------------------------------------------------------------------------- per op
@dataclass(frozen=True)
class OpPass:
    ops: pd.DataFrame
    notes: tuple[str, ...] = ()


def per_op_pass(work: UnitOfWork, ctx: RunContext) -> OpPass:
    """Each dispatched aten op's time (:func:`profile_ops`: one warm-up, then the median of 3 profiled iterations)."""
    with oom_phase("per_op", ctx.device):
        ops = profile_ops(work.iteration, ctx.device)
        work.zero_grads()
    return OpPass(ops, ("per-op times come from a separate torch.profiler pass (median of 3); on CPU each op's "
                        "time includes the profiler's own per-op overhead",))
