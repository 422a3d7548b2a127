"""Open a ``report.html`` in headless Chromium (Debian's ``chromium``): no script errors, one roofline point
per layer, a screenshot.

    python bench/browser_check.py out/default/mobilenet_v1/report.html --screenshot report.png \\
        [--layer features.3.depthwise.0] [--window 1400,1500]

The page records its own state on ``<div id="hwprof-check">`` once its figures are drawn
(:mod:`hwprof.report.html`): ``data-ready``, ``data-roofline-points`` (point elements drawn in the
roofline's SVG), ``data-rows`` and ``data-errors`` (uncaught errors, rejected promises and
``console.error`` calls). Chromium runs it with ``--dump-dom`` under a virtual time budget, in a fresh
profile folder, with no network services (``--disable-background-networking`` and friends), and its
console is logged to stderr too: an ``Uncaught`` line there counts as an error as well (it catches
errors thrown before the page's recorder ran). The expected point count comes from ``layers.csv``
beside the report when it is there (layers with a finite, positive intensity and achieved FLOP/s),
else from the report's embedded data.

With ``interact`` (the default on the command line; ``--no-interact`` skips it) a copy of the page with
one more script is loaded: once the page is drawn, it sorts the table by time (two clicks on the
header: descending), types the most common layer type into the filter, counts the rows left and the
roofline points dimmed, clears the filter, sends the roofline a click on a point and checks that its
row is selected; the numbers are compared with the ones the embedded data gives.

Exit status 0 when every check passes, 1 when one fails, 2 without a chromium binary.
"""

from __future__ import annotations

import argparse
import html.parser
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
         "--hide-scrollbars", "--enable-logging=stderr", "--v=0")
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    """The first Chromium-like binary on PATH, or None."""
    return next((p for c in CANDIDATES if (p := shutil.which(c))), None)


# Run inside the page once it is drawn: sort by time, filter by TERM, click a roofline point (see the docstring).
INTERACT_JS = """
(function(){function run(){var c=document.getElementById('hwprof-check');
if(c.getAttribute('data-ready')!=='1'){setTimeout(run,50);return;}
var out={},rows=function(){return Array.prototype.slice.call(document.querySelectorAll('#layers tbody tr'));};
var th=Array.prototype.filter.call(document.querySelectorAll('#layers th'),function(h){return h.textContent==='time';})[0];
th.click();th.click();var k=+th.dataset.k,t=rows().map(function(r){return +r.cells[k].dataset.v;});
out.sorted_desc=th.classList.contains('desc')&&t.every(function(v,i){return i===0||t[i-1]>=v;});
var f=document.getElementById('filter');f.value=TERM;f.dispatchEvent(new Event('input'));
var vis=rows().filter(function(r){return r.style.display!=='none';});out.filtered=vis.length;
var gd=document.getElementById('roofline');out.dimmed=0;
gd.data.forEach(function(tr){if(tr.meta==='layers')[].concat(tr.marker.opacity).forEach(function(o){if(o<0.5)out.dimmed++;});});
f.value='';f.dispatchEvent(new Event('input'));
var pt=gd.data.filter(function(tr){return tr.meta==='layers';})[0].customdata[0];
gd.emit('plotly_click',{points:[{customdata:pt}]});
var sel=document.querySelectorAll('#layers tr.sel');out.selected=sel.length===1&&+sel[0].dataset.idx===pt[0];
c.setAttribute('data-interactions',JSON.stringify(out));}run();})();
"""


@dataclass
class BrowserCheck:
    """What the page reported (``-1`` where it reported nothing), what the console showed, and what the
    interactions found (``interactions``: sorted_desc, filtered, dimmed, selected; ``expected``: the
    filtered and dimmed counts the embedded data gives)."""

    ready: bool
    roofline_points: int
    rows: int
    errors: list[str]
    console: list[str] = field(default_factory=list)
    screenshot: Path | None = None
    interactions: dict[str, Any] | None = None
    expected: dict[str, Any] = field(default_factory=dict)

    def problems(self, expected_points: int) -> list[str]:
        """One line per failed check (empty when the page passed)."""
        out = [] if self.ready else ["the page never finished drawing (no data-ready)"]
        if self.roofline_points != expected_points:
            out.append(f"roofline shows {self.roofline_points} points, expected {expected_points} (one per layer)")
        out += [f"script error: {e}" for e in self.errors]
        out += [f"console: {c}" for c in self.console if "Uncaught" in c]
        if self.interactions is not None:
            want = {"sorted_desc": True, "selected": True, **self.expected}
            out += [f"interaction {k}: got {self.interactions.get(k)!r}, expected {v!r}" for k, v in want.items()
                    if self.interactions.get(k) != v]
        return out


