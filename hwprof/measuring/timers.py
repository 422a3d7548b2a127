"""Timing: repeated runs of a zero-argument callable, with their raw times and robust statistics.

Algorithm of :func:`time_fn` (all times in seconds, ``*_s``)::

    repeat warmup times: setup(); fn()                     # untimed
    start = now
    loop:
        setup(); [l2 flush]                                # untimed, before the start mark
        mark_start; fn(); mark_end                         # CPU: clock.now_ns(); CUDA: event pair
        stop when reps >= max_reps,
          or reps >= min_reps and (now - start >= budget_s  or  IQR/median < target_iqr)

On CUDA the reps run in batches: each rep records one ``torch.cuda.Event`` pair on the
current stream and nothing synchronises the host inside a batch; one ``synchronize`` at the
end of the batch, then the event pairs are read. The budget counts host wall time, setup
included. Trade-off (as in ``torch.utils.benchmark.Timer.blocked_autorange``): a larger
``target_iqr`` stops sooner on a quiet machine, ``budget_s`` bounds a noisy one.

``TimingStats`` keeps every raw time; median, IQR (q75 - q25, linear interpolation as
``numpy.quantile``), min and mean are derived from them. IQR/median above 10% logs a warning.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from hwprof.modules import Frame, ModuleCalls

__all__ = ["Clock", "PerfCounterClock", "TimingStats", "time_fn", "make_l2_flusher", "l2_flush_bytes",
           "Stopwatch", "LayerTimer", "StepTimer", "NOISY_IQR_OVER_MEDIAN"]

log = logging.getLogger(__name__)

NOISY_IQR_OVER_MEDIAN = 0.10   # IQR/median above this logs a warning (and the runner adds a note)


class Clock(Protocol):
    """Anything with ``now_ns() -> int`` (nanoseconds, monotonic). Injectable for tests."""

    def now_ns(self) -> int: ...


class PerfCounterClock:
    """The default clock: ``time.perf_counter_ns``."""

    def now_ns(self) -> int:
        import time
        return time.perf_counter_ns()


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated quantile of sorted data (numpy's default method): position q*(n-1)."""
    if not sorted_values:
        return math.nan
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _iqr_over_median(values: list[float]) -> float:
    s = sorted(values)
    med = _quantile(s, 0.5)
    if med <= 0:
        return math.inf
    return (_quantile(s, 0.75) - _quantile(s, 0.25)) / med


@dataclass
class TimingStats:
    """Raw repetition times (``times_s``, seconds) and their statistics."""

    times_s: list[float]
    warmup: int = 0
    device: str = "cpu"
    stop_reason: str = ""   # "budget" | "stable" | "max_reps"
    _sorted: list[float] = field(default_factory=list, init=False, repr=False, compare=False)

    def _s(self) -> list[float]:
        if len(self._sorted) != len(self.times_s):
            self._sorted = sorted(self.times_s)
        return self._sorted

    @property
    def reps(self) -> int:
        return len(self.times_s)

    @property
    def median_s(self) -> float:
        return _quantile(self._s(), 0.5)

    @property
    def iqr_s(self) -> float:
        """Interquartile range q75 - q25 (seconds)."""
        s = self._s()
        return _quantile(s, 0.75) - _quantile(s, 0.25)

    @property
    def min_s(self) -> float:
        return self._s()[0] if self.times_s else math.nan

    @property
    def mean_s(self) -> float:
        return sum(self.times_s) / len(self.times_s) if self.times_s else math.nan

    @property
    def iqr_over_median(self) -> float:
        med = self.median_s
        return self.iqr_s / med if med > 0 else math.nan

    @property
    def noisy(self) -> bool:
        """IQR/median above :data:`NOISY_IQR_OVER_MEDIAN` (10%)."""
        return self.iqr_over_median > NOISY_IQR_OVER_MEDIAN

    def summary(self) -> dict[str, float | int]:
        """The statistics as one row: median_s, iqr_s, min_s, mean_s, reps, iqr_over_median."""
        return {"median_s": self.median_s, "iqr_s": self.iqr_s, "min_s": self.min_s, "mean_s": self.mean_s,
                "reps": self.reps, "iqr_over_median": self.iqr_over_median}

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "warmup": self.warmup, "device": self.device, "stop_reason": self.stop_reason,
                "times_s": list(self.times_s)}


