"""hwprof.report.plots: what each plot draws (its lines, texts and points, read from the matplotlib Figure it
saves, against the numbers derived by hand from the fixtures), a valid PNG and SVG written atomically;
no matplotlib -> PlotUnavailable."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd
import pytest

from hwprof.hardware.ceilings import Ceilings
from hwprof.report import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def points() -> pd.DataFrame:
    """Synthetic layers: intensity = flops / bytes, FLOP/s = flops / time_s (a NaN row must be skipped)."""
    rows = [
        ("conv1", "Conv2d", "dense", 2.0e9, 8.0e6, 1.0e-3),
        ("dw1", "Conv2d", "depthwise", 1.4e7, 6.4e6, 2.0e-4),
        ("pw1", "Conv2d", "pointwise", 4.1e8, 6.7e6, 4.0e-4),
        ("bn1", "BatchNorm2d", "other", 8.0e5, 6.4e6, 1.5e-4),
        ("fc", "Linear", "other", 2.0e6, 4.0e6, 5.0e-5),
        ("failed", "Conv2d", "dense", float("nan"), float("nan"), float("nan")),
    ]
    df = pd.DataFrame(rows, columns=["name", "layer_type", "variant", "flops", "bytes", "time_s"])
    df["intensity"] = df["flops"] / df["bytes"]
    df["achieved_flop_per_s"] = df["flops"] / df["time_s"]
    df["time_share"] = df["time_s"] / df["time_s"].sum()
    return df


CEILINGS = Ceilings("cuda", "test GPU", "2.11", "2026-11-24", "measured",
                    {"fp32": 5.15e13, "tf32": 3.9e14, "bf16": 7.6e14}, 3.0e12,
                    datasheet={"fp32": 6.69e13, "tf32": 4.947e14, "bf16": 9.894e14, "fp16": None, "bytes_per_s": 3.35e12})
CPU = Ceilings("cpu", "cpu without bf16 units", "2.13", "2026-11-24", "measured", {"fp32": 3.6e11, "bf16": 0.9e9},
               2.6e10)


def _check_png_svg(paths: list[Path]) -> None:
    from matplotlib import image

    png, svg = paths
    assert png.suffix == ".png" and svg.suffix == ".svg" and png.with_suffix(".svg") == svg
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    img = image.imread(png)               # matplotlib reads its own output back
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    text = svg.read_text()
    assert "<svg" in text and text.rstrip().endswith("</svg>")
    assert not [p for p in png.parent.iterdir() if p.name.endswith(".tmp")]   # atomic: no temp file left


@pytest.fixture
def saved(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The Figures the plot functions hand to ``plots._save`` (which still writes them)."""
    figures: list[object] = []
    real = plots._save

    def keep(fig: object, path: str | Path) -> list[Path]:
        figures.append(fig)
        return real(fig, path)
    monkeypatch.setattr(plots, "_save", keep)
    return figures


def _lines(ax: object) -> list[tuple[tuple[float, float], tuple[float, float], str]]:
    return [((float(x[0]), float(x[-1])), (float(y[0]), float(y[-1])), line.get_linestyle())
            for line in ax.get_lines() for x, y in [(line.get_xdata(), line.get_ydata())]]  # type: ignore[attr-defined]


def _offsets(ax: object) -> list[tuple[float, float]]:
    return sorted((float(x), float(y)) for c in ax.collections for x, y in c.get_offsets())  # type: ignore[attr-defined]


def _annotations(ax: object) -> list[str]:
    from matplotlib.text import Annotation
    return [t.get_text() for t in ax.texts if isinstance(t, Annotation)]  # type: ignore[attr-defined]


# the fixture's points, by hand: intensity = flops / bytes, FLOP/s = flops / time_s
POINTS = [(250.0, 2e12), (2.1875, 7e10), (4.1e8 / 6.7e6, 1.025e12), (0.125, 8e5 / 1.5e-4), (0.5, 4e10)]


