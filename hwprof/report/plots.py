"""Plots: roofline, per-layer time bars, FLOPs vs time (matplotlib, imported lazily).

matplotlib is an optional dependency (``pip install 'hwprof[plots]'``); without it every
function here raises :class:`PlotUnavailable` with a one-line message. Figures are built
on matplotlib's object API (``Figure`` + the Agg canvas), never through ``pyplot``, so no
global backend or figure registry of the caller is touched. Every plot is written twice,
as PNG (Agg) and SVG beside it, each rendered to memory first and then written atomically
(:func:`hwprof.files.write_atomic`).

Roofline (Williams, Waterman, Patterson, CACM 2009): attainable FLOP/s at arithmetic
intensity I (FLOP/byte) is ``min(peak_flop_per_s, bytes_per_s * I)``; the ridge point
``peak_flop_per_s / bytes_per_s`` separates memory-bound from compute-bound intensities. With
memory levels (cache-aware roofline, Ilic et al. 2014) each cache level adds its own slope
``level_bytes_per_s * I``; a point is held to the slope of the level its working set fits in.
"""

from __future__ import annotations

import io
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hwprof.errors import HwprofError
from hwprof.files import write_atomic
from hwprof.hardware.ceilings import Ceilings

__all__ = ["PlotUnavailable", "roofline_plot", "roofline_figure", "time_bar_plot", "flops_vs_time_plot", "MARKERS",
           "sweep_plot", "sweep_figure", "moves_plot", "moves_figure"]

#: Marker shapes used for ``marker_by`` categories, in order of first appearance.
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p", "d", "8")

# Roofs are drawn in neutral greys so that the category colours stay with the points.
_ROOF_COLOR = "0.25"
_DATASHEET_COLOR = "0.55"
_LEVEL_COLOR = "0.45"
_ROOF_ORDER = ("fp64", "fp32", "tf32", "bf16", "fp16")


class PlotUnavailable(HwprofError, ImportError):
    """matplotlib is not installed, so no plot can be drawn."""


def _matplotlib() -> tuple[Any, Any]:
    """Import matplotlib lazily; return ``(Figure, FigureCanvasAgg)``.

    ``import matplotlib`` comes first and alone so that a missing (or blocked) package
    fails here even when a submodule is still cached in ``sys.modules``.
    """
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailable("matplotlib is not installed: pip install 'hwprof[plots]'") from None
    return Figure, FigureCanvasAgg


def _new_figure(size_in: tuple[float, float]) -> Any:
    Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(figsize=size_in, dpi=110)
    FigureCanvasAgg(fig)  # attach the Agg canvas (PNG); SVG is rendered by savefig's own switch
    return fig


def _output_paths(path: str | Path) -> tuple[Path, Path]:
    """``x.png`` -> (``x.png``, ``x.svg``); a path without ``.png`` gets it (``x.svg`` -> ``x.png``)."""
    p = Path(path)
    png = p if p.suffix.lower() == ".png" else p.with_suffix(".png")
    return png, png.with_suffix(".svg")


def _save(fig: Any, path: str | Path) -> list[Path]:
    """Render ``fig`` to PNG and SVG in memory, then write both atomically; returns the paths."""
    png, svg = _output_paths(path)
    out = []
    for target, fmt, meta in ((png, "png", {"Software": None}), (svg, "svg", {"Date": None})):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, bbox_inches="tight", metadata=meta)
        out.append(write_atomic(target, buf.getvalue()))
    return out


# --------------------------------------------------------------------------- helpers
def _si(x: float, unit: str) -> str:
    """3.0e12, 'B/s' -> '3.00 TB/s' (decimal prefixes)."""
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def _finite_positive(v: Any) -> bool:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return math.isfinite(f) and f > 0


