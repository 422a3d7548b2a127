"""Paired timing: two or more callables timed in alternation, so that their ratio holds while the
machine's speed drifts (other processes come and go, clocks throttle).

Algorithm of :func:`time_paired` (times in seconds, callables ``f_1 .. f_k``, ``f_1`` the reference
unless another is named)::

    repeat warmup rounds: f_1(); ...; f_k()                      # untimed
    loop over rounds r = 1, 2, ...:
        for j = 1 .. k:  mark; f_j(); mark                       # CPU: clock.now_ns(); CUDA: event pair
        stop when r >= max_rounds,
          or r >= min_rounds and host time spent >= budget_s

    ratio_j[r] = t_j[r] / t_ref[r]                                # one ratio per round ("pair")

A round is A, B (, C ...) back to back, so the callables of one round run under the same load:
a load that changes between rounds scales every time of the round alike and cancels in its
ratio; a change inside one round biases that round only, which the median of the per-round
ratios ignores. Timing A's repetitions first and B's minutes later (two separate medians) has
no such protection: their ratio moves with the load. The spread reported is the per-round
ratios' q25 and q75 (linear interpolation, as ``numpy.quantile``'s default).

CPU: ``clock.now_ns()`` around each call (``time.perf_counter_ns`` by default; injectable for
tests). CUDA: one ``torch.cuda.Event`` pair per call on the current stream and no host
synchronisation inside a batch of rounds; one ``synchronize`` at the end of the batch, then the
events are read (as :func:`hwprof.measuring.timers.time_fn` does for single callables).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from hwprof.measuring.timers import Clock, PerfCounterClock, TimingStats
from hwprof.training import training_loss

__all__ = ["RatioStats", "PairedTiming", "time_paired", "model_call", "load_average"]

_CUDA_MAX_BATCH = 50


@dataclass(frozen=True)
class RatioStats:
    """Per-round ratios t_j / t_ref: median, q25 and q75 (their spread), min, max, count."""

    median: float
    q25: float
    q75: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, ratios: list[float]) -> RatioStats:
        finite = [r for r in ratios if math.isfinite(r)]
        if not finite:
            return cls(math.nan, math.nan, math.nan, math.nan, math.nan, 0)
        q25, med, q75 = (float(v) for v in np.quantile(finite, [0.25, 0.5, 0.75]))
        return cls(med, q25, q75, min(finite), max(finite), len(finite))

    def to_dict(self) -> dict[str, float | int]:
        return {"median": self.median, "q25": self.q25, "q75": self.q75, "min": self.min, "max": self.max,
                "n": self.n}


@dataclass
class PairedTiming:
    """Each callable's time in every round (``times_s[name][r]``), in the order they ran."""

    names: tuple[str, ...]
    times_s: dict[str, list[float]]
    reference: str
    warmup: int = 0
    device: str = "cpu"
    stop_reason: str = ""   # "budget" | "max_rounds"
    load_average: tuple[float | None, float | None] = (None, None)   # 1-minute load average before, after
    _stats: dict[str, TimingStats] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def rounds(self) -> int:
        return len(self.times_s[self.reference])

    def stats(self, name: str) -> TimingStats:
        """``name``'s times as :class:`TimingStats` (median, IQR, min, ...)."""
        if name not in self._stats:
            self._stats[name] = TimingStats(list(self.times_s[name]), warmup=self.warmup, device=self.device,
                                            stop_reason=self.stop_reason)
        return self._stats[name]

    def ratios(self, name: str) -> list[float]:
        """t_name[r] / t_reference[r] for every round r."""
        return [t / ref if ref > 0 else math.nan
                for t, ref in zip(self.times_s[name], self.times_s[self.reference], strict=True)]

    def ratio(self, name: str) -> RatioStats:
        """Median and spread of :meth:`ratios`."""
        return RatioStats.of(self.ratios(name))

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "reference": self.reference, "rounds": self.rounds,
                "warmup": self.warmup, "device": self.device, "stop_reason": self.stop_reason,
                "load_average": list(self.load_average),
                "times_s": {k: list(v) for k, v in self.times_s.items()},
                "ratio_to_reference": {k: self.ratio(k).to_dict() for k in self.names if k != self.reference}}


