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

from hwprof.errors import is_oom
from hwprof.measuring.alloc_trace import AllocTrace, alloc_trace_peak, storage_bytes
from hwprof.measuring.op_times import profile_ops
from hwprof.measuring.probes import PhasePeak, allocator_peaks, cuda_current
from hwprof.measuring.records import LAYER_COLUMNS, MeasureConfig
from hwprof.measuring.timers import Clock, LayerTimer, Stopwatch, TimingStats, l2_flush_bytes, time_fn
from hwprof.spec import Inputs, as_inputs
from hwprof.training import make_optimizer

__all__ = ["RunContext", "Work", "OutOfMemory", "PhaseOutOfMemory", "oom_phase", "PhaseTimes", "TracePass",
           "LayerPair", "LayerPass", "OpPass", "timed_phases", "alloc_trace_pass", "per_layer_pass", "per_op_pass",
           "layer_sum"]

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
    """The model being measured (the user's, or a moved copy), its inputs, and the steps the passes run."""

    model: nn.Module
    inputs: Inputs
    train: bool
    loss_fn: Callable[[Any], torch.Tensor]
    params: list[nn.Parameter] = field(init=False)

    def __post_init__(self) -> None:
        self.params = list(self.model.parameters())
        self.inputs = as_inputs(self.inputs)   # a tuple of tensors is positional inputs

    def zero_grads(self) -> None:
        for p in self.params:
            p.grad = None

    def forward(self) -> Any:
        return self.inputs.call(self.model)

    def forward_nograd(self) -> None:
        with torch.no_grad():
            self.forward()

    def forward_grad(self) -> None:
        with torch.enable_grad():
            self.forward()

    def loss(self) -> torch.Tensor:
        """``loss_fn(forward())`` with grad enabled."""
        with torch.enable_grad():
            return self.loss_fn(self.forward())

    def iteration(self) -> None:
        """Gradients to None, then a forward without grad (inference) or forward, loss and backward (train)."""
        self.zero_grads()
        if self.train:
            self.loss().backward()
        else:
            self.forward_nograd()

    @contextlib.contextmanager
    def optimizer(self, spec: Any) -> Iterator[torch.optim.Optimizer | None]:
        """A fresh optimizer over the parameters that require grad (None for ``spec=None``); on exit its
        state is dropped and the gradients set to None."""
        opt = make_optimizer(spec, [p for p in self.params if p.requires_grad])
        try:
            yield opt
        finally:
            self.zero_grads()
            if opt is not None:
                opt.state.clear()


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


def timed_phases(work: Work, ctx: RunContext) -> PhaseTimes:
    """``fwd_nograd`` (inference), or ``fwd``, ``bwd`` and, with an optimizer, ``step`` (train), each timed by
    :func:`time_fn` (warm-up, then repetitions until the budget or a stable IQR) with its allocator peaks.

    ``bwd`` times ``loss.backward()`` alone (forward and loss in the untimed setup); ``step`` times
    ``optimizer.step()`` alone (forward, loss and backward in the setup). Gradients are set to None
    before every repetition."""
    cfg = ctx.config
    flush = l2_flush_bytes(ctx.device) if cfg.l2_flush and ctx.device.type == "cuda" else None
    runs: dict[str, tuple[TimingStats, PhasePeak]] = {}
    if not work.train:
        runs["fwd_nograd"] = _time_phase("fwd_nograd", work.forward_nograd, None, ctx)
    else:
        runs["fwd"] = _time_phase("fwd", work.forward_grad, work.zero_grads, ctx)
        pending: list[torch.Tensor] = []

        def bwd_setup() -> None:
            work.zero_grads()
            pending[:] = [work.loss()]

        runs["bwd"] = _time_phase("bwd", lambda: pending.pop().backward(), bwd_setup, ctx)
        with work.optimizer(cfg.optimizer) as opt:
            if opt is not None:
                runs["step"] = _time_phase("step", opt.step, work.iteration, ctx)
    notes = [] if flush is None else [
        f"l2_flush: every phase's allocator peak includes the {flush} B flush buffer (l2_flush_buffer_bytes), "
        "live while the phase is timed"]
    notes += [f"phase {name}: IQR/median = {100 * stats.iqr_over_median:.1f}% > 10% over {stats.reps} reps; "
              "the median is less trustworthy" for name, (stats, _) in runs.items() if stats.noisy]
    return PhaseTimes({k: s for k, (s, _) in runs.items()}, tuple(p for _, p in runs.values()), flush, tuple(notes))


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