def time_fn(
    fn: Callable[[], Any],
    *,
    device: str | torch.device = "cpu",
    warmup: int = 3,
    min_reps: int = 10,
    max_reps: int = 1000,
    budget_s: float = 1.0,
    target_iqr: float = 0.02,
    l2_flush: bool = False,
    setup: Callable[[], Any] | None = None,
    clock: Clock | None = None,
    warn_noisy: bool = True,
) -> TimingStats:
    """Time ``fn()`` (see the module docstring for the algorithm); returns raw times + statistics.

    ``setup`` runs before every rep (warm-up included) outside the timed region; with
    ``l2_flush`` a buffer larger than the L2 cache is written after it. ``clock`` times CPU
    reps and the budget (default ``time.perf_counter_ns``); CUDA reps are timed by events.
    ``warn_noisy``: log a warning when IQR/median exceeds the noisy bound (``stats.noisy`` is set
    either way; the ceilings' trials, judged by the agreement of their rounds, turn it off).
    """
    dev = torch.device(device)
    clock = clock or PerfCounterClock()
    min_reps = max(1, min_reps)
    max_reps = max(min_reps, max_reps)
    flush = make_l2_flusher(dev) if l2_flush else None

    def before() -> None:
        if setup is not None:
            setup()
        if flush is not None:
            flush()

    for _ in range(max(0, warmup)):
        before()
        fn()
    if dev.type == "cuda":
        times, reason = _reps_cuda(fn, before, dev, clock, min_reps, max_reps, budget_s, target_iqr)
    else:
        times, reason = _reps_clock(fn, before, clock, min_reps, max_reps, budget_s, target_iqr)
    stats = TimingStats(times, warmup=max(0, warmup), device=str(dev), stop_reason=reason)
    if stats.noisy and warn_noisy:
        log.warning("noisy timing: IQR/median = %.1f%% > %.0f%% over %d reps (median %.6g s)",
                    100 * stats.iqr_over_median, 100 * NOISY_IQR_OVER_MEDIAN, stats.reps, stats.median_s)
    return stats


def _stop(times: list[float], spent_ns: int, min_reps: int, max_reps: int, budget_s: float,
          target_iqr: float) -> str:
    """The stop reason after the latest rep, or "" to go on."""
    n = len(times)
    if n >= max_reps:
        return "max_reps"
    if n < min_reps:
        return ""
    if spent_ns >= budget_s * 1e9:
        return "budget"
    if target_iqr > 0 and _iqr_over_median(times) < target_iqr:
        return "stable"
    return ""


def _reps_clock(fn: Callable[[], Any], before: Callable[[], None], clock: Clock, min_reps: int,
                max_reps: int, budget_s: float, target_iqr: float) -> tuple[list[float], str]:
    times: list[float] = []
    start = clock.now_ns()
    while True:
        before()
        t0 = clock.now_ns()
        fn()
        t1 = clock.now_ns()
        times.append((t1 - t0) * 1e-9)
        reason = _stop(times, t1 - start, min_reps, max_reps, budget_s, target_iqr)
        if reason:
            return times, reason


_CUDA_MAX_BATCH = 100


def _reps_cuda(fn: Callable[[], Any], before: Callable[[], None], dev: torch.device, clock: Clock,
               min_reps: int, max_reps: int, budget_s: float, target_iqr: float) -> tuple[list[float], str]:
    times: list[float] = []
    with torch.cuda.device(dev):
        torch.cuda.synchronize()
        start = clock.now_ns()
        batch = min_reps
        while True:
            n = max(1, min(batch, max_reps - len(times)))
            starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
            ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
            b0 = clock.now_ns()
            for i in range(n):
                before()
                starts[i].record()
                fn()
                ends[i].record()
            ends[-1].synchronize()   # the only host sync of the batch
            b1 = clock.now_ns()
            times.extend(s.elapsed_time(e) * 1e-3 for s, e in zip(starts, ends, strict=True))
            reason = _stop(times, b1 - start, min_reps, max_reps, budget_s, target_iqr)
            if reason:
                return times, reason
            per_rep_ns = max(1.0, (b1 - b0) / n)
            remaining_ns = budget_s * 1e9 - (b1 - start)
            batch = int(min(_CUDA_MAX_BATCH, max(1.0, remaining_ns / per_rep_ns)))


