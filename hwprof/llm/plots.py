"""Plots of a generation sweep: the phases on the roofline (:func:`hwprof.report.plots.roofline_plot`) and
tokens/s and achieved FLOP/s against the batch size, with the roofs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hwprof.hardware.ceilings import Ceilings
from hwprof.report.plots import roofline_plot

__all__ = ["phase_roofline_plot", "batch_sweep_plot"]

_COLOURS = {"prefill": "#1f77b4", "decode": "#d62728", "decode_avg": "#ff7f0e"}


def phase_roofline_plot(table: pd.DataFrame, ceilings: Ceilings, path: str | Path, *, title: str = "") -> list[Path]:
    """Every (phase, batch) row of a sweep as a point on the measured roofline, labelled "decode b16"."""
    points = table.assign(name=[f"{p} b{int(b)}" for p, b in zip(table["phase"], table["batch"], strict=True)])
    return roofline_plot(points, ceilings, path, title=title, color_by="phase", size_by=None,
                         label_top=len(points))


def batch_sweep_plot(table: pd.DataFrame, ceilings: Ceilings, path: str | Path, *, title: str = "") -> list[Path]:
    """Two panels against the batch size (log-log): tokens/s per phase; achieved FLOP/s per phase with
    the compute roof and, per phase, the memory roof at its intensity (bandwidth x intensity), so that
    decode is seen climbing the memory roof toward the compute roof."""
    from hwprof.report.plots import _new_figure, _save  # the project's figure set-up (Agg canvas, PNG + SVG)

    fig = _new_figure((11.0, 4.6))
    ax_t, ax_f = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for phase, rows in table.sort_values("batch").groupby("phase", sort=False):
        colour = _COLOURS.get(str(phase), "black")
        ax_t.plot(rows["batch"], rows["tokens_per_s"], "o-", color=colour, label=str(phase))
        ax_f.plot(rows["batch"], rows["achieved_flop_per_s"], "o-", color=colour, label=f"{phase} achieved")
        if ceilings.bytes_per_s:
            ax_f.plot(rows["batch"], np.asarray(rows["intensity"]) * ceilings.bytes_per_s, ":", color=colour,
                      label=f"{phase} memory roof (bandwidth x intensity)")
    for key in sorted(set(table["roof_key"])):
        roof = ceilings.flop_per_s.get(key)
        if roof:
            ax_f.axhline(roof, color="black", linewidth=1.2, label=f"{key} compute roof {roof / 1e9:.4g} GFLOP/s")
    for ax, ylabel in ((ax_t, "tokens / s"), (ax_f, "FLOP/s")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", linewidth=0.4, alpha=0.5)
        ax.legend(fontsize=7)
    fig.suptitle(title or "generation vs batch", fontsize=11)
    return _save(fig, path)
