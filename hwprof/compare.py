"""``hwprof compare``: two or more saved profiles joined per layer.

Each folder is read with :func:`hwprof.load_profile` (the records re-joined, no model). A folder
saved by an earlier hwprof, without the records ``load_profile`` needs (``count.json``,
``measurement.json``, ``ceilings.json``), is read from the per-layer table and summary it did save
(``layers.csv``, ``profile.json``), as it was joined then; anything else is a one-line error
naming what is missing.

Runs are joined on the layer path; the first run is the baseline. Per layer and run: time,
achieved FLOP/s, intensity, bound and efficiency, and per run after the first

    speedup = baseline time_s / run time_s      (> 1: the run is faster)

A layer's bound *changed* when its bound is not the same in every run. Layers present in only some
runs (another model, a code change) are left out of the join and counted in the notes. The whole
model's time, FLOPs and achieved FLOP/s come from each profile's summary (its whole-model
timing, not the sum of its layers).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from hwprof.errors import HwprofError
from hwprof.files import atomic_dir, write_atomic, write_json_atomic
from hwprof.hardware.ceilings import Ceilings
from hwprof.profile_folder import load_profile

__all__ = ["Run", "Comparison", "load_run", "compare", "PER_RUN", "table", "whole_table", "summary_lines", "markdown"]

log = logging.getLogger(__name__)

PER_RUN = ("time_s", "achieved_flop_per_s", "intensity", "bound", "efficiency", "roof_key", "memory_level",
           "predicted_s")
"""The per-layer columns kept for every run (those a run has)."""


@dataclass
class Run:
    """One saved profile as :func:`compare` uses it: its per-layer table, summary, configuration
    and ceilings, the folder it came from and how it was read."""

    label: str
    path: Path
    layers: pd.DataFrame
    summary: dict[str, Any]
    config: dict[str, Any]
    ceilings: Ceilings | None
    read_as: str = "hwprof.load_profile"


def _legacy(d: Path, why: str) -> Run:
    """A folder saved by an earlier hwprof: its layers.csv and profile.json as they were joined then."""
    layers = pd.read_csv(d / "layers.csv", index_col=0, keep_default_na=True)
    layers.index = layers.index.fillna("").astype(str)
    saved = json.loads((d / "profile.json").read_text())
    k = saved.get("ceilings")
    return Run(d.name, d, layers, dict(saved.get("summary") or {}), dict(saved.get("config") or {}),
               Ceilings.from_dict(k) if k else None,
               f"layers.csv and profile.json, as saved (an earlier hwprof: {why})")


def load_run(path: str | Path, label: str | None = None) -> Run:
    """Read one saved profile folder (module docstring); :class:`~hwprof.errors.HwprofError` in one
    line when it is none."""
    d = Path(path)
    if not d.is_dir():
        raise HwprofError(f"{d}: not a folder (a saved profile is the folder `hwprof profile --out` writes)")
    try:
        p = load_profile(d)
    except (AttributeError, TypeError, ValueError, KeyError) as e:   # a record of the wrong shape (null, a list)
        raise HwprofError(f"{d}: cannot compare: a damaged saved profile ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}); profile it again") from None
    except HwprofError as e:
        if (d / "layers.csv").is_file() and (d / "profile.json").is_file():
            try:
                run = _legacy(d, str(e).removeprefix(f"{d} ").removeprefix(f"{d}: "))
            except (OSError, ValueError, KeyError, TypeError) as bad:
                raise HwprofError(f"{d}: cannot compare: unreadable layers.csv/profile.json "
                                  f"({type(bad).__name__}: {bad})") from None
            run.label = label or run.label
            return run
        raise HwprofError(f"{d}: cannot compare: {str(e).removeprefix(str(d)).lstrip(': ')}; and no layers.csv + "
                          "profile.json of an earlier hwprof either") from None
    return Run(label or d.name, d, p.layers, p.summary, p.config, p.ceilings)


def _labels(runs: Sequence[Run]) -> list[str]:
    """Run labels made unique: a repeated folder name gets its parent's name in front."""
    names = [r.label for r in runs]
    out = [f"{r.path.resolve().parent.name}/{r.label}" if names.count(r.label) > 1 else r.label for r in runs]
    return [f"{n}#{i}" if out.count(n) > 1 else n for i, n in enumerate(out)]