def _cpu_l2_bytes() -> int:
    """Largest 'L2' cache size in /sys (per core), else 2 MiB."""
    best = 0
    for d in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            if (d / "level").read_text().strip() != "2":
                continue
            text = (d / "size").read_text().strip().upper()
        except OSError:
            continue
        mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            best = max(best, int(digits) * mult)
    return best or 2 * 2**20


def l2_flush_bytes(device: str | torch.device) -> int:
    """Size of :func:`make_l2_flusher`'s buffer on ``device`` (see there)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        l2 = int(getattr(torch.cuda.get_device_properties(dev), "L2_cache_size", 0))
        return max(2 * l2, 64 * 2**20)
    return max(4 * _cpu_l2_bytes() * torch.get_num_threads(), 16 * 2**20)


def make_l2_flusher(device: str | torch.device) -> Callable[[], None]:
    """A function that writes a buffer larger than the L2 cache on ``device`` (run it untimed).

    CUDA: 2 x ``get_device_properties(dev).L2_cache_size`` (at least 64 MiB), zeroed by a memset
    kernel. CPU: 4 x the per-core L2 from /sys times the thread count (at least 16 MiB), filled
    by torch's threads.
    """
    dev = torch.device(device)
    buf = torch.empty(l2_flush_bytes(dev), dtype=torch.uint8, device=dev)

    def flush() -> None:
        buf.zero_()

    return flush


class Stopwatch:
    """Marks on a device's timeline, read after the work they bracket.

    CPU: ``clock.now_ns()``. CUDA: a ``torch.cuda.Event`` recorded on the current stream; the
    events are made once per stopwatch and reused, and nothing synchronises the host until
    :meth:`elapsed_s` (one ``Event.synchronize`` on the later mark, free when the caller has
    already synchronised). Usage: ``reset()``, then ``mark()`` at most ``marks`` times, then
    ``elapsed_s(i, j)`` = seconds from mark ``i`` to mark ``j``.
    """

    def __init__(self, device: str | torch.device, clock: Clock | None = None, marks: int = 2) -> None:
        self.cuda = torch.device(device).type == "cuda"
        self.clock = clock or PerfCounterClock()
        self._events = [torch.cuda.Event(enable_timing=True) for _ in range(marks)] if self.cuda else []
        self._marks: list[Any] = []

    def reset(self) -> None:
        self._marks = []

    def mark(self) -> None:
        if self.cuda:
            ev = self._events[len(self._marks)]
            ev.record()
            self._marks.append(ev)
        else:
            self._marks.append(self.clock.now_ns())

    def elapsed_s(self, i: int, j: int) -> float:
        a, b = self._marks[i], self._marks[j]
        if self.cuda:
            b.synchronize()
            return float(a.elapsed_time(b)) * 1e-3
        return (b - a) * 1e-9


# --------------------------------------------------------------------------- per-layer timing
Marker = Any   # int nanoseconds (clock) or a recorded torch.cuda.Event


class _EventPool:
    """Reusable CUDA timing events: ``take()`` records the next one on the current stream."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.used = 0

    def take(self) -> Any:
        if self.used == len(self.events):
            self.events.append(torch.cuda.Event(enable_timing=True))
        ev = self.events[self.used]
        self.used += 1
        ev.record()
        return ev

    def release(self) -> None:
        self.used = 0


