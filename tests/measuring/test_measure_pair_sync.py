"""The per-layer pass's CUDA path without a GPU: torch.cuda.Event and torch.cuda.synchronize replaced by
fakes that log what the pass does, to check that no host synchronisation falls inside a pair's timed
regions, that each pair synchronises once, and that events are read only after that."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from measure_helpers import FakeClock
from torch import nn

from hwprof.measuring.passes import RunContext, Work, per_layer_pass
from hwprof.measuring.records import MeasureConfig
from hwprof.measuring.runner import default_loss

MS = 1_000_000
PAIRS = 3


class FakeCuda:
    """Events stamped with a FakeClock; ``log`` gets R (record), S (device sync), E (event sync), T (elapsed read).
    Reading an event before a sync made it complete raises, as CUDA does."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock, self.log, self.synced_upto = clock, [], -1
        cuda = self

        class Event:
            def __init__(self, enable_timing: bool = False) -> None:
                assert enable_timing
                self.stamp: int | None = None
                self.seq = -1

            def record(self) -> None:
                cuda.log.append("R")
                self.stamp, self.seq = cuda.clock.now_ns(), len(cuda.log)

            def synchronize(self) -> None:
                cuda.log.append("E")
                cuda.synced_upto = max(cuda.synced_upto, self.seq)

            def elapsed_time(self, end: Event) -> float:
                cuda.log.append("T")
                if max(self.seq, end.seq) > cuda.synced_upto:
                    raise RuntimeError("event not complete")
                assert self.stamp is not None and end.stamp is not None
                return (end.stamp - self.stamp) / 1e6   # ms

        self.Event = Event

    def synchronize(self, device: Any = None) -> None:
        self.log.append("S")
        self.synced_upto = len(self.log)


class Busy(nn.Module):
    def __init__(self, clock: FakeClock, ns: int) -> None:
        super().__init__()
        self.clock, self.ns = clock, ns
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock.advance(self.ns)
        return x * self.w


@pytest.mark.parametrize("train", [False, True])
def test_one_sync_per_pair_after_its_timed_regions(monkeypatch: pytest.MonkeyPatch, train: bool) -> None:
    clock = FakeClock(step_ns=0)
    cuda = FakeCuda(clock)
    monkeypatch.setattr(torch.cuda, "Event", cuda.Event)
    monkeypatch.setattr(torch.cuda, "synchronize", cuda.synchronize)
    model = nn.Sequential(Busy(clock, 1 * MS), Busy(clock, 2 * MS))
    cfg = MeasureConfig(mode="train" if train else "inference", per_layer=True, layer_reps=PAIRS)
    lp = per_layer_pass(Work(model, (torch.ones(2),), train, default_loss), RunContext(cfg, torch.device("cuda"), clock))
    log = "".join(cuda.log)
    # per pair (the warm-up pair included): records only, then one device sync, then reads
    assert re.fullmatch(r"(R+S[ET]*)+", log), log
    assert log.count("S") == 1 + PAIRS
    # the unhooked repetition's events bracket the forward: 1 + 2 ms of work
    assert [p.whole_s["fwd"] for p in lp.pairs] == pytest.approx([0.003] * PAIRS)
    assert [p.ratio("fwd") for p in lp.pairs] == pytest.approx([1.0] * PAIRS)
    assert ("bwd" in lp.pairs[0].whole_s) == train