class _CheckDiv(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.attrs: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if dict(attrs).get("id") == "hwprof-check":
            self.attrs = dict(attrs)


def _run(binary: str, args: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="html_chromium_") as profile_dir:
        return subprocess.run([binary, *FLAGS, f"--user-data-dir={profile_dir}", *args], capture_output=True,
                              text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)


def embedded_data(report: str | Path) -> dict[str, Any]:
    """The data a report embeds (``<script id="hwprof-data">``)."""
    m = re.search(r'<script type="application/json" id="hwprof-data">(.*?)</script>', Path(report).read_text(), re.S)
    if m is None:
        raise ValueError(f"{report}: no embedded hwprof data")
    return dict(json.loads(m.group(1)))


def _interactions(report: Path, tmp: Path) -> tuple[Path, dict[str, Any]]:
    """A copy of ``report`` with :data:`INTERACT_JS` (filtering by the most common layer type), and the
    filtered and dimmed counts the embedded data gives for that filter."""
    data = embedded_data(report)
    kinds = [r["kind"] for r in data["layers"]]
    term = max(dict.fromkeys(kinds), key=kinds.count).lower() if kinds else "x"   # the first most common
    hits = [term in f"{r['path'] or '(root)'} {r['kind']}".lower() for r in data["layers"]]
    plottable = [r["intensity"] is not None and r["intensity"] > 0 and r["achieved_flop_per_s"] is not None
                 and r["achieved_flop_per_s"] > 0 for r in data["layers"]]
    page = report.read_text().replace("</body>", f"<script>{INTERACT_JS.replace('TERM', json.dumps(term))}</script>"
                                                 "</body>")
    copy = tmp / report.name
    copy.write_text(page)
    return copy, {"filtered": sum(hits), "dimmed": sum(p and not h for p, h in zip(plottable, hits, strict=True))}


def check_report(report: str | Path, screenshot: str | Path | None = None, *, layer: str | None = None,
                 window: str = "1400,1500", timeout_s: float = 120, binary: str | None = None,
                 interact: bool = False) -> BrowserCheck:
    """Load ``report`` in headless Chromium, read back the page's check (``interact``: after the interactions
    of the module docstring, on a copy of the page), and (``screenshot``) save a PNG of the first ``window``
    pixels of the page itself (``layer``: opened with that layer selected, ``#layer=<path>``)."""
    binary = binary or find_chromium()
    if binary is None:
        raise FileNotFoundError("no chromium binary on PATH (Debian: apt-get install chromium)")
    url = Path(report).resolve().as_uri() + (f"#layer={layer}" if layer else "")
    budget = "--virtual-time-budget=20000"
    with tempfile.TemporaryDirectory(prefix="html_check_") as tmp:
        page, expected = _interactions(Path(report).resolve(), Path(tmp)) if interact else (Path(report), {})
        r = _run(binary, [budget, "--dump-dom", page.resolve().as_uri()], timeout_s)
    parser = _CheckDiv()
    parser.feed(r.stdout)
    a = parser.attrs
    console = [m.group(1) for m in re.finditer(r'CONSOLE[^\]]*\] "(.*)", source:', r.stderr)]
    shot = None
    if screenshot is not None:
        shot = Path(screenshot).resolve()
        shot.parent.mkdir(parents=True, exist_ok=True)
        _run(binary, [budget, f"--window-size={window}", f"--screenshot={shot}", url], timeout_s)
        if not shot.is_file():
            raise RuntimeError(f"chromium wrote no screenshot to {shot}")
    return BrowserCheck(a.get("data-ready") == "1", int(a.get("data-roofline-points") or -1),
                        int(a.get("data-rows") or -1), list(json.loads(a.get("data-errors") or "[]")), console, shot,
                        json.loads(a.get("data-interactions") or "{}") if interact else None, expected)


def expected_points(report: str | Path) -> int:
    """Layers the roofline must show: from ``layers.csv`` beside ``report`` (finite, positive intensity and
    achieved FLOP/s), else from the report's embedded data."""
    csv = Path(report).with_name("layers.csv")
    if csv.is_file():
        import pandas as pd

        df = pd.read_csv(csv)
        ok = [(i > 0 and math.isfinite(i)) and (a > 0 and math.isfinite(a))
              for i, a in zip(df["intensity"].fillna(-1), df["achieved_flop_per_s"].fillna(-1), strict=True)]
        return int(sum(ok))
    return int(embedded_data(report)["roofline_points"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report")
    ap.add_argument("--screenshot", default=None, help="PNG to write")
    ap.add_argument("--layer", default=None, help="open with this layer selected")
    ap.add_argument("--window", default="1400,1500", help="screenshot size, WIDTH,HEIGHT (default 1400,1500)")
    ap.add_argument("--no-interact", action="store_true", help="skip sorting, filtering and the click")
    args = ap.parse_args(argv)
    if find_chromium() is None:
        print("no chromium binary on PATH (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    res = check_report(args.report, args.screenshot, layer=args.layer, window=args.window,
                       interact=not args.no_interact)
    want = expected_points(args.report)
    bad = res.problems(want)
    print(f"{args.report}: ready={res.ready} roofline points {res.roofline_points} (expected {want}), "
          f"table rows {res.rows}, script errors {len(res.errors)}, console lines {len(res.console)}, "
          f"interactions {res.interactions}"
          + (f", screenshot {res.screenshot}" if res.screenshot else ""))
    for line in bad:
        print(f"FAIL {line}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