class LayerTimer(ModuleCalls):
    """Per-module forward and backward times, on the shared module-call tracker
    (:class:`hwprof.modules.ModuleCalls`: global forward pre/post hooks, filtered to ``model``'s
    own modules by identity, so fused fast paths that check ``self._forward_hooks``, e.g.
    ``nn.TransformerEncoderLayer``, behave as without hooks; post-hooks ``always_call``).

    **Forward.** A call's markers bracket its forward: the start marker is the last thing its
    pre-hook does, the end marker the first thing its ``on_exit`` does; CPU ``clock.now_ns()``,
    CUDA an event on the current stream. No hook ever synchronises; :meth:`collect`
    synchronises once.

    **Backward: node attribution** (:meth:`hwprof.modules.ModuleCalls.owned_nodes`, shared with
    the counter and the memory replay). :meth:`prepare_backward` (run between forward and
    backward, untimed) gives every node of the loss's graph to the innermost call that created
    it (an ``AccumulateGrad`` node to the module owning the parameter) and brackets each node
    with a pre-hook and a post-hook marker. A module's backward self time = the summed execution
    time of its nodes, so the nodes partition the backward exactly (start/end hooks on module
    outputs and inputs would overlap across branches and make self times negative). Engine gaps
    between nodes (and nodes outside the model, e.g. the loss) belong to no module: they are the
    difference between the whole-model backward and the sum of self times.

    Self time of a forward call = its inclusive time - the inclusive times of the calls made
    inside it (residual adds written in a parent's ``forward`` land in the parent), so
    sum(self) = root inclusive. Inclusive backward = self + the children's inclusive.
    ``depth`` limits tracking to module paths with at most ``depth`` dot-separated parts
    ("" is depth 0); untracked modules' time goes to their nearest tracked ancestor.
    """

    record_inputs = False

    def __init__(self, model: torch.nn.Module, *, device: str | torch.device = "cpu",
                 clock: Clock | None = None, depth: int | None = None, backward: bool = False,
                 claim_on_exit: bool = False) -> None:
        super().__init__(model, always_call=True, depth=depth, claim_on_exit=claim_on_exit)
        self.device = torch.device(device)
        self.clock = clock or PerfCounterClock()
        self.backward = backward
        self._fwd: list[list[Marker]] = []    # per call: [start marker, end marker]
        self._nodes: list[list[Any]] = []     # [call index, node, start marker, end marker]
        self._node_handles: list[Any] = []
        self._events = _EventPool()
        #: a marker now: a CUDA event recorded on the current stream, else the clock's nanoseconds
        self._mark: Callable[[], Marker] = self._events.take if self.device.type == "cuda" else self.clock.now_ns

    # ------------------------------------------------------------------ context
    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.reset()

    def reset(self) -> None:
        """Forget this repetition's calls and node hooks (call between repetitions)."""
        for h in self._node_handles:
            h.remove()
        self._node_handles.clear()
        self._nodes.clear()
        self._fwd.clear()
        super().reset()
        self._events.release()

    # ------------------------------------------------------------------ forward hooks
    def on_enter(self, frame: Frame, inputs: list[torch.Tensor]) -> None:
        marks: list[Marker] = [None, None]
        self._fwd.append(marks)          # index = frame.call
        marks[0] = self._mark()          # last: the hook's own work stays outside this module

    def on_exit(self, frame: Frame, args: tuple[Any, ...], output: Any) -> None:
        self._fwd[frame.call][1] = self._mark()

    # ------------------------------------------------------------------ backward
    def on_claim(self, node: Any, frame: Frame) -> None:
        """``claim_on_exit`` (a user's step, whose loss hwprof never holds): hook each node as its creator's
        call ends, instead of all of them from the loss in :meth:`prepare_backward`."""
        if self.backward:
            self._hook_node(frame.call, node)

    def prepare_backward(self, loss: torch.Tensor) -> int:
        """Attribute every node of ``loss``'s graph to a call and hook it; returns the number of nodes hooked."""
        if not self.backward or loss.grad_fn is None or not self.frames:
            return 0
        for node, frame in self.owned_nodes([loss]):
            self._hook_node(frame.call, node)
        return len(self._nodes)

    def _hook_node(self, call: int, node: Any) -> None:
        entry: list[Any] = [call, node, None, None]
        self._nodes.append(entry)

        def pre(grad_outputs: Any) -> None:
            entry[2] = self._mark()

        def post(grad_inputs: Any, grad_outputs: Any) -> None:
            entry[3] = self._mark()

        self._node_handles.append(node.register_prehook(pre))
        self._node_handles.append(node.register_hook(post))

    # ------------------------------------------------------------------ results
    def _elapsed_s(self, a: Marker, b: Marker) -> float | None:
        if a is None or b is None:
            return None
        if self.device.type == "cuda":
            return a.elapsed_time(b) * 1e-3
        return (b - a) * 1e-9

    def collect(self) -> dict[str, dict[str, float]]:
        """Per module path: calls, fwd_incl_s, fwd_s (self), bwd_incl_s, bwd_s (self); NaN = not timed.

        Sums over the calls of a module in this repetition. On CUDA one ``synchronize`` here,
        then the events are read.
        """
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        out: dict[str, dict[str, float]] = {
            p: {"calls": 0, "fwd_incl_s": math.nan, "fwd_s": math.nan, "bwd_incl_s": math.nan, "bwd_s": math.nan}
            for p in self.paths.values()}
        fwd = [self._elapsed_s(start, end) for start, end in self._fwd]
        bwd_self: list[float | None] = [None] * len(fwd)
        for call, _node, start, end in self._nodes:
            dt = self._elapsed_s(start, end)
            if dt is not None:
                bwd_self[call] = (bwd_self[call] or 0.0) + dt
        fwd_child, bwd_incl = self._children_sums(fwd, bwd_self)
        has_bwd = bool(self._nodes)
        for i, f in enumerate(self.frames):
            row = out[f.path]
            row["calls"] += 1
            t = fwd[i]
            if t is not None:
                row["fwd_incl_s"] = _nan0(row["fwd_incl_s"]) + t
                row["fwd_s"] = _nan0(row["fwd_s"]) + t - fwd_child[i]
            if has_bwd:
                row["bwd_incl_s"] = _nan0(row["bwd_incl_s"]) + bwd_incl[i]
                row["bwd_s"] = _nan0(row["bwd_s"]) + (bwd_self[i] or 0.0)
        return out

    def _children_sums(self, fwd: list[float | None],
                       bwd_self: list[float | None]) -> tuple[list[float], list[float]]:
        """Per call: the summed forward inclusive times of the calls made inside it, and its
        backward inclusive time (self + the children's inclusive)."""
        fwd_child = [0.0] * len(fwd)
        bwd_incl = [b or 0.0 for b in bwd_self]
        for i in reversed(range(len(fwd))):    # children come after their parent
            parent = self.frames[i].parent
            if parent is not None:
                fwd_child[parent] += fwd[i] or 0.0
                bwd_incl[parent] += bwd_incl[i]
        return fwd_child, bwd_incl