def alloc_trace_pass(work: Work, ctx: RunContext) -> TracePass:
    """What the timed phases run, once more under the allocator profiler (:func:`alloc_trace_peak`): two
    iterations (:meth:`Work.iteration`), each followed in training by ``step()`` of a fresh optimizer (the
    second iteration has its state live, as in the ``step`` phase). Live before the pass: on CUDA
    ``memory_allocated()`` (cuBLAS workspaces included), on the CPU the parameters, buffers and inputs."""
    dev = ctx.device
    with oom_phase("alloc_trace", dev):
        work.zero_grads()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            before = int(torch.cuda.memory_allocated(dev))
        else:
            before = storage_bytes([*work.params, *work.model.buffers(), *work.inputs]) + ctx.resident_bytes

        def run() -> None:
            with work.optimizer(ctx.config.optimizer) as opt:
                for _ in range(2):
                    work.iteration()
                    if opt is not None:
                        opt.step()

        trace = alloc_trace_peak(run, before, dev.type)
    what = "two training iterations with a fresh optimizer" if work.train else "two forwards"
    held = (f"; {ctx.resident_bytes} B held by the model's wrapper counted as live before the pass"
            if ctx.resident_bytes and dev.type != "cuda" else "")
    return TracePass(trace, (f"alloc_trace_peak_bytes: peak bytes of live {dev.type} tensors (parameters, buffers "
                             "and inputs included) from torch's allocator events in a separate torch.profiler pass "
                             f"({what}){held}",))


# --------------------------------------------------------------------------- per layer
@dataclass(frozen=True)
class LayerPair:
    """One pair of repetitions: the hooked one's per-module times (``LayerTimer.collect()``) and the unhooked
    one's whole-model seconds per phase (``fwd``, and ``bwd`` in training), measured right before it."""

    layers: LayerRecord
    whole_s: dict[str, float]

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


def per_layer_pass(work: Work, ctx: RunContext) -> LayerPass:
    """Pairs of repetitions (:func:`_pair`) after one warm-up pair: ``layer_reps`` pairs, or by budget (at
    least 3 pairs and ``budget_s`` spent, at most 100 pairs)."""
    cfg = ctx.config
    timer = LayerTimer(work.model, device=ctx.device, clock=ctx.clock, depth=cfg.depth, backward=work.train)
    watch = Stopwatch(ctx.device, ctx.clock, marks=4 if work.train else 2)
    with oom_phase("per_layer", ctx.device):
        start = ctx.clock.now_ns()
        _pair(work, timer, watch)   # warm-up
        pairs = [_pair(work, timer, watch)]
        while not _enough_pairs(len(pairs), ctx, start):
            pairs.append(_pair(work, timer, watch))
        work.zero_grads()
    layers, notes = _layer_table(work.model, [p.layers for p in pairs])
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


def _pair(work: Work, timer: LayerTimer, watch: Stopwatch) -> LayerPair:
    """An unhooked repetition, then a hooked one right after it; on CUDA the hooked repetition's
    ``collect()`` is the pair's one host synchronisation, and the unhooked events are read after it."""
    _unhooked(work, watch)
    layers = _hooked(work, timer)
    whole_s = {"fwd": watch.elapsed_s(0, 1)}
    if work.train:
        whole_s["bwd"] = watch.elapsed_s(2, 3)
    return LayerPair(layers, whole_s)


def _unhooked(work: Work, watch: Stopwatch) -> None:
    """Marks around the forward (0, 1) and, in training, around ``loss.backward()`` (2, 3); the loss between
    them is not timed, as in the headline ``fwd`` and ``bwd`` phases."""
    watch.reset()
    work.zero_grads()
    with torch.set_grad_enabled(work.train):
        watch.mark()
        out = work.forward()
        watch.mark()
        if not work.train:
            return
        loss = work.loss_fn(out)
    del out
    watch.mark()
    loss.backward()
    watch.mark()


def _hooked(work: Work, timer: LayerTimer) -> LayerRecord:
    with timer:
        timer.reset()
        work.zero_grads()
        if work.train:
            loss = work.loss()
            timer.prepare_backward(loss)
            loss.backward()
            del loss
        else:
            work.forward_nograd()
        return timer.collect()


def _layer_table(model: nn.Module, reps: list[LayerRecord]) -> tuple[pd.DataFrame, list[str]]:
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
    containers = (nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict)   # never called themselves
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


# --------------------------------------------------------------------------- per op
@dataclass(frozen=True)
class OpPass:
    ops: pd.DataFrame
    notes: tuple[str, ...] = ()


def per_op_pass(work: Work, ctx: RunContext) -> OpPass:
    """Each dispatched aten op's time (:func:`profile_ops`: one warm-up, then the median of 3 profiled iterations)."""
    with oom_phase("per_op", ctx.device):
        ops = profile_ops(work.iteration, ctx.device)
        work.zero_grads()
    return OpPass(ops, ("per-op times come from a separate torch.profiler pass (median of 3); on CPU each op's "
                        "time includes the profiler's own per-op overhead",))
