"""A saved profile folder: what :meth:`hwprof.joining.Profile.save` writes and :func:`load_profile` reads.

The record (:class:`~hwprof.joining.Profile`) lives in :mod:`hwprof.joining`; its files and their
renderers (:mod:`hwprof.report`: tables, Markdown, plots, ``report.html``, ``trace.json``) are
put together here, so that the record's module and the renderers never import each other. The
folder is written complete or not at all (:func:`hwprof.files.atomic_dir`); ``count.json``,
``measurement.json`` and ``ceilings.json`` are the three records :func:`load_profile` joins again
(:func:`hwprof.join`, a pure function of them), with no model and no live torch state.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from hwprof.counting.counter import CountResult
from hwprof.errors import HwprofError
from hwprof.files import atomic_dir, to_jsonable, write_atomic, write_json_atomic
from hwprof.hardware.ceilings import Ceilings
from hwprof.joining import Profile, join
from hwprof.measuring.records import Measurement

__all__ = ["save_profile", "load_profile", "count_to_dict", "count_from_dict", "manifest", "COUNT_FILE",
           "MEASUREMENT_FILE", "CEILINGS_FILE", "PROFILE_FILE"]

log = logging.getLogger(__name__)

COUNT_FILE, MEASUREMENT_FILE, CEILINGS_FILE, PROFILE_FILE = "count.json", "measurement.json", "ceilings.json", "profile.json"


def save_profile(p: Profile, directory: str | Path, command: str | None = None, html: bool = True) -> list[Path]:
    """:meth:`Profile.save`: every file of the folder, written complete or not at all; the paths written."""
    target = Path(directory)
    with atomic_dir(target) as tmp:
        names = _write_folder(p, tmp, command, html)
    return [target / n for n in names]


def _frame_to_dict(df: pd.DataFrame) -> dict[str, Any]:
    """A DataFrame as JSON-ready data that :func:`_frame_from_dict` rebuilds with its dtypes
    (floats through Python's shortest repr, so they come back bit for bit)."""
    return {"index_name": df.index.name, "index": list(df.index), "columns": [str(c) for c in df.columns],
            "dtypes": [str(t) for t in df.dtypes], "data": df.to_numpy(dtype=object).tolist()}


def _frame_from_dict(d: Mapping[str, Any]) -> pd.DataFrame:
    df = pd.DataFrame(d["data"], columns=d["columns"], index=pd.Index(d["index"], name=d["index_name"]))
    return df.astype(dict(zip(d["columns"], d["dtypes"], strict=True))) if len(d["columns"]) else df


def count_to_dict(c: CountResult) -> dict[str, Any]:
    """What :func:`load_profile` needs of a count: layers, ops, totals, uncounted ops, notes and what was
    counted (``config``: mode, backward, batch, dtypes, a step's kind)."""
    return {"layers": _frame_to_dict(c.layers), "ops": _frame_to_dict(c.ops), "totals": c.totals,
            "uncounted": c.uncounted, "notes": c.notes, "config": to_jsonable(c.config)}


def count_from_dict(d: Mapping[str, Any]) -> CountResult:
    return CountResult(_frame_from_dict(d["layers"]), _frame_from_dict(d["ops"]), dict(d["totals"]),
                       {str(k): int(v) for k, v in d["uncounted"].items()}, list(d.get("notes") or []),
                       dict(d.get("config") or {}))


def load_profile(directory: str | Path) -> Profile:
    """Rebuild the :class:`Profile` saved in ``directory`` by :meth:`Profile.save`: :func:`join` of
    its saved count, measurement and ceilings, with no model and no live torch state."""
    d = Path(directory)
    missing = [n for n in (COUNT_FILE, MEASUREMENT_FILE, CEILINGS_FILE, PROFILE_FILE) if not (d / n).is_file()]
    if missing:
        raise HwprofError(f"{d} is not a saved profile: {', '.join(missing)} missing")
    try:
        saved = {n: json.loads((d / n).read_text()) for n in (COUNT_FILE, MEASUREMENT_FILE, CEILINGS_FILE, PROFILE_FILE)}
        count, m = count_from_dict(saved[COUNT_FILE]), Measurement.from_dict(saved[MEASUREMENT_FILE])
        k = Ceilings.from_dict(saved[CEILINGS_FILE])
    except (ValueError, KeyError, TypeError) as e:
        raise HwprofError(f"{d}: unreadable saved profile ({type(e).__name__}: {e})") from None
    return join(count, m, k, name=(saved[PROFILE_FILE].get("config") or {}).get("model"))


def manifest(p: Profile, command: str | None) -> dict[str, Any]:
    """Command, date, versions, device, ceilings and configuration of a saved profile."""
    from hwprof.report.manifest import versions

    v = versions()
    return {
        "command": command or " ".join(sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **{k: v[k] for k in ("hwprof", "torch", "cuda", "python", "platform")}, "versions": v,
        "device": p.measurement.device, "ceilings": p.ceilings.to_dict(), "config": p.config,
    }


def _plots(p: Profile, d: Path) -> tuple[list[Path], list[str]]:
    """The roofline and layer-time plots; without matplotlib none, and a note saying so."""
    from hwprof.report import plots

    pts = p.layers.reset_index().rename(columns={"path": "name"})
    pts["layer_type"] = [v or t for v, t in zip(pts["variant"], pts["type"], strict=True)]
    cfg = p.config
    title = f"{cfg['model']} ({cfg['dtype']}, {cfg['mode']}, batch {cfg['batch']})"
    try:
        out = plots.roofline_plot(pts[pts["time_s"] > 0], p.ceilings, d / "roofline.png", title=title,
                                  marker_by="memory_level" if p.ceilings.levels else None)
        out += plots.time_bar_plot(pts, d / "layer_time.png", title=title)
    except plots.PlotUnavailable as e:
        return [], [f"plots skipped: {e}"]
    return out, []


def _html(p: Profile, d: Path, meta: dict[str, Any], notes: list[str]) -> tuple[list[Path], list[str]]:
    """``report.html`` (:func:`hwprof.report.html.html_report`, its notes naming what else was saved);
    without plotly none, and a note saying so (logged once as a warning)."""
    from hwprof.report.html import html_report
    from hwprof.report.plots import PlotUnavailable

    try:
        return [html_report(dataclasses.replace(p, notes=[*p.notes, *notes]), d / "report.html", meta)], []
    except PlotUnavailable as e:
        log.warning("report.html skipped: %s", e)
        return [], [f"report.html skipped: {e}"]


def _write_folder(p: Profile, d: Path, command: str | None, html: bool = True) -> list[str]:
    """Every file of a saved profile into the (temporary) folder ``d``; returns their names."""
    from hwprof.report.profile_report import markdown_report
    from hwprof.report.trace import write_trace

    meta = manifest(p, command)
    figures, notes = _plots(p, d)
    pages, page_notes = _html(p, d, meta, notes) if html else ([], [])
    notes += page_notes
    written = [
        write_atomic(d / "layers.csv", p.layers.to_csv()),
        write_atomic(d / "ops.csv", p.ops.to_csv(index=False)),
        write_json_atomic(d / PROFILE_FILE, {
            "summary": p.summary, "config": p.config, "notes": p.notes + notes,
            "phases": p.measurement.phases, "memory": p.measurement.memory,
            "ceilings": p.ceilings.to_dict(), "layers": p.layers}),
        write_json_atomic(d / COUNT_FILE, count_to_dict(p.counts)),
        write_json_atomic(d / MEASUREMENT_FILE, p.measurement.to_dict()),
        write_json_atomic(d / CEILINGS_FILE, p.ceilings.to_dict()),
        write_atomic(d / "report.md", markdown_report(p, figures=[f.name for f in figures if f.suffix == ".png"],
                                                      extra_notes=notes)),
        *figures,
        *pages,
        write_trace(p, d / "trace.json"),
        write_json_atomic(d / "manifest.json", meta),
    ]
    return [f.name for f in written]