@dataclass
class Comparison:
    """The runs joined per layer (:func:`compare`): ``layers`` has ``type``, ``variant`` and, per
    run label L, ``<column>@L`` for every column of :data:`PER_RUN` the run has, ``speedup@L``
    (baseline time / L's time) for every run after the first and ``bound_changed``; ``whole``
    one row per run (whole-model time, FLOPs, achieved FLOP/s, predicted time, speedup)."""

    runs: list[Run]
    labels: list[str]
    layers: pd.DataFrame
    whole: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    @property
    def bound_changes(self) -> pd.DataFrame:
        """The layers whose bound is not the same in every run, with each run's bound."""
        cols = [f"bound@{lab}" for lab in self.labels]
        return self.layers.loc[self.layers["bound_changed"], cols]

    def moves(self, a: int = 0, b: int = -1) -> pd.DataFrame:
        """Per layer the point of run ``a`` and of run ``b`` on the roofline (the plot's arrows)."""
        la, lb = self.labels[a], self.labels[b]
        lay = self.layers
        none = pd.Series(None, index=lay.index, dtype=object)
        return pd.DataFrame({
            "name": lay.index, "layer_type": [v or t for v, t in zip(lay["variant"], lay["type"], strict=True)],
            "intensity_a": lay[f"intensity@{la}"].to_numpy(), "achieved_flop_per_s_a": lay[f"achieved_flop_per_s@{la}"].to_numpy(),
            "intensity_b": lay[f"intensity@{lb}"].to_numpy(), "achieved_flop_per_s_b": lay[f"achieved_flop_per_s@{lb}"].to_numpy(),
            "time_s_b": lay[f"time_s@{lb}"].to_numpy(), "roof_key_a": lay.get(f"roof_key@{la}", none).to_numpy(),
            "roof_key_b": lay.get(f"roof_key@{lb}", none).to_numpy()})

    def save(self, directory: str | Path, command: str | None = None, top: int = 25) -> list[Path]:
        """Write ``compare.csv`` (every joined layer), ``whole.csv``, ``compare.md`` (the tables and
        notes), ``compare.json`` and one roofline plot of moves per run after the first
        (``moves_<label>.png``/``.svg``), complete or not at all."""
        target = Path(directory)
        with atomic_dir(target) as tmp:
            written = [write_atomic(tmp / "compare.csv", self.layers.to_csv()),
                       write_atomic(tmp / "whole.csv", self.whole.to_csv()),
                       write_json_atomic(tmp / "compare.json", {"labels": self.labels, "whole": self.whole,
                                                                "layers": self.layers, "notes": self.notes,
                                                                "command": command,
                                                                "runs": [str(r.path) for r in self.runs]})]
            figures, plot_notes = self._plots(tmp)
            written += figures
            pngs = [f.name for f in figures if f.suffix == ".png"]
            written.append(write_atomic(tmp / "compare.md", markdown(self, top, pngs, command, plot_notes)))
        return [target / f.name for f in written]

    def _plots(self, d: Path) -> tuple[list[Path], list[str]]:
        from hwprof.report import plots

        out: list[Path] = []
        base = self.runs[0].ceilings
        for i in range(1, len(self.runs)):
            k = self.runs[i].ceilings or base
            if k is None:
                return out, ["roofline plot skipped: no ceilings saved with the runs"]
            title = f"{self.labels[0]} -> {self.labels[i]}"
            safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in self.labels[i])
            try:
                out += plots.moves_plot(self.moves(0, i), [base or k, k], d / f"moves_{safe}.png",
                                        labels=[self.labels[0], self.labels[i]], title=title)
            except plots.PlotUnavailable as e:
                return out, [f"plots skipped: {e}"]
        return out, []


