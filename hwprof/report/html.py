"""``report.html``: one self-contained, interactive page per profile (plotly, optional extra ``hwprof[html]``).

The page needs nothing but a browser: plotly.js is embedded once (what ``include_plotlyjs=True`` embeds,
:func:`plotly.offline.get_plotlyjs`), the figures and the data are JSON in ``<script>`` elements, and the
page's own script (sorting, filtering, selection) is a few dozen lines written here; no CDN, no fonts.

Sections: the summary (the lines ``hwprof profile`` prints), the roofline (log axes, the measured roofs:
``min(compute roof, bandwidth x intensity)``, Williams et al., CACM 2009; one point per layer with time,
FLOPs and bytes; hover: path, type, shapes, FLOPs, bytes, time, achieved FLOP/s, efficiency, bound; a
click selects the layer's row), the per-layer table (sortable, filtered by text, type and bound; the
filter dims the roofline points it hides; a click on a row highlights its point), the layer-time bars,
the memory timeline of the allocator-trace pass with its peak and the op at the peak, the phases, the
slowest ops, the notes and the manifest. ``report.html#layer=<path>`` opens with that layer selected.

The data embedded in ``<script id="hwprof-data" type="application/json">`` (:func:`report_data`) holds
one row per row of ``layers.csv``, with the same numbers. When the page has drawn its figures it sets
``data-ready``, ``data-roofline-points`` (points drawn), ``data-rows`` and ``data-errors`` (script errors
and ``console.error`` calls seen since the page began) on ``<div id="hwprof-check">``, for a headless
browser to read back (``bench/browser_check.py``).
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from hwprof.files import to_jsonable, write_atomic
from hwprof.report.plots import PlotUnavailable, _positive_rows, _select_roofs
from hwprof.report.profile_report import memory_lines, op_table, phase_table, summary_lines
from hwprof.report.tables import human, human_bytes

if TYPE_CHECKING:
    from hwprof.joining import Profile

__all__ = ["html_report", "report_data", "roofline_points", "HTML_EXTRA", "TIME_BARS"]

HTML_EXTRA = "pip install 'hwprof[html]'"
TIME_BARS = 40
"""Layers shown in the layer-time bars (the slowest); the table has them all."""

MIB = 2**20
_COLUMNS = (  # (key in the embedded rows, header, kind of formatting)
    ("path", "layer", "str"), ("kind", "type", "str"), ("output_shapes", "output", "str"),
    ("flops", "FLOPs", "flop"), ("bytes", "bytes", "bytes"), ("time_s", "time", "ms"),
    ("time_share", "time %", "pct"), ("achieved_flop_per_s", "FLOP/s", "rate"),
    ("efficiency", "% of attainable", "pct"), ("intensity", "FLOP/byte", "num"), ("bound", "bound", "str"),
    ("roof_key", "roof", "str"))
_ROW_KEYS = ("type", "variant", "op_class", "input_shapes", "output_shapes", "calls", "flops", "macs", "bytes",
             "fwd_s", "bwd_s", "time_s", "time_share", "flops_share", "intensity", "achieved_flop_per_s",
             "achieved_bytes_per_s", "attainable_flop_per_s", "compute_roof_flop_per_s", "efficiency",
             "pct_of_compute_roof", "bound", "above_roof", "roof_key", "dtype")


def _plotly() -> Any:
    """plotly.graph_objects, or :class:`PlotUnavailable` with a one-line message."""
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise PlotUnavailable(f"plotly is not installed: {HTML_EXTRA}") from None
    return go


# ----------------------------------------------------------------------------- data
def roofline_points(layers: pd.DataFrame) -> pd.DataFrame:
    """The layers a log-log roofline can show: finite, positive intensity and achieved FLOP/s (a layer
    with no time, no FLOPs or no bytes has none)."""
    return _positive_rows(layers, ["intensity", "achieved_flop_per_s"])


def _fmt(kind: str, x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return {"flop": lambda v: f"{human(v)}FLOP", "bytes": lambda v: human(v, "B", 1024),
            "ms": lambda v: f"{v * 1e3:.3f} ms", "pct": lambda v: f"{100 * v:.3g}%",
            "rate": lambda v: f"{human(v)}FLOP/s", "num": lambda v: f"{v:.3g}"}.get(kind, str)(x)


def report_data(p: Profile, manifest: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything the page shows, JSON-ready (NaN as null): ``layers`` (one row per row of ``p.layers``:
    ``path``, ``kind`` = type or type/variant ("Conv2d/depthwise"), and the columns of ``_ROW_KEYS``),
    ``roofline_points`` (how many layers the roofline shows), ``left_out`` (those it cannot), the roofs,
    the memory ``timeline``, the summary lines, notes, config and manifest."""
    lay = p.layers
    rows = [{"path": str(path), "kind": f"{r['type']}/{r['variant']}" if r.get("variant") else str(r["type"]),
             **{k: r.get(k) for k in _ROW_KEYS}} for path, r in lay.iterrows()]
    shown = set(roofline_points(lay).index)
    tl = p.measurement.memory_record.alloc_trace
    timeline = tl.timeline if tl is not None else None
    plain = dataclasses.replace(p, notes=[], warnings=[])
    return to_jsonable({
        "config": p.config, "device_name": p.ceilings.device_name, "layers": rows,
        "roofline_points": len(shown), "left_out": [str(x) for x in lay.index if x not in shown],
        "roofs": {"flop_per_s": dict(p.ceilings.flop_per_s), "bytes_per_s": p.ceilings.bytes_per_s,
                  "source": p.ceilings.source, "date": p.ceilings.date},
        "timeline": {**timeline.to_dict(), "peak_index": timeline.peak_index} if timeline else None,
        "summary": summary_lines(plain), "notes": list(p.notes), "warnings": list(p.warnings),
        "memory": memory_lines(p.measurement.memory), "manifest": dict(manifest or {}),
    })


