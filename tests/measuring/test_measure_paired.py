"""Per-layer and whole-model times measured at the same moments: a machine whose speed drifts mid-run
moves the unpaired ratio (per-layer medians / headline median) but not the paired one."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from measure_helpers import FakeClock
from torch import nn

from hwprof.cli.measure import layer_sum_lines
from hwprof.measuring.runner import measure

MS = 1_000_000   # ns
W, R, PAIRS = 1, 3, 6   # warm-up and timed reps of each headline phase; per-layer pairs after one warm-up pair


class DriftingClock(FakeClock):
    """A FakeClock on a machine that can get slower: every tick (``step_ns`` per read, a module's
    ``advance``) costs ``factor`` times as much once ``factor`` is raised."""

    def __init__(self, step_ns: int = 0) -> None:
        super().__init__(step_ns)
        self.factor = 1

    def now_ns(self) -> int:
        t = self.t
        self.t += self.step_ns * self.factor
        self.reads += 1
        return t

    def advance(self, ns: int) -> None:
        self.t += ns * self.factor


class _Tick(torch.autograd.Function):
    """Identity that costs ``fwd_ns`` of the clock forward and ``bwd_ns`` backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, clock: DriftingClock, fwd_ns: int, bwd_ns: int) -> torch.Tensor:
        clock.advance(fwd_ns)
        ctx.clock, ctx.bwd_ns = clock, bwd_ns
        return x * 1.0

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        ctx.clock.advance(ctx.bwd_ns)
        return g, None, None, None


class Busy(nn.Module):
    def __init__(self, clock: DriftingClock, fwd_ns: int, bwd_ns: int) -> None:
        super().__init__()
        self.clock, self.fwd_ns, self.bwd_ns = clock, fwd_ns, bwd_ns
        self.w = nn.Parameter(torch.ones(()))   # gives the layer a backward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Tick.apply(x * self.w, self.clock, self.fwd_ns, self.bwd_ns)


class DriftNet(nn.Module):
    """Three busy layers. The machine doubles its slowness at its ``slow_at``-th forward: at the start of
    that forward (``when="start"``) or at the end of it (``when="end"``; None: never)."""

    def __init__(self, clock: DriftingClock, slow_at: int | None, when: str = "start") -> None:
        super().__init__()
        self.clock, self.slow_at, self.when = clock, slow_at, when
        self.layers = nn.Sequential(Busy(clock, 1 * MS, 2 * MS), Busy(clock, 2 * MS, 4 * MS), Busy(clock, 3 * MS, 6 * MS))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.when == "start" and self.calls == self.slow_at:
            self.clock.factor = 2
        y = self.layers(x)
        if self.when == "end" and self.calls == self.slow_at:
            self.clock.factor = 2
        return y


def run(model: DriftNet, mode: str) -> Any:
    return measure(model, "4", device="cpu", mode=mode, per_layer=True, clock=model.clock, warmup=W, min_reps=R,
                   max_reps=R, budget_s=1e6, layer_reps=PAIRS, alloc_trace=False)


def test_paired_ratio_holds_its_value_while_the_machine_slows_down_in_inference() -> None:
    # forwards: 1 first, W + R headline (fwd_nograd), then 2 per pair (unhooked, hooked) from the warm-up pair on;
    # the machine slows down at the end of the 2nd kept pair: pairs 3..6 (and none of the headline) run slow
    slow_at = 1 + (W + R) + 2 + 2 * 2
    quiet = run(DriftNet(DriftingClock(step_ns=1_000), None, "end"), "inference").layer_sum
    drift = run(DriftNet(DriftingClock(step_ns=1_000), slow_at, "end"), "inference").layer_sum
    # every clock read costs 1 us: the hooks' reads make the per-layer sum a little longer than the whole
    true = quiet["fwd_paired_ratio"]
    assert true > 1.0 and true == pytest.approx(quiet["fwd_ratio"], rel=1e-12)
    assert quiet["fwd_paired_ratio_q25"] == pytest.approx(true) and quiet["fwd_paired_ratio_q75"] == pytest.approx(true)
    # drifting: every pair still sees one machine, so each pair's ratio, hence median and quartiles, is the true one
    for key in ("fwd_paired_ratio", "fwd_paired_ratio_q25", "fwd_paired_ratio_q75"):
        assert drift[key] == pytest.approx(true, rel=1e-12), key
    assert drift["fwd_pairs"] == PAIRS
    # the unpaired ratio compares per-layer medians (4 of 6 reps slow: the median is slow) with a headline
    # median measured before the slowdown: twice the true value
    assert drift["fwd_ratio"] == pytest.approx(2 * true, rel=1e-12)
    assert drift["fwd_paired_whole_s"] == pytest.approx(2 * quiet["fwd_paired_whole_s"], rel=1e-12)


def test_paired_ratio_holds_its_value_while_the_machine_slows_down_in_training() -> None:
    # forwards: 1 first, W + R in fwd, W + R in bwd's setups, then 2 per pair from the warm-up pair on;
    # the machine slows down at the start of the 3rd kept pair's unhooked forward: pairs 3..6 run slow
    slow_at = 1 + 2 * (W + R) + 2 + 2 * 2 + 1
    m = run(DriftNet(DriftingClock(step_ns=0), slow_at, "start"), "train")
    s = m.layer_sum
    # reads cost nothing, so the per-layer self times add up to the whole exactly: the true ratio is 1
    for ph in ("fwd", "bwd"):
        for key in (f"{ph}_paired_ratio", f"{ph}_paired_ratio_q25", f"{ph}_paired_ratio_q75"):
            assert s[key] == pytest.approx(1.0, rel=1e-12), key
        assert s[f"{ph}_pairs"] == PAIRS
        # headline medians from before the slowdown, per-layer medians from after it
        assert s[f"{ph}_ratio"] == pytest.approx(2.0, rel=1e-12)
    # the whole-model times themselves: forward 1 + 2 + 3 ms, backward 2 + 4 + 6 ms on the quiet machine
    assert s["fwd_whole_s"] == pytest.approx(0.006) and s["bwd_whole_s"] == pytest.approx(0.012)


def test_cli_prints_the_paired_ratio_with_its_spread() -> None:
    s = {"fwd_whole_s": 0.010, "fwd_layer_sum_s": 0.0095, "fwd_hooked_root_s": 0.0096, "fwd_ratio": 0.95,
         "fwd_paired_ratio": 0.93, "fwd_paired_ratio_q25": 0.91, "fwd_paired_ratio_q75": 0.96, "fwd_pairs": 12,
         "bwd_whole_s": None}
    assert layer_sum_lines(s) == ["fwd: whole model 10 ms, sum of per-layer self 9.5 ms (95%), hooked root 9.6 ms; "
                                  "per-layer sum / whole measured in pairs: 93% (q25-q75 91-96%, 12 pairs)"]