def _whole(runs: Sequence[Run], labels: Sequence[str]) -> pd.DataFrame:
    rows = []
    for lab, r in zip(labels, runs, strict=True):
        s, cfg = r.summary, r.config
        rows.append({"run": lab, "model": cfg.get("model"), "device": (r.ceilings.device_name if r.ceilings else
                                                                       cfg.get("device")),
                     "dtype": cfg.get("dtype"), "batch": cfg.get("batch"), "mode": cfg.get("mode"),
                     "channels_last": cfg.get("channels_last"), "whole_model_time_s": s.get("whole_model_time_s"),
                     "flops": s.get("flops"), "achieved_flop_per_s": s.get("achieved_flop_per_s"),
                     "fraction_of_peak": s.get("fraction_of_peak"), "predicted_time_s": s.get("predicted_time_s")})
    df = pd.DataFrame(rows).set_index("run")
    t = pd.to_numeric(df["whole_model_time_s"], errors="coerce")
    df["speedup"] = float(t.iloc[0]) / t
    return df


def compare(runs: Sequence[Run]) -> Comparison:
    """Join ``runs`` per layer (module docstring); at least two runs with a layer in common."""
    if len(runs) < 2:
        raise HwprofError(f"compare needs two or more saved profiles, got {len(runs)}")
    labels = _labels(runs)
    common = runs[0].layers.index
    for r in runs[1:]:
        common = common.intersection(r.layers.index, sort=False)
    if not len(common):
        raise HwprofError(f"no layer in common between {', '.join(labels)} (different models?)")
    base = runs[0].layers.loc[common]
    out = pd.DataFrame({"type": base["type"], "variant": base.get("variant", pd.Series("", index=common)).fillna("")},
                       index=common)
    for lab, r in zip(labels, runs, strict=True):
        lay = r.layers.loc[common]
        for col in PER_RUN:
            if col in lay:
                out[f"{col}@{lab}"] = lay[col].to_numpy()
    t0 = pd.to_numeric(out[f"time_s@{labels[0]}"], errors="coerce")
    for lab in labels[1:]:
        t = pd.to_numeric(out[f"time_s@{lab}"], errors="coerce")
        out[f"speedup@{lab}"] = (t0 / t.where(t > 0)).astype(float)
    bounds = out[[f"bound@{lab}" for lab in labels]].fillna("").astype(str)
    out["bound_changed"] = bounds.nunique(axis=1) > 1
    notes = [f"{lab}: read from {r.read_as}" for lab, r in zip(labels, runs, strict=True)
             if r.read_as != "hwprof.load_profile"]
    for lab, r in zip(labels, runs, strict=True):
        left = len(r.layers.index.difference(common))
        if left:
            notes.append(f"{lab}: {left} layer(s) not in every run, left out of the join")
    out = out.sort_values(f"time_s@{labels[0]}", ascending=False, key=lambda s: pd.to_numeric(s, errors="coerce"))
    return Comparison(list(runs), labels, out, _whole(runs, labels), notes)


# ----------------------------------------------------------------------------- what is shown
def _ms(x: Any) -> str:
    v = pd.to_numeric(x, errors="coerce")
    return "-" if v != v else f"{v * 1e3:.3f} ms"


def _x(x: Any) -> str:
    v = pd.to_numeric(x, errors="coerce")
    return "-" if v != v else f"{v:.2f}x"


def _pct(x: Any) -> str:
    v = pd.to_numeric(x, errors="coerce")
    return "-" if v != v else f"{100 * v:.1f}%"