# ----------------------------------------------------------------------------- figures
def _hover(r: Mapping[str, Any]) -> list[Any]:
    eff = _fmt("pct", r.get("efficiency"))
    return [r["idx"], r["path"] or "(root)", r["kind"], f"{r.get('input_shapes') or '-'} -> {r.get('output_shapes')}",
            _fmt("flop", r["flops"]), _fmt("bytes", r["bytes"]), _fmt("ms", r["time_s"]),
            _fmt("rate", r["achieved_flop_per_s"]), f"{eff} of attainable ({r.get('roof_key')} roof)",
            (f"{r['bound']}-bound" if r.get("bound") else "no bound") + (", ABOVE ROOF" if r.get("above_roof") else "")]


_HOVER = ("<b>%{customdata[1]}</b><br>type %{customdata[2]}<br>shapes %{customdata[3]}<br>%{customdata[4]}, "
          "%{customdata[5]}, %{customdata[6]}<br>%{customdata[7]}, %{customdata[8]}<br>%{customdata[9]}"
          "<extra></extra>")


def _cache_level_traces(go: Any, k: Any, x_lo: float, top: float) -> list[Any]:
    """A dash-dot bandwidth slope per cache level with a measured bandwidth (``k.memory_levels()``
    below main memory), as the PNG roofline draws them: a layer whose working set fits in that
    level is placed against it (see the table's ``level`` column)."""
    out = []
    for lv in k.memory_levels():
        if lv.capacity_bytes is None or not lv.bytes_per_s or not top:
            continue
        x_end = top / lv.bytes_per_s
        out.append(go.Scatter(x=[x_lo, x_end], y=[lv.bytes_per_s * x_lo, top], mode="lines", hoverinfo="name",
                              name=f"{lv.name} {human(lv.bytes_per_s)}B/s (up to {human_bytes(lv.capacity_bytes)})",
                              line={"color": "#999", "width": 1, "dash": "dashdot"}))
    return out


