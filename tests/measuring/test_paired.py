"""Paired (alternating) timing: the per-round ratio holds while a fake clock's speed drifts."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from hwprof.measuring.paired import RatioStats, time_paired
from hwprof.measuring.timers import time_fn


class DriftingClock:
    """Fake time in ns. ``work(units)`` advances it by units x the slowdown in force when the call
    starts: ``slowdown(t)`` models a machine whose load changes while the measurement runs."""

    def __init__(self, slowdown: Callable[[int], float]) -> None:
        self.t = 0
        self.slowdown = slowdown

    def now_ns(self) -> int:
        return self.t

    def work(self, units: int) -> None:
        self.t += round(units * self.slowdown(self.t))

    def fn(self, units: int) -> Callable[[], None]:
        return lambda: self.work(units)


A_UNITS, B_UNITS = 1_000, 3_000   # B does 3x A's work: the true ratio B/A is 3


def test_step_drift_paired_ratio_exact_while_separate_medians_are_off() -> None:
    # the machine gets twice as slow ~1 ms into the run (another job starts); a round of A and B takes
    # 4 us at speed 1, round 250 starts at 1_000_000 ns: its A runs at speed 1, its B (from 1_001_000) at 2
    switch_ns = 1_001_000

    def step(t: int) -> float:
        return 1.0 if t < switch_ns else 2.0

    clock = DriftingClock(step)
    p = time_paired({"A": clock.fn(A_UNITS), "B": clock.fn(B_UNITS)}, clock=clock, warmup=0, min_rounds=50,
                    max_rounds=500, budget_s=2e-3)
    r = p.ratio("B")
    # every round is A then B back to back: both at speed 1 (ratio 3) or both at speed 2 (ratio 3),
    # except the one round in which the switch falls between A and B (ratio 6); the median is 3
    assert (r.q25, r.median, r.q75) == pytest.approx((3.0, 3.0, 3.0))
    assert r.max == pytest.approx(6.0) and p.rounds >= 50 and p.stop_reason == "budget"
    assert sorted(set(p.times_s["A"])) == pytest.approx([1e-6, 2e-6])

    # the unpaired way (today's whole-model times, minutes apart): all of A's repetitions before the
    # switch, all of B's after it -> 3 x 2 = 6, twice the true ratio
    clock2 = DriftingClock(step)
    a = time_fn(clock2.fn(A_UNITS), clock=clock2, warmup=0, min_reps=20, max_reps=20, budget_s=1.0, target_iqr=0)
    clock2.t = max(clock2.t, switch_ns)
    b = time_fn(clock2.fn(B_UNITS), clock=clock2, warmup=0, min_reps=20, max_reps=20, budget_s=1.0, target_iqr=0)
    assert b.median_s / a.median_s == pytest.approx(6.0)


def test_gradual_drift_paired_ratio_within_one_percent() -> None:
    # slowdown grows linearly: 1x at t=0, 3x at t=T (T = 10 ms of fake time)
    T = 10_000_000

    def ramp(t: int) -> float:
        return 1.0 + 2.0 * t / T

    clock = DriftingClock(ramp)
    p = time_paired({"A": clock.fn(A_UNITS), "B": clock.fn(B_UNITS)}, clock=clock, warmup=3, min_rounds=5,
                    max_rounds=2000, budget_s=5e-3)
    # within a round B starts A's duration later: ratio = 3 x ramp(t + d) / ramp(t), with d <= 3 us
    # of the 10 ms ramp: at most 3 x (1 + 2 x 3e-6 / 1e-2) = 3 x 1.0006
    assert p.ratio("B").median == pytest.approx(3.0, rel=1e-2)
    # while A's own median time moves with the load (from 1 us to ~2 us over the run): the drift is real
    assert max(p.times_s["A"]) / min(p.times_s["A"]) > 1.5


def test_rounds_order_warmup_and_stop() -> None:
    calls: list[str] = []
    clock = DriftingClock(lambda t: 1.0)

    def make(name: str, units: int) -> Callable[[], None]:
        def fn() -> None:
            calls.append(name)
            clock.work(units)
        return fn

    p = time_paired({"A": make("A", 10), "B": make("B", 20), "C": make("C", 40)}, reference="B", clock=clock,
                    warmup=2, min_rounds=4, max_rounds=4, budget_s=10.0)
    assert calls == ["A", "B", "C"] * 6          # 2 warm-up rounds + 4 timed rounds, A B C each time
    assert p.rounds == 4 and p.stop_reason == "max_rounds" and p.warmup == 2
    assert p.ratio("A").median == pytest.approx(0.5) and p.ratio("C").median == pytest.approx(2.0)
    assert p.stats("C").median_s == pytest.approx(40e-9)
    d = p.to_dict()
    assert d["reference"] == "B" and d["ratio_to_reference"]["C"]["median"] == pytest.approx(2.0)
    assert set(d["ratio_to_reference"]) == {"A", "C"}


def test_budget_stops_after_min_rounds() -> None:
    clock = DriftingClock(lambda t: 1.0)
    # each round costs 3 us of fake time; budget 30 us -> stops after the 10th round (30 us spent)
    p = time_paired({"A": clock.fn(1_000), "B": clock.fn(2_000)}, clock=clock, warmup=0, min_rounds=2,
                    budget_s=30e-6)
    assert p.rounds == 10 and p.stop_reason == "budget"


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least two"):
        time_paired({"A": lambda: None})
    with pytest.raises(ValueError, match="reference"):
        time_paired({"A": lambda: None, "B": lambda: None}, reference="C")


def test_ratio_stats_quantiles() -> None:
    # numpy's linear quantiles of [1, 2, 3, 4, 100]: q25 = 2, median = 3, q75 = 4; NaN ignored
    s = RatioStats.of([4.0, 1.0, math.nan, 100.0, 2.0, 3.0])
    assert (s.q25, s.median, s.q75, s.min, s.max, s.n) == (2.0, 3.0, 4.0, 1.0, 100.0, 5)
    assert RatioStats.of([]).n == 0 and math.isnan(RatioStats.of([]).median)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_events_pair_two_matmuls() -> None:
    a = torch.randn(4096, 4096, device="cuda")
    b = torch.randn(8192, 4096, device="cuda")
    p = time_paired({"small": lambda: a @ a, "large": lambda: b @ a}, device="cuda", warmup=3, min_rounds=10,
                    budget_s=0.2)
    # the large product does 2x the work of the small one
    assert all(t > 0 for t in p.times_s["small"] + p.times_s["large"])
    assert 1.3 < p.ratio("large").median < 3.0


def test_load_average_recorded_before_and_after(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    loads = iter([(1.5, 0.0, 0.0), (3.25, 0.0, 0.0)])
    monkeypatch.setattr(os, "getloadavg", lambda: next(loads))
    clock = DriftingClock(lambda t: 1.0)
    p = time_paired({"A": clock.fn(1), "B": clock.fn(2)}, clock=clock, warmup=0, min_rounds=1, max_rounds=1)
    assert p.load_average == (1.5, 3.25) and p.to_dict()["load_average"] == [1.5, 3.25]