def table(c: Comparison, top: int | None = 25) -> pd.DataFrame:
    """The layers by the baseline's time (strings): type, time per run, speedup per later run,
    achieved FLOP/s per run, the bounds (``a -> b`` when they differ) and efficiency per run."""
    from hwprof.report.tables import human

    lay = c.layers.head(top) if top else c.layers
    df = pd.DataFrame({"type": [f"{t}/{v}" if v else t for t, v in zip(lay["type"], lay["variant"], strict=True)]},
                      index=lay.index.map(lambda s: s or "(root)"))
    for lab in c.labels:
        df[f"time {lab}"] = lay[f"time_s@{lab}"].map(_ms)
    for lab in c.labels[1:]:
        df[f"speedup {lab}"] = lay[f"speedup@{lab}"].map(_x)
    for lab in c.labels:
        df[f"flop/s {lab}"] = lay[f"achieved_flop_per_s@{lab}"].map(lambda v: human(pd.to_numeric(v, errors="coerce")))
    bounds = lay[[f"bound@{lab}" for lab in c.labels]].fillna("").astype(str)
    df["bound"] = [" -> ".join(b) if len(set(b)) > 1 else b[0] for b in bounds.itertuples(index=False)]
    for lab in c.labels:
        if f"efficiency@{lab}" in lay:
            df[f"eff {lab}"] = lay[f"efficiency@{lab}"].map(_pct)
    df.index.name = "layer"
    return df


def whole_table(c: Comparison) -> pd.DataFrame:
    """One row per run (strings): model, device, dtype, batch, time, speedup, FLOP/s, % of peak, predicted."""
    from hwprof.report.tables import human

    w = c.whole
    return pd.DataFrame({"model": w["model"], "device": w["device"], "dtype": w["dtype"], "batch": w["batch"],
                         "channels_last": w["channels_last"], "time": w["whole_model_time_s"].map(_ms),
                         "speedup": w["speedup"].map(_x),
                         "flop/s": w["achieved_flop_per_s"].map(lambda v: human(pd.to_numeric(v, errors="coerce"))),
                         "of peak": w["fraction_of_peak"].map(_pct), "predicted": w["predicted_time_s"].map(_ms)})


def summary_lines(c: Comparison) -> list[str]:
    """Whole-model speedups, the layers whose bound changed, the largest per-layer gains and losses."""
    lines = []
    base = c.labels[0]
    for lab in c.labels[1:]:
        sp = c.whole.loc[lab, "speedup"]
        per = pd.to_numeric(c.layers[f"speedup@{lab}"], errors="coerce").dropna()
        t_b = pd.to_numeric(c.layers[f"time_s@{base}"], errors="coerce")
        best, worst = per.idxmax() if len(per) else "", per.idxmin() if len(per) else ""
        lines.append(f"{lab} vs {base}: whole model {_x(sp)} ({_ms(c.whole.loc[lab, 'whole_model_time_s'])} vs "
                     f"{_ms(c.whole.loc[base, 'whole_model_time_s'])}); per layer median {_x(per.median())}, "
                     f"time-weighted {_x(float(t_b.sum()) / float(pd.to_numeric(c.layers[f'time_s@{lab}'], errors='coerce').sum()))}; "
                     f"largest gain {best or '-'} ({_x(per.max() if len(per) else math.nan)}), "
                     f"largest loss {worst or '-'} ({_x(per.min() if len(per) else math.nan)})")
    changed = c.bound_changes
    if len(changed):
        shown = ", ".join(f"{n or '(root)'} ({' -> '.join(map(str, r))})" for n, r in changed.head(8).iterrows())
        lines.append(f"bound changed in {len(changed)} of {len(c.layers)} layers: {shown}"
                     + (", ..." if len(changed) > 8 else ""))
    else:
        lines.append(f"no layer changed bound ({len(c.layers)} layers joined)")
    return lines + [f"note: {n}" for n in c.notes]


def markdown(c: Comparison, top: int, figures: Sequence[str], command: str | None, extra: Sequence[str]) -> str:
    """compare.md: the runs, the summary, the per-layer table, the figures and the command."""
    from hwprof.report.tables import render

    parts = ["# hwprof compare: " + " vs ".join(c.labels), "", render(whole_table(c), "md"), "",
             *[f"- {line}" for line in summary_lines(c)], *[f"- note: {n}" for n in extra], "",
             f"## Layers (top {top} by the time of {c.labels[0]})", "", render(table(c, top), "md"), ""]
    parts += [f"![{f}]({f})" for f in figures] + ([""] if figures else [])
    if command:
        parts += [f"Command: `{command}`", ""]
    return "\n".join(parts)
