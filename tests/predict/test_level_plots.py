"""Plots of the memory levels: the sweep (bandwidth against working set) and the cache levels'
slopes on the roofline."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from hwprof.hardware.ceilings import Ceilings
from hwprof.hardware.levels import MemoryLevel, SweepPoint
from hwprof.report import plots

pytest.importorskip("matplotlib")

MiB = 2**20
SWEEP = (SweepPoint(64 * 2**10, 1.5e-6, float("nan"), 43.7e9, "L1"), SweepPoint(MiB, 7.0e-6, 175e9, 150e9, "L2"),
         SweepPoint(16 * MiB, 3.4e-4, 50e9, 49e9, "LLC"))
LEVELS = (MemoryLevel("L1", 96 * 2**10, None, 96 * 2**10, "sweep"), MemoryLevel("L2", 4 * MiB, 175e9, 4 * MiB, "sweep"),
          MemoryLevel("LLC", 32 * MiB, 50e9, 480 * MiB, "sweep"), MemoryLevel("DRAM", None, 20e9, None, "copy"))
K = Ceilings("cpu", "test cpu", torch.__version__, "2026-11-30", "measured", {"fp32": 4e11}, 20e9, levels=LEVELS,
             sweep=SWEEP, op_overhead_s=1e-6)


def test_sweep_plot_draws_levels_and_capacities(tmp_path: Path) -> None:
    fig = plots.sweep_figure(K)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert "L2 175 GB/s" in texts and "LLC 50 GB/s" in texts and "DRAM 20 GB/s" in texts   # L1: no bandwidth
    assert " LLC 480 MiB reported " in texts and " LLC effective 32 MiB " in texts   # the sweep found less
    assert "op overhead 1.00 us" in ax.get_title()
    out = plots.sweep_plot(K, tmp_path / "sweep.png")
    assert [p.name for p in out] == ["sweep.png", "sweep.svg"] and out[0].stat().st_size > 1000


def test_roofline_draws_a_slope_per_cache_level() -> None:
    pts = pd.DataFrame({"name": ["a"], "intensity": [1.0], "achieved_flop_per_s": [5e10], "time_s": [1e-3],
                        "roof_key": ["fp32"], "memory_level": ["L2"], "layer_type": ["ReLU"]})
    fig = plots.roofline_figure(pts, K, marker_by="memory_level")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "L2 175 GB/s" in texts and "LLC 50 GB/s" in texts
    assert any(t.startswith("DRAM 20 GB/s measured") for t in texts)
    slopes = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == "-."]
    assert len(slopes) == 2                                   # L2 and LLC; L1 has no bandwidth
    bare = plots.roofline_figure(pts, Ceilings("cpu", "x", "2.13", "2026-11-30", "measured", {"fp32": 4e11}, 20e9))
    assert not [line for line in bare.axes[0].get_lines() if line.get_linestyle() == "-."]
    assert any(t.get_text().startswith("memory 20 GB/s measured") for t in bare.axes[0].texts)