def test_roofline_plot_with_datasheet(tmp_path: Path, points: pd.DataFrame, saved: list) -> None:
    out = plots.roofline_plot(points, CEILINGS, tmp_path / "roof.png", title="t", marker_by="variant")
    _check_png_svg(out)
    ax = saved[0].axes[0]
    assert _offsets(ax) == [pytest.approx(p) for p in sorted(POINTS)]        # the NaN row is not drawn
    lines = _lines(ax)
    # measured roofs solid from their ridge on the fastest measured slope (roof / 3 TB/s) to the right edge;
    # the datasheet's dashed from their ridge on its 3.35 TB/s slope; both slopes end at the highest roof
    roofs = sorted((y0, x0, ls) for (x0, _), (y0, y1), ls in lines if y0 == y1)
    assert roofs == [(5.15e13, pytest.approx(5.15e13 / 3e12), "-"), (6.69e13, pytest.approx(6.69e13 / 3.35e12), "--"),
                     (3.9e14, pytest.approx(130.0), "-"), (4.947e14, pytest.approx(4.947e14 / 3.35e12), "--"),
                     (7.6e14, pytest.approx(7.6e14 / 3e12), "-"), (9.894e14, pytest.approx(9.894e14 / 3.35e12), "--")]
    assert len({x1 for (_, x1), (y0, y1), _ in lines if y0 == y1}) == 1    # every roof runs to the right edge
    slopes = [(xs, ys, ls) for xs, ys, ls in lines if ys[0] != ys[1]]
    assert [(ys[1] / xs[1], ys[1], ls) for xs, ys, ls in slopes] == [
        (pytest.approx(3e12), pytest.approx(9.894e14), "-"), (pytest.approx(3.35e12), pytest.approx(9.894e14), "--")]
    texts = [t.get_text() for t in ax.texts]
    assert {"fp32 51.5 TFLOP/s measured (datasheet 66.9 TFLOP/s, dashed)",
            "tf32 390 TFLOP/s measured (datasheet 495 TFLOP/s, dashed)",
            "bf16 760 TFLOP/s measured (datasheet 989 TFLOP/s, dashed)",
            "memory 3 TB/s measured (datasheet 3.35 TB/s, dashed)"} <= set(texts)
    # label_top=8 > 5 points: every point named, longest-running first
    assert _annotations(ax) == ["conv1", "pw1", "dw1", "bn1", "fc"]
    assert ax.get_title() == "t — test GPU"


def test_roofline_plot_without_datasheet(tmp_path: Path, points: pd.DataFrame, saved: list) -> None:
    out = plots.roofline_plot(points, CPU, tmp_path / "sub" / "roof", size_by=None, label_top=2,
                              color_by="variant")
    assert out[0] == tmp_path / "sub" / "roof.png"   # suffix added, folder created
    _check_png_svg(out)
    ax = saved[0].axes[0]
    assert _annotations(ax) == ["conv1", "pw1"]        # label_top=2: the two longest (1 ms, 0.4 ms)
    assert not any(ls == "--" for _, _, ls in _lines(ax))   # no datasheet: nothing dashed
    assert [t.get_text() for t in ax.texts if "measured" in t.get_text()] == [
        "bf16 900 MFLOP/s measured", "fp32 360 GFLOP/s measured", "memory 26 GB/s measured"]
    sizes = {float(c.get_sizes()[0]) for c in ax.collections}
    assert sizes == {40.0}                             # size_by=None: one marker size


def _horizontal_lines_at(fig: object) -> set[float]:
    ax = fig.axes[0]   # type: ignore[attr-defined]
    return {float(y[0]) for line in ax.get_lines() if len(y := line.get_ydata()) == 2 and y[0] == y[1]}


def test_only_the_roofs_the_points_run_in_are_drawn(points: pd.DataFrame) -> None:
    """An fp32 run on a CPU without bf16 units: the 0.9 GFLOP/s bf16 roof would sit below most
    points; it is named under the plot, not drawn, and does not stretch the y axis."""
    pytest.importorskip("matplotlib")
    fp32 = points.assign(roof_key="fp32")
    fig = plots.roofline_figure(fp32, CPU)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert _horizontal_lines_at(fig) == {3.6e11}
    assert any(t.startswith("fp32 360 GFLOP/s measured") for t in texts)
    assert not any(t.startswith("bf16") for t in texts)
    assert "other roofs, not drawn (no point runs in them): bf16 900 MFLOP/s" in texts
    assert fig.axes[0].get_ylim()[0] > 0.9e9 / 5   # the axis is not padded down to the hidden roof
    both = plots.roofline_figure(fp32.assign(roof_key=["fp32", "bf16"] * 3), CPU)   # a bf16 run: both drawn
    assert _horizontal_lines_at(both) == {3.6e11, 0.9e9}
    explicit = plots.roofline_figure(fp32, CEILINGS, roofs=["tf32"])   # measured tf32 + its datasheet figure
    assert _horizontal_lines_at(explicit) == {3.9e14, 4.947e14}


def test_roofline_plot_named_labels_and_no_points(tmp_path: Path, points: pd.DataFrame, saved: list) -> None:
    _check_png_svg(plots.roofline_plot(points, CEILINGS, tmp_path / "a.png", labels=["dw1", "conv1"]))
    assert sorted(_annotations(saved[0].axes[0])) == ["conv1", "dw1"]      # exactly the named rows
    _check_png_svg(plots.roofline_plot(points.iloc[0:0], CEILINGS, tmp_path / "empty.png"))
    empty = saved[1].axes[0]
    assert _offsets(empty) == [] and _annotations(empty) == []
    assert len([1 for _, (y0, y1), _ in _lines(empty) if y0 == y1]) == 6   # the roofs are still drawn