def time_paired(
    fns: Mapping[str, Callable[[], Any]],
    *,
    reference: str | None = None,
    device: str | torch.device = "cpu",
    warmup: int = 2,
    min_rounds: int = 5,
    max_rounds: int = 1000,
    budget_s: float = 1.0,
    clock: Clock | None = None,
) -> PairedTiming:
    """Time the callables of ``fns`` (name -> zero-argument callable, at least two) in alternation,
    one call of each per round, in the mapping's order (see the module docstring); ``reference``
    (default: the first) is the denominator of :meth:`PairedTiming.ratio`. ``budget_s`` bounds
    the host time spent after the warm-up; ``clock`` times CPU calls and the budget."""
    names = tuple(fns)
    if len(names) < 2:
        raise ValueError(f"time_paired needs at least two callables, got {len(names)}")
    ref = names[0] if reference is None else reference
    if ref not in fns:
        raise ValueError(f"reference {ref!r} is not one of {names}")
    dev = torch.device(device)
    clock = clock or PerfCounterClock()
    min_rounds = max(1, min_rounds)
    max_rounds = max(min_rounds, max_rounds)
    calls = [fns[n] for n in names]
    load_before = load_average()
    for _ in range(max(0, warmup)):
        for fn in calls:
            fn()
    if dev.type == "cuda":
        with torch.cuda.device(dev):
            torch.cuda.synchronize()
            rounds, reason = _rounds(calls, _cuda_batch, _CUDA_MAX_BATCH, clock, min_rounds, max_rounds, budget_s)
    else:
        rounds, reason = _rounds(calls, lambda c, n: _clock_batch(c, n, clock), 1, clock, min_rounds, max_rounds,
                                 budget_s)
    times = {n: [r[j] for r in rounds] for j, n in enumerate(names)}
    return PairedTiming(names, times, ref, warmup=max(0, warmup), device=str(dev), stop_reason=reason,
                        load_average=(load_before, load_average()))


def load_average() -> float | None:
    """The 1-minute load average (``os.getloadavg``: runnable processes, this one's threads
    included), or None where the platform has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _stop(rounds: int, spent_ns: int, min_rounds: int, max_rounds: int, budget_s: float) -> str:
    if rounds >= max_rounds:
        return "max_rounds"
    if rounds >= min_rounds and spent_ns >= budget_s * 1e9:
        return "budget"
    return ""


Batch = Callable[[list[Callable[[], Any]], int], list[list[float]]]


def _rounds(calls: list[Callable[[], Any]], batch_fn: Batch, max_batch: int, clock: Clock, min_rounds: int,
            max_rounds: int, budget_s: float) -> tuple[list[list[float]], str]:
    """Rounds in batches (``batch_fn(calls, n)`` -> n rounds of times): first ``min_rounds``, then
    as many as the budget left allows, at most ``max_batch``; stop as :func:`_stop` says."""
    rounds: list[list[float]] = []
    start = clock.now_ns()
    n = min_rounds
    while True:
        n = max(1, min(n, max_rounds - len(rounds)))
        b0 = clock.now_ns()
        rounds += batch_fn(calls, n)
        b1 = clock.now_ns()
        reason = _stop(len(rounds), b1 - start, min_rounds, max_rounds, budget_s)
        if reason:
            return rounds, reason
        per_round_ns = max(1.0, (b1 - b0) / n)
        n = int(min(max_batch, max(1.0, (budget_s * 1e9 - (b1 - start)) / per_round_ns)))


def _clock_batch(calls: list[Callable[[], Any]], n: int, clock: Clock) -> list[list[float]]:
    """n rounds, each call between two ``clock.now_ns()`` reads."""
    rounds = []
    for _ in range(n):
        row = []
        for fn in calls:
            t0 = clock.now_ns()
            fn()
            row.append((clock.now_ns() - t0) * 1e-9)
        rounds.append(row)
    return rounds


def _cuda_batch(calls: list[Callable[[], Any]], n: int) -> list[list[float]]:
    """n rounds, each call between the two events of a pair on the current stream; one host
    synchronisation, on the last event, after the whole batch."""
    events = [[(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in calls]
              for _ in range(n)]
    for pairs in events:
        for fn, (begin, end) in zip(calls, pairs, strict=True):
            begin.record()
            fn()
            end.record()
    events[-1][-1][1].synchronize()
    return [[b.elapsed_time(e) * 1e-3 for b, e in pairs] for pairs in events]


def model_call(model: nn.Module, inputs: tuple[Any, ...], train: bool = False) -> Callable[[], None]:
    """A whole model as a zero-argument callable for :func:`time_paired`: ``model(*inputs)`` under
    ``no_grad`` (inference), or in train mode forward then backward of
    :func:`hwprof.training.training_loss` (the loss hwprof's measured runs use), the parameters'
    ``.grad`` set to None first so that nothing accumulates. Sets ``model``'s train/eval mode."""
    model.train(train)
    params = list(model.parameters())

    def infer() -> None:
        with torch.no_grad():
            model(*inputs)

    def step() -> None:
        for p in params:
            p.grad = None
        loss = training_loss(model(*inputs))
        if loss is None:
            raise ValueError("the model's output has no floating tensor that requires grad: nothing to backpropagate")
        loss.backward()

    return step if train else infer