def _roofline_figure(p: Profile, data: Mapping[str, Any]) -> Any:
    """Log-log roofline: the bandwidth slope, each measured compute roof a layer runs under (the datasheet's
    dashed), one point per layer (:func:`roofline_points`), coloured by type, sized by time share."""
    go = _plotly()
    shown = set(roofline_points(p.layers).index.astype(str))
    pts = [{**r, "idx": i} for i, r in enumerate(data["layers"]) if r["path"] in shown]
    r = _select_roofs(p.ceilings, {str(x["roof_key"]) for x in pts} or None)
    xs = [x["intensity"] for x in pts] + [v / r.bw for v in r.all_flop_per_s if r.bw]
    x_lo, x_hi = (min(xs) / 4, max(xs) * 8) if xs else (0.1, 1e3)
    fig = go.Figure()
    top = max(r.all_flop_per_s, default=0.0)
    if r.bw:
        x_end = top / r.bw if top else x_hi
        fig.add_trace(go.Scatter(x=[x_lo, x_end], y=[r.bw * x_lo, r.bw * x_end], mode="lines", hoverinfo="name",
                                 name=f"memory {human(r.bw)}B/s", line={"color": "#444", "width": 2}))
    for trace in _cache_level_traces(go, p.ceilings, x_lo, top):
        fig.add_trace(trace)
    for (key, v), dash in [*((m, "solid") for m in r.measured), *((s, "dash") for s in r.sheet)]:
        fig.add_trace(go.Scatter(x=[v / r.bw if r.bw else x_lo, x_hi], y=[v, v], mode="lines", hoverinfo="name",
                                 name=f"{key} {human(v)}FLOP/s" + (" (datasheet)" if dash == "dash" else ""),
                                 line={"color": "#444" if dash == "solid" else "#999", "dash": dash}))
    biggest = max((x["time_share"] or 0 for x in pts), default=0) or 1
    for kind in dict.fromkeys(x["kind"] for x in pts):
        sel = [x for x in pts if x["kind"] == kind]
        fig.add_trace(go.Scatter(
            x=[x["intensity"] for x in sel], y=[x["achieved_flop_per_s"] for x in sel], mode="markers", name=kind,
            customdata=[_hover(x) for x in sel], hovertemplate=_HOVER, meta="layers",
            marker={"size": [7 + 18 * math.sqrt((x["time_share"] or 0) / biggest) for x in sel], "opacity": 0.85,
                    "symbol": ["diamond" if x["bound"] == "compute" else "circle" for x in sel],
                    "line": {"width": [2 if x["above_roof"] else 0.5 for x in sel],
                             "color": ["#c00" if x["above_roof"] else "#fff" for x in sel]}}))
    cfg = p.config
    fig.update_layout(title=f"Roofline: {cfg.get('model')} on {r.device_name} ({cfg.get('dtype')}, "
                            f"{cfg.get('mode')}, batch {cfg.get('batch')})", height=560, hovermode="closest",
                      xaxis={"type": "log", "title": "arithmetic intensity (FLOP/byte)"},
                      yaxis={"type": "log", "title": "achieved FLOP/s", "exponentformat": "SI"},
                      legend={"title": "layer type (circle: memory-bound, diamond: compute-bound)"},
                      margin={"t": 50, "r": 10})
    return fig


def _time_figure(data: Mapping[str, Any], train: bool) -> Any:
    """The :data:`TIME_BARS` slowest layers, self time (forward, and backward stacked in training)."""
    go = _plotly()
    rows = sorted(({**r, "idx": i} for i, r in enumerate(data["layers"]) if (r["time_s"] or 0) > 0),
                  key=lambda r: r["time_s"])[-TIME_BARS:]
    names = [r["path"] or "(root)" for r in rows]
    custom = [[r["idx"], r["path"] or "(root)", r["kind"], _fmt("ms", r["time_s"]), _fmt("pct", r["time_share"])]
              for r in rows]
    fig = go.Figure()
    for key, label in ([("fwd_s", "forward"), ("bwd_s", "backward")] if train else [("time_s", "forward")]):
        fig.add_trace(go.Bar(y=names, x=[(r[key] or 0) * 1e3 for r in rows], orientation="h", name=label,
                             customdata=custom, hovertemplate="<b>%{customdata[1]}</b> (%{customdata[2]})<br>"
                             f"{label} %{{x:.3f}} ms; layer total %{{customdata[3]}}, %{{customdata[4]}} of the "
                             "layer time<extra></extra>"))
    shown = f"the {len(rows)} slowest of {len(data['layers'])} layers" if len(rows) < len(data["layers"]) else \
        f"all {len(rows)} layers with a time"
    fig.update_layout(barmode="stack", height=160 + 18 * len(rows), title=f"Self time per layer ({shown})",
                      xaxis={"title": "self time (ms), median of the hooked pass"}, margin={"t": 50, "r": 10},
                      yaxis={"automargin": True})
    return fig