def _nan0(x: float) -> float:
    return 0.0 if math.isnan(x) else x


class StepTimer(LayerTimer):
    """:class:`LayerTimer` over a user's step (nodes hooked as their calls end: ``claim_on_exit``), plus
    markers around every optimizer ``step()`` (torch's global optimizer hooks), so that one hooked
    repetition splits into the time inside the root modules' forwards, inside their backward nodes,
    inside optimizer steps, and the rest ("not owned": the loss outside modules, Python, data
    movement, engine gaps): :meth:`split`."""

    def __init__(self, model: torch.nn.Module, *, device: str | torch.device = "cpu",
                 clock: Clock | None = None, optimizer_hooks: bool = True) -> None:
        super().__init__(model, device=device, clock=clock, backward=True, claim_on_exit=True)
        self._opt_marks: list[list[Marker]] = []
        self.optimizer_hooks = optimizer_hooks
        """False: the caller calls :meth:`opt_pre` / :meth:`opt_post` from optimizer hooks of its own
        (``hwprof.capture`` enters the timer inside an optimizer hook, where none may be added)."""

    def __enter__(self) -> StepTimer:
        from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

        super().__enter__()
        if not self.optimizer_hooks:
            return self
        try:
            self._handles += [register_optimizer_step_pre_hook(self.opt_pre),
                              register_optimizer_step_post_hook(self.opt_post)]
        except BaseException:
            self.__exit__()
            raise
        return self

    def reset(self) -> None:
        super().reset()
        self._opt_marks = []

    def mark(self) -> Marker:
        """A marker now (for the whole repetition's start and end)."""
        return self._mark()

    def opt_pre(self, *_: Any) -> None:
        self._opt_marks.append([self._mark(), None])

    def opt_post(self, *_: Any) -> None:
        if self._opt_marks and self._opt_marks[-1][1] is None:
            self._opt_marks[-1][1] = self._mark()

    def split(self, start: Marker, end: Marker) -> dict[str, float]:
        """Seconds of one hooked repetition from ``start`` to ``end`` (call after :meth:`collect`):
        ``fwd_s`` (the outermost module calls' inclusive forward), ``bwd_s`` (every hooked node),
        ``optimizer_s`` (inside optimizer steps), ``not_owned_s`` (the rest) and ``hooked_s`` (all)."""
        total = self._elapsed_s(start, end) or 0.0
        fwd = sum(self._elapsed_s(a, b) or 0.0 for (a, b), f in zip(self._fwd, self.frames, strict=False)
                  if f.parent is None)
        bwd = sum(self._elapsed_s(a, b) or 0.0 for _c, _n, a, b in self._nodes)
        opt = sum(self._elapsed_s(a, b) or 0.0 for a, b in self._opt_marks)
        return {"fwd_s": fwd, "bwd_s": bwd, "optimizer_s": opt, "not_owned_s": total - fwd - bwd - opt,
                "hooked_s": total}