def _roof_sort(items: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    order = {k: i for i, k in enumerate(_ROOF_ORDER)}
    return sorted(items, key=lambda kv: (kv[1], order.get(kv[0], 99)))


def _categories(values: pd.Series) -> list[Any]:
    """Distinct values in order of first appearance (NaN shown as 'n/a')."""
    return list(dict.fromkeys(values.fillna("n/a").tolist()))


def _colour_map(cats: Sequence[Any]) -> dict[Any, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(cats) <= 10 else "tab20"]
    return {c: cmap(i % cmap.N) for i, c in enumerate(cats)}


def _marker_map(cats: Sequence[Any]) -> dict[Any, str]:
    return {c: MARKERS[i % len(MARKERS)] for i, c in enumerate(cats)}


def _positive_rows(df: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    """Rows where every column in ``cols`` is finite and > 0 (what a log axis can show)."""
    mask = pd.Series(True, index=df.index)
    for c in cols:
        v = pd.to_numeric(df[c], errors="coerce")
        mask &= v.notna() & (v > 0) & v.map(lambda x: math.isfinite(x) if pd.notna(x) else False)
    return df[mask]


def _legends(ax: Any, colours: Mapping[Any, Any], color_title: str,
             markers: Mapping[Any, str] | None, marker_title: str | None) -> None:
    """Colour legend (and marker legend) outside the axes on the right, never over the data."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], linestyle="", marker="o", markersize=7, color=c, label=str(k))
               for k, c in colours.items()]
    # figure-level legends anchored to the axes: both count in the tight bounding box
    fig = ax.figure
    fig.legend(handles=handles, title=color_title, loc="upper left", bbox_to_anchor=(1.01, 1.0),
               bbox_transform=ax.transAxes, fontsize=8, title_fontsize=8, frameon=False)
    if markers:
        mh = [Line2D([], [], linestyle="", marker=m, markersize=7, color="0.35", label=str(k))
              for k, m in markers.items()]
        fig.legend(handles=mh, title=marker_title, loc="lower left", bbox_to_anchor=(1.01, 0.0),
                   bbox_transform=ax.transAxes, fontsize=8, title_fontsize=8, frameon=False)


def _scatter_categories(ax: Any, df: pd.DataFrame, x: str, y: str, color_by: str | None,
                        marker_by: str | None, sizes: pd.Series | float) -> tuple[dict, dict | None]:
    """One scatter call per (colour, marker) group; returns the two maps for the legends."""
    ccol = df[color_by].fillna("n/a") if color_by and color_by in df else pd.Series("all", index=df.index)
    mcol = df[marker_by].fillna("n/a") if marker_by and marker_by in df else None
    colours = _colour_map(_categories(ccol))
    markers = _marker_map(_categories(mcol)) if mcol is not None else None
    keys = [ccol] if mcol is None else [ccol, mcol]
    for key, g in df.groupby(keys, sort=False):
        ck = key[0] if isinstance(key, tuple) else key
        mk = key[1] if isinstance(key, tuple) and len(key) > 1 else None
        s = sizes.loc[g.index] if isinstance(sizes, pd.Series) else sizes
        ax.scatter(g[x], g[y], s=s, c=[colours[ck]], marker=markers[mk] if markers else "o",
                   alpha=0.8, edgecolors="0.15", linewidths=0.5, zorder=3)
    return colours, markers


# --------------------------------------------------------------------------- roofline
_TEXT_BOX = {"facecolor": "white", "alpha": 0.75, "edgecolor": "none", "pad": 1.0}
"""Behind roof labels, so that points under them do not hide them."""


@dataclass(frozen=True)
class _Roofs:
    """What a roofline draws: measured compute roofs (FLOP/s, ascending), the datasheet's figures
    for them, the bandwidths (bytes/s), and the measured roofs left out (named under the plot)."""

    measured: list[tuple[str, float]]
    sheet: list[tuple[str, float]]
    bw: float | None
    sheet_bw: float | None
    hidden: list[tuple[str, float]]
    device_name: str
    caches: tuple[tuple[str, float], ...] = ()
    """Cache levels with a bandwidth (name, bytes/s), fastest first: slopes above main memory's."""
    main_name: str = "memory"

    @property
    def all_flop_per_s(self) -> list[float]:
        return [v for _, v in self.measured + self.sheet]


def _select_roofs(ceilings: Ceilings, keys: Collection[str] | None) -> _Roofs:
    """The roofs named in ``keys`` (all of them when None); roofs missing or not positive dropped."""
    valid = {k: float(v) for k, v in ceilings.flop_per_s.items() if _finite_positive(v)}
    wanted = set(valid) | {k for k in _ROOF_ORDER if ceilings.datasheet_roof(k)} if keys is None else set(keys)
    sheet = {k: v for k in wanted if (v := ceilings.datasheet_roof(k)) is not None}
    bw = ceilings.bytes_per_s
    caches = tuple(sorted(((lv.name, float(lv.bytes_per_s)) for lv in ceilings.levels
                           if lv.capacity_bytes is not None and lv.bytes_per_s and _finite_positive(lv.bytes_per_s)
                           and (bw is None or lv.bytes_per_s > bw)), key=lambda kv: -kv[1]))
    return _Roofs(_roof_sort((k, v) for k, v in valid.items() if k in wanted), _roof_sort(sheet.items()),
                  float(bw) if bw is not None and _finite_positive(bw) else None, ceilings.datasheet_roof("bytes_per_s"),
                  _roof_sort((k, v) for k, v in valid.items() if k not in wanted), ceilings.device_name, caches,
                  ceilings.levels[-1].name if ceilings.levels else "memory")


def roofline_plot(
    points: pd.DataFrame,
    ceilings: Ceilings,
    path: str | Path,
    *,
    title: str = "",
    label_top: int = 8,
    color_by: str | None = "layer_type",
    marker_by: str | None = None,
    size_by: str | None = "time_share",
    labels: Sequence[str] | None = None,
    roofs: Collection[str] | None = None,
) -> list[Path]:
    """Log-log roofline of ``points`` on the measured ``ceilings``; writes PNG + SVG, returns the paths.

    ``points`` columns: ``name``, ``intensity`` (FLOP/byte), ``achieved_flop_per_s``, ``time_s``,
    plus the ``color_by`` / ``marker_by`` / ``size_by`` columns when given, and ``roof_key`` (the
    compute roof each point is held to). ``roofs``: the compute roofs to draw; None draws the
    roofs the points' ``roof_key`` names (every roof without that column): only the roofs of the
    run's dtypes and math modes are drawn, the others are named under the plot.

    Drawn: each measured compute roof as a solid horizontal line from its ridge point
    (roof / bytes_per_s) rightwards, labelled on the line; the bandwidth slope
    ``y = bytes_per_s * I`` up to the highest roof, labelled along the slope; datasheet roofs
    dashed. Points are sized by ``size_by`` (area ~ sqrt of the value; constant when None),
    coloured by ``color_by``, shaped by ``marker_by``. The ``label_top`` rows with the largest
    ``time_s`` are labelled with their ``name`` (or exactly the rows named in ``labels``).
    Rows whose intensity or FLOP/s is missing or not positive (e.g. failed runs) are skipped.
    """
    fig = roofline_figure(points, ceilings, title=title, label_top=label_top, color_by=color_by,
                          marker_by=marker_by, size_by=size_by, labels=labels, roofs=roofs)
    return _save(fig, path)


def roofline_figure(points: pd.DataFrame, ceilings: Ceilings, *, title: str = "", label_top: int = 8,
                    color_by: str | None = "layer_type", marker_by: str | None = None,
                    size_by: str | None = "time_share", labels: Sequence[str] | None = None,
                    roofs: Collection[str] | None = None) -> Any:
    """The matplotlib Figure :func:`roofline_plot` writes (same arguments, no path)."""
    fig = _new_figure((10.0, 6.5))
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    df = _positive_rows(points, ["intensity", "achieved_flop_per_s"]) if len(points) else points
    if roofs is None and len(df) and "roof_key" in df:
        roofs = set(df["roof_key"].dropna().astype(str))
    r = _select_roofs(ceilings, roofs)
    x_lo, x_hi = _extent(df, r, ax)
    _draw_roofs(ax, r, x_lo, x_hi)
    colours: dict = {}
    markers: dict | None = None
    if len(df):
        colours, markers = _scatter_categories(ax, df, "intensity", "achieved_flop_per_s", color_by, marker_by,
                                               _sizes(df, size_by))
        _label_points(ax, df, "intensity", "achieved_flop_per_s", label_top, labels)
    _label_slope(fig, ax, r, x_lo)
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("achieved FLOP/s")
    ax.set_title((title or "Roofline") + (f" — {r.device_name}" if r.device_name else ""), fontsize=11)
    ax.grid(True, which="major", linewidth=0.4, alpha=0.5)
    if r.hidden:
        ax.annotate("other roofs, not drawn (no point runs in them): "
                    + ", ".join(f"{k} {_si(v, 'FLOP/s')}" for k, v in r.hidden),
                    xy=(1.0, 0.0), xycoords="axes fraction", xytext=(0, -38), textcoords="offset points",
                    ha="right", va="top", fontsize=7, color=_DATASHEET_COLOR)
    if colours:
        _legends(ax, colours, color_by or "", markers, marker_by)
    return fig


def _extent(df: pd.DataFrame, r: _Roofs, ax: Any) -> tuple[float, float]:
    """Set the axes' limits to the data, the drawn roofs and their ridge points, padded by a
    factor each side; returns (x_lo, x_hi)."""
    roofs = r.all_flop_per_s
    xs = list(df["intensity"].astype(float)) if len(df) else []
    ys = list(df["achieved_flop_per_s"].astype(float)) if len(df) else []
    if r.bw and roofs:
        xs += [v / r.bw for v in roofs]
    x_lo = min(xs) / 4 if xs else 0.1
    x_hi = max(xs) * 8 if xs else 1e3
    y_candidates = ys + roofs
    y_lo = min(y_candidates) / 5 if y_candidates else 1e9
    y_hi = max(y_candidates) * 3 if y_candidates else 1e15
    if r.bw:
        y_lo = min(y_lo, r.bw * x_lo * 2)
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    return x_lo, x_hi


def _draw_roofs(ax: Any, r: _Roofs, x_lo: float, x_hi: float) -> None:
    """Bandwidth slopes up to the highest roof, measured roofs solid and labelled, datasheet roofs dashed."""
    top_roof = max(r.all_flop_per_s) if r.all_flop_per_s else None
    if r.bw:
        x_end = top_roof / r.bw if top_roof else x_hi
        ax.plot([x_lo, x_end], [r.bw * x_lo, r.bw * x_end], color=_ROOF_COLOR, linewidth=1.8, zorder=2)
    for level, level_bw in r.caches:   # each cache level's slope, up to the highest roof
        x_end = top_roof / level_bw if top_roof else x_hi
        ax.plot([x_lo, x_end], [level_bw * x_lo, level_bw * x_end], color=_LEVEL_COLOR, linewidth=1.0, linestyle="-.",
                zorder=2)
        ax.text(x_lo * 1.3, level_bw * x_lo * 1.3 * 1.15, f"{level} {_si(level_bw, 'B/s')}", fontsize=7,
                color=_LEVEL_COLOR, zorder=4, bbox=_TEXT_BOX)
    fastest = r.caches[0][1] if r.caches else r.bw
    if r.sheet_bw:
        x_end = (max(v for _, v in r.sheet) if r.sheet else (top_roof or ax.get_ylim()[1])) / r.sheet_bw
        ax.plot([x_lo, x_end], [r.sheet_bw * x_lo, r.sheet_bw * x_end], color=_DATASHEET_COLOR,
                linewidth=1.2, linestyle="--", zorder=2)
    sheet_of = dict(r.sheet)
    for name, roof in r.measured:
        x0 = roof / fastest if fastest else x_lo
        ax.plot([x0, x_hi], [roof, roof], color=_ROOF_COLOR, linewidth=1.8, zorder=2)
        label = f"{name} {_si(roof, 'FLOP/s')} measured"
        if name in sheet_of:
            label += f" (datasheet {_si(sheet_of[name], 'FLOP/s')}, dashed)"
        ax.text(x_hi / 1.15, roof / 1.08, label, ha="right", va="top", fontsize=8, color=_ROOF_COLOR, zorder=6,
                bbox=_TEXT_BOX)
    drawn = dict(r.measured)
    for name, roof in r.sheet:
        bw = r.sheet_bw or r.bw
        ax.plot([roof / bw if bw else x_lo, x_hi], [roof, roof], color=_DATASHEET_COLOR, linewidth=1.2,
                linestyle="--", zorder=2)
        if name not in drawn:
            ax.text(x_hi / 1.15, roof / 1.08, f"{name} {_si(roof, 'FLOP/s')} datasheet", ha="right", va="top",
                    fontsize=7, color=_DATASHEET_COLOR, zorder=6, bbox=_TEXT_BOX)


def _sizes(df: pd.DataFrame, size_by: str | None) -> pd.Series | float:
    """Marker areas: 18 + 300 x sqrt(value / max value) of ``size_by``; 40 when None or absent."""
    if not size_by or size_by not in df:
        return 40.0
    v = pd.to_numeric(df[size_by], errors="coerce").fillna(0.0).clip(lower=0.0)
    vmax = float(v.max()) or 1.0
    return 18.0 + 300.0 * (v / vmax) ** 0.5


def _label_slope(fig: Any, ax: Any, r: _Roofs, x_lo: float) -> None:
    """The bandwidth slope's label, rotated to the slope as drawn on screen."""
    if not r.bw:
        return
    fig.canvas.draw()
    xa = x_lo * 2.0
    p1 = ax.transData.transform((xa, r.bw * xa))
    p2 = ax.transData.transform((xa * 10, r.bw * xa * 10))
    angle = math.degrees(math.atan2(p2[1] - p1[1], p2[0] - p1[0]))
    label = f"{r.main_name} {_si(r.bw, 'B/s')} measured"
    if r.sheet_bw:
        label += f" (datasheet {_si(r.sheet_bw, 'B/s')}, dashed)"
    ax.text(xa, r.bw * xa * 1.6, label, rotation=angle, rotation_mode="anchor", fontsize=8, color=_ROOF_COLOR,
            zorder=4)


def _label_offsets_pt() -> list[tuple[float, float]]:
    """Where a label may go, in points from its point: the four corners next to it first, then
    rings of 12 directions at 18, 30, 45, 62 and 80 points (these get a leader line)."""
    near = [(6.0, 6.0), (6.0, -12.0), (-6.0, 8.0), (-6.0, -12.0)]
    rings = [(r * math.cos(math.radians(a)), r * math.sin(math.radians(a)))
             for r in (18, 30, 45, 62, 80) for a in range(15, 360, 30)]
    return near + rings


def _label_points(ax: Any, df: pd.DataFrame, x: str, y: str, top: int, labels: Sequence[str] | None) -> None:
    """Label rows named in ``labels``, else the ``top`` rows by ``time_s``, with their ``name``.

    Labels are placed greedily, longest-running first: each takes the first offset of
    :func:`_label_offsets_pt` whose text box overlaps no label or roof text already drawn and
    stays inside the axes; offsets beyond the first four get a thin leader line; a label with
    no free place is drawn at its first offset anyway (never dropped)."""
    if "name" not in df:
        return
    if labels is not None:
        chosen = df[df["name"].isin(list(labels))]
    elif top > 0 and "time_s" in df:
        chosen = df.assign(_t=pd.to_numeric(df["time_s"], errors="coerce")).nlargest(top, "_t")
    else:
        return
    from matplotlib.text import Text

    renderer = ax.figure.canvas.get_renderer()
    placed = [Text.get_window_extent(t, renderer) for t in ax.texts]   # text boxes only, no leader lines
    axes_box = ax.get_window_extent(renderer)
    offsets = _label_offsets_pt()

    def draw(text: str, xy: tuple[float, float], i: int) -> Any:
        dx, dy = offsets[i]
        leader = {"arrowstyle": "-", "color": "0.5", "lw": 0.5} if i >= 4 else None
        return ax.annotate(text, xy, xytext=(dx, dy), textcoords="offset points", fontsize=7,
                           ha="left" if dx >= 0 else "right", va="bottom" if dy >= 0 else "top", color="0.1",
                           zorder=5, arrowprops=leader)

    for _, row in chosen.iterrows():
        xy = (float(row[x]), float(row[y]))
        for i in range(len(offsets)):
            ann = draw(str(row["name"]), xy, i)
            ann.update_positions(renderer)   # where the text sits; Text's extent then leaves the leader out
            box = Text.get_window_extent(ann, renderer).expanded(1.05, 1.2)
            inside = axes_box.contains(box.x0, box.y0) and axes_box.contains(box.x1, box.y1)
            if inside and not any(box.overlaps(p) for p in placed):
                placed.append(box)
                break
            ann.remove()
        else:
            ann = draw(str(row["name"]), xy, 0)
            ann.update_positions(renderer)
            placed.append(Text.get_window_extent(ann, renderer))


# --------------------------------------------------------------------------- time bars
def time_bar_plot(layers: pd.DataFrame, path: str | Path, *, top: int = 20, title: str = "") -> list[Path]:
    """Horizontal bars of the ``top`` layers by ``time_s``; writes PNG + SVG, returns the paths.

    ``layers`` columns: ``name``, ``layer_type``, ``time_s``, ``flops``. Each bar is annotated
    with the layer's share of the total time and its share of the total FLOPs, both over *all*
    rows of ``layers`` (time_share = time_s / sum(time_s); flop_share = flops / sum(flops)),
    so that a layer that takes much more time than its FLOPs suggest stands out.
    """
    fig_h = 1.2 + 0.32 * max(1, min(top, len(layers)))
    fig = _new_figure((10.0, fig_h))
    ax = fig.add_subplot(1, 1, 1)
    t = pd.to_numeric(layers["time_s"], errors="coerce").fillna(0.0)
    f = pd.to_numeric(layers["flops"], errors="coerce").fillna(0.0)
    t_total = float(t.sum())
    f_total = float(f.sum())
    df = layers.assign(_t=t, _f=f).nlargest(top, "_t").iloc[::-1]  # largest at the top
    colours = _colour_map(_categories(df["layer_type"])) if len(df) else {}
    ypos = list(range(len(df)))
    bar_colours = [colours[k] for k in df["layer_type"].fillna("n/a")]
    ax.barh(ypos, df["_t"] * 1e3, color=bar_colours, edgecolor="0.2", linewidth=0.4)
    ax.set_yticks(ypos)
    ax.set_yticklabels([f"{n} ({ty})" for n, ty in zip(df["name"], df["layer_type"], strict=True)], fontsize=8)
    xmax = float(df["_t"].max() * 1e3) if len(df) else 1.0
    for yi, (ti, fi) in zip(ypos, zip(df["_t"], df["_f"], strict=True), strict=True):
        ts = ti / t_total if t_total else float("nan")
        fs = fi / f_total if f_total else float("nan")
        ax.text(ti * 1e3 + xmax * 0.01, yi, f"{ts:.1%} of time | {fs:.1%} of FLOPs", va="center", fontsize=7)
    ax.set_xlim(0, xmax * 1.45 if xmax > 0 else 1.0)
    ax.set_xlabel("time (ms)")
    ax.set_title(title or f"Top {len(df)} layers by time", fontsize=11)
    ax.grid(True, axis="x", linewidth=0.4, alpha=0.5)
    if colours:
        _legends(ax, colours, "layer_type", None, None)
    return _save(fig, path)


# --------------------------------------------------------------------------- FLOPs vs time
def flops_vs_time_plot(
    points: pd.DataFrame,
    path: str | Path,
    *,
    color_by: str,
    marker_by: str | None = None,
    title: str = "",
    labels: Sequence[str] | None = None,
) -> list[Path]:
    """Log-log scatter of ``time_s`` against ``flops``; writes PNG + SVG, returns the paths.

    Dotted diagonals are lines of constant throughput (time_s = flops / R) at each power of ten
    of R in FLOP/s that crosses the data: a point's distance below/above them reads directly as
    achieved FLOP/s. Operators far apart on FLOPs but close on time (dense vs depthwise
    convolution) sit on very different diagonals. Rows with missing or non-positive values are skipped;
    rows whose ``name`` is in ``labels`` are labelled.
    """
    fig = _new_figure((9.0, 6.5))
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    df = _positive_rows(points, ["flops", "time_s"]) if len(points) else points
    colours: dict = {}
    markers: dict | None = None
    if len(df):
        fl = df["flops"].astype(float)
        ts = df["time_s"].astype(float)
        x_lo, x_hi = float(fl.min()) / 3, float(fl.max()) * 3
        y_lo, y_hi = float(ts.min()) / 3, float(ts.max()) * 3
        ax.set_xlim(x_lo, x_hi)
        ax.set_ylim(y_lo, y_hi)
        rate = fl / ts
        for e in range(math.floor(math.log10(rate.min())) - 1, math.ceil(math.log10(rate.max())) + 2):
            r = 10.0 ** e
            ax.plot([x_lo, x_hi], [x_lo / r, x_hi / r], linestyle=":", color="0.6", linewidth=0.8, zorder=1)
            # label where the line leaves the plot (right edge or top edge)
            xl = min(x_hi, y_hi * r) / 1.3
            if x_lo < xl and y_lo < xl / r < y_hi:
                ax.text(xl, xl / r, _si(r, "FLOP/s"), fontsize=7, color="0.45", ha="right", va="bottom")
        colours, markers = _scatter_categories(ax, df, "flops", "time_s", color_by, marker_by, 40.0)
        if labels:
            _label_points(ax, df, "flops", "time_s", 0, labels)
    ax.set_xlabel("FLOPs per call")
    ax.set_ylabel("median time (s)")
    ax.set_title(title or "FLOPs vs time", fontsize=11)
    ax.grid(True, which="major", linewidth=0.4, alpha=0.5)
    if colours:
        _legends(ax, colours, color_by, markers, marker_by)
    return _save(fig, path)


# --------------------------------------------------------------------------- memory-level sweep
def sweep_plot(ceilings: Ceilings, path: str | Path, *, title: str = "") -> list[Path]:
    """The working-set sweep of ``ceilings`` (:func:`sweep_figure`); writes PNG + SVG, returns the paths."""
    return _save(sweep_figure(ceilings, title=title), path)


def sweep_figure(ceilings: Ceilings, *, title: str = "") -> Any:
    """Log-log bandwidth against working set: each sweep point's bandwidth with the op overhead
    taken out (filled; unresolved points left out) and raw (hollow, ``W / t``), each level's
    bandwidth as a horizontal segment over its effective range, and the cache sizes the system
    reports as dotted vertical lines (the effective capacity solid where the sweep found it smaller)."""
    fig = _new_figure((9.0, 5.5))
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    pts = [p for p in ceilings.sweep if _finite_positive(p.raw_bytes_per_s)]
    if pts:
        ax.plot([p.working_set_bytes for p in pts], [p.raw_bytes_per_s for p in pts], "o", mfc="none", color="0.5",
                label="raw: W / t", zorder=3)
        ok = [p for p in pts if _finite_positive(p.bytes_per_s)]
        ax.plot([p.working_set_bytes for p in ok], [p.bytes_per_s for p in ok], "o-", color="C0",
                label="W / (t - op overhead)", zorder=4)
    _draw_levels(ax, ceilings, pts)
    ax.set_xlabel("working set W (bytes: source + destination of the copy)")
    ax.set_ylabel("bandwidth (bytes/s)")
    over = f", op overhead {ceilings.op_overhead_s * 1e6:.2f} us" if ceilings.op_overhead_s else ""
    ax.set_title((title or "Memory levels") + f" — {ceilings.device_name}{over}", fontsize=11)
    ax.grid(True, which="major", linewidth=0.4, alpha=0.5)
    ax.legend(fontsize=8, loc="upper right")
    return fig


def _binary(x: float) -> str:
    """Bytes with a binary prefix: 4194304 -> '4 MiB', 98304 -> '96 KiB'."""
    for factor, prefix in ((2**30, "Gi"), (2**20, "Mi"), (2**10, "Ki")):
        if x >= factor:
            return f"{x / factor:.3g} {prefix}B"
    return f"{x:.3g} B"


def _draw_levels(ax: Any, ceilings: Ceilings, pts: Sequence[Any]) -> None:
    """Level segments and capacity lines of :func:`sweep_figure`."""
    reported = [float(lv.reported_bytes) for lv in ceilings.levels if lv.reported_bytes]
    xs = [float(p.working_set_bytes) for p in pts] + reported or [2.0**14, 2.0**30]
    lo, hi = min(xs) / 1.5, max(xs) * 1.5
    ys = [float(v) for p in pts for v in (p.raw_bytes_per_s, p.bytes_per_s) if _finite_positive(v)]
    start = lo
    for lv in ceilings.memory_levels():
        end = float(lv.capacity_bytes) if lv.capacity_bytes is not None else hi
        if lv.bytes_per_s:
            ys.append(float(lv.bytes_per_s))
            ax.plot([start, end], [lv.bytes_per_s, lv.bytes_per_s], color=_ROOF_COLOR, linewidth=2.0, zorder=2)
            ax.text(math.sqrt(start * end), lv.bytes_per_s * 1.08, f"{lv.name} {_si(lv.bytes_per_s, 'B/s')}",
                    ha="center", va="bottom", fontsize=8, color=_ROOF_COLOR, bbox=_TEXT_BOX)
        if lv.reported_bytes:
            ax.axvline(lv.reported_bytes, color=_DATASHEET_COLOR, linestyle=":", linewidth=1.0, zorder=1)
            ax.text(lv.reported_bytes, 0.02, f" {lv.name} {_binary(lv.reported_bytes)} reported ", rotation=90,
                    ha="right", va="bottom", fontsize=7, color=_DATASHEET_COLOR, transform=ax.get_xaxis_transform())
        if lv.capacity_bytes is not None and lv.reported_bytes and lv.capacity_bytes < lv.reported_bytes:
            ax.axvline(lv.capacity_bytes, color=_ROOF_COLOR, linestyle="-", linewidth=0.8, zorder=1)
            ax.text(lv.capacity_bytes, 0.02, f" {lv.name} effective {_binary(lv.capacity_bytes)} ", rotation=90,
                    ha="right", va="bottom", fontsize=7, color=_ROOF_COLOR, transform=ax.get_xaxis_transform())
        start = end
    ax.set_xlim(lo, hi)
    if ys:
        ax.set_ylim(min(ys) / 1.6, max(ys) * 1.6)


# --------------------------------------------------------------------------- moves between runs
def moves_plot(moves: pd.DataFrame, ceilings: Sequence[Ceilings], path: str | Path, *, labels: Sequence[str],
               title: str = "", label_top: int = 8) -> list[Path]:
    """Each layer's move between two runs on one roofline (:func:`moves_figure`); writes PNG + SVG."""
    return _save(moves_figure(moves, ceilings, labels=labels, title=title, label_top=label_top), path)


def moves_figure(moves: pd.DataFrame, ceilings: Sequence[Ceilings], *, labels: Sequence[str], title: str = "",
                 label_top: int = 8) -> Any:
    """Roofline of two runs: ``moves`` columns ``name``, ``layer_type``, ``intensity_a``,
    ``achieved_flop_per_s_a``, ``intensity_b``, ``achieved_flop_per_s_b``, ``time_s_b`` (and
    ``roof_key_a``/``roof_key_b``). The second run's points are drawn over its roofs
    (``ceilings[-1]``), the first run's as hollow markers, an arrow from each first-run point to
    its second-run point; when the runs' ceilings differ (another device), the first run's roofs
    are drawn dotted and named. ``labels``: the two runs' names (legend)."""
    end = moves.rename(columns={"intensity_b": "intensity", "achieved_flop_per_s_b": "achieved_flop_per_s",
                                "time_s_b": "time_s", "roof_key_b": "roof_key"})
    keys = {str(k) for c in ("roof_key_a", "roof_key_b") if c in moves for k in moves[c].dropna()}
    fig = roofline_figure(end, ceilings[-1], title=title, label_top=label_top, size_by=None, roofs=keys or None)
    ax = fig.axes[0]
    a = _positive_rows(moves, ["intensity_a", "achieved_flop_per_s_a", "intensity_b", "achieved_flop_per_s_b"])
    ax.scatter(a["intensity_a"], a["achieved_flop_per_s_a"], s=30, facecolors="none", edgecolors="0.3",
               linewidths=0.8, zorder=3)
    for _, row in a.iterrows():
        ax.annotate("", xy=(row["intensity_b"], row["achieved_flop_per_s_b"]),
                    xytext=(row["intensity_a"], row["achieved_flop_per_s_a"]),
                    arrowprops={"arrowstyle": "->", "color": "0.35", "lw": 0.7, "shrinkA": 3, "shrinkB": 4}, zorder=3)
    if len(ceilings) > 1 and ceilings[0].device_name != ceilings[-1].device_name:
        _draw_other_roofs(ax, ceilings[0], keys, labels[0])
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], linestyle="", marker="o", mfc="none", color="0.3", label=f"{labels[0]} (hollow)"),
               Line2D([], [], linestyle="", marker="o", color="0.3", label=f"{labels[-1]} (filled, arrow head)")]
    ax.legend(handles=handles, loc="lower right", fontsize=8)
    return fig


def _draw_other_roofs(ax: Any, k: Ceilings, keys: Collection[str], label: str) -> None:
    """The first run's compute roofs and bandwidth, dotted, when it ran on another device."""
    x_lo, x_hi = ax.get_xlim()
    for key, roof in sorted(k.flop_per_s.items()):
        if keys and key not in keys or not _finite_positive(roof):
            continue
        ax.plot([x_lo, x_hi], [roof, roof], color=_DATASHEET_COLOR, linestyle=":", linewidth=1.2, zorder=2)
        ax.text(x_lo * 1.2, roof * 1.05, f"{label}: {key} {_si(roof, 'FLOP/s')}", fontsize=7, color=_DATASHEET_COLOR)
    if k.bytes_per_s and _finite_positive(k.bytes_per_s):
        bw = float(k.bytes_per_s)
        ax.plot([x_lo, x_hi], [bw * x_lo, bw * x_hi], color=_DATASHEET_COLOR, linestyle=":", linewidth=1.2, zorder=2)
