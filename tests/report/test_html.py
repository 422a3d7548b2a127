"""report.html (hwprof.report.html): the embedded data against layers.csv, one roofline point per layer with
its hover, a self-contained page, the memory timeline's peak, the profile saved without plotly, --no-html, and
(marked ``browser``) the page in headless Chromium."""

from __future__ import annotations

import builtins
import importlib.util
import json
import logging
import math
import re
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from report_helpers import CEILINGS, synthetic_profile

import hwprof
from hwprof.report.html import TIME_BARS, html_report, report_data

FIXTURE = Path(__file__).parents[1] / "data" / "saved_profile"
BENCH = Path(__file__).parents[2] / "bench" / "browser_check.py"


def _script(page: str, element_id: str) -> Any:
    m = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', page, re.S)
    assert m is not None, element_id
    return json.loads(m.group(1))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed train-mode fixture, saved again with its report."""
    out = tmp_path_factory.mktemp("saved") / "p"
    hwprof.load_profile(FIXTURE).save(out, command="hwprof profile tiny")
    return out


def _plottable(df: pd.DataFrame) -> pd.Series:
    i, a = df["intensity"], df["achieved_flop_per_s"]
    return (i > 0) & (a > 0) & i.map(math.isfinite) & a.map(math.isfinite)


def test_embedded_data_matches_layers_csv(saved: Path) -> None:
    page = (saved / "report.html").read_text()
    data = _script(page, "hwprof-data")
    csv = pd.read_csv(saved / "layers.csv", index_col=0, keep_default_na=False, na_values=[""])
    csv.index = csv.index.fillna("").astype(str)
    assert [r["path"] for r in data["layers"]] == list(csv.index)
    for r in data["layers"]:
        row = csv.loc[r["path"]]
        for col in ("flops", "bytes", "time_s", "fwd_s", "bwd_s", "intensity", "achieved_flop_per_s",
                    "efficiency", "time_share", "calls"):
            want = float(row[col])
            assert (r[col] is None and math.isnan(want)) or r[col] == pytest.approx(want, rel=1e-12), (r["path"], col)
        text = row[["bound", "roof_key", "output_shapes"]].fillna("")   # Flatten: no bytes, no bound
        assert (r["bound"], r["roof_key"], r["output_shapes"]) == tuple(text)
    assert data["roofline_points"] == int(_plottable(csv).sum())
    assert data["manifest"]["command"] == "hwprof profile tiny"


def test_roofline_has_one_point_per_layer_with_its_hover(saved: Path) -> None:
    page = (saved / "report.html").read_text()
    data, figs = _script(page, "hwprof-data"), _script(page, "hwprof-figures")
    points = [c for t in figs["roofline"]["data"] if t.get("meta") == "layers" for c in t["customdata"]]
    csv = pd.read_csv(saved / "layers.csv", index_col=0, keep_default_na=False, na_values=[""])
    assert len(points) == int(_plottable(csv).sum()) == data["roofline_points"]
    assert sorted(c[0] for c in points) == sorted(set(c[0] for c in points))   # each layer once
    conv = next(c for c in points if c[1] == "0")   # Conv2d(3, 8, 3) of the fixture, fwd + bwd
    row = data["layers"][conv[0]]
    assert row["path"] == "0" and conv[2] == "Conv2d/dense" and conv[3] == "2x3x16x16 -> 2x8x16x16"
    # 446,464 FLOPs (fwd 221,184 + bwd 225,280) and 47,712 bytes, as in layers.csv
    assert conv[4] == "446.46KFLOP" and conv[5] == "46.59KiB" and conv[9] == "compute-bound"   # intensity 9.36 > the ridge 200G / 25G = 8
    roofs = {t["name"]: t["y"] for t in figs["roofline"]["data"] if t.get("mode") == "lines"}
    k = hwprof.load_profile(FIXTURE).ceilings
    assert roofs["fp32 200.00GFLOP/s"] == [k.flop_per_s["fp32"]] * 2 and "memory 25.00GB/s" in roofs
    assert figs["roofline"]["layout"]["xaxis"]["type"] == "log" and figs["roofline"]["layout"]["yaxis"]["type"] == "log"


def test_page_is_self_contained_and_small(saved: Path) -> None:
    page = (saved / "report.html").read_text()
    assert not re.search(r"<(script|img|link|iframe)[^>]+(src|href)=", page, re.I)   # nothing fetched
    assert "@import" not in page and "url(http" not in page
    assert "Plotly.newPlot" in page and len(page) < 8e6   # plotly.js (about 5 MB) is embedded once
    assert page.count("plotly.js v") <= 2
    rows = re.findall(r'<tr data-idx="(\d+)"', page)
    assert len(rows) == len(_script(page, "hwprof-data")["layers"])


def test_a_name_cannot_close_the_data_element(tmp_path: Path) -> None:
    p = synthetic_profile(name="x</script><script>alert(1)</script>")
    page = html_report(p, tmp_path / "r.html").read_text()
    assert "<script>alert(1)" not in page and "</script><script>" not in page
    assert _script(page, "hwprof-data")["config"]["model"] == "x</script><script>alert(1)</script>"


def test_memory_timeline_marks_the_peak_and_its_op(tmp_path: Path) -> None:
    page = html_report(synthetic_profile(), tmp_path / "r.html").read_text()
    mem = _script(page, "hwprof-figures")["memory"]
    line, peak = mem["data"]
    # TIMELINE: 100, 300, 700, 200 bytes at 0, 1, 2, 3 ms; the peak is the third point, in aten::relu
    assert line["x"] == [0.0, 1.0, 2.0, 3.0] and line["y"] == pytest.approx([b / 2**20 for b in (100, 300, 700, 200)])
    assert peak["x"] == [2.0] and mem["layout"]["annotations"][0]["text"] == "peak 0.0 MiB in aten::relu"
    no_tl = html_report(synthetic_profile(timeline=None), tmp_path / "n.html").read_text()
    assert "memory" not in _script(no_tl, "hwprof-figures") and "No allocator timeline" in no_tl


def test_layer_time_bars_show_the_slowest_layers() -> None:
    p = synthetic_profile()
    from hwprof.report.html import _time_figure

    fig = _time_figure(report_data(p), train=False)
    # self times (ms): block.conv 3, head 2, block.relu 1, block 0.5 (its add); the root runs no op of its
    # own, so it is no layer of the profile; slowest at the top (last)
    assert list(fig.data[0].y) == ["block", "block.relu", "head", "block.conv"]
    assert list(fig.data[0].x) == pytest.approx([0.5, 1.0, 2.0, 3.0])
    assert TIME_BARS >= 5


def test_without_plotly_the_rest_is_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    real_import = builtins.__import__

    def no_plotly(name: str, *args: Any, **kw: Any) -> Any:
        if name == "plotly" or name.startswith("plotly."):
            raise ImportError("No module named 'plotly'")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_plotly)
    with caplog.at_level(logging.WARNING):
        names = {f.name for f in synthetic_profile().save(tmp_path / "p")}
    assert "report.html" not in names and {"trace.json", "layers.csv", "report.md", "profile.json"} <= names
    note = "report.html skipped: plotly is not installed: pip install 'hwprof[html]'"
    assert note in json.loads((tmp_path / "p" / "profile.json").read_text())["notes"]
    assert [r.getMessage() for r in caplog.records if "report.html" in r.getMessage()] == [note]


def test_no_html_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import hwprof.cli.profile as cli

    monkeypatch.setattr(cli, "measure_ceilings", lambda *a, **k: CEILINGS)
    monkeypatch.setattr(cli, "_run_one", lambda *a, **k: synthetic_profile())
    for argv, want in ((["--no-html"], False), ([], True)):
        out = tmp_path / str(want)
        assert hwprof.cli.main(["profile", "lenet5", "--device", "cpu", "--out", str(out), *argv]) == 0
        assert (out / "report.html").exists() is want and (out / "trace.json").exists()
    capsys.readouterr()


def _browser_check() -> Any:
    spec = importlib.util.spec_from_file_location("browser_check", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["browser_check"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.browser
def test_report_in_headless_chromium(saved: Path, tmp_path: Path) -> None:
    bc = _browser_check()
    if bc.find_chromium() is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium)")
    res = bc.check_report(saved / "report.html", tmp_path / "shot.png", layer="3", window="1200,900", interact=True)
    expected = bc.expected_points(saved / "report.html")   # from layers.csv beside the report
    assert res.problems(expected) == [] and res.rows == 7 and res.ready and expected == 6   # all but Flatten
    # the fixture's types: Conv2d/dense, BatchNorm2d, ReLU, Conv2d/depthwise, Conv2d/pointwise, Flatten, Linear,
    # one layer each; the filter types the first most common one, Conv2d/dense: 1 row left, and of the 6
    # roofline points the other 5 dimmed
    assert res.interactions == {"sorted_desc": True, "filtered": 1, "dimmed": 5, "selected": True}
    assert res.screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.browser
def test_the_browser_check_can_fail(saved: Path, tmp_path: Path) -> None:
    bc = _browser_check()
    if bc.find_chromium() is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium)")
    page = (saved / "report.html").read_text()
    throws = tmp_path / "throws" / "report.html"
    throws.parent.mkdir()
    throws.write_text(page.replace("var cfg={responsive", "undefinedCall();var cfg={responsive"))
    bad = bc.check_report(throws)
    assert not bad.ready and any("undefinedCall" in e for e in bad.problems(6))
    unsorted = tmp_path / "unsorted" / "report.html"   # sorting that ignores the direction
    unsorted.parent.mkdir()
    unsorted.write_text(page.replace("*(asc?1:-1)", ""))
    res = bc.check_report(unsorted, interact=True)
    assert res.ready and res.problems(6) == ["interaction sorted_desc: got False, expected True"]


def test_cache_levels_get_their_own_bandwidth_slopes() -> None:
    from hwprof.hardware.ceilings import Ceilings
    from hwprof.hardware.levels import MemoryLevel
    from hwprof.report.html import _cache_level_traces, _plotly

    k = Ceilings("cpu", "x", "2.13", "2026-11-30", "measured", {"fp32": 300e9}, 23.5e9,
                 levels=(MemoryLevel("L1", 48 * 2**10, None, 48 * 2**10, "sweep"),      # unresolved: no slope
                         MemoryLevel("L2", 2 * 2**20, 135e9, 4 * 2**20, "sweep"),
                         MemoryLevel("DRAM", None, 23.5e9, None, "copy")))              # main memory: drawn apart
    (l2,) = _cache_level_traces(_plotly(), k, 0.1, 300e9)
    assert l2.name == "L2 135.00GB/s (up to 2.00 MiB)" and l2.line.dash == "dashdot"
    # from intensity 0.1 (13.5 GFLOP/s) up to the ridge with the fp32 roof, 300e9 / 135e9 = 2.22 FLOP/byte
    assert list(l2.y) == [pytest.approx(13.5e9), 300e9] and list(l2.x) == [0.1, pytest.approx(300 / 135)]
