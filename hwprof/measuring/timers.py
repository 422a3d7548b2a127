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

import bisect
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

__all__ = ["Clock", "PerfCounterClock", "TimingStats", "time_fn", "make_l2_flusher", "l2_flush_bytes",
           "Stopwatch", "NOISY_IQR_OVER_MEDIAN"]

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
) -> TimingStats:
    """Time ``fn()`` (see the module docstring for the algorithm); returns raw times + statistics.

    ``setup`` runs before every rep (warm-up included) outside the timed region; with
    ``l2_flush`` a buffer larger than the L2 cache is written after it. ``clock`` times CPU
    reps and the budget (default ``time.perf_counter_ns``); CUDA reps are timed by events.
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
    if stats.noisy:
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


_SEQ_PROBE: list[torch.Tensor] = []


def _seq_peek() -> int:
    """Sequence number the next autograd node created on this thread will get.

    ``torch.autograd._get_sequence_nr`` (``at::sequence_number::peek``); where a torch build lacks
    it, a throw-away view node on a 0-d leaf reveals the counter (and advances it by one).
    """
    peek = getattr(torch.autograd, "_get_sequence_nr", None)
    if peek is not None:
        return int(peek())
    if not _SEQ_PROBE:
        _SEQ_PROBE.append(torch.zeros((), requires_grad=True))
    with torch.enable_grad():
        node: Any = _SEQ_PROBE[0].view_as(_SEQ_PROBE[0]).grad_fn
        return int(node._sequence_nr()) + 1


@dataclass
class _Call:
    """One call of a tracked module: forward markers, its caller, and the autograd sequence
    numbers [seq_lo, seq_hi) of the nodes created while it ran."""

    path: str
    parent: int | None
    seq_lo: int = 0
    seq_hi: int = 0
    fwd_start: Marker = None
    fwd_end: Marker = None


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


class LayerTimer:
    """Per-module forward and backward times from ONE global forward pre-hook / hook pair.

    **Forward.** Global hooks (``register_module_forward_pre_hook`` /
    ``register_module_forward_hook(..., always_call=True)``), filtered to ``model``'s own
    modules by identity, leave every module's own hook dicts empty, so fused fast paths that
    check ``self._forward_hooks`` (e.g. ``nn.TransformerEncoderLayer``) behave as without
    hooks. A call's markers bracket its forward: CPU ``clock.now_ns()``, CUDA an event on the
    current stream. No hook ever synchronises; :meth:`collect` synchronises once.

    **Backward: node attribution.** The hooks also note the autograd sequence numbers of the
    nodes each call created (``[seq_lo, seq_hi)``; sequence numbers grow monotonically on a
    thread). :meth:`prepare_backward` (run between forward and backward, untimed) walks the
    graph from the loss, gives every node to the innermost call that created it (an
    ``AccumulateGrad`` node to the module owning the parameter) and brackets each node with
    a pre-hook and a post-hook marker. A module's backward self time = the summed execution
    time of its nodes. Why not start/end hooks on each module's outputs and inputs (the
    ``torch.utils.module_tracker`` rule)? Such intervals overlap whenever inputs are shared or
    branches run one after the other (a ResNet block's ``downsample`` "starts" when the
    block's add is done and "ends" after the whole main branch), which makes self times
    negative; node attribution partitions the backward exactly. Engine gaps between nodes
    (and nodes outside the model, e.g. the loss) belong to no module: they are the difference
    between the whole-model backward and the sum of self times.

    Self time of a forward call = its inclusive time - the inclusive times of the calls made
    inside it (residual adds written in a parent's ``forward`` land in the parent), so
    sum(self) = root inclusive. Inclusive backward = self + the children's inclusive.
    ``depth`` limits tracking to module paths with at most ``depth`` dot-separated parts
    ("" is depth 0); untracked modules' time goes to their nearest tracked ancestor.
    """

    def __init__(self, model: torch.nn.Module, *, device: str | torch.device = "cpu",
                 clock: Clock | None = None, depth: int | None = None, backward: bool = False) -> None:
        self.device = torch.device(device)
        self.clock = clock or PerfCounterClock()
        self.backward = backward
        self.modules: dict[str, torch.nn.Module] = {
            path: m for path, m in model.named_modules() if depth is None or _depth(path) <= depth}
        self._paths = {id(m): path for path, m in self.modules.items()}
        self._owner: dict[int, str] = {}
        for path, m in model.named_modules():
            for p in m._parameters.values():
                if p is not None:
                    self._owner.setdefault(id(p), self._tracked(path))
        self.calls: list[_Call] = []
        self._stack: list[int] = []
        self._nodes: list[list[Any]] = []     # [call index, node, start marker, end marker]
        self._node_handles: list[Any] = []
        self._global_handles: list[Any] = []
        self._events = _EventPool()

    def _tracked(self, path: str) -> str:
        while path and path not in self.modules:
            path = path.rsplit(".", 1)[0] if "." in path else ""
        return path

    # ------------------------------------------------------------------ context
    def __enter__(self) -> LayerTimer:
        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
        try:
            self._global_handles.append(register_module_forward_pre_hook(self._pre_hook))
            self._global_handles.append(register_module_forward_hook(self._post_hook, always_call=True))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._global_handles:
            h.remove()
        self._global_handles.clear()
        self.reset()

    def reset(self) -> None:
        """Forget this repetition's calls and node hooks (call between repetitions)."""
        for h in self._node_handles:
            h.remove()
        self._node_handles.clear()
        self._nodes.clear()
        self.calls.clear()
        self._stack.clear()
        self._events.release()

    # ------------------------------------------------------------------ forward hooks
    def _mark(self) -> Marker:
        if self.device.type == "cuda":
            return self._events.take()
        return self.clock.now_ns()

    def _pre_hook(self, module: torch.nn.Module, args: Any) -> None:
        path = self._paths.get(id(module))
        if path is None:
            return
        call = _Call(path, self._stack[-1] if self._stack else None)
        self.calls.append(call)
        self._stack.append(len(self.calls) - 1)
        call.seq_lo = _seq_peek()
        call.fwd_start = self._mark()   # last: the hook's own work stays outside this module

    def _post_hook(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if id(module) not in self._paths:
            return
        end = self._mark()              # first
        if not self._stack:
            return
        call = self.calls[self._stack.pop()]
        call.fwd_end = end
        call.seq_hi = _seq_peek()

    # ------------------------------------------------------------------ backward
    def prepare_backward(self, loss: torch.Tensor) -> int:
        """Attribute every node of ``loss``'s graph to a call and hook it; returns the number of nodes hooked."""
        if not self.backward or loss.grad_fn is None or not self.calls:
            return 0
        starts = [c.seq_lo for c in self.calls]   # pre-order, so ascending
        first_call: dict[str, int] = {}
        for i, c in enumerate(self.calls):
            first_call.setdefault(c.path, i)
        seen: set[int] = set()
        todo: list[Any] = [loss.grad_fn]
        while todo:
            node = todo.pop()
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            todo.extend(nxt for nxt, _ in node.next_functions)
            owner = self._call_of(node, starts, first_call)
            if owner is not None:
                self._hook_node(owner, node)
        return len(self._nodes)

    def _call_of(self, node: Any, starts: list[int], first_call: dict[str, int]) -> int | None:
        var = getattr(node, "variable", None)
        if var is not None:                   # AccumulateGrad: the module that owns the parameter
            path = self._owner.get(id(var))
            while path is not None and path not in first_call:
                path = None if path == "" else self._tracked(path.rsplit(".", 1)[0] if "." in path else "")
            return None if path is None else first_call[path]
        seq = node._sequence_nr()
        i: int | None = bisect.bisect_right(starts, seq) - 1
        while i is not None and i >= 0:
            c = self.calls[i]
            if c.seq_lo <= seq < c.seq_hi:
                return i
            i = c.parent
        return None

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
            for p in self.modules}
        n = len(self.calls)
        fwd = [self._elapsed_s(c.fwd_start, c.fwd_end) for c in self.calls]
        bwd_self: list[float | None] = [None] * n
        for call, _node, start, end in self._nodes:
            dt = self._elapsed_s(start, end)
            if dt is not None:
                bwd_self[call] = (bwd_self[call] or 0.0) + dt
        has_bwd = bool(self._nodes)
        bwd_incl = [b or 0.0 for b in bwd_self]
        fwd_child = [0.0] * n
        for i in reversed(range(n)):          # children come after their parent
            parent = self.calls[i].parent
            if parent is not None:
                fwd_child[parent] += fwd[i] or 0.0
                bwd_incl[parent] += bwd_incl[i]
        for i, c in enumerate(self.calls):
            row = out[c.path]
            row["calls"] += 1
            f = fwd[i]
            if f is not None:
                row["fwd_incl_s"] = _nan0(row["fwd_incl_s"]) + f
                row["fwd_s"] = _nan0(row["fwd_s"]) + f - fwd_child[i]
            if has_bwd:
                row["bwd_incl_s"] = _nan0(row["bwd_incl_s"]) + bwd_incl[i]
                row["bwd_s"] = _nan0(row["bwd_s"]) + (bwd_self[i] or 0.0)
        return out


def _nan0(x: float) -> float:
    return 0.0 if math.isnan(x) else x


def _depth(path: str) -> int:
    return 0 if path == "" else path.count(".") + 1
