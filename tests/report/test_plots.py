"""hwprof.report.plots: every plot writes a valid PNG and an SVG, atomically; no matplotlib -> PlotUnavailable."""

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


def test_roofline_plot_with_datasheet(tmp_path: Path, points: pd.DataFrame) -> None:
    out = plots.roofline_plot(points, CEILINGS, tmp_path / "roof.png", title="t", marker_by="variant")
    _check_png_svg(out)


def test_roofline_plot_without_datasheet(tmp_path: Path, points: pd.DataFrame) -> None:
    out = plots.roofline_plot(points, CPU, tmp_path / "sub" / "roof", size_by=None, label_top=2,
                              color_by="variant")
    assert out[0] == tmp_path / "sub" / "roof.png"   # suffix added, folder created
    _check_png_svg(out)


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


def test_roofline_plot_named_labels_and_no_points(tmp_path: Path, points: pd.DataFrame) -> None:
    _check_png_svg(plots.roofline_plot(points, CEILINGS, tmp_path / "a.png", labels=["dw1", "conv1"]))
    _check_png_svg(plots.roofline_plot(points.iloc[0:0], CEILINGS, tmp_path / "empty.png"))


def test_time_bar_plot(tmp_path: Path, points: pd.DataFrame) -> None:
    _check_png_svg(plots.time_bar_plot(points, tmp_path / "bars.png", top=3, title="top layers"))


def test_flops_vs_time_plot(tmp_path: Path, points: pd.DataFrame) -> None:
    _check_png_svg(plots.flops_vs_time_plot(points, tmp_path / "fvt.png", color_by="layer_type",
                                            marker_by="variant"))


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