def _memory_figure(data: Mapping[str, Any]) -> Any | None:
    """Live tensor bytes over the allocator-trace pass, the peak marked with the op running at it."""
    tl = data["timeline"]
    if not tl or not tl["time_s"]:
        return None
    go = _plotly()
    i = tl["peak_index"]
    mib = [b / MIB for b in tl["live_bytes"]]
    ms = [t * 1e3 for t in tl["time_s"]]
    fig = go.Figure(go.Scatter(x=ms, y=mib, mode="lines", line={"shape": "hv", "width": 1.5}, fill="tozeroy",
                               name="live tensors", customdata=[o or "-" for o in tl["op"]],
                               hovertemplate="%{x:.3f} ms: %{y:,.2f} MiB<br>%{customdata}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[ms[i]], y=[mib[i]], mode="markers", marker={"size": 11, "color": "#c00"},
                             name="peak", hoverinfo="skip"))
    fig.add_annotation(x=ms[i], y=mib[i], text=f"peak {mib[i]:,.1f} MiB in {tl['op'][i] or '-'}", showarrow=True,
                       arrowhead=2, ax=40, ay=-30, bgcolor="rgba(255,255,255,0.8)")
    thinned = f", thinned to {len(ms)} points" if tl["events"] > len(ms) else ""
    fig.update_layout(title=f"Live tensor memory in the allocator-trace pass ({tl['events']} allocator events"
                            f"{thinned})", height=380, showlegend=False, margin={"t": 50, "r": 10},
                      xaxis={"title": "time in that pass (ms)"}, yaxis={"title": "live tensors (MiB)"})
    return fig


# ----------------------------------------------------------------------------- page
def _cell(key: str, kind: str, r: Mapping[str, Any]) -> str:
    if key == "path":
        return str(r[key] or "(root)")
    if key == "bound" and r.get("above_roof"):
        return f"{r[key]}, above roof"
    return _fmt(kind, r.get(key))


