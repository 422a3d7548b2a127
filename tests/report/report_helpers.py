"""A profile with chosen times (no measurement): the count of a real model joined with a synthetic
Measurement whose per-layer self times, per-op times, phases and memory timeline are exact numbers."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import torch
from torch import nn

import hwprof
from hwprof.hardware.ceilings import Ceilings
from hwprof.measuring.alloc_trace import AllocTrace, MemoryTimeline
from hwprof.measuring.records import LAYER_COLUMNS, MeasureConfig, Measurement, MemoryRecord, RunInfo
from hwprof.roofline import MathModes

CEILINGS = Ceilings("cpu", "test cpu", "2.13.0+cpu", "2026-11-30", "measured", {"fp32": 1e11, "bf16": 4e11}, 1e10)
MS = 1e-3


class Block(nn.Module):
    """conv -> relu, plus a residual add written in its own forward (an op of the block itself)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.relu(self.conv(x))


class Net(nn.Module):
    """``head`` is registered before ``block`` but runs after it: call order is not registration order."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4 * 8 * 8, 3)
        self.block = Block()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.block(x), 1))


# inference: self times of the hooked pass; the counted ops in dispatch order are
# block.conv aten.convolution, block.relu aten.relu, block aten.add, head aten.addmm
SELF_S = {"": 0.25 * MS, "head": 2 * MS, "block": 0.5 * MS, "block.conv": 3 * MS, "block.relu": 1 * MS}
OP_S = [2.5 * MS, 1 * MS, 1 * MS, 2 * MS]   # the add (1 ms) is longer than its block's 0.5 ms self time
TIMELINE = MemoryTimeline((0.0, 0.001, 0.002, 0.003), (100, 300, 700, 200),
                          ("", "aten::convolution", "aten::relu", "aten::addmm"), 4)


def _layer_table(model: nn.Module, self_s: Mapping[str, float]) -> pd.DataFrame:
    """Measurement.layers with the given self times; inclusive = self + the children's inclusive."""
    incl: dict[str, float] = {}
    for path, _ in reversed(list(model.named_modules())):
        incl[path] = self_s[path] + sum(incl[c] for c in incl if c != path and c.rpartition(".")[0] == path)
    rows = [{"module": path, "type": type(m).__name__, "is_leaf": not list(m.children()),
             "depth": path.count(".") + 1 if path else 0, "calls": 1, "fwd_s": self_s[path], "bwd_s": float("nan"),
             "fwd_incl_s": incl[path], "bwd_incl_s": float("nan")} for path, m in model.named_modules()]
    return pd.DataFrame(rows, columns=["module", *LAYER_COLUMNS]).set_index("module")


def synthetic_profile(timeline: MemoryTimeline | None = TIMELINE, name: str = "synthetic") -> hwprof.Profile:
    """:class:`Net` in inference on the CPU with :data:`SELF_S`, :data:`OP_S`, a 7 ms phase and ``timeline``."""
    model = Net()
    c = hwprof.count(model, "4x8x8")
    ops = pd.DataFrame({"phase": "fwd", "op": list(c.ops["op"]), "time_s": OP_S})
    trace = AllocTrace(100, 600, 100, 3, 0, "", "aten::relu", 0, 700, timeline=timeline)
    m = Measurement(
        config=MeasureConfig(device="cpu", per_layer=True, per_op=True), run=RunInfo("Net", "cpu", "float32", 1),
        phases=pd.DataFrame({"median_s": [7 * MS], "iqr_s": [0.1 * MS], "min_s": [6.9 * MS], "mean_s": [7 * MS],
                             "reps": [10.0], "iqr_over_median": [0.1 / 7]}, index=pd.Index(["fwd_nograd"], name="phase")),
        timings={}, memory_record=MemoryRecord(alloc_trace=trace), device={"type": "cpu"},
        math_modes=MathModes("cpu"), layers=_layer_table(model, SELF_S), ops=ops)
    return hwprof.join(c, m, CEILINGS, name=name)