def test_time_bar_plot(tmp_path: Path, points: pd.DataFrame, saved: list) -> None:
    _check_png_svg(plots.time_bar_plot(points, tmp_path / "bars.png", top=3, title="top layers"))
    ax = saved[0].axes[0]
    # top=3 of the 6 rows by time, largest at the top (last bar); bars in ms
    assert [t.get_text() for t in ax.get_yticklabels()] == ["dw1 (Conv2d)", "pw1 (Conv2d)", "conv1 (Conv2d)"]
    assert [p.get_width() for p in ax.patches] == pytest.approx([0.2, 0.4, 1.0])
    # shares over all rows: time 1.8 ms in all (the NaN row counts 0), FLOPs 2.4268 G:
    # dw1 0.2/1.8 = 11.1%, 1.4e7/2.4268e9 = 0.6%; pw1 22.2%, 16.9%; conv1 55.6%, 82.4%
    assert [t.get_text() for t in ax.texts] == ["11.1% of time | 0.6% of FLOPs", "22.2% of time | 16.9% of FLOPs",
                                                "55.6% of time | 82.4% of FLOPs"]
    assert ax.get_title() == "top layers"


def test_flops_vs_time_plot(tmp_path: Path, points: pd.DataFrame, saved: list) -> None:
    _check_png_svg(plots.flops_vs_time_plot(points, tmp_path / "fvt.png", color_by="layer_type",
                                            marker_by="variant"))
    ax = saved[0].axes[0]
    assert _offsets(ax) == sorted([(2e9, 1e-3), (1.4e7, 2e-4), (4.1e8, 4e-4), (8e5, 1.5e-4), (2e6, 5e-5)])
    # the points run at 5.3 GFLOP/s (bn1) to 2 TFLOP/s (conv1): diagonals at 10^e FLOP/s for e from
    # floor(log10 5.3e9) - 1 = 8 to ceil(log10 2e12) + 1 = 14
    diagonals = [xs[0] / ys[0] for xs, ys, ls in _lines(ax) if ls == ":"]
    assert diagonals == pytest.approx([10.0**e for e in range(8, 15)])


def test_svg_given_as_path_gives_png_beside_it(tmp_path: Path, points: pd.DataFrame) -> None:
    out = plots.flops_vs_time_plot(points, tmp_path / "x.svg", color_by="layer_type")
    assert [p.name for p in out] == ["x.png", "x.svg"]


def test_si_prefix_formatting() -> None:
    assert plots._si(3.0e12, "B/s") == "3 TB/s"
    assert plots._si(5.15e13, "FLOP/s") == "51.5 TFLOP/s"
    assert plots._si(12.0, "B") == "12 B"


def test_missing_matplotlib_raises_plot_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     points: pd.DataFrame) -> None:
    # None in sys.modules makes `import matplotlib` (and every submodule import) raise ImportError.
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    for call in (lambda: plots.roofline_plot(points, CEILINGS, tmp_path / "r.png"),
                 lambda: plots.time_bar_plot(points, tmp_path / "b.png"),
                 lambda: plots.flops_vs_time_plot(points, tmp_path / "f.png", color_by="layer_type")):
        with pytest.raises(plots.PlotUnavailable) as info:
            call()
        assert str(info.value) == "matplotlib is not installed: pip install 'hwprof[plots]'"
    assert list(tmp_path.iterdir()) == []


def test_plot_unavailable_is_a_user_error() -> None:
    from hwprof.errors import HwprofError

    assert issubclass(plots.PlotUnavailable, HwprofError) and issubclass(plots.PlotUnavailable, ImportError)


def test_nan_rows_are_skipped_not_plotted(points: pd.DataFrame) -> None:
    kept = plots._positive_rows(points, ["intensity", "achieved_flop_per_s"])
    assert "failed" not in set(kept["name"]) and len(kept) == len(points) - 1
    assert all(math.isfinite(v) for v in kept["intensity"])


def test_labels_of_clustered_points_do_not_overlap() -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.text import Text

    fig = plots._new_figure((8.0, 5.0))
    ax = fig.add_subplot()
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(0.1, 1000)
    ax.set_ylim(1e9, 1e13)
    # eight points within a factor 1.5 of each other: their labels cannot all sit next to them
    df = pd.DataFrame({"name": [f"features.{i}.pointwise.0" for i in range(8)],
                       "x": [60 + 8 * i for i in range(8)], "y": [2.5e11 + 1e10 * i for i in range(8)],
                       "time_s": [1.0 - 0.1 * i for i in range(8)]})
    ax.scatter(df["x"], df["y"])
    plots._label_points(ax, df, "x", "y", top=8, labels=None)
    renderer = fig.canvas.get_renderer()
    boxes = []
    for t in ax.texts:
        t.update_positions(renderer)
        boxes.append(Text.get_window_extent(t, renderer))
    assert sorted(t.get_text() for t in ax.texts) == sorted(df["name"])       # every label drawn
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