def _table(data: Mapping[str, Any]) -> str:
    """The per-layer table: one row per layer, each cell's raw value in ``data-v`` for sorting."""
    head = "".join(f'<th data-k="{i}" data-num="{int(kind != "str")}">{html.escape(label)}</th>'
                   for i, (_, label, kind) in enumerate(_COLUMNS))
    body = []
    for idx, r in enumerate(data["layers"]):
        cells = "".join(
            f'<td data-v="{html.escape(str(r.get(key) if r.get(key) is not None else ""))}"'
            f'{" class=above" if key == "bound" and r.get("above_roof") else ""}>'
            f"{html.escape(_cell(key, kind, r))}</td>" for key, _, kind in _COLUMNS)
        body.append(f'<tr data-idx="{idx}" data-kind="{html.escape(r["kind"])}" '
                    f'data-bound="{html.escape(r.get("bound") or "")}">{cells}</tr>')
    kinds = "".join(f'<option value="{html.escape(k)}">{html.escape(k)}</option>'
                    for k in sorted({r["kind"] for r in data["layers"]}))
    return (f'<div class="controls"><input id="filter" type="search" placeholder="filter: path or type">'
            f'<select id="kind"><option value="">every type</option>{kinds}</select>'
            '<select id="bound"><option value="">memory- and compute-bound</option><option>memory</option>'
            '<option>compute</option></select> <span id="shown"></span></div>'
            f'<div class="scroll"><table id="layers"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _frame_html(df: pd.DataFrame) -> str:
    return df.to_html(classes="small", border=0, escape=True)


def _flat(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested mappings as (dotted key, value) rows; lists as JSON."""
    out: list[tuple[str, str]] = []
    for k, v in d.items():
        if isinstance(v, Mapping):
            out += _flat(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", json.dumps(v) if isinstance(v, (list, tuple)) else str(v)))
    return out


def _sections(p: Profile, data: Mapping[str, Any], figure_ids: list[str]) -> str:
    """The page's body below the header."""
    li = "".join(f"<li>{html.escape(x)}</li>" for x in data["summary"])
    notes = "".join(f'<li class="{"warn" if n in data["warnings"] else ""}">{html.escape(n)}</li>'
                    for n in data["notes"]) or "<li>none</li>"
    left = data["left_out"]
    left_text = (f"<p class=muted>{len(left)} layer(s) not on the roofline (no time, no FLOPs or no bytes): "
                 f"{html.escape(', '.join(x or '(root)' for x in left))}</p>" if left else "")
    mem = ("<div id=memory class=fig></div>" if "memory" in figure_ids else
           "<p class=muted>No allocator timeline in this profile (measured with alloc_trace=False, or saved "
           "before hwprof kept one).</p>")
    manifest = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                       for k, v in _flat(data["manifest"]) if not k.startswith("ceilings.trials"))
    return "\n".join([
        f"<section><h2>Summary</h2><ul>{li}</ul></section>",
        f"<section><h2>Roofline</h2><div id=roofline class=fig></div>{left_text}</section>",
        f"<section><h2>Layers</h2>{_table(data)}</section>",
        "<section><h2>Layer time</h2><div id=layer-time class=fig></div></section>",
        f"<section><h2>Memory</h2>{mem}<pre>{html.escape(chr(10).join(data['memory']))}</pre></section>",
        f"<section><h2>Phases (whole model, unhooked)</h2>{_frame_html(phase_table(p.measurement.phases))}</section>",
        f"<section><details><summary>Slowest aten ops (torch.profiler pass)</summary>{_frame_html(op_table(p, 25))}"
        "</details></section>",
        f"<section><h2>Notes</h2><ul>{notes}</ul></section>",
        f"<section><h2>Manifest</h2><table class=small>{manifest}</table></section>",
    ])


def _script_json(element_id: str, obj: Any) -> str:
    """``obj`` as JSON in a non-executed script element; every ``<`` is written ``\\u003c`` (the same string
    to JSON), so that no text in it can close or re-open a script element."""
    text = (obj if isinstance(obj, str) else json.dumps(obj)).replace("<", "\\u003c")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def html_report(p: Profile, path: str | Path, manifest: Mapping[str, Any] | None = None) -> Path:
    """Write ``report.html`` of ``p`` to ``path`` (atomically) and return the path; :class:`PlotUnavailable`
    (nothing written) when plotly is not installed."""
    go = _plotly()
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    data = report_data(p, manifest)
    figures = {"roofline": _roofline_figure(p, data),
               "layer-time": _time_figure(data, p.config.get("mode") == "train"),
               "memory": _memory_figure(data)}
    fig_json = "{" + ",".join(f"{json.dumps(k)}:{pio.to_json(f, validate=True)}" for k, f in figures.items()
                              if isinstance(f, go.Figure)) + "}"
    cfg = p.config
    title = f"hwprof: {cfg.get('model')} on {p.ceilings.device_name}"
    sub = (f"{cfg.get('mode')}, {cfg.get('dtype')}, batch {cfg.get('batch')}, device {cfg.get('device')}"
           + (f"; {data['manifest'].get('date')}" if data["manifest"].get("date") else ""))
    page = "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style>", f"<script>{_ERRORS_JS}</script>", f"<script>{get_plotlyjs()}</script>",
        "</head><body>", f"<header><h1>{html.escape(title)}</h1><p>{html.escape(sub)}</p></header>",
        _sections(p, data, [k for k, f in figures.items() if f is not None]),
        '<div id="hwprof-check" hidden></div>', _script_json("hwprof-data", data),
        _script_json("hwprof-figures", fig_json), f"<script>{_PAGE_JS}</script>", "</body></html>", ""])
    return write_atomic(path, page)


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1400px;padding:0 16px;color:#222}
header h1{font-size:20px;margin:16px 0 2px} header p{margin:0 0 8px;color:#555}
h2{font-size:16px;border-bottom:1px solid #ddd;padding-bottom:2px} .fig{width:100%}
.muted{color:#666;font-size:12px} .warn{color:#a00} pre{font-size:12px;white-space:pre-wrap}
.controls{margin:6px 0} .controls input{width:260px} .controls *{font-size:13px;margin-right:6px}
.scroll{max-height:520px;overflow:auto;border:1px solid #ddd}
table{border-collapse:collapse;font-size:12px} th,td{padding:2px 6px;text-align:right;white-space:nowrap}
#layers th{position:sticky;top:0;background:#f4f4f4;cursor:pointer;user-select:none}
#layers td:nth-child(-n+3){text-align:left} #layers tr:nth-child(even){background:#fafafa}
#layers th.asc::after{content:" \\25B2"} #layers th.desc::after{content:" \\25BC"}
#layers tr.sel{background:#ffe9a8!important} #layers td.above{color:#c00}
table.small th{text-align:left;background:#f4f4f4}
"""

_ERRORS_JS = """
window.hwprofErrors=[];
(function(){var note=function(m){hwprofErrors.push(String(m));var c=document.getElementById('hwprof-check');
if(c)c.setAttribute('data-errors',JSON.stringify(hwprofErrors));};
window.addEventListener('error',function(e){note(e.message||e);});
window.addEventListener('unhandledrejection',function(e){note('unhandled rejection: '+e.reason);});
var ce=console.error;console.error=function(){note(Array.prototype.join.call(arguments,' '));ce.apply(console,arguments);};
})();
"""

_PAGE_JS = """
(function(){
var data=JSON.parse(document.getElementById('hwprof-data').textContent);
var figs=JSON.parse(document.getElementById('hwprof-figures').textContent);
var tbody=document.querySelector('#layers tbody'), rows=Array.prototype.slice.call(tbody.rows);
var where={};  // layer index -> [trace, point] on the roofline
function select(idx,scroll){rows.forEach(function(r){r.classList.toggle('sel',+r.dataset.idx===idx);});
 var r=rows.filter(function(r){return +r.dataset.idx===idx;})[0],box=document.querySelector('.scroll');
 if(r&&scroll){box.scrollTop=r.offsetTop-box.clientHeight/2;if(scroll==='page')box.scrollIntoView({block:'nearest'});}
 var w=where[idx],gd=document.getElementById('roofline');
 if(w&&gd.data)Plotly.Fx.hover(gd,[{curveNumber:w[0],pointNumber:w[1]}]);}
function filter(){var q=document.getElementById('filter').value.toLowerCase(),k=document.getElementById('kind').value,
 b=document.getElementById('bound').value,n=0,keep={};
 rows.forEach(function(r){var t=r.cells[0].textContent.toLowerCase()+' '+r.dataset.kind.toLowerCase();
  var ok=(!q||t.indexOf(q)>=0)&&(!k||r.dataset.kind===k)&&(!b||r.dataset.bound===b);
  r.style.display=ok?'':'none';if(ok){n++;keep[+r.dataset.idx]=1;}});
 document.getElementById('shown').textContent=n+' of '+rows.length+' layers';
 var gd=document.getElementById('roofline'),ids=[],ops=[];
 (gd.data||[]).forEach(function(t,i){if(t.meta==='layers'){ids.push(i);
  ops.push(t.customdata.map(function(c){return keep[c[0]]?0.85:0.12;}));}});
 if(ids.length)Plotly.restyle(gd,{'marker.opacity':ops},ids);}
function sortBy(th){var k=+th.dataset.k,num=th.dataset.num==='1',asc=!th.classList.contains('asc');
 document.querySelectorAll('#layers th').forEach(function(h){h.classList.remove('asc','desc');});
 th.classList.add(asc?'asc':'desc');
 var val=function(r){var v=r.cells[k].dataset.v;return num?(v===''?-Infinity:+v):v;};
 rows.sort(function(a,b){var x=val(a),y=val(b);return (x<y?-1:x>y?1:0)*(asc?1:-1);});
 rows.forEach(function(r){tbody.appendChild(r);});}
document.querySelectorAll('#layers th').forEach(function(th){th.addEventListener('click',function(){sortBy(th);});});
['filter','kind','bound'].forEach(function(id){document.getElementById(id).addEventListener('input',filter);});
rows.forEach(function(r){r.addEventListener('click',function(){select(+r.dataset.idx,false);});});
var cfg={responsive:true,displaylogo:false};
var drawn=Object.keys(figs).map(function(id){return Plotly.newPlot(id,figs[id].data,figs[id].layout,cfg).then(
 function(gd){gd.on('plotly_click',function(ev){var c=ev.points[0].customdata;
  if(c&&typeof c[0]==='number')select(c[0],'page');});return gd;});});
Promise.all(drawn).then(function(){
 var gd=document.getElementById('roofline'),n=0;
 gd.data.forEach(function(t,i){if(t.meta==='layers')t.customdata.forEach(function(c,j){where[c[0]]=[i,j];n++;});});
 filter();
 var m=/#layer=(.*)$/.exec(location.hash);
 if(m){var p=decodeURIComponent(m[1]);data.layers.forEach(function(l,i){if(l.path===p)select(i,true);});}
 var c=document.getElementById('hwprof-check');
 c.setAttribute('data-roofline-points',gd.querySelectorAll('.scatterlayer .trace .points path').length);
 c.setAttribute('data-roofline-data-points',n);c.setAttribute('data-rows',rows.length);
 c.setAttribute('data-errors',JSON.stringify(window.hwprofErrors));c.setAttribute('data-ready','1');
});
})();
"""
